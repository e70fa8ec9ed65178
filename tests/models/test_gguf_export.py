"""GGUF out: read back by transformers' own GGUF loader, weights rounded as each type
rounds them (checked against rounding done here by hand), logits, and the tokenizer's ids
on real text against the source tokenizer's."""

import argparse
import json
import shutil

import numpy as np
import pytest
import torch
import transformers

from shearing.models.config import DecoderShape
from shearing.models.decoder import MaskableDecoder
from shearing.models.gguf_io import GGUFExportError, write_gguf
from shearing.models.gguf_read import read_fields
from shearing.models.hf_io import load_tokenizer, save_pretrained


def text() -> str:
    sources = "".join(open(m.__file__, encoding="utf-8").read() for m in (argparse, json))
    return sources + "\nCafé naïve — 東京タワー 3.14159e-10 2024-11-25\t  x \n"


def random_model(config: dict, **shape) -> MaskableDecoder:
    torch.manual_seed(0)
    model = MaskableDecoder(DecoderShape.from_hf({**config, **shape}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def hf_dir(smollm2_dir, tmp_path_factory):
    """A small random GQA model (4 query / 2 key-value heads of width 16 over a hidden
    size of 64, so the head width is not hidden / heads) with the real SmolLM2 tokenizer."""
    config = json.loads((smollm2_dir / "config.json").read_text())
    model = random_model(config, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=24)  # fmt: skip
    out = tmp_path_factory.mktemp("gguf") / "hf"
    save_pretrained(model, out, source=smollm2_dir)
    return out


def q8_0_by_hand(w: torch.Tensor) -> torch.Tensor:
    """GGML's Q8_0: blocks of 32 along each row, scale max|x| / 127 kept as float16,
    values rounded half away from zero to int8."""
    x = w.double().numpy().reshape(-1, 32)
    d = np.abs(x).max(axis=1, keepdims=True) / 127
    q = np.where(d > 0, x / np.where(d > 0, d, 1), 0)
    q = np.sign(q) * np.floor(np.abs(q) + 0.5)
    out = q * d.astype(np.float16).astype(np.float64)
    return torch.from_numpy(out.reshape(w.shape)).float()


ROUND = {
    "f32": lambda w: w,
    "f16": lambda w: w.half().float(),
    "bf16": lambda w: w.bfloat16().float(),
    "q8_0": q8_0_by_hand,
}


@pytest.mark.parametrize("kind", ["f32", "f16", "bf16", "q8_0"])
def test_transformers_reads_the_gguf_back_with_each_types_rounding(hf_dir, kind):
    gguf = hf_dir.parent / f"model-{kind}.gguf"
    write_gguf(hf_dir, gguf, kind)
    source = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    read = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    assert read.config.head_dim == 24 and read.config.num_key_value_heads == 2
    expected, actual = source.state_dict(), read.state_dict()
    assert expected.keys() == actual.keys()
    for key, w in expected.items():
        want = w if w.ndim == 1 else ROUND[kind](w)  # norms stay float32
        got = actual[key]
        if kind == "q8_0" and w.ndim > 1:
            # the library divides by the scale through its reciprocal: a value on a
            # rounding boundary may land one step away; never more, and rarely
            step = w.abs().reshape(-1, 32).amax(1).repeat_interleave(32).reshape(w.shape) / 127
            assert ((got - want).abs() <= step * 1.001 + 1e-12).all(), key
            assert (got == want).float().mean() > 0.999, key
        else:
            assert torch.equal(got, want), key
    # logits: the read model against the source model with the same rounding by hand
    rounded = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    rounded.load_state_dict({k: w if w.ndim == 1 else ROUND[kind](w) for k, w in expected.items()})
    ids = torch.randint(0, 49152, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = read(ids).logits, rounded(ids).logits
    tolerance = 1e-5 if kind != "q8_0" else 1e-3  # fp32 kernel noise; rare one-step weights
    assert (a - b).abs().max() <= tolerance * b.abs().max()


def test_the_ggufs_tokenizer_gives_the_source_ids_on_real_text(hf_dir):
    gguf = hf_dir.parent / "tok.gguf"
    write_gguf(hf_dir, gguf, "f16")
    source = transformers.AutoTokenizer.from_pretrained(hf_dir)
    words = text()
    expected = source(words)["input_ids"]
    assert len(expected) > 10_000
    assert load_tokenizer(gguf)(words)["input_ids"] == expected  # read as the GGUF says
    theirs = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert theirs(words, add_special_tokens=False)["input_ids"] == expected


@pytest.mark.parametrize("files", ["tokenizer.model", "tokenizer.json only"])
def test_a_sentencepiece_tokenizer_is_written_as_a_llama_vocabulary(
    tiny_workspace, tmp_path, files
):
    """LLaMA's kind of tokenizer: a SentencePiece BPE model (GGUF's `llama` vocabulary),
    trained here on the tiny corpus; as a hub checkpoint ships it (tokenizer.model beside
    tokenizer.json) and as transformers 5 saves it (tokenizer.json only)."""
    import sentencepiece as spm

    from shearing.models.hf_io import load_model

    corpus = tiny_workspace["root"] / "corpus"
    spm.SentencePieceTrainer.train(
        input=[str(p) for p in sorted(corpus.glob("*/part-0.jsonl"))], model_type="bpe",
        model_prefix=str(tmp_path / "bpe"), vocab_size=64, bos_id=1, eos_id=2, unk_id=0,
        pad_id=-1, minloglevel=2,
    )  # fmt: skip
    model_dir = tmp_path / "hf"
    save_pretrained(load_model(tiny_workspace["model"]), model_dir)
    hub = tmp_path / "hub"  # a LLaMA checkpoint's tokenizer files: tokenizer.model + config
    hub.mkdir()
    shutil.copy(tmp_path / "bpe.model", hub / "tokenizer.model")
    (hub / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True})
    )
    transformers.AutoTokenizer.from_pretrained(hub).save_pretrained(model_dir)  # tokenizer.json
    if files == "tokenizer.model":
        shutil.copy(hub / "tokenizer.model", model_dir / "tokenizer.model")
    assert (model_dir / "tokenizer.model").is_file() == (files == "tokenizer.model")
    gguf = tmp_path / "sp.gguf"
    write_gguf(model_dir, gguf, "f32")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "bpe.model"))
    fields = read_fields(gguf, "tokenizer.")
    assert fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.add_bos_token"] is True  # LLaMA's tokenizer adds BOS
    words = " ".join(tiny_workspace["texts"]["alpha"][:20])
    assert transformers.AutoTokenizer.from_pretrained(model_dir)(words)["input_ids"][1:] == (
        sp.encode(words)
    )  # the source tokenizer is the SentencePiece model, with BOS first
    # the scores order the pieces that merges make (two characters or more) as
    # SentencePiece's own model orders them
    special = {i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)}
    pieces = [i for i in range(sp.get_piece_size()) if len(sp.id_to_piece(i)) > 1]
    pieces = [i for i in pieces if i not in special]
    by_sp = sorted(pieces, key=lambda i: -sp.get_score(i))
    scores = fields["tokenizer.ggml.scores"]
    assert sorted(pieces, key=lambda i: -scores[i]) == by_sp
    source = transformers.AutoTokenizer.from_pretrained(model_dir)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=gguf.name)
    words = " ".join(tiny_workspace["texts"]["alpha"][:20])
    assert theirs(words)["input_ids"] == source(words)["input_ids"]
    read = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name)
    ids = torch.tensor([source(words)["input_ids"][:16]])
    with torch.no_grad():
        want = transformers.AutoModelForCausalLM.from_pretrained(model_dir)(ids).logits
        assert (read(ids).logits - want).abs().max() <= 1e-5 * want.abs().max()


