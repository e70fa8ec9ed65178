"""composer's own parts and keys from the yaml: loggers, callbacks, algorithms, load_path,
save_overwrite, eval_first, eval_subset_num_batches, durations through composer's Time."""

import json
import math
import os
import re

import pytest

from shearing.config import ConfigError, load_config
from shearing.run import resolve
from shearing.trainer.folder import OVERWRITTEN, discard_overwritten, prepare_save_folder
from tests.trainer.test_train import train_in_process as train

STEPS = 6


def lr_by_hand(step: int, peak=1e-3, warmup=2, total=STEPS, alpha_f=0.1) -> float:
    """yaml/tiny_prune.yaml's schedule: linear warmup over 2 steps, cosine to 0.1 x peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return peak * (alpha_f + (1 - alpha_f) * 0.5 * (1 + math.cos(math.pi * progress)))


def records(folder):
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def parts_run(tiny_workspace, tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts") / "run"
    log = folder.parent / "composer.log"
    result = train(
        tiny_workspace,
        f"save_folder={folder}",
        f"max_duration={STEPS}ba",
        "eval_interval=3ba",
        f"save_interval={STEPS}ba",
        "model.l0_module.lagrangian_warmup_steps=3ba",  # the original configs' spelling
        f"loggers.file.filename={log}",
        "loggers.file.flush_interval=1",
        "callbacks.lr_monitor={}",
        "algorithms.gradient_clipping.clipping_type=norm",
        "algorithms.gradient_clipping.clipping_threshold=1.0",
        "eval_first=true",
        "eval_subset_num_batches=1",
        "python_log_level=debug",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, log, result


def test_yaml_loggers_and_callbacks_run_next_to_the_projects_own(parts_run):
    folder, log, _ = parts_run
    text = log.read_text()
    weights = [float(v) for v in re.findall(r"lr-AdamW/group0: ([0-9.e-]+)", text)]
    gates = [float(v) for v in re.findall(r"lr-AdamW/group1: ([0-9.e-]+)", text)]
    assert len(weights) == STEPS and len(gates) == STEPS, text[-2000:]
    # lr_monitor logs after each batch the rate the next step will use; FileLogger prints
    # 4 decimals, so each value is within half a unit of the last place (5e-5)
    expected = [lr_by_hand(batch) for batch in range(1, STEPS + 1)]
    assert all(abs(a - b) <= 5e-5 + 1e-12 for a, b in zip(weights, expected, strict=True)), (
        weights,
        expected,
    )
    assert all(abs(g - 0.1) <= 5e-5 for g in gates)  # optimizer.l0_lr, constant
    # the project's own logger still writes its records, including the pruning metrics
    steps = [r["step"] for r in records(folder) if "train/loss" in r or "loss/train/total" in r]
    assert len(steps) >= 1
    assert (folder / f"ep0-ba{STEPS}-rank0.pt").exists()


def test_eval_first_and_eval_subset(parts_run):
    folder, _, result = parts_run
    evals = [r for r in records(folder) if any(k.startswith("eval/loss/") for k in r)]
    assert [r["step"] for r in evals] == [0, 3, 6]  # eval_first adds step 0
    # the held-out set is domain by domain, 4 rows each; one batch of 4 is alpha's rows
    for r in evals:
        assert sorted(k for k in r if k.startswith("eval/loss/")) == ["eval/loss/alpha"]
    assert "composer.core.engine: Engine closed." in result.stderr  # a debug-level line


def test_load_path_starts_from_another_runs_checkpoint(parts_run, tiny_workspace, tmp_path):
    folder, _, _ = parts_run
    second = tmp_path / "second"
    result = train(
        tiny_workspace,
        f"save_folder={second}",
        f"max_duration={STEPS + 2}ba",
        "eval_interval=2ba",
        f"save_interval={STEPS + 2}ba",
        "model.l0_module.lagrangian_warmup_steps=3",
        f"load_path={folder / f'ep0-ba{STEPS}-rank0.pt'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Engine closed." not in result.stderr  # python_log_level's default: info
    evals = [r for r in records(second) if any(k.startswith("eval/loss/") for k in r)]
    assert sorted(k for k in evals[0] if k.startswith("eval/loss/")) == [
        "eval/loss/alpha", "eval/loss/beta", "eval/loss/gamma"
    ]  # fmt: skip
    trained = sorted({r["step"] for r in records(second)})
    assert trained == [STEPS, STEPS + 1, STEPS + 2], trained  # it went on from step 6
    assert (second / f"ep0-ba{STEPS + 2}-rank0.pt").exists()


def test_save_overwrite_replaces_a_run_and_keeps_it_until_the_new_one_finishes(
    parts_run, tiny_workspace
):
    folder, _, _ = parts_run
    before = (folder / f"ep0-ba{STEPS}-rank0.pt").stat().st_mtime_ns
    result = train(
        tiny_workspace,
        f"save_folder={folder}",
        "max_duration=2ba",
        "eval_interval=2ba",
        "save_interval=2ba",
        "model.l0_module.lagrangian_warmup_steps=1",
        "save_overwrite=true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (folder / OVERWRITTEN).exists()  # discarded once the new run finished
    assert (folder / "ep0-ba2-rank0.pt").exists()
    assert not (folder / f"ep0-ba{STEPS}-rank0.pt").exists()
    assert max(r["step"] for r in records(folder)) == 2  # the old records went too
    assert before  # (the old checkpoint existed before the overwrite)


def test_an_interrupted_overwrite_keeps_the_earlier_run(tiny_workspace, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    old = {"config.yaml": "old", "metrics.jsonl": "{}\n", "ep0-ba4-rank0.pt": "ckpt"}
    for name, text in old.items():
        (folder / name).write_text(text)
    os.symlink("ep0-ba4-rank0.pt", folder / "latest-rank0.pt")
    (folder / "notes.txt").write_text("the user's own file")
    cfg = load_config(
        "yaml/tiny_prune.yaml",
        [f"model.path={tiny_workspace['model']}", f"data.path={tiny_workspace['data']}",
         f"save_folder={folder}", "save_overwrite=true"],
    )  # fmt: skip
    prepare_save_folder(resolve(cfg))
    aside = folder / OVERWRITTEN
    assert {p.name for p in aside.iterdir()} == {*old, "latest-rank0.pt"}
    assert (aside / "latest-rank0.pt").read_text() == "ckpt"  # the link still resolves
    assert sorted(p.name for p in folder.iterdir()) == [OVERWRITTEN, "notes.txt"]
    # the replacement is cut off after writing a checkpoint; the next one keeps the
    # earlier (complete) run set aside and drops the cut-off run's files
    (folder / "ep0-ba1-rank0.pt").write_text("partial run")
    prepare_save_folder(resolve(cfg))
    assert (aside / "ep0-ba4-rank0.pt").read_text() == "ckpt"
    assert not (folder / "ep0-ba1-rank0.pt").exists()
    discard_overwritten(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("mode", ["save_overwrite=true", "autoresume=true"])
def test_only_global_rank_0_changes_the_save_folder(tiny_workspace, tmp_path, monkeypatch,
                                                     rank, mode):  # fmt: skip
    """The rule of shearing/trainer/folder.py, as the first process of each of two nodes
    sees it (local rank 0, global rank 0 or 1; composer reads the ranks from the launcher's
    environment): on a folder both share, the second node's process moves and removes
    nothing, whether it replaces the run or resumes it (an incomplete checkpoint to drop)."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("{}\n")
    (folder / "ep0-ba4-rank0.pt").write_text("a write cut off")  # not a whole checkpoint
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    cfg = load_config(
        "yaml/tiny_prune.yaml",
        [f"model.path={tiny_workspace['model']}", f"data.path={tiny_workspace['data']}",
         f"save_folder={folder}", "run_name=shared", mode],
    )  # fmt: skip
    before = sorted(p.name for p in folder.iterdir())
    prepare_save_folder(resolve(cfg, world_size=2))
    after = sorted(p.name for p in folder.iterdir())
    if rank == 1:
        assert after == before
    elif mode == "save_overwrite=true":
        assert after == [OVERWRITTEN]
    else:
        assert after == ["metrics.jsonl"]  # the cut-off checkpoint removed


