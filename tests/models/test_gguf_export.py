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

from shearing.models.gguf_io import GGUFExportError, write_gguf
from shearing.models.gguf_read import read_fields
from shearing.models.hf_io import load_tokenizer, save_pretrained
from tests.helpers import random_decoder


def text() -> str:
    sources = "".join(open(m.__file__, encoding="utf-8").read() for m in (argparse, json))
    return sources + "\nCafé naïve — 東京タワー 3.14159e-10 2024-11-25\t  x \n"


@pytest.fixture(scope="module")
def hf_dir(smollm2_dir, tmp_path_factory):
    """A small random GQA model (4 query / 2 key-value heads of width 16 over a hidden
    size of 64, so the head width is not hidden / heads) with the real SmolLM2 tokenizer."""
    config = json.loads((smollm2_dir / "config.json").read_text())
    model = random_decoder(config, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
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
    model = random_decoder(config, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
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
    "internlm3": dict(),  # llama.cpp's converter writes it as `llama`; read back as one
    # Gemma: the reader reads no scale, soft-cap or layer pattern, so these are its config
    # class's defaults (query_pre_attn_scalar 256 = head_dim: nothing folded), the window a
    # short one it reads (sliding_window)
    "gemma2": dict(hidden_activation="gelu_pytorch_tanh", head_dim=256, query_pre_attn_scalar=256,
                   attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=8,
                   max_position_embeddings=32),
    "gemma3_text": dict(hidden_activation="gelu_pytorch_tanh", head_dim=256,
                        query_pre_attn_scalar=256, sliding_window=8, max_position_embeddings=32),
}  # fmt: skip
GEMMA2 = READ_BACK["gemma2"]
GEMMA3 = READ_BACK["gemma3_text"]
#: `general.architecture` of each family's file, where it is not the family's name.
GGUF_NAME = {"mistral": "llama", "internlm3": "llama", "gemma3_text": "gemma3"}


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
    model = random_decoder({**FAMILY, "model_type": model_type}, **config)
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
    assert arch == GGUF_NAME.get(model_type, model_type)
    assert GGUF_ARCHS[model_type].arch.lower() == arch
    source = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    read = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    expected, actual = source.state_dict(), read.state_dict()
    assert expected.keys() == actual.keys()
    for key, w in expected.items():
        if key.endswith("norm.weight") and source.config.model_type.startswith("gemma"):
            # stored as 1 + w and read back as that minus 1: one float32 rounding
            assert torch.allclose(actual[key], w, rtol=0, atol=2e-7 * (1 + w.abs().max())), key
        else:
            assert torch.equal(actual[key], w), key  # f32: every weight bit for bit
    ids = torch.randint(0, 40, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = read(ids).logits, source(ids).logits
    assert (a - b).abs().max() <= 1e-5 * b.abs().max()  # fp32 kernel noise only


def test_phi3s_partial_rotary_is_written_as_its_rope_dimension_count(small_tokenizer, tmp_path):
    """transformers' reader does not read it (so the read-back above keeps full rotary);
    llama.cpp does (docs/results.md: scripts/check_llama_cpp.py on such a file)."""
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
        ("olmo2", dict(head_dim=8), "has 4 heads of width 8 over a hidden size of 64; GGUF's "
         "olmo2 architecture (llama.cpp) takes the head width as hidden / heads"),
        ("smollm3", dict(no_rope_layers=[1, 0], pad_token_id=0), "has NoPE on layers [1]; "
         "GGUF's smollm3 architecture (llama.cpp) has it on none"),
        ("gemma2", GEMMA2 | dict(tie_word_embeddings=False), "has an LM head of its own; GGUF's "
         "gemma2 architecture (llama.cpp) always uses the embedding as the LM head"),
        ("gemma2", GEMMA2 | dict(attn_logit_softcapping=None), "has attn_logit_softcapping=None; "
         "GGUF's gemma2 architecture (llama.cpp) always applies it"),
        ("gemma3_text", GEMMA3 | dict(attn_logit_softcapping=5.0), "has "
         "attn_logit_softcapping=5.0; GGUF's gemma3 architecture (llama.cpp) has none"),
        ("gemma2", GEMMA2 | dict(hidden_activation="silu"), "has a silu FFN; GGUF's gemma2 "
         "architecture (llama.cpp, transformers' GGUF reader) has only gelu_pytorch_tanh"),
        ("granite_swa", dict(layer_types=["full_attention"] * 2), "is a granite_swa model; GGUF "
         "export writes llama, mistral, internlm3, qwen2, qwen3, phi3, gemma2, gemma3_text, "
         "gemma4_text, olmo2, granite, smollm3, ministral3 (llama.cpp's convert_hf_to_gguf.py "
         "handles the others)"),
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


def tensors_of(path) -> dict[str, np.ndarray]:
    """A GGUF's tensors by name, in the row-major shape of the source's matrices."""
    from gguf import GGUFReader

    return {t.name: np.asarray(t.data).reshape(list(reversed(t.shape.tolist())))
            for t in GGUFReader(str(path)).tensors}  # fmt: skip


def interleaved_by_hand(w: np.ndarray, heads: int) -> np.ndarray:
    """Row (h, 2i + c) of the file is row (h, c * half + i) of the source: each head's
    rotate-half pairs (i, i + half) made adjacent."""
    rows = w.shape[0] // heads
    half = rows // 2
    order = [h * rows + c * half + i for h in range(heads) for i in range(half) for c in (0, 1)]
    return w[order]


#: The architectures transformers' GGUF reader does not read: each file is checked against
#: gguf-py's own tensor table for the architecture, the source's weights put by hand where
#: llama.cpp reads them, and the keys its loader reads (llama.cpp itself runs these files
#: in scripts/check_llama_cpp.py; docs/results.md, "GGUF files in llama.cpp").
UNREAD = {
    # transformers reads a llama file as bias-free whatever it holds
    "llama": ("LLAMA", dict(attention_bias=True, mlp_bias=True), {}),
    "olmo2": ("OLMO2", dict(), {}),
    "granite": ("GRANITE", dict(embedding_multiplier=3.0, attention_multiplier=0.2,
                                residual_multiplier=0.5, logits_scaling=4.0, attention_bias=True,
                                mlp_bias=True),
                {"embedding_scale": 3.0, "residual_scale": 0.5, "attention.scale": 0.2,
                 "logit_scale": 4.0}),
    "smollm3": ("SMOLLM3", dict(num_hidden_layers=4, no_rope_layers=[1, 1, 1, 0],
                                pad_token_id=0), {}),
    "ministral3": ("MISTRAL3", dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                     "llama_4_scaling_beta": 0.5,
                                                     "original_max_position_embeddings": 8}),
                   {"attention.temperature_scale": 0.5,
                    "rope.scaling.original_context_length": 8}),
}  # fmt: skip


