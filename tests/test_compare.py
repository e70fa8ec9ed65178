"""scripts/compare.py at tiny scale: every method runs at the same token budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

import yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def compare_here(monkeypatch, capfd):
    """`python scripts/compare.py ARGS` run in this process, each training stage as
    `shearing.trainer.train.main` (all `train.py` runs) instead of a child process: the same stages
    and files, without importing torch and composer again for every stage (about 12 s each on
    2 cores). The seeds test below runs the script as a user does."""
    from shearing.cli import CommandFailed, run
    from shearing.trainer.train import main as train_main
    from tests.helpers import script_module

    compare = script_module("compare")

    def stage(*cmd):
        cmd = [str(c) for c in cmd]
        assert cmd[:2] == [sys.executable, "train.py"], cmd
        print(f"\n$ {' '.join(cmd)}", flush=True)
        if train_main(cmd[2:]) != 0:
            raise CommandFailed(f"stage failed: {' '.join(cmd)}")
        return ""

    monkeypatch.setattr(compare, "sh", stage)
    monkeypatch.chdir(REPO)

    def call(argv):
        try:
            code = run(lambda: compare.main(argv))
        except SystemExit as stop:  # argparse's usage errors
            code = stop.code
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(argv, code, out, err)

    return call


def test_compare_runs_every_method_at_equal_tokens(tiny_workspace, tmp_path, compare_here):
    from tests.helpers import script_module

    METHODS = script_module("compare").METHODS

    out = tmp_path / "cmp"
    common = ["--model", str(tiny_workspace["model"]),
              "--data", str(tiny_workspace["data"]), "--prune-config", "yaml/tiny_prune.yaml",
              "--prune-steps", "8", "--continue-steps", "8", "--eval-rows", "4"]  # fmt: skip
    args = [*common, "--out", str(out), "--methods", ",".join(METHODS), "--objectives", "ce"]
    result = compare_here(args)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    report = json.loads((out / "compare.json").read_text())
    assert list(report["methods"]) == [f"{m}/ce/1x" for m in METHODS]
    assert (out / "compare_loss.png").stat().st_size > 1000
    table = result.stdout[result.stdout.index("held-out loss per domain") :]
    domains = sorted(tiny_workspace["texts"])
    row_tokens = 4 * 32  # global batch x seq len of both configs
    for key, r in report["methods"].items():
        name = r["method"]
        assert key in table and f"{key}: prune" in result.stdout  # per-stage wall time
        assert sorted(r["domains"]) == domains
        assert abs(r["average"] - sum(r["domains"].values()) / len(domains)) < 1e-9
        # 8 prune + 8 continue steps for L0; 16 continue steps for the others; the
        # importance methods also read 16 calibration rows per domain
        calibration = 16 * len(domains) * 32 if "importance" in name else 0
        assert r["tokens"] == 16 * row_tokens + calibration, name
        assert r["seconds"] > 0 and r["curve"][-1][0] == r["tokens"]
        hf = transformers.AutoModelForCausalLM.from_pretrained(out / key, dtype=torch.float32)
        c = hf.config
        shape = (c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
                 c.num_key_value_heads, c.intermediate_size)  # fmt: skip
        assert shape == (2, 24, 2, 1, 32), name  # yaml/tiny_prune.yaml's target
    # by default the L0 run continues from its pruning run's proportions, re-weighted
    cont = yaml.safe_load((out / "runs/shearing/ce/1x/continue/config.yaml").read_text())
    assert cont["data"]["proportions_from"] == str(out / "runs/shearing/ce/1x/prune")
    assert cont["data"]["update_type"] == "exponential" and cont["data"]["update_interval"]
    # ... and reads each domain's rows on from where the pruning run stopped
    prune_run = out / "runs/shearing/ce/1x/prune"
    assert cont["data"]["rows_from"] == str(prune_run)
    pruned = json.loads((prune_run / "data_position.json").read_text())
    after = json.loads((out / "runs/shearing/ce/1x/continue/data_position.json").read_text())
    assert pruned["samples"] == after["samples"] == 8 * 4
    assert sum(pruned["rows"].values()) == 8 * 4 and sum(after["rows"].values()) == 16 * 4
    assert all(after["rows"][d] >= pruned["rows"][d] for d in domains)
    assert after["row_seed"] == pruned["row_seed"]
    one_shot = yaml.safe_load((out / "runs/importance/ce/1x/continue/config.yaml").read_text())
    assert one_shot["data"]["rows_from"] is None  # one training stage: nothing to follow

    second = compare_here(args)
    assert second.returncode != 0 and "--force" in second.stderr  # nothing replaced silently


def test_compare_objectives_and_budgets(tiny_workspace, tmp_path, compare_here):
    """Each objective reaches every training stage; a budget scales both stages' steps."""
    out = tmp_path / "cmp"
    args = ["--model", str(tiny_workspace["model"]),
            "--data", str(tiny_workspace["data"]), "--prune-config", "yaml/tiny_prune.yaml",
            "--prune-steps", "4", "--continue-steps", "4", "--eval-rows", "4",
            "--out", str(out), "--methods", "shearing,importance", "--objectives", "ce,kd",
            "--budgets", "2,1", "--proportions", "equal", "--prune-set", "seed=23",
            "--schedule", "one"]  # fmt: skip
    result = compare_here(args)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    report = json.loads((out / "compare.json").read_text())
    runs = report["methods"]
    assert sorted(runs) == sorted(f"{m}/{o}/{b}x" for m in ("shearing", "importance")
                                  for o in ("ce", "kd") for b in (1, 2))  # fmt: skip
    calibration = 16 * 3 * 32
    for key, r in runs.items():
        assert (r["method"], r["objective"], f"{r['budget']:g}x") == tuple(key.split("/"))
        base = 8 * 4 * 32 + (calibration if r["method"] == "importance" else 0)
        assert r["tokens"] == base + (r["budget"] - 1) * 8 * 4 * 32, key
    for stage in ("prune", "continue"):  # the L0 run's stages both distil from the source
        cfg = yaml.safe_load((out / "runs/shearing/kd/1x" / stage / "config.yaml").read_text())
        assert cfg["distillation"]["ce_weight"] == 0.0
        assert cfg["distillation"]["teacher_path"] == str(tiny_workspace["model"])
        plain = yaml.safe_load((out / "runs/shearing/ce/1x" / stage / "config.yaml").read_text())
        assert plain["distillation"] is None
    # --prune-set reaches the L0 pruning run only; --proportions equal every continue stage
    prune = yaml.safe_load((out / "runs/shearing/ce/1x/prune/config.yaml").read_text())
    assert prune["seed"] == 23 and prune["data"]["update_type"] == "exponential"
    for method in ("shearing", "importance"):
        cont = yaml.safe_load((out / f"runs/{method}/ce/1x/continue/config.yaml").read_text())
        assert cont["seed"] != 23 and cont["data"]["proportions_from"] is None
        assert cont["data"]["proportions"] == [1 / 3] * 3
        assert cont["data"]["update_type"] == "constant"
        history = (out / f"runs/{method}/ce/1x/continue/domain_history.jsonl").read_text()
        for line in history.splitlines():  # evaluated and logged, never re-weighted
            assert list(json.loads(line)["proportions"].values()) == [1 / 3] * 3
    assert report["settings"]["proportions"] == "equal"
    # --schedule one: the L0 run's stages are one warmup and cosine over both stages' steps
    for budget in (1, 2):
        run = out / f"runs/shearing/ce/{budget}x"
        prune = yaml.safe_load((run / "prune/config.yaml").read_text())["scheduler"]
        cont = yaml.safe_load((run / "continue/config.yaml").read_text())["scheduler"]
        steps = 4 * budget
        assert (prune["t_start"], prune["t_max"]) == ("0ba", f"{2 * steps}ba")
        assert (cont["t_start"], cont["t_max"]) == (f"{steps}ba", f"{2 * steps}ba")
        assert cont["t_warmup"] == prune["t_warmup"]
    one_shot = yaml.safe_load((out / "runs/importance/ce/1x/continue/config.yaml").read_text())
    assert (one_shot["scheduler"]["t_start"], one_shot["scheduler"]["t_max"]) == ("0ba", None)
    bad = compare_here([*args[:-6], "--objectives", "mse", "--force"])
    assert bad.returncode == 2 and "--objectives entry 'mse' is unknown" in bad.stderr