@pytest.mark.parametrize(
    "override,key,steps",
    [  # the tiny corpus: rows of 32 tokens, batches of 4 rows = 128 tokens a step
        ("max_duration=3840tok", "total", 30),
        ("max_duration=120sp", "total", 30),
        ("max_duration=3841tok", "total", 31),  # a started step counts
        ("eval_interval=40sp", "eval_interval", 10),
        ("eval_interval=0.5dur", "eval_interval", 150),
        ("model.l0_module.lagrangian_warmup_steps=640ba", "lagrangian_warmup", 640),
        ("model.l0_module.lagrangian_warmup_steps=0.25dur", "lagrangian_warmup", 75),
        ("model.l0_module.lagrangian_warmup_steps=1280tok", "lagrangian_warmup", 10),
        ("model.l0_module.settle_steps=12", "settle", 12),
        ("model.l0_module.settle_steps=0.1dur", "settle", 30),
        ("scheduler.t_start=40sp", "schedule_start", 10),
        ("scheduler.t_max=0.5dur", "schedule_length", 150),
        ("scheduler.t_start=20ba", "schedule_length", 320),  # null t_max: start + the run
    ],
)
def test_every_duration_key_reads_composer_time(tiny_workspace, override, key, steps):
    base = [f"model.path={tiny_workspace['model']}", f"data.path={tiny_workspace['data']}"]
    extra = ["max_duration=1000ba"] if "640ba" in override else []
    if key != "lagrangian_warmup":  # the yaml's 60-step ramp would not fit the short runs
        extra.append("model.l0_module.lagrangian_warmup_steps=0")
    run = resolve(load_config("yaml/tiny_prune.yaml", [*base, *extra, override]))
    assert getattr(run.steps, key) == steps