@pytest.mark.parametrize("model_type", list(UNREAD))
def test_architectures_without_a_reader_hold_the_weights_where_llama_cpp_reads_them(
    small_tokenizer, tmp_path, model_type
):
    import gguf as gguf_py

    arch_name, config, scales = UNREAD[model_type]
    model_dir = family_dir(small_tokenizer, tmp_path, model_type, **config)
    write_gguf(model_dir, tmp_path / "m.gguf", "f32")
    arch = gguf_py.MODEL_ARCH[arch_name]
    tensors = tensors_of(tmp_path / "m.gguf")
    source = transformers.AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    layers = len({k.split(".")[2] for k in source if k.startswith("model.layers.")})
    allowed = {gguf_py.TENSOR_NAMES[t].format(bid=b) + suffix for t in gguf_py.MODEL_TENSORS[arch]
               for b in range(layers) for suffix in (".weight", ".bias")}  # fmt: skip
    assert set(tensors) <= allowed
    where = {"embed_tokens": "token_embd", "norm": "output_norm", "lm_head": "output",
             "input_layernorm": "attn_norm", "q_proj": "attn_q", "k_proj": "attn_k",
             "v_proj": "attn_v", "o_proj": "attn_output", "gate_proj": "ffn_gate",
             "up_proj": "ffn_up", "down_proj": "ffn_down", "q_norm": "attn_q_norm",
             "k_norm": "attn_k_norm", "post_feedforward_layernorm": "post_ffw_norm",
             "post_attention_layernorm": "post_attention_norm" if model_type == "olmo2"
             else "ffn_norm"}  # fmt: skip
    tied = source["lm_head.weight"].data_ptr() == source["model.embed_tokens.weight"].data_ptr()
    expected = {}
    for key, w in source.items():
        parts = key.split(".")
        if parts[0] == "lm_head" and tied and model_type != "olmo2":
            continue  # llama.cpp uses the embedding; OLMo 2's loader requires output.weight
        module, kind = parts[-2], parts[-1]
        name = f"blk.{parts[2]}.{where[module]}" if parts[1] == "layers" else where[parts[-2]]
        value = w.numpy()
        if module in ("q_proj", "k_proj") and model_type != "olmo2":  # LLAMA_ROPE_TYPE_NORM
            heads = FAMILY["num_attention_heads" if module == "q_proj" else "num_key_value_heads"]
            value = interleaved_by_hand(value, heads)
        expected[f"{name}.{kind}"] = value
    assert tensors.keys() == expected.keys()
    for name, value in expected.items():
        assert np.array_equal(tensors[name], value), name
    prefix = gguf_py.MODEL_ARCH_NAMES[arch]
    fields = read_fields(tmp_path / "m.gguf", f"{prefix}.")
    for key, value in scales.items():
        assert fields[f"{prefix}.{key}"] == pytest.approx(value, rel=1e-7)  # float32
    assert fields[f"{prefix}.block_count"] == layers
    assert fields[f"{prefix}.attention.key_length"] == FAMILY["head_dim"]


