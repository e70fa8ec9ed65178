"""A tiny pruning run through the real command lines: train.py, then convert_to_hf.sh."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

import yaml as pyyaml
from shearing.models.decoder import Masks
from shearing.models.hf_io import load_model
from tests.helpers import train_here

REPO = Path(__file__).resolve().parents[2]
TARGET = dict(
    hidden_size=24,
    num_attention_heads=2,
    num_key_value_heads=1,
    num_hidden_layers=2,
    intermediate_size=32,
)
SOURCE = dict(
    hidden_size=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_hidden_layers=3,
    intermediate_size=48,
)


def run(args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, **kwargs)


def tiny_args(ws, *overrides) -> list[str]:
    """train.py's arguments for yaml/tiny_prune.yaml on the tiny workspace, with overrides."""
    return ["yaml/tiny_prune.yaml", f"model.path={ws['model']}", f"data.path={ws['data']}",
            *overrides]  # fmt: skip


def train(ws, *overrides, **kwargs):
    """`python train.py yaml/tiny_prune.yaml` on the tiny workspace, with overrides."""
    return run([sys.executable, "train.py", *tiny_args(ws, *overrides)], **kwargs)


def train_in_process(ws, *overrides):
    """The same run in this process (`tests.helpers.train_here`)."""
    return train_here(tiny_args(ws, *overrides))