def test_epochs_are_refused_for_every_duration_key(tiny_workspace):
    base = [f"model.path={tiny_workspace['model']}", f"data.path={tiny_workspace['data']}"]
    for override in ("max_duration=1ep", "save_interval=1ep",
                     "model.l0_module.settle_steps=1ep", "scheduler.t_warmup=1ep",
                     "scheduler.t_start=1ep", "scheduler.t_max=1ep"):  # fmt: skip
        with pytest.raises(ConfigError, match="epochs are not defined"):
            resolve(load_config("yaml/tiny_prune.yaml", [*base, override]))


def scheduled_rates(tiny_workspace, steps: int, *overrides: str) -> list[float]:
    """The weights' learning rate at each of `steps` steps of build_scheduler's schedule."""
    import torch

    from shearing.trainer.build import build_scheduler

    base = [f"model.path={tiny_workspace['model']}", f"data.path={tiny_workspace['data']}",
            "model.l0_module.lagrangian_warmup_steps=0", f"max_duration={steps}ba",
            "scheduler.t_warmup=2ba", "optimizer.lr=1e-3"]  # fmt: skip
    run = resolve(load_config("yaml/tiny_prune.yaml", [*base, *overrides]))
    weight, gate = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [weight]}, {"params": [gate], "lr": 0.1}], lr=1e-3)
    scheduler = build_scheduler(run, optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        assert optimizer.param_groups[1]["lr"] == 0.1  # the gates' rate stays constant
        optimizer.step()
        scheduler.step()
    return rates


def test_two_stages_share_one_schedule_with_t_start_and_t_max(tiny_workspace):
    """A 4-step run with t_max=10 then a 6-step run with t_start=4 follow the warmup and
    cosine of one 10-step run, step for step (the hand-computed schedule)."""
    by_hand = [lr_by_hand(step, total=10) for step in range(10)]
    first = scheduled_rates(tiny_workspace, 4, "scheduler.t_max=10ba")
    second = scheduled_rates(tiny_workspace, 6, "scheduler.t_start=4ba")
    assert first + second == pytest.approx(by_hand, rel=1e-12)
    # the default still starts a schedule of its own: warmup, and a cosine over 6 steps
    alone = scheduled_rates(tiny_workspace, 6)
    assert alone == pytest.approx([lr_by_hand(step, total=6) for step in range(6)], rel=1e-12)
    assert alone[0] < second[0]  # a warmup again, which the shared schedule does not have


@pytest.mark.parametrize(
    "text",
    ["640ba", "0.2dur", "0.25dur", ".5dur", "3e4tok", "1e9tok", "1E3sp", "12sp", "1ep", "5BA",
     "-3ba", "1.5ba", "ba", "12", "12 ba", "1h30m", "3e4.5tok"],
)  # fmt: skip
def test_the_schemas_duration_reading_is_composers(text):
    """The config reads duration strings itself (it imports no composer); composer reads
    the same strings where it is handed them (max_duration, eval_interval, ...): the two
    must agree on every string, and refuse the same ones."""
    from composer.core import Time

    from shearing.config import parse_duration

    try:
        t = Time.from_timestring(text)
        theirs = (float(t.value), t.unit.value) if t.unit.value != "sec" else None
    except (ValueError, TypeError):
        theirs = None
    try:
        ours = parse_duration(text)
    except ValueError:
        ours = None
    assert ours == theirs
