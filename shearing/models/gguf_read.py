"""GGUF metadata in, with the `gguf` package: below model loading (`hf_io` reads GGUF
sources with it); writing is `gguf_io`, above model loading.

`read_fields` gives a GGUF's key/value metadata as Python values. For a byte-level BPE
vocabulary (`tokenizer.ggml.model` "gpt2": SmolLM2, Llama 3, Qwen, ...)
`byte_level_tokenizer` builds the Hugging Face tokenizer the GGUF describes: its merges,
the pre-tokenizer its `tokenizer.ggml.pre` names (llama.cpp's table of pre-tokenizers),
a byte-level decoder, its control tokens as special tokens and BOS only if
`tokenizer.ggml.add_bos_token` says so. transformers 4's own GGUF conversion gave such
vocabularies a LlamaTokenizer class with byte fallback and a BOS added by default, which
llama.cpp's converter then read back as a SentencePiece (`llama`) vocabulary.
"""

from __future__ import annotations

from pathlib import Path

#: GPT-2's byte-level split (the `use_regex` of tokenizers' ByteLevel pre-tokenizer).
#: `tokenizer.ggml.pre` values whose pre-tokenizer is GPT-2's split, after isolating
#: these patterns (llama.cpp's table: starcoder, smollm, ... isolate every digit first).
BYTE_LEVEL_PRE = {
    "gpt-2": (),
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
