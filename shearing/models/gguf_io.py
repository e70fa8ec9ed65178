"""GGUF files out, with the `gguf` package: a model this project wrote, as llama.cpp's
architecture for its family (`GGUF_ARCHS`), with its tokenizer. Above model loading
(`hf_io`); reading GGUF is `gguf_read`, below it.

    shearing gguf MODEL_DIR OUT.gguf [--type f32|f16|bf16|q8_0]
    shearing gguf MODEL_DIR OUT.gguf [--type ...]      (also: convert_to_hf.sh ... --gguf TYPE)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from shearing.cli import Stages, run
from shearing.files import write_atomic
from shearing.models.config import Act
from shearing.models.gguf_read import CONTROL
from shearing.models.hf_io import fused, load_model

#: `--gguf` types: the gguf package's tensor types. Norm weights (1-D) stay float32, as
#: llama.cpp keeps them; a q8_0 matrix whose rows are not whole 32-value blocks is float16.
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
#: File types (`general.file_type`, llama.cpp's LLAMA_FTYPE numbers) of the types above.
_FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}


@dataclass(frozen=True)
class GGUFArch:
    """How one family is written as one of llama.cpp's architectures: what the
    architecture's code (llama.cpp 0.3.36's `src/models/*.cpp`) fixes that a pruned model
    may not match."""

    #: The `gguf.MODEL_ARCH` member (`general.architecture` is its lower-case name).
    arch: str
    #: q/k rows (and biases) stored in interleaved rotary pairs: the architectures llama.cpp
    #: rotates as LLAMA_ROPE_TYPE_NORM (llama, granite, smollm3; its converter reorders
    #: them so). The others rotate halves, Hugging Face's order, and store rows as they are.
    interleaved: bool = False
    #: The biases the architecture holds: "qkv", "o_proj", "FFN".
    biases: tuple[str, ...] = ()
    #: The one FFN activation the architecture runs (Gemma: tanh-approximated GELU).
    activation: str = Act.SILU.value
    #: llama.cpp runs the file's sliding window on the layers the file marks (Gemma 2/3);
    #: otherwise it attends to every position.
    windows: bool = False
    #: Sliding layers take their rope theta from `rope.freq_base_swa` (Gemma 3 and 4).
    swa_rope: bool = False
    #: The RoPE kinds the full-attention layers may use (Gemma 3: linear scaling too;
    #: Gemma 4: "proportional", written as the `rope_freqs` factors).
    full_rope: tuple[str, ...] = ("default",)
    #: The architecture reads `rope_freqs`, frequency factors for the full layers' RoPE
    #: (llama: Llama 3.1's scaling; gemma4: its proportional RoPE, always written).
    rope_freqs: bool = False
    #: Full and sliding layers have their own head width (`key_length` / `key_length_swa`,
    #: rope dimension counts likewise), the full layers' rotated share as `rope_freqs`, and
    #: the keys its loader requires: per-layer input width 0, no shared key/value layers,
    #: a `layer_output_scale` per layer (Gemma 4).
    head_widths: bool = False
    #: Every n-th layer is NoPE, fixed by the architecture (SmolLM3: 4); 0: none.
    nope_every: int = 0
    #: The query width must be the hidden size: the head width is hidden / heads (OLMo 2).
    q_is_hidden: bool = False
    #: The LM head is the embedding whatever the file holds (Gemma 2).
    tied_only: bool = False
    #: The file holds the LM head even when tied (OLMo 2 requires it).
    head_required: bool = False
    #: Soft-caps: "both" (Gemma 2: always applied, so both must be set), "final" (Gemma 3:
    #: the final one where set, no attention one), "" none.
    softcaps: str = ""
    #: llama.cpp sets the attention scale itself, `(hidden // heads) ** -0.5` for a model
    #: of this many layers, else `head_dim ** -0.5` (Gemma 2: 46, Gemma 3: 62, its 27B
    #: models); the model's own scale is folded into the queries. 0: the scale is the
    #: model's (`head_dim ** -0.5`, or Granite's `attention_multiplier`, written).
    gemma_scale_layers: int = 0
    #: Granite's four multipliers, written as llama.cpp's scales.
    multipliers: bool = False
    #: Queries scaled by `1 + beta * log(1 + floor(position / original))` (Ministral 3):
    #: `attention.temperature_scale` = beta, `rope.scaling.original_context_length`.
    temperature: bool = False


LLAMA_ARCH = GGUFArch(
    "LLAMA",
    interleaved=True,
    biases=("qkv", "o_proj", "FFN"),
    full_rope=("default", "llama3"),
    rope_freqs=True,
)
GEMMA_ARCH = dict(activation=Act.GELU_TANH.value, windows=True)

#: Families with a GGUF architecture here, by `model_type`; llama.cpp's converter writes
#: mistral and internlm3 as `llama`. Architectures without `windows` attend to every
#: position (measured for phi3, whose files can carry `phi3.attention.sliding_window`:
#: llama.cpp 0.3.36 gives the logits of the model without its window), so a window shorter
#: than the context is refused there.
GGUF_ARCHS = {
    "llama": LLAMA_ARCH,
    "mistral": LLAMA_ARCH,
    "internlm3": LLAMA_ARCH,
    "qwen2": GGUFArch("QWEN2", biases=("qkv",)),
    "qwen3": GGUFArch("QWEN3"),
    "phi3": GGUFArch("PHI3"),
    "gemma2": GGUFArch(
        "GEMMA2", **GEMMA_ARCH, tied_only=True, softcaps="both", gemma_scale_layers=46
    ),  # fmt: skip
    "gemma3_text": GGUFArch(
        "GEMMA3",
        **GEMMA_ARCH,
        swa_rope=True,
        softcaps="final",
        full_rope=("default", "linear"),
        gemma_scale_layers=62,
    ),
    "gemma4_text": GGUFArch(
        "GEMMA4",
        **GEMMA_ARCH,
        swa_rope=True,
        softcaps="final",
        full_rope=("default", "proportional"),
        rope_freqs=True,
        head_widths=True,
    ),  # fmt: skip
    "olmo2": GGUFArch("OLMO2", q_is_hidden=True, head_required=True),
    "granite": GGUFArch(
        "GRANITE", interleaved=True, biases=("qkv", "o_proj", "FFN"), multipliers=True
    ),
    "smollm3": GGUFArch("SMOLLM3", interleaved=True, nope_every=4),
    "ministral3": GGUFArch("MISTRAL3", interleaved=True, temperature=True),
}


#: The rotated projections' parameters, whose rows are reordered for `interleaved` files.
ROTARY_KEYS = ("q_proj.weight", "k_proj.weight", "q_proj.bias", "k_proj.bias")


class GGUFExportError(ValueError):
    """A model or tokenizer that its GGUF architecture cannot hold."""


def rotary_interleaved(weight, heads: int):
    """q/k projection rows from Hugging Face's rotate-half order (each head's first half,
    then its second half) to the interleaved pairs GGUF llama files store (llama.cpp's
    converter does the same; transformers' GGUF reader undoes it). A bias (1-D) likewise."""
    rows = weight.shape[0]
    pairs = weight.reshape(heads, 2, rows // heads // 2, -1).swapaxes(1, 2)
    return pairs.reshape(weight.shape)


def gguf_arch(shape, where: str) -> GGUFArch:
    """The GGUF architecture `shape` is written as, after checking that it holds the model.

    Raises:
        GGUFExportError: one line naming what the architecture lacks.
    """
    spec = GGUF_ARCHS.get(shape.model_type)
    if spec is None:
        raise GGUFExportError(
            f"{where} is a {shape.model_type} model; GGUF export writes "
            f"{', '.join(GGUF_ARCHS)} (llama.cpp's convert_hf_to_gguf.py handles the others)"
        )
    arch = f"GGUF's {spec.arch.lower()} architecture"
    if shape.hidden_act != spec.activation:
        raise GGUFExportError(
            f"{where} has a {shape.hidden_act} FFN; {arch} (llama.cpp, transformers' GGUF "
            f"reader) has only {spec.activation}, so it would run as another model"
        )
    biases = {"qkv": shape.qkv_bias, "o_proj": shape.o_bias, "FFN": shape.mlp_bias}
    extra = [name for name, on in biases.items() if on and name not in spec.biases]
    if extra:
        raise GGUFExportError(
            f"{where} has {' and '.join(extra)} biases, which {arch} does not hold"
        )
    _check_rope(shape, spec, where, arch)
    _check_windows(shape, spec, where, arch)
    layers = range(shape.num_hidden_layers)
    heads, hd, d = shape.num_attention_heads, shape.head_dim, shape.hidden_size
    if spec.q_is_hidden and heads * hd != d:
        raise GGUFExportError(
            f"{where} has {heads} heads of width {hd} over a hidden size of {d}; {arch} "
            "(llama.cpp) takes the head width as hidden / heads, so heads x width must equal "
            "the hidden size (prune with a target that keeps them equal)"
        )
    widths = {(shape.layer_window(i) is None, shape.layer_head_dim(i)) for i in layers}
    full_widths = {w for full, w in widths if full}
    sliding_ok = all(w == hd for full, w in widths if not full)
    full_ok = len(full_widths) <= 1 if spec.head_widths else full_widths <= {hd}
    if not (sliding_ok and full_ok):
        raise GGUFExportError(
            f"{where} has head widths {sorted({w for _, w in widths})} across its layers; "
            f"{arch} (llama.cpp) has "
            + ("one for sliding and one for full layers" if spec.head_widths else "one")
        )
    if spec.tied_only and not shape.tie_word_embeddings:
        raise GGUFExportError(
            f"{where} has an LM head of its own; {arch} (llama.cpp) always uses the "
            "embedding as the LM head"
        )
    caps = {k: shape.setting(k) for k in ("attn_logit_softcapping", "final_logit_softcapping")}
    needed = list(caps) if spec.softcaps == "both" else []
    allowed = needed or (["final_logit_softcapping"] if spec.softcaps == "final" else [])
    for key, value in caps.items():
        if (value is None and key in needed) or (value is not None and key not in allowed):
            raise GGUFExportError(
                f"{where} has {key}={value}; {arch} (llama.cpp) "
                f"{'always applies it' if key in needed else 'has none'}, so it would run "
                "as another model"
            )
    return spec


def _check_rope(shape, spec: GGUFArch, where: str, arch: str) -> None:
    """Plain RoPE (or the full layers' `full_rope` kinds), one setting per kind of layer,
    and NoPE exactly where the architecture puts it."""
    layers = range(shape.num_hidden_layers)
    nope = [i for i in layers if shape.layer_rope(i) is None]
    fixed = [i for i in layers if spec.nope_every and (i + 1) % spec.nope_every == 0]
    if nope != fixed:
        raise GGUFExportError(
            f"{where} has NoPE on layers {nope or 'none'}; {arch} (llama.cpp) has it on "
            f"{'layers ' + str(fixed) if fixed else 'none'}, so it would run as another model"
        )
    seen: dict[bool, dict] = {}
    for layer in layers:
        rope = shape.layer_rope(layer)
        if rope is None:
            continue
        sliding = spec.swa_rope and shape.layer_window(layer) is not None
        kinds = spec.full_rope if not sliding else ("default",)
        first = seen.setdefault(sliding, rope)
        partial = spec.head_widths and not sliding and rope.get("rope_type") == "default"
        if (
            rope.get("rope_type") not in kinds
            or rope != first
            or (partial and rope.get("partial_rotary_factor", 1.0) != 1.0)
        ):
            raise GGUFExportError(
                f"{where} layer {layer} uses RoPE {rope}; {arch} is written here with "
                f"{' or '.join(kinds)} RoPE, one setting for every "
                f"{'sliding / full ' if spec.swa_rope else ''}layer (llama.cpp's "
                "convert_hf_to_gguf.py handles the others)"
            )


def _check_windows(shape, spec: GGUFArch, where: str, arch: str) -> None:
    windows = {shape.layer_window(i) for i in range(shape.num_hidden_layers)}
    short = {w for w in windows if w is not None and w < shape.max_position_embeddings}
    if spec.windows and len(windows - {None}) > 1:
        raise GGUFExportError(
            f"{where} has sliding windows of {sorted(windows - {None})} positions; {arch} "
            "(llama.cpp) has one window for every sliding layer"
        )
    if short and not spec.windows:
        raise GGUFExportError(
            f"{where} has sliding windows of {min(short)} positions on "
            f"{'some' if None in windows else 'every'} layer within a context of "
            f"{shape.max_position_embeddings}; {arch} here attends to "
            "every position, so it would run as another model past the window"
        )


def write_gguf(model_dir: str | Path, out: str | Path, gguf_type: str = "f16") -> Path:
    """Write the Hugging Face model in `model_dir` (a model this project wrote, of a family
    in `GGUF_ARCHS`) as one GGUF file of that family's llama.cpp architecture with its
    tokenizer, staged and renamed into place.

    Raises:
        GGUFExportError: a family, activation, bias, RoPE, window or tokenizer that the
            architecture cannot hold.
    """
    import gguf
    import numpy as np

    if gguf_type not in GGUF_TYPES:
        raise GGUFExportError(f"--gguf {gguf_type!r} is not valid; use {', '.join(GGUF_TYPES)}")
    model_dir, out = Path(model_dir), Path(out)
    model = load_model(model_dir)
    shape = model.shape
    spec = gguf_arch(shape, str(model_dir))
    tokenizer = _tokenizer_metadata(model_dir)
    arch = gguf.MODEL_ARCH[spec.arch]
    names = gguf.get_tensor_name_map(arch, shape.num_hidden_layers)

    def write(tmp: Path) -> None:
        w = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
        w.add_name(model_dir.name)
        _write_hparams(w, shape, spec)
        w.add_file_type(_FILE_TYPES[gguf_type])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value in tokenizer.items():
            getattr(w, f"add_{key}")(value)
        for name, tensor in _gguf_tensors(shape, spec, model.state_dict(), names).items():
            data = tensor.detach().float().numpy()
            kind = _tensor_type(gguf_type, data)
            if kind == gguf.GGMLQuantizationType.F32:
                w.add_tensor(name, data.astype(np.float32))
            elif kind == gguf.GGMLQuantizationType.F16:
                w.add_tensor(name, data.astype(np.float16))
            else:
                w.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    write_atomic(out, write)
    return out


def _write_hparams(w, shape, spec: GGUFArch) -> None:
    """The architecture's hyperparameter keys for `shape`."""
    from gguf import RopeScalingType

    layers = range(shape.num_hidden_layers)
    w.add_context_length(shape.max_position_embeddings)
    w.add_embedding_length(shape.hidden_size)
    w.add_block_count(shape.num_hidden_layers)
    w.add_feed_forward_length(shape.intermediate_size)
    w.add_head_count(shape.num_attention_heads)
    w.add_head_count_kv(shape.num_key_value_heads)
    w.add_layer_norm_rms_eps(float(shape.rms_norm_eps))
    w.add_vocab_size(shape.vocab_size)
    ropes = [(shape.layer_window(i), shape.layer_rope(i)) for i in layers]
    full = next((r for win, r in ropes if r and not (spec.swa_rope and win)), None)
    full = full or next(r for _, r in ropes if r)
    if spec.head_widths:
        full_width = _full_head_width(shape)
        w.add_key_length(full_width)
        w.add_value_length(full_width)
        w.add_key_length_swa(shape.head_dim)
        w.add_value_length_swa(shape.head_dim)
        w.add_rope_dimension_count(full_width)  # its unrotated share: `rope_freqs`
        swa = next((r for win, r in ropes if r and win), full)
        w.add_rope_dimension_count_swa(int(shape.head_dim * swa.get("partial_rotary_factor", 1.0)))
        w.add_embedding_length_per_layer_input(0)
        w.add_shared_kv_layers(0)
    else:
        w.add_key_length(shape.head_dim)
        w.add_value_length(shape.head_dim)
        w.add_rope_dimension_count(int(shape.head_dim * full.get("partial_rotary_factor", 1.0)))
    w.add_rope_freq_base(float(full["rope_theta"]))
    if full.get("rope_type") == "linear":
        w.add_rope_scaling_type(RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(full["factor"]))
    sliding = next((r for win, r in ropes if r and win and spec.swa_rope), None)
    if sliding is not None:
        w.add_rope_freq_base_swa(float(sliding["rope_theta"]))
    window = next((win for win, _ in ropes if win is not None), None)
    if spec.head_widths and window is None:  # its loader requires both keys
        window = shape.setting("sliding_window", shape.max_position_embeddings)
    if spec.windows and window is not None:
        w.add_sliding_window(window)
        w.add_sliding_window_pattern([win is not None for win, _ in ropes])
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if spec.softcaps and shape.setting(key) is not None:
            getattr(w, f"add_{key}")(float(shape.setting(key)))
    if spec.softcaps == "final" and shape.setting("final_logit_softcapping") is None:
        w.add_final_logit_softcapping(0.0)  # none (llama.cpp's Gemma 4 would cap at 30)
    if spec.temperature and full.get("llama_4_scaling_beta") is not None:
        w.add_attn_temperature_scale(float(full["llama_4_scaling_beta"]))
        w.add_rope_scaling_orig_ctx_len(int(full["original_max_position_embeddings"]))
    if spec.multipliers:
        w.add_embedding_scale(float(shape.setting("embedding_multiplier", 1.0)))
        w.add_residual_scale(float(shape.setting("residual_multiplier", 1.0)))
        w.add_attention_scale(shape.attention_scale(0))
        w.add_logit_scale(float(shape.setting("logits_scaling", 1.0)))


def query_fold(shape, spec: GGUFArch) -> float:
    """The factor the queries take so that llama.cpp's own attention scale (Gemma) gives
    the model's: the model's scale over llama.cpp's; 1 where the scale is the model's."""
    if not spec.gemma_scale_layers:
        return 1.0
    if shape.num_hidden_layers == spec.gemma_scale_layers:
        theirs = (shape.hidden_size // shape.num_attention_heads) ** -0.5
    else:
        theirs = shape.head_dim**-0.5
    return shape.attention_scale(0) / theirs


def _full_layer(shape) -> int | None:
    """The first full-attention layer (None: every layer slides)."""
    layers = range(shape.num_hidden_layers)
    return next((i for i in layers if shape.layer_window(i) is None), None)


def _full_head_width(shape) -> int:
    """The head width of the full-attention layers (the sliding ones': `head_dim`)."""
    full = _full_layer(shape)
    return shape.head_dim if full is None else shape.layer_head_dim(full)


def _rope_factors(shape) -> Tensor:
    """`rope_freqs` of the full layers: what llama.cpp divides each plain rotary frequency
    (`theta ** (-2i / width)`) by to get the model's own (Llama 3.1's scaled frequencies,
    Gemma 4's proportional ones); 1e30 where the model's frequency is 0 (a pair that does
    not rotate, as llama.cpp's converter writes it)."""
    from shearing.models.decoder import RotaryEmbedding

    width = _full_head_width(shape)
    rope = shape.layer_rope(_full_layer(shape) or 0)
    ours = RotaryEmbedding(rope, width).inv_freq.double()
    plain = RotaryEmbedding({"rope_type": "default", "rope_theta": rope["rope_theta"]}, width)
    factors = plain.inv_freq.double() / ours.clamp(min=1e-300)
    return torch.where(ours > 0, factors, torch.full_like(ours, 1e30)).float()


def _gguf_tensors(shape, spec: GGUFArch, state: dict, names) -> dict:
    """The model's tensors as the architecture stores them, by GGUF name: fused
    where the family's checkpoints fuse them, q/k rows interleaved (llama), norm weights
    as `1 + w` where the family stores `w` (Gemma), the attention-scale fold on the
    queries (on q_norm where the queries are normed after projection), the tied LM head
    dropped unless the architecture requires it, `rope_freqs` where it has one.

    Raises:
        GGUFExportError: a tensor the architecture has no name for.
    """
    state = dict(fused(shape, state))
    if shape.tie_word_embeddings and not spec.head_required:
        state.pop("lm_head.weight", None)
    fold = query_fold(shape, spec)
    for key in list(state):
        value = state[key]
        if spec.interleaved and key.endswith(ROTARY_KEYS):
            heads = shape.num_attention_heads if "q_proj" in key else shape.num_key_value_heads
            value = rotary_interleaved(value, heads)
        if shape.family.norm_offset and key.endswith("norm.weight"):
            value = 1 + value
        if fold != 1.0 and key.endswith(
            "q_norm.weight" if shape.family.qk_norm else ("q_proj.weight", "q_proj.bias")
        ):
            value = value * fold
        state[key] = value
    out = {}
    for key, value in state.items():
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFExportError(f"{key} has no tensor in GGUF's {spec.arch.lower()} architecture")
        out[name if name.endswith((".weight", ".bias")) else f"{name}.weight"] = value
    rope = shape.layer_rope(_full_layer(shape) or 0) or {}
    if spec.rope_freqs and (spec.head_widths or rope.get("rope_type") == "llama3"):
        out["rope_freqs.weight"] = _rope_factors(shape)
    return out


def _tensor_type(gguf_type: str, data):
    from gguf import GGMLQuantizationType as Q

    if data.ndim == 1 or gguf_type == "f32":
        return Q.F32
    if gguf_type == "q8_0" and data.shape[-1] % 32:
        return Q.F16
    return {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}[gguf_type]


def _tokenizer_metadata(model_dir: Path) -> dict:
    """GGUF tokenizer keys (GGUFWriter `add_*` names) for the model's tokenizer: a
    byte-level BPE (`gpt2`), or a SentencePiece model (`llama`) from its tokenizer.model
    or, where only tokenizer.json holds it, from that."""
    import json

    spec_path, sp_path = model_dir / "tokenizer.json", model_dir / "tokenizer.model"
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else None
    bpe = spec is not None and spec["model"]["type"] == "BPE"
    if bpe and not spec["model"].get("byte_fallback"):
        meta = _byte_level_metadata(spec, model_dir)
    elif sp_path.is_file():
        meta = _sentencepiece_metadata(sp_path)
    elif bpe:  # a SentencePiece BPE as transformers 5 saves it: tokenizer.json only
        meta = _sentencepiece_bpe_metadata(spec)
    else:
        raise GGUFExportError(
            f"{model_dir} has neither a BPE tokenizer.json nor a SentencePiece "
            "tokenizer.model to write into the GGUF"
        )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    for key, token_id in (
        ("bos_token_id", tok.bos_token_id),
        ("eos_token_id", tok.eos_token_id),
        ("unk_token_id", tok.unk_token_id),
        ("pad_token_id", tok.pad_token_id),
    ):
        if token_id is not None:
            meta[key] = int(token_id)  # fmt: skip
    meta["add_bos_token"], meta["add_eos_token"] = added_specials(tok)
    if tok.chat_template:
        meta["chat_template"] = tok.chat_template
    return meta


def added_specials(tokenizer) -> tuple[bool, bool]:
    """Whether the tokenizer adds its BOS first and its EOS last to an encoded text: what
    it does, not what a file says (transformers 5 saves no `add_bos_token`)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    ids = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    adds_bos = bos is not None and ids[:1] == [bos] and plain[:1] != [bos]
    adds_eos = eos is not None and ids[-1:] == [eos] and plain[-1:] != [eos]
    return adds_bos, adds_eos


def _bpe_vocabulary(spec: dict, where: str) -> tuple[dict, list[str], set[int], list[str]]:
    """A BPE tokenizer.json's vocabulary with its added tokens: (token -> id, the tokens in
    id order, the ids of special tokens, the merges as "a b" strings).

    Raises:
        GGUFExportError: an id that no token has (`where` names the file).
    """
    vocab = dict(spec["model"]["vocab"])
    special = set()
    for added in spec.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["id"])
    tokens = [None] * (max(vocab.values()) + 1)
    for text, i in vocab.items():
        tokens[i] = text
    if any(t is None for t in tokens):
        raise GGUFExportError(f"{where} leaves token ids without a token")
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    return vocab, tokens, special, merges


def _sentencepiece_bpe_metadata(spec: dict) -> dict:
    """GGUF's `llama` vocabulary from a byte-fallback BPE tokenizer.json: each token's
    score is minus the rank of the merge that makes it (what a SentencePiece BPE model's
    scores are, and the order llama.cpp merges by), 0 for tokens no merge makes; the
    merges themselves are written too (transformers' GGUF reader uses them)."""
    vocab, tokens, special, merges = _bpe_vocabulary(spec, "tokenizer.json")
    unknown = spec["model"].get("unk_token")
    scores = [0.0] * len(tokens)
    for rank, merge in enumerate(merges):
        made = vocab.get(merge.replace(" ", "", 1))
        if made is not None and scores[made] == 0.0:
            scores[made] = -float(rank + 1)
    types = []
    for i, text in enumerate(tokens):
        byte = len(text) == 6 and text.startswith("<0x") and text.endswith(">")
        types.append(2 if text == unknown else CONTROL if i in special else 6 if byte else 1)
    return {"tokenizer_model": "llama", "tokenizer_pre": "default", "token_list": tokens,
            "token_scores": scores, "token_types": types, "token_merges": merges}  # fmt: skip


def _byte_level_metadata(spec: dict, model_dir: Path) -> dict:
    pre = _pre_name(spec.get("pre_tokenizer"))
    if pre is None:
        raise GGUFExportError(
            f"{model_dir}/tokenizer.json has a pre-tokenizer this exporter does not name "
            f"({json_brief(spec.get('pre_tokenizer'))}); use llama.cpp's convert_hf_to_gguf.py"
        )
    _, tokens, special, merges = _bpe_vocabulary(spec, f"{model_dir}/tokenizer.json")
    types = [CONTROL if i in special else 1 for i in range(len(tokens))]
    return {"tokenizer_model": "gpt2", "tokenizer_pre": pre, "token_list": tokens,
            "token_types": types, "token_merges": merges}  # fmt: skip


def _pre_name(pre: dict | None) -> str | None:
    """The `tokenizer.ggml.pre` name of a byte-level pre-tokenizer (None: not one of ours)."""
    steps = pre.get("pretokenizers", [pre]) if pre else []
    if not steps or steps[-1].get("type") != "ByteLevel" or not steps[-1].get("use_regex"):
        return None
    isolated = tuple(s.get("pattern", {}).get("Regex") for s in steps[:-1]
                     if s.get("type") == "Split" and s.get("behavior") == "Isolated")  # fmt: skip
    if len(isolated) != len(steps) - 1:
        return None
    return {(): "gpt-2", (r"\p{N}",): "smollm"}.get(isolated)


def _sentencepiece_metadata(path: Path) -> dict:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        types.append(2 if sp.is_unknown(i) else CONTROL if sp.is_control(i)
                     else 5 if sp.is_unused(i) else 6 if sp.is_byte(i) else 1)  # fmt: skip
    return {"tokenizer_model": "llama", "tokenizer_pre": "default", "token_list": tokens,
            "token_scores": scores, "token_types": types}  # fmt: skip


def json_brief(value) -> str:
    import json

    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shearing gguf",
        description="Write a Hugging Face model this project made as one GGUF file "
        f"({', '.join(GGUF_ARCHS)}, as llama.cpp's architecture for the family, with its "
        "tokenizer) for llama.cpp and other GGUF readers.",
        epilog="output: the .gguf file (the tensors in --type, the model's keys, its tokenizer).",
    )
    parser.add_argument("model_dir", help="Hugging Face model directory (convert/oneshot output)")
    parser.add_argument("out", help="the .gguf file to write (replaced whole, never in part)")
    parser.add_argument("--type", default="f16", choices=GGUF_TYPES, help="tensor type")
    args = parser.parse_args(argv)

    def body() -> None:
        stage = Stages("gguf")
        stage(f"writing {args.out} ({args.type}) from {args.model_dir}")
        print(write_gguf(args.model_dir, args.out, args.type))
        stage("done")

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
