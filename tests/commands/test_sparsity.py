"""Activation functions, sparse FFN decoding and the sparsity meter."""

import json

import pytest
import torch
import transformers

from shearing.commands.sparsity import main
from shearing.models.decoder import MLP, GatedActivation
from tests.helpers import WORKSPACE_VOCAB, tiny_hf_config, tiny_pair

G = torch.tensor([-1.0, -0.005, 0.0, 0.005, 0.02, 2.0])
U = torch.tensor([0.5, -2.0, 3.0, -1.0, 4.0, -0.5])


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("silu", G * torch.sigmoid(G) * U),
        ("relu", torch.clamp(G, min=0) * U),
        ("fatrelu", torch.tensor([0.0, 0.0, 0.0, 0.0, 0.02, 2.0]) * U),  # x if x >= 0.01 else 0
        ("drelu", torch.clamp(G, min=0) * torch.clamp(U, min=0)),
    ],
)
def test_each_activation_equals_its_formula(kind, expected):
    torch.testing.assert_close(GatedActivation(kind, threshold=0.01)(G, U), expected)


@pytest.mark.parametrize("kind", ["relu", "fatrelu", "drelu"])
@pytest.mark.parametrize("shift", [-2.0, 0.0, 1.0])  # more or fewer active units
def test_sparse_ffn_decoding_equals_dense(kind, shift):
    _, model = tiny_pair(hidden_act="relu")
    shape = model.shape.replace(hidden_act=kind, fatrelu_threshold=0.05)
    torch.manual_seed(0)
    mlp = MLP(shape)
    with torch.no_grad():
        for p in mlp.parameters():
            p.normal_()
    x = torch.randn(1, 1, shape.hidden_size) * 0.3 + shift * 0.05
    dense = mlp(x)
    active = (mlp.act_fn.gate(mlp.gate_proj(x)) != 0).float().mean().item()
    assert 0 < active < 1
    mlp.set_sparse_decode(True)
    assert (mlp(x) - dense).abs().max().item() < 1e-5


def test_sparse_decoding_needs_a_relu_family_activation():
    _, model = tiny_pair()
    with pytest.raises(ValueError, match="needs a ReLU-family hidden_act, not silu"):
        model.set_sparse_decode(True)


def test_sparsity_meter_matches_transformers_relu_activations(tiny_workspace, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_hf_config(vocab_size=WORKSPACE_VOCAB, hidden_act="relu")
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path / "relu")
    out = tmp_path / "sparsity.json"
    assert (
        main(
            [
                "--model",
                str(tmp_path / "relu"),
                "--data",
                str(tiny_workspace["data"]),
                "--max-rows",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())

    zeros, values = [0] * 3, [0] * 3

    def hook(i):
        def record(module, inputs, output):
            zeros[i] += (output == 0).sum().item()
            values[i] += output.numel()

        return record

    for i, layer in enumerate(hf.model.layers):
        layer.mlp.act_fn.register_forward_hook(hook(i))
    from shearing.data.mixture import open_domain

    for domain in ("alpha", "beta", "gamma"):
        rows = open_domain(tiny_workspace["data"], "eval", domain)
        ids = torch.tensor([rows[i]["tokens"].tolist() for i in range(2)])
        with torch.no_grad():
            hf(ids)
    expected = [z / v for z, v in zip(zeros, values, strict=True)]
    assert result["per_layer"] == pytest.approx(expected, abs=1e-12)
    assert result["average_sparsity"] == pytest.approx(sum(expected) / 3)
    assert 0.3 < result["average_sparsity"] < 0.7  # random ReLU model: about half inactive
    assert set(result["loss"]) == {"alpha", "beta", "gamma"}


@pytest.mark.parametrize("kind", ["relu", "fatrelu", "drelu"])
def test_exports_reload_in_transformers_with_equal_logits(kind, tmp_path):
    from shearing.models.hf_io import load_model, save_pretrained

    _, model = tiny_pair()
    save_pretrained(model, tmp_path / "silu")
    sparse = load_model(tmp_path / "silu", hidden_act=kind, fatrelu_threshold=0.05)
    save_pretrained(sparse, tmp_path / kind)
    remote = kind != "relu"  # relu is a stock transformers activation
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / kind, trust_remote_code=remote, output_loading_info=True
    )
    assert all(not v for v in info.values())
    assert type(hf).__name__ == ("ShearingLlamaForCausalLM" if remote else "LlamaForCausalLM")
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (hf.eval()(ids).logits - sparse(ids)).abs().max().item()
        silu_diff = (hf(ids).logits - model(ids)).abs().max().item()
    assert diff < 1e-4 and silu_diff > 1e-3  # the activation really changed