@pytest.mark.parametrize(
    "model_type, config, theirs",
    [
        ("gemma2", GEMMA2 | dict(head_dim=16, query_pre_attn_scalar=24), 16**-0.5),
        # 46 layers: llama.cpp's Gemma 2 27B rule, (hidden // heads) ** -0.5
        ("gemma2", GEMMA2 | dict(head_dim=16, query_pre_attn_scalar=24, num_hidden_layers=46,
                                 hidden_size=48), 12**-0.5),
        ("gemma3_text", GEMMA3 | dict(head_dim=16, query_pre_attn_scalar=24), 16**-0.5),
    ],
)  # fmt: skip
def test_gemmas_attention_scale_is_folded_into_the_queries(
    small_tokenizer, tmp_path, model_type, config, theirs
):
    """llama.cpp computes Gemma's attention scale from the head width (or for a model of
    the 27B's depth from hidden / heads), not from query_pre_attn_scalar: the queries carry
    the ratio, on q_proj (Gemma 2) or on the q norm that follows it (Gemma 3)."""
    model_dir = family_dir(small_tokenizer, tmp_path, model_type, **config)
    write_gguf(model_dir, tmp_path / "m.gguf", "f32")
    source = transformers.AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    tensors = tensors_of(tmp_path / "m.gguf")
    fold = 24**-0.5 / theirs
    if model_type == "gemma2":
        expected = source["model.layers.0.self_attn.q_proj.weight"].numpy() * fold
        actual = tensors["blk.0.attn_q.weight"]
    else:
        expected = (1 + source["model.layers.0.self_attn.q_norm.weight"].numpy()) * fold
        actual = tensors["blk.0.attn_q_norm.weight"]
        np.testing.assert_array_equal(  # the key norm is not scaled
            tensors["blk.0.attn_k_norm.weight"],
            1 + source["model.layers.0.self_attn.k_norm.weight"].numpy(),
        )
    np.testing.assert_allclose(actual, expected, rtol=1e-6)  # float32 products


def test_gemma4_is_written_with_both_head_widths_and_its_proportional_rope(
    small_tokenizer, tmp_path
):
    """Gemma 4 (which transformers' reader reads only with its config class's defaults):
    the sliding layers' head width and the full layers' wider one, the full layers' RoPE
    as llama.cpp's frequency factors (1 for the rotated quarter of the frequencies, 1e30:
    still, for the rest), no soft-cap written as 0 (llama.cpp's default is 30), norms and
    the layer scalar as stored (no `1 + w`)."""
    import gguf as gguf_py

    model_dir = family_dir(small_tokenizer, tmp_path, "gemma4_text",
                           hidden_activation="gelu_pytorch_tanh", head_dim=8, global_head_dim=16,
                           sliding_window=8, hidden_size_per_layer_input=0,
                           layer_types=["sliding_attention", "full_attention"])  # fmt: skip
    write_gguf(model_dir, tmp_path / "m.gguf", "f32")
    fields = read_fields(tmp_path / "m.gguf", "gemma4.")
    assert {k[len("gemma4.") :]: fields[k] for k in (
        "gemma4.attention.key_length", "gemma4.attention.key_length_swa",
        "gemma4.rope.dimension_count", "gemma4.rope.dimension_count_swa",
        "gemma4.attention.sliding_window", "gemma4.attention.sliding_window_pattern",
        "gemma4.final_logit_softcapping", "gemma4.embedding_length_per_layer_input")} == {
        "attention.key_length": 16, "attention.key_length_swa": 8, "rope.dimension_count": 16,
        "rope.dimension_count_swa": 8, "attention.sliding_window": 8,
        "attention.sliding_window_pattern": [True, False], "final_logit_softcapping": 0.0,
        "embedding_length_per_layer_input": 0}  # fmt: skip
    tensors = tensors_of(tmp_path / "m.gguf")
    allowed = {
        gguf_py.TENSOR_NAMES[t].format(bid=b) + ".weight"
        for t in gguf_py.MODEL_TENSORS[gguf_py.MODEL_ARCH.GEMMA4]
        for b in range(2)
    }
    assert set(tensors) <= allowed  # fmt: skip
    # Gemma4TextConfig's full-layer default: proportional, a quarter of 8 frequencies rotate
    np.testing.assert_array_equal(tensors["rope_freqs.weight"], np.float32([1, 1] + [1e30] * 6))
    source = transformers.AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    for layer, width in ((0, 8), (1, 16)):
        q = source[f"model.layers.{layer}.self_attn.q_proj.weight"].numpy()
        assert q.shape == (4 * width, 64)
        np.testing.assert_array_equal(tensors[f"blk.{layer}.attn_q.weight"], q)
        np.testing.assert_array_equal(
            tensors[f"blk.{layer}.layer_output_scale.weight"],
            source[f"model.layers.{layer}.layer_scalar"].numpy(),
        )
        np.testing.assert_array_equal(
            tensors[f"blk.{layer}.attn_norm.weight"],
            source[f"model.layers.{layer}.input_layernorm.weight"].numpy(),
        )