def test_compare_seeds_give_the_run_to_run_spread(tiny_workspace, tmp_path, compare_here):
    """--seeds runs every cell once per seed (the seed reaches every training stage) and
    summarises each cell by the mean and sample standard deviation of its seeds."""
    out = tmp_path / "cmp"
    args = [sys.executable, "scripts/compare.py", "--model", str(tiny_workspace["model"]),
            "--data", str(tiny_workspace["data"]), "--prune-config", "yaml/tiny_prune.yaml",
            "--prune-steps", "2", "--continue-steps", "2", "--eval-rows", "4", "--out", str(out),
            "--methods", "shearing", "--objectives", "ce"]  # fmt: skip
    bad = compare_here([*args[2:], "--seeds", "5,x"])
    assert bad.returncode == 2 and "--seeds '5,x' is not a comma-separated list" in bad.stderr
    result = subprocess.run([*args, "--seeds", "5,6"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    report = json.loads((out / "compare.json").read_text())
    runs = report["methods"]
    assert sorted(runs) == ["shearing/ce/1x/seed5", "shearing/ce/1x/seed6"]
    for key, r in runs.items():
        for stage in ("prune", "continue"):
            cfg = yaml.safe_load((out / "runs" / key / stage / "config.yaml").read_text())
            assert cfg["seed"] == r["seed"], (key, stage)
        assert (out / key / "config.json").is_file()
    losses = [runs[f"shearing/ce/1x/seed{s}"]["average"] for s in (5, 6)]
    assert losses[0] != losses[1]  # another data order and gate noise: another model
    group = report["summary"]["shearing/ce/1x"]
    assert group["runs"] == 2 and group["average"] == losses
    # by hand for two values: the midpoint, and |a - b| / sqrt(2) (divisor n - 1 = 1)
    assert abs(group["mean"] - (losses[0] + losses[1]) / 2) < 1e-12
    assert abs(group["std"] - abs(losses[0] - losses[1]) / math.sqrt(2)) < 1e-12
    assert "average held-out loss over the seeds" in result.stdout