def test_a_relu_model_is_refused_in_one_line(smollm2_dir, tmp_path):
    config = json.loads((smollm2_dir / "config.json").read_text())
    model = random_model(config, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2,
                         hidden_act="relu")  # fmt: skip
    save_pretrained(model, tmp_path / "relu", source=smollm2_dir)
    with pytest.raises(GGUFExportError, match="has a relu FFN; GGUF's llama architecture"):
        write_gguf(tmp_path / "relu", tmp_path / "relu.gguf", "f16")
    assert not (tmp_path / "relu.gguf").exists()


def test_the_command_writes_the_file_whole_and_refuses_a_bad_type(hf_dir, capsys):
    from shearing.models.gguf_io import main

    out = hf_dir.parent / "cli.gguf"
    assert main([str(hf_dir), str(out), "--type", "q8_0"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert read_fields(out, "general.")["general.file_type"] == 7  # llama.cpp's MOSTLY_Q8_0
    assert not list(out.parent.glob(".cli.gguf.partial-*"))
    with pytest.raises(SystemExit):
        main([str(hf_dir), str(out), "--type", "q4_k"])
    assert "invalid choice: 'q4_k'" in capsys.readouterr().err


# --- the other families with a llama.cpp architecture ------------------------------------

#: A small random model per family (GQA, biases and q/k norms where the family has them),
#: with the tiny workspace's SentencePiece vocabulary (40 pieces) as its tokenizer: the
#: architecture is what these tests read back. transformers' GGUF reader (the reference
#: here) reads no head width, window or partial rotary for these architectures, so the
#: read-back configs keep to what it reads.
FAMILY = dict(vocab_size=40, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
              rms_norm_eps=1e-5, tie_word_embeddings=True)  # fmt: skip
READ_BACK = {
    "qwen2": dict(),
    "qwen3": dict(head_dim=128),  # Qwen3Config's own default: its reader keeps it
    "phi3": dict(tie_word_embeddings=False, pad_token_id=0),
    "mistral": dict(sliding_window=4096),  # a window no shorter than the context: no effect
}


@pytest.fixture(scope="module")
def small_tokenizer(tiny_workspace, tmp_path_factory):
    """Tokenizer files of the workspace's SentencePiece model, as transformers saves them."""
    hub = tmp_path_factory.mktemp("sp-tokenizer")
    shutil.copy(tiny_workspace["tokenizer"], hub / "tokenizer.model")
    (hub / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    out = tmp_path_factory.mktemp("sp-saved")
    tokenizer = transformers.AutoTokenizer.from_pretrained(hub)
    tokenizer.pad_token = tokenizer.unk_token  # else the reader takes its class's default id
    tokenizer.save_pretrained(out)
    return out


def family_dir(tokenizer_dir, root, model_type: str, **config):
    model = random_model({**FAMILY, "model_type": model_type}, **config)
    # not named after the family: transformers' reader takes a `llama` file whose
    # general.name holds "mistral" for a `mistral` one, an architecture gguf-py lacks
    out = root / "source"
    save_pretrained(model, out)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, out / f.name)
    return out


@pytest.mark.parametrize("model_type", list(READ_BACK))
def test_each_family_is_read_back_by_transformers_as_its_own_architecture(
    small_tokenizer, tmp_path, model_type
):
    from shearing.models.gguf_io import GGUF_ARCHS

    model_dir = family_dir(small_tokenizer, tmp_path, model_type, **READ_BACK[model_type])
    gguf = tmp_path / "model.gguf"
    write_gguf(model_dir, gguf, "f32")
    arch = read_fields(gguf, "general.architecture")["general.architecture"]
    assert arch == {"mistral": "llama"}.get(model_type, model_type)
    assert GGUF_ARCHS[model_type].arch.lower() == arch
    source = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    read = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    expected, actual = source.state_dict(), read.state_dict()
    assert expected.keys() == actual.keys()
    for key, w in expected.items():
        assert torch.equal(actual[key], w), key  # f32: every weight bit for bit
    ids = torch.randint(0, 40, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = read(ids).logits, source(ids).logits
    assert (a - b).abs().max() <= 1e-5 * b.abs().max()  # fp32 kernel noise only


def test_phi3s_partial_rotary_is_written_as_its_rope_dimension_count(small_tokenizer, tmp_path):
    """transformers' reader does not read it (so the read-back above keeps full rotary);
    llama.cpp does (README: scripts/check_llama_cpp.py on such a file)."""
    model_dir = family_dir(small_tokenizer, tmp_path, "phi3", tie_word_embeddings=False,
                           pad_token_id=0, rope_parameters={"rope_type": "default",
                           "rope_theta": 1e4, "partial_rotary_factor": 0.5})  # fmt: skip
    write_gguf(model_dir, tmp_path / "phi3.gguf", "f16")
    fields = read_fields(tmp_path / "phi3.gguf", "phi3.")
    assert fields["phi3.rope.dimension_count"] == 8  # half of the 16-wide heads rotate
    assert fields["phi3.attention.key_length"] == 16
    assert "phi3.attention.sliding_window" not in fields


@pytest.mark.parametrize(
    "model_type, config, message",
    [
        ("mistral", dict(sliding_window=8), "has sliding windows of 8 positions on every layer "
         "within a context of 128; GGUF's llama architecture here attends to every position"),
        ("qwen2", dict(use_sliding_window=True, sliding_window=8, max_window_layers=1),
         "has sliding windows of 8 positions on some layer"),
        ("phi3", dict(sliding_window=8, tie_word_embeddings=False, pad_token_id=0),
         "has sliding windows of 8 positions on every layer within a context of 128; GGUF's "
         "phi3 architecture here attends to every position"),
        ("qwen3", dict(attention_bias=True), "has qkv and o_proj biases, which GGUF's qwen3 "
         "architecture does not hold"),
        ("llama", dict(rope_parameters={"rope_type": "linear", "factor": 2.0,
                                        "rope_theta": 1e4}), "layer 0 uses RoPE"),
        ("olmo2", dict(), "is a olmo2 model; GGUF export writes llama, mistral, qwen2, qwen3, "
         "phi3 (llama.cpp's convert_hf_to_gguf.py handles the others)"),
    ],
)  # fmt: skip
def test_what_an_architecture_cannot_hold_is_refused_in_one_line(
    small_tokenizer, tmp_path, model_type, config, message
):
    model_dir = family_dir(small_tokenizer, tmp_path, model_type, **config)
    with pytest.raises(GGUFExportError) as err:
        write_gguf(model_dir, tmp_path / "x.gguf", "f16")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "x.gguf").exists()


def test_a_plain_gpt2_split_is_named_as_llama_cpp_names_it(hf_dir, tmp_path):
    """A byte-level BPE with GPT-2's split alone (no digit isolation) is `tokenizer.ggml.pre`
    "gpt-2", llama.cpp's name (it refuses "gpt2"), and reads back with the source's ids."""
    model_dir = tmp_path / "plain"
    shutil.copytree(hf_dir, model_dir)
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = spec["pre_tokenizer"]["pretokenizers"][-1]  # the ByteLevel step
    assert spec["pre_tokenizer"]["type"] == "ByteLevel"
    (model_dir / "tokenizer.json").write_text(json.dumps(spec))
    gguf = tmp_path / "plain.gguf"
    write_gguf(model_dir, gguf, "f16")
    assert read_fields(gguf, "tokenizer.ggml.pre")["tokenizer.ggml.pre"] == "gpt-2"
    words = text()[:4000] + text()[-200:]  # code, prose, digits, accents, CJK
    source = transformers.AutoTokenizer.from_pretrained(model_dir)
    assert load_tokenizer(gguf)(words)["input_ids"] == source(words)["input_ids"]
