"""GGUF metadata in, GGUF files out, with the `gguf` package.

    python -m shearing.models.gguf_io MODEL_DIR OUT.gguf [--type f32|f16|bf16|q8_0]
    shearing gguf MODEL_DIR OUT.gguf [--type ...]      (also: convert_to_hf.sh ... --gguf TYPE)

Reading: `read_fields` gives a GGUF's key/value metadata as Python values. For a
byte-level BPE vocabulary (`tokenizer.ggml.model` "gpt2": SmolLM2, Llama 3, Qwen, ...)
`byte_level_tokenizer` builds the Hugging Face tokenizer the GGUF describes: its merges,
the pre-tokenizer its `tokenizer.ggml.pre` names (llama.cpp's table of pre-tokenizers),
a byte-level decoder, its control tokens as special tokens and BOS only if
`tokenizer.ggml.add_bos_token` says so. transformers 4's own GGUF conversion gave such
vocabularies a LlamaTokenizer class with byte fallback and a BOS added by default, which
llama.cpp's converter then read back as a SentencePiece (`llama`) vocabulary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: GPT-2's byte-level split (the `use_regex` of tokenizers' ByteLevel pre-tokenizer).
#: `tokenizer.ggml.pre` values whose pre-tokenizer is GPT-2's split, after isolating
#: these patterns (llama.cpp's table: starcoder, smollm, ... isolate every digit first).
BYTE_LEVEL_PRE = {
    "gpt2": (),
    "mpt": (),
    "olmo": (),
    "jais": (),
    "starcoder": (r"\p{N}",),
    "refact": (r"\p{N}",),
    "command-r": (r"\p{N}",),
    "smollm": (r"\p{N}",),
    "codeshell": (r"\p{N}",),
    "exaone": (r"\p{N}",),
    "minerva": (r"\p{N}",),
}
#: GGUF token types (`tokenizer.ggml.token_type`).
CONTROL, USER_DEFINED = 3, 4


def read_fields(path: str | Path, prefix: str = "") -> dict:
    """The GGUF's metadata whose keys start with `prefix`: strings, numbers, booleans and
    lists of them, as Python values.

    Raises:
        ValueError: the file is not a readable GGUF.
    """
    from gguf import GGUFReader, GGUFValueType

    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # gguf raises ValueError, struct.error, IndexError, ...
        raise ValueError(
            f"GGUF file {str(path)!r} is truncated or corrupt ({type(err).__name__})"
        ) from None
    out = {}
    for key, field in reader.fields.items():
        if not key.startswith(prefix) or not field.types:
            continue
        text = field.types[-1] == GGUFValueType.STRING
        values = [field.parts[i] for i in field.data]
        values = [bytes(v).decode("utf-8") if text else v.tolist()[0] for v in values]
        out[key] = values if field.types[0] == GGUFValueType.ARRAY else values[0]
    return out


def is_byte_level(fields: dict) -> bool:
    """Whether `byte_level_tokenizer` builds this GGUF's tokenizer."""
    return (
        fields.get("tokenizer.ggml.model") == "gpt2"
        and fields.get("tokenizer.ggml.pre") in BYTE_LEVEL_PRE
    )


