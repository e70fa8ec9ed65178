"""The tokenizer written for a GGUF source is the one the GGUF describes: checked against
an independent byte-level BPE written here from the GGUF's own vocabulary and merges."""

import argparse
import json
import math
import textwrap

import pytest
import regex
import transformers
from gguf import GGUFReader

from shearing.commands.assets import smollm2_gguf
from shearing.models.hf_io import load_tokenizer

#: GPT-2's split, and llama.cpp's `smollm` pre-tokenizer: every digit on its own first.
GPT2_SPLIT = regex.compile(
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
)
DIGIT = regex.compile(r"(\p{N})")


def gguf_fields(path):
    reader = GGUFReader(str(path))

    def strings(key):
        f = reader.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(key):
        f = reader.fields[key]
        return f.parts[f.data[0]].tolist()[0]

    return {
        "tokens": strings("tokenizer.ggml.tokens"),
        "merges": strings("tokenizer.ggml.merges"),
        "model": strings("tokenizer.ggml.model")[0],
        "pre": strings("tokenizer.ggml.pre")[0],
        "add_bos": bool(scalar("tokenizer.ggml.add_bos_token")),
        "bos": scalar("tokenizer.ggml.bos_token_id"),
        "eos": scalar("tokenizer.ggml.eos_token_id"),
    }


def byte_chars() -> dict[int, str]:
    """GPT-2's reversible map of the 256 byte values to printable characters."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class ReferenceBPE:
    """Byte-level BPE from a vocabulary and ranked merges, with the smollm pre-tokenizer."""

    def __init__(self, tokens, merges):
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
        self.chars, self.cache = byte_chars(), {}

    def word(self, piece: str) -> list[int]:
        if piece not in self.cache:
            parts = [self.chars[b] for b in piece.encode("utf-8")]
            while len(parts) > 1:
                rank, i = min(
                    (self.ranks.get(pair, math.inf), i)
                    for i, pair in enumerate(zip(parts, parts[1:], strict=False))
                )
                if rank == math.inf:
                    break
                parts[i : i + 2] = [parts[i] + parts[i + 1]]
            self.cache[piece] = [self.ids[p] for p in parts]
        return self.cache[piece]

    def encode(self, text: str) -> list[int]:
        ids = []
        for segment in DIGIT.split(text):
            for piece in GPT2_SPLIT.findall(segment):
                ids += self.word(piece)
        return ids


@pytest.fixture(scope="module")
def gguf():
    return gguf_fields(smollm2_gguf())


def real_text() -> str:
    """Real English prose and code on every machine: the standard library's own sources,
    plus text with accents, other scripts, numbers and odd spacing."""
    sources = "".join(open(m.__file__, encoding="utf-8").read() for m in (argparse, json, textwrap))
    return sources + "\nCafé naïve — 東京タワー, ünïcödé 3.14159e-10 2024-11-25\t\t  x  \n\n"


def test_the_gguf_says_byte_level_bpe_with_the_smollm_split_and_no_bos(gguf):
    assert (gguf["model"], gguf["pre"], gguf["add_bos"]) == ("gpt2", "smollm", False)


def test_ids_match_an_independent_bpe_of_the_gguf_vocabulary(gguf, smollm2_dir):
    text = real_text()
    expected = ReferenceBPE(gguf["tokens"], gguf["merges"]).encode(text)
    for source in (smollm2_gguf(), smollm2_dir):  # read from the GGUF, and as written
        tok = load_tokenizer(source)
        assert type(tok).__name__ == "GPT2Tokenizer" and tok.is_fast  # tokenizers-backed
        ids = tok(text)["input_ids"]  # special tokens on: the GGUF adds no BOS
        assert len(ids) > 20_000
        assert ids == expected
        assert tok.decode(ids) == text
        assert (tok.bos_token_id, tok.eos_token_id) == (gguf["bos"], gguf["eos"])


def test_written_tokenizer_files_are_byte_level_without_fallback(smollm2_dir):
    config = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "GPT2Tokenizer"
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    assert tok("Pruned.")["input_ids"] == tok("Pruned.", add_special_tokens=False)["input_ids"]
    spec = json.loads((smollm2_dir / "tokenizer.json").read_text())
    assert spec["model"]["type"] == "BPE" and not spec["model"]["byte_fallback"]
    assert spec["decoder"]["type"] == "ByteLevel"
    kinds = [p["type"] for p in spec["pre_tokenizer"]["pretokenizers"]]
    assert kinds == ["Split", "ByteLevel"]
