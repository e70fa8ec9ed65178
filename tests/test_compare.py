"""scripts/compare.py at tiny scale: every method runs at the same token budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import transformers

REPO = Path(__file__).resolve().parent.parent


def test_compare_runs_every_method_at_equal_tokens(tiny_workspace, tmp_path):
    from tests.helpers import script_module

    METHODS = script_module("compare").METHODS

    out = tmp_path / "cmp"
    args = [sys.executable, "scripts/compare.py", "--out", str(out),
            "--methods", ",".join(METHODS), "--model", str(tiny_workspace["model"]),
            "--data", str(tiny_workspace["data"]),
            "--prune-config", "yaml/tiny_prune.yaml", "--prune-steps", "8",
            "--continue-steps", "8", "--eval-rows", "4"]  # fmt: skip
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    report = json.loads((out / "compare.json").read_text())
    assert list(report["methods"]) == list(METHODS)
    assert (out / "compare_loss.png").stat().st_size > 1000
    table = result.stdout[result.stdout.index("held-out loss per domain") :]
    domains = sorted(tiny_workspace["texts"])
    row_tokens = 4 * 32  # global batch x seq len of both configs
    for name, r in report["methods"].items():
        assert name in table
        assert sorted(r["domains"]) == domains
        assert abs(r["average"] - sum(r["domains"].values()) / len(domains)) < 1e-9
        # 8 prune + 8 continue steps for L0; 16 continue steps for the others; the
        # importance methods also read 16 calibration rows per domain
        calibration = 16 * len(domains) * 32 if "importance" in name else 0
        assert r["tokens"] == 16 * row_tokens + calibration, name
        assert r["seconds"] > 0 and r["curve"][-1][0] == r["tokens"]
        hf = transformers.AutoModelForCausalLM.from_pretrained(out / name, dtype=torch.float32)
        c = hf.config
        shape = (c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
                 c.num_key_value_heads, c.intermediate_size)  # fmt: skip
        assert shape == (2, 24, 2, 1, 32), name  # yaml/tiny_prune.yaml's target

    second = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert second.returncode != 0 and "--force" in second.stderr  # nothing replaced silently