def byte_level_tokenizer(fields: dict):
    """The tokenizers-backed `GPT2Tokenizer` a byte-level BPE GGUF describes (module doc)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )
    from transformers import GPT2Tokenizer

    tokens = fields["tokenizer.ggml.tokens"]
    types = fields.get("tokenizer.ggml.token_type", [1] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
    bpe = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    isolate = [
        pre_tokenizers.Split(Regex(p), behavior="isolated")
        for p in BYTE_LEVEL_PRE[fields["tokenizer.ggml.pre"]]
    ]
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [*isolate, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False)
         for i, t in enumerate(types) if t == CONTROL]
    )  # fmt: skip
    bpe.add_tokens(
        [AddedToken(tokens[i], normalized=False) for i, t in enumerate(types) if t == USER_DEFINED]
    )

    def token(key: str) -> str | None:
        i = fields.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    bos = token("bos")
    add_bos = bool(fields.get("tokenizer.ggml.add_bos_token", False)) and bos is not None
    byte_level = processors.ByteLevel(trim_offsets=False)
    if add_bos:
        bos_id = tokens.index(bos)
        template = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
        bpe.post_processor = processors.Sequence([byte_level, template])
    else:
        bpe.post_processor = byte_level
    tokenizer = GPT2Tokenizer(
        tokenizer_object=bpe,
        bos_token=bos,
        eos_token=token("eos"),
        unk_token=token("unknown"),
        pad_token=token("padding"),
        add_bos_token=add_bos,
    )
    template = fields.get("tokenizer.chat_template")
    if template:
        tokenizer.chat_template = template
    return tokenizer


# --- writing ---------------------------------------------------------------------------

#: `--gguf` types: the gguf package's tensor types. Norm weights (1-D) stay float32, as
#: llama.cpp keeps them; a q8_0 matrix whose rows are not whole 32-value blocks is float16.
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
#: Families written as GGUF's llama architecture (same tensors, plain RoPE, no windows).
GGUF_FAMILIES = ("llama",)
#: File types (`general.file_type`, llama.cpp's LLAMA_FTYPE numbers) of the types above.
_FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}


class GGUFExportError(ValueError):
    """A model or tokenizer that the GGUF llama architecture cannot hold."""


def rotary_interleaved(weight, heads: int):
    """q/k projection rows from Hugging Face's rotate-half order (each head's first half,
    then its second half) to the interleaved pairs GGUF llama files store (llama.cpp's
    converter does the same; transformers' GGUF reader undoes it)."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_gguf(model_dir: str | Path, out: str | Path, gguf_type: str = "f16") -> Path:
    """Write the Hugging Face model in `model_dir` (a stock SiLU LLaMA this project wrote)
    as one GGUF file (llama architecture) with its tokenizer, staged and renamed into place.

    Raises:
        GGUFExportError: an activation, RoPE scaling or tokenizer GGUF cannot hold.
    """
    import gguf
    import numpy as np

    from shearing.files import write_atomic
    from shearing.models.hf_io import load_model

    if gguf_type not in GGUF_TYPES:
        raise GGUFExportError(f"--gguf {gguf_type!r} is not valid; use {', '.join(GGUF_TYPES)}")
    model_dir, out = Path(model_dir), Path(out)
    model = load_model(model_dir)
    shape = model.shape
    if shape.model_type not in GGUF_FAMILIES:
        raise GGUFExportError(
            f"{model_dir} is a {shape.model_type} model; GGUF export writes the llama "
            f"architecture, for {', '.join(GGUF_FAMILIES)} (llama.cpp's convert_hf_to_gguf.py "
            "handles the others)"
        )
    if shape.hidden_act != "silu":
        raise GGUFExportError(
            f"{model_dir} has a {shape.hidden_act} FFN; GGUF's llama architecture (llama.cpp, "
            "transformers' GGUF reader) has only SiLU, so it would run as another model"
        )
    rope = shape.layer_rope(0)
    if rope.get("rope_type") != "default":
        raise GGUFExportError(
            f"{model_dir} uses RoPE scaling {rope}; only plain RoPE is "
            "written to GGUF here (llama.cpp's convert_hf_to_gguf.py handles the others)"
        )
    tokenizer = _tokenizer_metadata(model_dir)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, shape.num_hidden_layers)

    def write(tmp: Path) -> None:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_name(model_dir.name)
        w.add_context_length(shape.max_position_embeddings)
        w.add_embedding_length(shape.hidden_size)
        w.add_block_count(shape.num_hidden_layers)
        w.add_feed_forward_length(shape.intermediate_size)
        w.add_head_count(shape.num_attention_heads)
        w.add_head_count_kv(shape.num_key_value_heads)
        w.add_key_length(shape.head_dim)
        w.add_value_length(shape.head_dim)
        w.add_rope_dimension_count(shape.head_dim)
        w.add_rope_freq_base(float(rope["rope_theta"]))
        w.add_layer_norm_rms_eps(float(shape.rms_norm_eps))
        w.add_vocab_size(shape.vocab_size)
        w.add_file_type(_FILE_TYPES[gguf_type])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value in tokenizer.items():
            getattr(w, f"add_{key}")(value)
        state = model.state_dict()
        if shape.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        for key, tensor in state.items():
            name = names.get_name(key, try_suffixes=(".weight",))
            if name is None:
                raise GGUFExportError(f"{key} has no GGUF llama tensor name")
            data = tensor.detach().float()
            if key.endswith("q_proj.weight"):
                data = rotary_interleaved(data, shape.num_attention_heads)
            elif key.endswith("k_proj.weight"):
                data = rotary_interleaved(data, shape.num_key_value_heads)
            data = data.numpy()
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


def _sentencepiece_bpe_metadata(spec: dict) -> dict:
    """GGUF's `llama` vocabulary from a byte-fallback BPE tokenizer.json: each token's
    score is minus the rank of the merge that makes it (what a SentencePiece BPE model's
    scores are, and the order llama.cpp merges by), 0 for tokens no merge makes; the
    merges themselves are written too (transformers' GGUF reader uses them)."""
    vocab = dict(spec["model"]["vocab"])
    special, unknown = set(), spec["model"].get("unk_token")
    for added in spec.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["id"])
    tokens = [None] * (max(vocab.values()) + 1)
    for text, i in vocab.items():
        tokens[i] = text
    if any(t is None for t in tokens):
        raise GGUFExportError("tokenizer.json leaves token ids without a token")
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
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
        raise GGUFExportError(f"{model_dir}/tokenizer.json leaves token ids without a token")
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
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
    return {(): "gpt2", (r"\p{N}",): "smollm"}.get(isolated)


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
    from shearing.cli import Stages, run

    parser = argparse.ArgumentParser(
        prog="python -m shearing.models.gguf_io",
        description="Write a Hugging Face model this project made as one GGUF file "
        "(llama architecture, with its tokenizer) for llama.cpp and other GGUF readers.",
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
