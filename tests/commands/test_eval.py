"""shearing.commands.eval against transformers' own loss on the same rows."""

import json
import math

import numpy as np
import torch
import transformers

from shearing.commands.eval import main
from shearing.data.mixture import open_domain


def test_eval_equals_transformers_loss_per_domain(tiny_workspace, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "--model",
                str(tiny_workspace["model"]),
                "--data",
                str(tiny_workspace["data"]),
                "--max-rows",
                "3",
                "--batch-size",
                "2",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_workspace["model"]).eval()
    expected = {}
    for domain in ("alpha", "beta", "gamma"):
        rows = open_domain(tiny_workspace["data"], "eval", domain)
        ids = torch.from_numpy(np.stack([rows[i]["tokens"] for i in range(3)]).astype(np.int64))
        with torch.no_grad():
            expected[domain] = hf(ids, labels=ids).loss.item()  # mean over the 3 x 31 targets
        got = result["domains"][domain]
        assert abs(got["loss"] - expected[domain]) < 1e-4
        assert abs(got["perplexity"] - math.exp(expected[domain])) < 1e-3
        assert got["tokens"] == 3 * 31
    assert abs(result["average"]["loss"] - sum(expected.values()) / 3) < 1e-4
    assert result["parameters"] == hf.num_parameters()
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["domain", "loss", "ppl", "tokens"]


def test_eval_of_a_path_without_a_model_is_a_one_line_error(tiny_workspace, tmp_path, capsys):
    assert main(["--model", str(tmp_path), "--data", str(tiny_workspace["data"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model path") and "\n" not in err


def test_sparse_ffn_eval_equals_transformers_loss_of_a_relu_model(tiny_workspace, tmp_path, capsys):
    import shutil

    relu = tmp_path / "relu"
    shutil.copytree(tiny_workspace["model"], relu)
    config = json.loads((relu / "config.json").read_text())
    (relu / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    out = tmp_path / "eval.json"
    args = ["--model", str(relu), "--data", str(tiny_workspace["data"]), "--max-rows", "2"]
    assert main([*args, "--sparse-ffn", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    hf = transformers.AutoModelForCausalLM.from_pretrained(relu).eval()
    for domain in ("alpha", "beta", "gamma"):
        rows = open_domain(tiny_workspace["data"], "eval", domain)
        ids = torch.from_numpy(np.stack([rows[i]["tokens"] for i in range(2)]).astype(np.int64))
        with torch.no_grad():
            expected = hf(ids, labels=ids).loss.item()
        assert abs(result["domains"][domain]["loss"] - expected) < 1e-4

    silu = ["--model", str(tiny_workspace["model"]), "--data", str(tiny_workspace["data"])]
    assert main([*silu, "--sparse-ffn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "error: sparse FFN decoding needs a ReLU-family hidden_act, not silu"