@pytest.fixture(scope="module")
def pruning_run(tiny_workspace, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "prune"
    result = train_in_process(tiny_workspace, f"save_folder={folder}")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def l0_state(folder):
    ckpt = torch.load(folder / "latest-rank0.pt", map_location="cpu", weights_only=False)
    return ckpt["state"]["model"]


def test_run_checkpoints_and_saves_its_config(pruning_run):
    assert (pruning_run / "latest-rank0.pt").exists()
    assert sorted(p.name for p in pruning_run.glob("ep*-ba*-rank0.pt")) == [
        "ep0-ba150-rank0.pt",
        "ep0-ba300-rank0.pt",
    ]
    saved = pyyaml.safe_load((pruning_run / "config.yaml").read_text())
    assert saved["max_duration"] == "300ba"
    assert saved["model"]["l0_module"]["target_model"]["hidden_size"] == 24


def test_expected_sparsity_reaches_target_and_lambdas_move(pruning_run):
    state = l0_state(pruning_run)
    shift = (2 / 3) * math.log(0.1 / 1.1)  # beta * log(-gamma / zeta)
    targets = {
        "layer": 1 - 2 / 3,
        "hidden": 1 - 24 / 32,
        "kv_group": 1 - 1 / 2,
        "head": 1 - 2 / 2,
        "intermediate": 1 - 32 / 48,
    }
    for module, target in targets.items():
        log_alpha = state[f"l0.log_alpha.{module}"]
        expected_sparsity = 1 - torch.sigmoid(log_alpha - shift).mean().item()
        assert abs(expected_sparsity - target) < 0.05, (module, expected_sparsity, target)
    moved = [abs(state[f"l0.lambda1.{m}"].item()) for m in targets if targets[m] > 0]
    assert min(moved) > 1e-3


def hand_masks(state):
    """Deterministic masks by hand: per row, keep the target count with the largest logits."""

    def top(module, keep):
        a = state[f"l0.log_alpha.{module}"]
        return torch.zeros_like(a).scatter_(-1, a.topk(keep, dim=-1).indices, 1.0)

    return Masks(
        z_layer=top("layer", 2),
        z_hidden=top("hidden", 24),
        z_kv=top("kv_group", 1),
        z_head=top("head", 2),
        z_intermediate=top("intermediate", 32),
    )


def test_convert_gives_the_target_shape_and_the_masked_model_logits(
    pruning_run, tiny_workspace, tmp_path
):
    out = tmp_path / "pruned_hf"
    result = run(["bash", "scripts/convert_to_hf.sh", str(pruning_run), str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert all(not v for v in info.values())
    for key, value in TARGET.items():
        assert getattr(hf.config, key) == value
    state = l0_state(pruning_run)
    full = load_model(tiny_workspace["model"])
    full.load_state_dict(
        {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    )
    ids = torch.randint(0, 40, (3, 24), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = full(ids, masks=hand_masks(state))
        actual = hf.eval()(ids).logits
    assert (actual - expected).abs().max().item() < 1e-4
    assert (out / "pruning_masks.json").is_file()
    # not on a terminal, each stage still says what it does, with the time so far
    stages = re.findall(r"^convert \[\d+\.\d s\]: (\w+)", result.stderr, re.M)
    assert stages == ["loading", "slicing", "done"], result.stderr


def test_convert_refuses_a_non_empty_output(pruning_run, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = run(["bash", "scripts/convert_to_hf.sh", str(pruning_run), str(tmp_path)])
    assert result.returncode == 2  # refused input (shearing.cli's convention)
    assert "is not empty; pass --force" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_convert_of_a_missing_checkpoint_is_a_clear_error(tmp_path):
    result = run(["bash", "scripts/convert_to_hf.sh", str(tmp_path / "nope"), str(tmp_path / "o")])
    assert result.returncode == 2
    assert "is not a composer checkpoint file or a run folder" in result.stderr


def test_bad_config_fails_before_building_with_one_line(tiny_workspace):
    result = train(tiny_workspace, "model.l0_module.target_model.num_hidden_layers=9")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: model.l0_module.target_model.num_hidden_layers=9 is larger than the source's 3"
    ]


@pytest.mark.parametrize(
    "extra",
    [
        [],
        # a frozen teacher (not in the checkpoint: reloaded), a settle phase after resuming,
        # and multipliers by plain gradient ascent (their only optimizer state is a step count)
        [
            "distillation.alpha=1.0",
            "distillation.ce_weight=0.5",
            "model.l0_module.settle_steps=5",
            "optimizer.lambda_ascent_lr=5.0",
        ],
    ],
    ids=["plain", "teacher-settle-ascent"],
)
def test_autoresume_after_an_interruption_is_bit_for_bit(extra, tiny_workspace, tmp_path):
    """Gates, lambdas, optimizer, data position and domain weights all resume exactly."""
    common = [
        "yaml/tiny_prune.yaml",
        *extra,
        f"model.path={tiny_workspace['model']}",
        f"data.path={tiny_workspace['data']}",
        "max_duration=20ba",
        "eval_interval=10ba",
        "save_interval=10ba",
        "model.l0_module.lagrangian_warmup_steps=10",
        "run_name=r",
        "autoresume=true",
        "data.update_interval=10",
        "data.reference_losses=[1.0,3.0,3.0]",
        "data.num_workers=2",
    ]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert train_here([*common, f"save_folder={whole}"]).returncode == 0
    # an interrupted run: only what it had written by step 10
    resumed.mkdir()
    (resumed / "ep0-ba10-rank0.pt").write_bytes((whole / "ep0-ba10-rank0.pt").read_bytes())
    (resumed / "latest-rank0.pt").symlink_to("ep0-ba10-rank0.pt")
    history = (whole / "domain_history.jsonl").read_text().splitlines()
    (resumed / "domain_history.jsonl").write_text("\n".join(history[:2]) + "\n")
    result = train_here([*common, f"save_folder={resumed}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Autoresuming training from checkpoint" in result.stderr
    a = torch.load(whole / "ep0-ba20-rank0.pt", map_location="cpu", weights_only=False)["state"]
    b = torch.load(resumed / "ep0-ba20-rank0.pt", map_location="cpu", weights_only=False)["state"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["dataset_state"] == b["dataset_state"]
    assert (resumed / "domain_history.jsonl").read_text() == (
        whole / "domain_history.jsonl"
    ).read_text()


SETTLE = ["max_duration=40ba", "eval_interval=10ba", "save_interval=10ba",
          "model.l0_module.lagrangian_warmup_steps=10",
          "model.l0_module.settle_steps=10"]  # fmt: skip


@pytest.fixture(scope="module")
def settle_run(tiny_workspace, tmp_path_factory):
    folder = tmp_path_factory.mktemp("settle") / "prune"
    result = train_in_process(tiny_workspace, f"save_folder={folder}", *SETTLE)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def expected_gates_by_hand(log_alpha: torch.Tensor) -> torch.Tensor:
    """Louizos et al. (2018)'s test-time gate: min(1, max(0, sigmoid(a)(zeta - gamma) + gamma))
    with zeta = 1.1, gamma = -0.1."""
    return torch.clamp(torch.sigmoid(log_alpha) * (1.1 - (-0.1)) + (-0.1), 0.0, 1.0)


@torch.no_grad()
def masked_loss(model, masks, data, rows=4):
    """Average over domains of the next-token loss on the first `rows` held-out rows."""
    import numpy as np

    from shearing.data.mixture import open_domain, read_manifest

    losses = []
    for domain in read_manifest(data)["domains"]:
        split = open_domain(data, "eval", domain)
        ids = torch.from_numpy(np.stack([split[i]["tokens"] for i in range(rows)]).astype(np.int64))
        logits = model(ids, masks=masks)
        losses.append(
            torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()
            ).item()
        )
    return sum(losses) / len(losses)


def test_settled_gates_are_frozen_and_training_uses_the_final_masks(settle_run):
    records = [pyyaml.safe_load(x) for x in (settle_run / "metrics.jsonl").read_text().splitlines()]
    settled = {r["step"]: r["l0/settled"] for r in records if "l0/settled" in r}
    # composer logs a batch's metrics at its end, under the count of batches done: the
    # settled batches 30..39 (the last 10 of 40) are logged as steps 31..40
    assert {s for s, v in settled.items() if v == 1.0} == set(range(31, 41))
    assert {s for s, v in settled.items() if v == 0.0} == set(range(1, 31))
    # then no Lagrangian term is trained (the loss is the cross-entropy alone)
    late = [r for r in records if r.get("step", -1) > 30 and "loss/train/total" in r]
    assert late and all("loss/train/lagrangian" not in r for r in late)
    a, b = (
        torch.load(settle_run / f"ep0-ba{n}-rank0.pt", weights_only=False)["state"]["model"]
        for n in (30, 40)
    )
    l0_keys = [k for k in a if k.startswith("l0.")]
    assert l0_keys and all(torch.equal(a[k], b[k]) for k in l0_keys)
    weights = [k for k in a if k.startswith("model.")]
    assert any(not torch.equal(a[k], b[k]) for k in weights)


def test_settle_losses_are_the_sliced_and_the_expected_gate_models_losses(
    settle_run, tiny_workspace, tmp_path
):
    """The reported pair, checked against independent computations: the converted model
    evaluated by `shearing.commands.eval`, and the masked model under gates computed by hand."""
    from shearing.commands.convert import load_checkpoint
    from shearing.commands.eval import evaluate
    from shearing.config import load_config
    from shearing.run import PROVENANCE, resolve

    records = [pyyaml.safe_load(x) for x in (settle_run / "metrics.jsonl").read_text().splitlines()]
    settle = {r["step"]: r for r in records if "eval/settle/gap" in r}
    assert sorted(settle) == [10, 20, 30, 40]
    last = settle[40]
    assert last["eval/settle/gap"] == pytest.approx(
        last["eval/settle/deterministic"] - last["eval/settle/expected"], abs=1e-9
    )
    out = tmp_path / "hf"
    result = run(["bash", "scripts/convert_to_hf.sh", str(settle_run), str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("settle"))
    assert f"{last['eval/settle/deterministic']:.3f} under the final deterministic masks" in line
    assert f"{last['eval/settle/expected']:.3f} under the expected gates" in line
    record = json.loads((out / PROVENANCE).read_text())
    assert record["source_model"] == str(tiny_workspace["model"].resolve())
    assert record["step"] == 40 and record["settle"]["gap"] == last["eval/settle/gap"]

    # deterministic: the sliced model, evaluated on the same held-out rows (4 per domain)
    sliced = evaluate(load_model(out), tiny_workspace["data"], max_rows=4)
    # 1e-4: the same rows through a differently shaped (sliced vs masked) fp32 computation
    assert last["eval/settle/deterministic"] == pytest.approx(sliced["average"]["loss"], abs=1e-4)
    # expected: the masked model under gates computed here from the checkpoint's logits
    cfg = load_config(settle_run / "config.yaml")
    model, l0 = load_checkpoint(settle_run / "ep0-ba40-rank0.pt", resolve(cfg, with_data=False))
    fields = {"layer": "z_layer", "hidden": "z_hidden", "head": "z_head", "kv_group": "z_kv",
              "intermediate": "z_intermediate"}  # fmt: skip
    gates = {fields[m]: expected_gates_by_hand(a.detach()) for m, a in l0.log_alpha.items()}
    by_hand = masked_loss(model.eval(), Masks(**gates), tiny_workspace["data"])
    assert last["eval/settle/expected"] == pytest.approx(by_hand, abs=1e-4)


def test_progress_off_a_terminal_is_plain_lines_and_on_one_composers_bar(tiny_workspace):
    """Off a terminal (a log file, CI) one line per 1% of the run and per evaluation, no
    carriage return or escape code; on a terminal composer's bar."""
    import io
    import pty

    args = tiny_args(tiny_workspace, "max_duration=200ba", "eval_interval=100ba",
                     "model.l0_module.lagrangian_warmup_steps=10", "progress_bar=true")  # fmt: skip
    logged = train_here(args)  # stderr is a StringIO here: not a terminal
    assert logged.returncode == 0, logged.stderr[-3000:]
    assert "\r" not in logged.stderr and "\x1b" not in logged.stderr
    # the total loss holds the Lagrangian term, which may be negative
    line = r"^train: step (\d+)/200 \(\d+%\), loss -?\d+\.\d{4}, [\d.]+ s/step, \d+ s left$"
    steps = [int(m) for m in re.findall(line, logged.stderr, re.M)]
    assert steps == list(range(2, 201, 2))  # every 1% of 200 steps
    line = r"^eval: step (\d+), held-out loss alpha [\d.]+, beta [\d.]+, gamma [\d.]+$"
    evals = re.findall(line, logged.stderr, re.M)
    assert evals == ["100", "200"]

    master, slave = pty.openpty()  # a terminal: composer's bar, no plain lines
    terminal = io.TextIOWrapper(os.fdopen(slave, "wb", buffering=0), write_through=True)
    kept = sys.stderr
    sys.stderr = terminal
    try:
        from shearing.config import load_config
        from shearing.run import resolve
        from shearing.trainer.build import plain_progress

        run = resolve(load_config(args[0], args[1:]))
        assert not plain_progress(run)  # what build_trainer asks: the bar stays
    finally:
        sys.stderr = kept
        terminal.close()
        os.close(master)
