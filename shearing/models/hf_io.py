"""Load a source model from a Hugging Face directory or a GGUF file; save a stock HF directory
of the source's family (a pruned Qwen3 is a `Qwen3ForCausalLM` of the new shape).

Loading is strict: every checkpoint key must be a parameter of the model and every
parameter must be in the checkpoint, with the same shape; the first offending key is
named in the error. Saving writes `config.json`, safetensors (sharded when large) and
the source's tokenizer files to a temporary directory that is renamed into place at the
end, so an interrupted save never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from shearing.files import staged_output
from shearing.models.config import STOCK_ACTIVATIONS, DecoderShape
from shearing.models.decoder import MaskableDecoder
from shearing.models.gguf_read import byte_level_tokenizer, is_byte_level, read_fields

log = logging.getLogger(__name__)

#: Files copied verbatim from a source directory next to saved weights.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "generation_config.json",
)
#: Checkpoint keys that are recomputed, not loaded (old LLaMA checkpoints store them).
IGNORED_KEY_SUFFIXES = ("rotary_emb.inv_freq",)
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3
#: Modeling file shipped with fatrelu / drelu checkpoints; auto_map names its class
#: `Shearing<architecture>` (e.g. ShearingQwen3ForCausalLM).
REMOTE_CODE = Path(__file__).resolve().parent.parent / "export" / "modeling_shearing.py"


def resolve_source(path: str | os.PathLike) -> Path:
    """Return the HF directory or `.gguf` file that `path` names.

    A directory without `config.json` but with exactly one `.gguf` file resolves to it.

    Raises:
        ValueError: `path` holds no model this loader reads.
    """
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return p
    if p.is_dir():
        if (p / "config.json").is_file():
            return p
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
    raise ValueError(
        f"model path {str(path)!r} is not a model: expected a Hugging Face directory "
        "(config.json + safetensors or .bin weights) or a .gguf file"
    )


def read_hf_config(path: str | os.PathLike) -> dict:
    """The Hugging Face config dictionary of a source (directory or GGUF), no weights."""
    src = resolve_source(path)
    if src.suffix == ".gguf":
        return _gguf_config(src)
    try:
        return json.loads((src / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(src / 'config.json')!r} is not valid JSON ({err})") from None


def load_model(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    hidden_act: str | None = None,
    fatrelu_threshold: float | None = None,
    shape: DecoderShape | None = None,
) -> MaskableDecoder:
    """Load a source checkpoint into a `MaskableDecoder`.

    Args:
        path: a Hugging Face directory (safetensors or .bin, sharded or not) or a .gguf file.
        dtype: parameter dtype.
        device: parameter device.
        hidden_act: replace the FFN activation (e.g. `relu` to ReLU-fy a SiLU model).
        fatrelu_threshold: the threshold of a `fatrelu` activation.
        shape: build this shape instead of the checkpoint's config (a resolved run's, with
            its activation); its dimensions must be the checkpoint's.
        (With `hidden_act` or `fatrelu_threshold`, the checkpoint's shape with them.)

    Raises:
        ValueError: no model at `path`, an unsupported config, or a key/shape mismatch.
    """
    src = resolve_source(path)
    if shape is None:
        shape = DecoderShape.from_hf(read_hf_config(src))
        if hidden_act is not None:
            shape = shape.replace(hidden_act=hidden_act)
        if fatrelu_threshold is not None:
            shape = shape.replace(fatrelu_threshold=fatrelu_threshold)
    state = _gguf_state_dict(src) if src.suffix == ".gguf" else _hf_state_dict(src)
    return model_from_state_dict(shape, state, dtype=dtype, device=device)


def model_from_state_dict(
    shape: DecoderShape,
    state: dict[str, Tensor],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> MaskableDecoder:
    """Build a model of `shape` on the meta device and assign `state` (checkpoint keys, or
    the model's own) to it, strictly."""
    with torch.device("meta"):
        model = MaskableDecoder(shape)
    state = {k: v for k, v in state.items() if not k.endswith(IGNORED_KEY_SUFFIXES)}
    state = unfused(shape, state)
    expected = model.state_dict()
    if shape.tie_word_embeddings and "lm_head.weight" not in state:
        if "model.embed_tokens.weight" in state:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
    for key in state:
        if key not in expected:
            raise ValueError(
                f"checkpoint key {key!r} is not a parameter of a {shape.model_type} model of "
                "this config"
            )
    for key, param in expected.items():
        if key not in state:
            raise ValueError(f"checkpoint has no {key!r}")
        if tuple(state[key].shape) != tuple(param.shape):
            raise ValueError(
                f"checkpoint {key!r} has shape {tuple(state[key].shape)}; "
                f"the config implies {tuple(param.shape)}"
            )
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.model.reset_rotary(device)
    model.tie_weights()
    return model


def unfused(shape: DecoderShape, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Checkpoint keys to the model's: Phi-3's fused `qkv_proj` (rows: queries, keys,
    values) and `gate_up_proj` (gate, then up) split into the separate projections."""
    if not shape.family.fused:
        return state
    q_rows = shape.num_attention_heads * shape.head_dim
    kv_rows = shape.num_key_value_heads * shape.head_dim
    out = {}
    for key, value in state.items():
        if key.endswith("self_attn.qkv_proj.weight"):
            q, k, v = value.split([q_rows, kv_rows, kv_rows], dim=0)
            base = key[: -len("qkv_proj.weight")]
            out |= {base + "q_proj.weight": q, base + "k_proj.weight": k, base + "v_proj.weight": v}
        elif key.endswith("mlp.gate_up_proj.weight"):
            gate, up = value.chunk(2, dim=0)
            base = key[: -len("gate_up_proj.weight")]
            out |= {base + "gate_proj.weight": gate, base + "up_proj.weight": up}
        else:
            out[key] = value
    return out


def fused(shape: DecoderShape, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The model's keys to the checkpoint's: `unfused` undone (Phi-3)."""
    if not shape.family.fused:
        return state
    out = {}
    for key, value in state.items():
        if key.endswith("self_attn.q_proj.weight"):
            base = key[: -len("q_proj.weight")]
            parts = [state[base + n] for n in ("q_proj.weight", "k_proj.weight", "v_proj.weight")]
            out[base + "qkv_proj.weight"] = torch.cat(parts, dim=0)
        elif key.endswith("mlp.gate_proj.weight"):
            base = key[: -len("gate_proj.weight")]
            out[base + "gate_up_proj.weight"] = torch.cat([value, state[base + "up_proj.weight"]])
        elif not key.endswith(("k_proj.weight", "v_proj.weight", "up_proj.weight")):
            out[key] = value
    return out


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer of a model: its Hugging Face directory's files or a GGUF's vocabulary.

    Raises:
        ValueError: no model at `path`, or it has no tokenizer.
    """
    from transformers import AutoTokenizer

    src = resolve_source(path)
    if src.suffix != ".gguf" and not any(
        (src / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "vocab.json")
    ):
        raise ValueError(
            f"model path {str(path)!r} has no tokenizer (tokenizer.json, tokenizer.model or "
            "vocab.json)"
        )
    try:
        if src.suffix == ".gguf":
            return _gguf_tokenizer(src)
        return AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"model path {str(path)!r} has no usable tokenizer ({first})") from None


def _read_weights(reader, path: Path) -> dict[str, Tensor]:
    """One weights file, with a one-line error for a truncated or corrupt file."""
    try:
        return reader(str(path))
    except FileNotFoundError:
        raise ValueError(f"weights file {str(path)!r} is missing") from None
    except Exception as err:  # safetensors, torch and pickle each raise their own types
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ValueError(
            f"weights file {str(path)!r} is truncated or corrupt ({type(err).__name__}: {first})"
        ) from None


def _hf_state_dict(directory: Path) -> dict[str, Tensor]:
    for index_name, reader in (
        ("model.safetensors.index.json", load_file),
        ("pytorch_model.bin.index.json", _load_bin),
    ):
        index = directory / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, Tensor] = {}
            for shard in shards:
                state.update(_read_weights(reader, directory / shard))
            return state
    for name, reader in (("model.safetensors", load_file), ("pytorch_model.bin", _load_bin)):
        if (directory / name).is_file():
            return _read_weights(reader, directory / name)
    raise ValueError(
        f"model path {str(directory)!r} has config.json but no weights: expected "
        "model.safetensors, pytorch_model.bin or their sharded index"
    )


def _load_bin(path: str) -> dict[str, Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _gguf_config(path: Path) -> dict:
    from transformers import AutoConfig

    arch = _gguf_architecture(path)
    try:
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, KeyError) as err:
        raise ValueError(
            f"GGUF file {path.name!r} has architecture {arch!r}, which transformers' GGUF "
            f"reader does not read ({str(err).strip().splitlines()[0][:120]})"
        ) from None
    return {**config.to_diff_dict(), "model_type": config.model_type}


def _gguf_architecture(path: Path) -> str:
    return read_fields(path, "general.architecture").get("general.architecture", "unknown")


def _gguf_state_dict(path: Path) -> dict[str, Tensor]:
    """Dequantised weights with Hugging Face key names, via transformers' GGUF reader."""
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return dict(hf_model.state_dict())


def save_pretrained(
    model: MaskableDecoder,
    out_dir: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    force: bool = False,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Write `model` as a stock Hugging Face directory of its family.

    Args:
        model: the model to save.
        out_dir: destination; must not exist or be empty unless `force`.
        source: the source model (directory or .gguf) whose tokenizer is copied.
        force: replace a non-empty `out_dir`.
        dtype: save weights in this dtype (default: as they are).
        max_shard_bytes: split safetensors into shards of at most this size.

    Returns:
        The output directory.

    Raises:
        OutputError: `out_dir` is a file, or not empty and `force` is not set.
    """
    with staged_output(out_dir, force=force) as tmp:
        write_pretrained(model, tmp, source=source, dtype=dtype, max_shard_bytes=max_shard_bytes)
    return Path(out_dir).expanduser()


def write_pretrained(
    model: MaskableDecoder,
    directory: Path,
    *,
    source: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> None:
    """The files of `save_pretrained`, written into an existing (staging) `directory`."""
    state = {
        k: (v if dtype is None else v.to(dtype)).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    if model.shape.tie_word_embeddings:
        state.pop("lm_head.weight")
    state = fused(model.shape, state)
    if source is not None:
        copy_tokenizer(source, directory)
    hf_config = model.shape.to_hf()
    if model.shape.hidden_act not in STOCK_ACTIVATIONS:
        # fatrelu / drelu: ship the modeling file that transformers loads with
        # trust_remote_code=True
        shutil.copy2(REMOTE_CODE, directory / REMOTE_CODE.name)
        remote = f"modeling_shearing.Shearing{model.shape.family.architecture}"
        hf_config["auto_map"] = {"AutoModelForCausalLM": remote}
    hf_config.pop("torch_dtype", None)  # transformers 5's name is dtype
    hf_config["dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    _write_generation_config(hf_config, directory)
    _write_safetensors(state, directory, max_shard_bytes)


def _write_generation_config(hf_config: dict, directory: Path) -> None:
    """`generation_config.json` when the source had none to copy (a GGUF file, a bare
    directory): transformers' defaults for the config's token ids."""
    from transformers import GenerationConfig

    if (directory / "generation_config.json").is_file():
        return
    ids = {k: hf_config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
           if hf_config.get(k) is not None}  # fmt: skip
    GenerationConfig(**ids).save_pretrained(directory)


def _write_safetensors(state: dict[str, Tensor], directory: Path, max_shard_bytes: int) -> None:
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    if len(shards) == 1:
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _gguf_tokenizer(src: Path):
    """The tokenizer embedded in a GGUF file, with the model config's EOS token: a
    byte-level BPE vocabulary as the GGUF describes it (`gguf_read.byte_level_tokenizer`),
    any other through transformers' GGUF conversion."""
    from transformers import AutoTokenizer

    fields = read_fields(src, "tokenizer.")
    if is_byte_level(fields):
        tokenizer = byte_level_tokenizer(fields)
    else:
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    eos_id = read_hf_config(src).get("eos_token_id")
    if isinstance(eos_id, int) and eos_id != tokenizer.eos_token_id:
        # GGUF metadata can disagree with the model config; the config wins.
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    return tokenizer


def copy_tokenizer(source: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Copy the tokenizer of an HF directory, or export the one embedded in a GGUF file."""
    src = resolve_source(source)
    out = Path(out_dir)
    if src.suffix == ".gguf":
        tokenizer = _gguf_tokenizer(src)
        tokenizer.save_pretrained(out)
        slow = out / "tokenizer.model"
        if slow.is_file() and slow.read_bytes()[:4] == b"GGUF":
            slow.unlink()  # the fast tokenizer "saves" its GGUF source as a slow vocab file
        return
    copied = [n for n in TOKENIZER_FILES if (src / n).is_file()]
    for name in copied:
        shutil.copy2(src / name, out / name)
    if not copied:
        log.warning("source %s has no tokenizer files; saving weights without a tokenizer", src)
