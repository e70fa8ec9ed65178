"""Loading from Hugging Face directories and GGUF files, saving stock HF directories."""

import json

import pytest
import torch
import transformers

from shearing.commands.assets import smollm2_gguf
from shearing.files import OutputError
from shearing.models.hf_io import load_model, model_from_state_dict, save_pretrained
from tests.helpers import tiny_pair

IDS = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(3))


def logits(model, ids=IDS):
    with torch.no_grad():
        out = model(ids)
    return out.logits if hasattr(out, "logits") else out


def load_strictly_in_transformers(path):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, output_loading_info=True
    )
    assert all(not v for v in info.values()), info
    return model.eval()


@pytest.mark.parametrize("tie", [False, True])
def test_save_loads_strictly_in_transformers_with_same_logits(tmp_path, tie):
    _, ours = tiny_pair(tie_word_embeddings=tie)
    save_pretrained(ours, tmp_path / "out")
    ref = load_strictly_in_transformers(tmp_path / "out")
    assert (logits(ref) - logits(ours)).abs().max() < 1e-4
    assert json.loads((tmp_path / "out" / "config.json").read_text())["head_dim"] == 8


def test_sharded_save_loads_in_transformers_and_back(tmp_path):
    _, ours = tiny_pair()
    save_pretrained(ours, tmp_path / "out", max_shard_bytes=20_000)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    ref = load_strictly_in_transformers(tmp_path / "out")
    again = load_model(tmp_path / "out")
    assert torch.equal(logits(again), logits(ours))
    assert (logits(ref) - logits(ours)).abs().max() < 1e-4


def save_bin_checkpoint(model, directory, shards: int) -> None:
    """The `.bin` layout transformers 4 wrote (pytorch_model.bin, or numbered shards and
    pytorch_model.bin.index.json); transformers 5 only reads it, so it is written here."""
    model.config.save_pretrained(directory)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if shards == 1:
        torch.save(state, directory / "pytorch_model.bin")
        return
    keys, weight_map = list(state), {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = keys[i::shards]
        torch.save({k: state[k] for k in part}, directory / name)
        weight_map.update(dict.fromkeys(part, name))
    index = {"metadata": {}, "weight_map": weight_map}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("shards", [1, 3])
def test_loads_pytorch_bin_checkpoints(tmp_path, shards):
    ref, _ = tiny_pair()
    save_bin_checkpoint(ref, tmp_path, shards)
    assert not list(tmp_path.glob("*.safetensors"))
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert torch.equal(logits(again.eval()), logits(ref))  # the files are what transformers reads
    assert (logits(load_model(tmp_path)) - logits(ref)).abs().max() < 1e-4


def test_real_model_roundtrip_keeps_logits_and_tokenizer(smollm2_dir, tmp_path):
    ours = load_model(smollm2_dir)
    save_pretrained(ours, tmp_path / "copy", source=smollm2_dir)
    ref = load_strictly_in_transformers(tmp_path / "copy")
    ids = transformers.AutoTokenizer.from_pretrained(tmp_path / "copy")(
        "Pruning keeps the useful parts.", return_tensors="pt"
    ).input_ids
    original = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    assert (
        ids.tolist()
        == original("Pruning keeps the useful parts.", return_tensors="pt").input_ids.tolist()
    )
    assert (logits(ref, ids) - logits(ours, ids)).abs().max() < 1e-4


def test_gguf_file_and_its_conversion_load_the_same_weights(smollm2_dir):
    from_gguf = load_model(smollm2_gguf())
    from_dir = load_model(smollm2_dir)
    assert from_gguf.shape.to_hf()["num_key_value_heads"] == 3
    pairs = zip(from_gguf.state_dict().items(), from_dir.state_dict().items(), strict=True)
    for (k1, v1), (k2, v2) in pairs:
        assert k1 == k2 and torch.equal(v1, v2), k1


def test_hidden_act_can_be_replaced_on_load(tmp_path):
    _, ours = tiny_pair()
    save_pretrained(ours, tmp_path / "m")
    relu = load_model(tmp_path / "m", hidden_act="relu")
    assert relu.shape.hidden_act == "relu"
    x = torch.randn(4, 32)
    mlp = relu.model.layers[0].mlp
    expected = mlp.down_proj(torch.relu(mlp.gate_proj(x)) * mlp.up_proj(x))
    torch.testing.assert_close(mlp(x), expected)


def test_save_refuses_a_non_empty_output_and_force_replaces_it(tmp_path):
    _, ours = tiny_pair()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(OutputError, match="is not empty; pass --force"):
        save_pretrained(ours, out)
    assert (out / "keep.txt").read_text() == "user data"
    save_pretrained(ours, out, force=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_path_with_no_model_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match=r"is not a model: expected a Hugging Face directory"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="config has no 'vocab_size'; a decoder config needs"):
        load_model(tmp_path)
    _, ours = tiny_pair()
    (tmp_path / "config.json").write_text(json.dumps(ours.shape.to_hf()))
    with pytest.raises(ValueError, match="has config.json but no weights"):
        load_model(tmp_path)


def test_checkpoint_key_and_shape_mismatches_name_the_key():
    ref, ours = tiny_pair()
    state = dict(ref.state_dict())
    state["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(32)
    with pytest.raises(ValueError, match=r"'model.layers.0.self_attn.q_proj.bias' is not a param"):
        model_from_state_dict(ours.shape, state)
    state = dict(ref.state_dict())
    state["model.layers.1.mlp.up_proj.weight"] = torch.zeros(40, 32)
    with pytest.raises(
        ValueError, match=r"'model.layers.1.mlp.up_proj.weight' has shape \(40, 32\)"
    ):
        model_from_state_dict(ours.shape, state)
    state = dict(ref.state_dict())
    del state["model.norm.weight"]
    with pytest.raises(ValueError, match=r"checkpoint has no 'model.norm.weight'"):
        model_from_state_dict(ours.shape, state)


def test_gguf_of_another_architecture_is_rejected(tmp_path):
    import gguf

    path = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="model_type='gpt2' is not supported"):
        load_model(path)


def test_generate_runs_on_a_gguf_file(capsys):
    """`shearing generate --model X.gguf`: weights and tokenizer from the GGUF."""
    from shearing.commands.generate import main

    assert main(["--model", str(smollm2_gguf()), "--max-new-tokens", "3", "--prompt", "Hi"]) == 0
    out = capsys.readouterr().out
    assert "hidden size" in out and "576" in out
    assert "greedy continuation (" in out


@pytest.mark.parametrize("act", ["silu", "relu", "fatrelu"])
def test_written_config_holds_only_keys_transformers_knows(act, tmp_path):
    """A stock SiLU/ReLU model's config.json has no key outside transformers' LlamaConfig
    (FATReLU ships its modeling file and needs its threshold); generation_config.json is
    written with the config's token ids when the source has none."""
    _, model = tiny_pair()
    model = model_from_state_dict(model.shape.replace(hidden_act=act), model.state_dict())
    save_pretrained(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    known = set(transformers.LlamaConfig().to_dict()) | {"torch_dtype", "dtype"}
    extra = set(config) - known
    assert extra == ({"fatrelu_threshold", "auto_map"} if act == "fatrelu" else set())
    generation = transformers.GenerationConfig.from_pretrained(tmp_path / "m")
    assert (generation.bos_token_id, generation.eos_token_id) == (
        config["bos_token_id"], config["eos_token_id"])  # fmt: skip
