"""`shearing oneshot`: exactly the target shape, a stock transformers model."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from shearing.commands.oneshot import main, oneshot
from shearing.models.hf_io import load_model
from shearing.pruning.importance import calibration_batches, importance_scores

TARGET = {"num_hidden_layers": 2, "hidden_size": 24, "num_attention_heads": 2,
          "num_key_value_heads": 1, "intermediate_size": 32}  # yaml/tiny_prune.yaml  # fmt: skip


def paths(ws):
    return [f"model.path={ws['model']}", f"data.path={ws['data']}"]


@pytest.mark.parametrize("method", ["importance", "random"])
def test_oneshot_output_has_the_target_shape_and_loads_in_transformers(
    tiny_workspace, tmp_path, method, capsys
):
    out = tmp_path / method
    code = main(["--config", "yaml/tiny_prune.yaml", "--method", method, "--out", str(out),
                 "--calibration-rows", "4", *paths(tiny_workspace)])  # fmt: skip
    assert code == 0
    # the chosen shape first, then a line per stage (pytest's stderr is not a terminal)
    lines = [x.split(": ", 1)[1] for x in capsys.readouterr().err.splitlines()
             if x.startswith("oneshot [")]  # fmt: skip
    assert lines[0].startswith("pruning to num_hidden_layers=2, hidden_size=24,")
    assert [x.split()[0] for x in lines[1:]] == (
        ["loading", "scoring", "slicing,", "done"]
        if method == "importance"
        else ["loading", "slicing,", "done"]
    )
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, output_loading_info=True
    )
    assert not any(info.values())
    assert {k: getattr(hf.config, k) for k in TARGET} == TARGET
    # every kept weight is the source's weight at the kept indices
    masks = json.loads((out / "pruning_masks.json").read_text())["masks"]
    source = load_model(tiny_workspace["model"]).state_dict()
    layer, hidden = masks["z_layer"][0], masks["z_hidden"]
    ffn = masks["z_intermediate"][layer]
    expected = source[f"model.layers.{layer}.mlp.up_proj.weight"][ffn][:, hidden]
    assert torch.equal(hf.state_dict()["model.layers.0.mlp.up_proj.weight"], expected)


def test_importance_keeps_the_top_scored_units(tiny_workspace, tmp_path):
    out = oneshot("yaml/tiny_prune.yaml", "importance", tmp_path / "imp",
                  calibration_rows=4, overrides=paths(tiny_workspace))  # fmt: skip
    masks = json.loads((out / "pruning_masks.json").read_text())["masks"]
    model = load_model(tiny_workspace["model"])
    scores = importance_scores(model, calibration_batches(tiny_workspace["data"], 4))
    assert sorted(masks["z_layer"]) == sorted(scores["layer"].topk(2).indices.tolist())
    assert sorted(masks["z_hidden"]) == sorted(scores["hidden"].topk(24).indices.tolist())
    for i, kept in enumerate(masks["z_kv"]):
        assert kept == [int(scores["kv_group"][i].argmax())]


def test_random_depends_on_the_seed(tiny_workspace, tmp_path):
    def kept(seed):
        out = oneshot("yaml/tiny_prune.yaml", "random", tmp_path / "r", seed=seed, force=True,
                      overrides=paths(tiny_workspace))  # fmt: skip
        return json.loads((out / "pruning_masks.json").read_text())["masks"]

    assert kept(1) == kept(1) != kept(2)


def test_oneshot_errors(tiny_workspace, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    args = ["--config", "yaml/tiny_prune.yaml", "--method", "random", *paths(tiny_workspace)]
    assert main([*args, "--out", str(tmp_path / "full")]) == 2
    assert "is not empty; pass --force" in capsys.readouterr().err
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    bad = [*args, "--out", str(tmp_path / "o"), "model.l0_module.target_model.hidden_size=99"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "hidden_size=99 is larger than the source's 32" in err