def test_llama31_rope_scaling_is_written_as_llama_cpp_frequency_factors(small_tokenizer, tmp_path):
    """llama.cpp runs Llama 3.1's RoPE as plain RoPE whose frequencies are divided by
    `rope_freqs` (transformers' reader ignores the tensor, so the factors are checked
    against Llama 3.1's rule written out here; llama.cpp itself: docs/results.md)."""
    import math

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}  # fmt: skip
    model_dir = family_dir(small_tokenizer, tmp_path, "llama", rope_parameters=rope)
    write_gguf(model_dir, tmp_path / "m.gguf", "f32")
    expected = []
    for i in range(8):  # head width 16: 8 frequencies theta^(-2i/16)
        wavelength = 2 * math.pi * 500000.0 ** (2 * i / 16)
        if wavelength > 64 / 1.0:  # longer than the original context: divided by the factor
            expected.append(8.0)
        elif wavelength < 64 / 4.0:  # short: kept
            expected.append(1.0)
        else:  # between: the blend of the two frequencies, inverted
            s = (64 / wavelength - 1.0) / (4.0 - 1.0)
            expected.append(1 / ((1 - s) / 8.0 + s))
    assert 1.0 in expected and 8.0 in expected and len(set(expected)) == 3  # every branch
    factors = tensors_of(tmp_path / "m.gguf")["rope_freqs.weight"]
    np.testing.assert_allclose(factors, expected, rtol=1e-6)  # float32 factors
    assert read_fields(tmp_path / "m.gguf", "llama.rope.freq_base")["llama.rope.freq_base"] == 5e5


@pytest.mark.parametrize("model_type", ["llama", "gemma2", "gemma3_text"])
def test_a_pruned_model_reads_back_with_the_pruned_models_logits(
    small_tokenizer, tmp_path, model_type
):
    """The user's path: masks cut hidden 64 -> 48, heads 4 -> 2 (of width 16 / 256: heads x
    width is not the hidden size), key/value heads 2 -> 1, FFN 96 -> 64; the sliced model
    (Gemma's embedding scale folded into its weights) written as GGUF and read back by
    transformers (these readers read the head width) gives the sliced model's logits."""
    from shearing.pruning.finalize import slice_model
    from tests.helpers import random_l0

    full = random_decoder({**FAMILY, "model_type": model_type}, **READ_BACK.get(model_type, {}))
    target = dict(hidden_size=48, num_attention_heads=2, num_key_value_heads=1,
                  intermediate_size=64)  # fmt: skip
    small = slice_model(full, random_l0(full, target, seed=3).deterministic_masks())
    out = tmp_path / "pruned"
    save_pretrained(small, out)
    for f in small_tokenizer.iterdir():
        shutil.copy(f, out / f.name)
    write_gguf(out, out / "m.gguf", "f32")
    source = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    read = transformers.AutoModelForCausalLM.from_pretrained(
        out, gguf_file="m.gguf", dtype=torch.float32
    ).eval()
    assert read.config.hidden_size == 48 and read.config.num_attention_heads == 2
    ids = torch.randint(0, 40, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = read(ids).logits, source(ids).logits
    assert (a - b).abs().max() <= 1e-5 * b.abs().max()  # fp32 kernel noise only
