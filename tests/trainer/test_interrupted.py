"""Commands killed with SIGKILL: the old result or the complete new one, resume works, no
leftovers grow.

Staged outputs are killed at the two points of `shearing.files.staged_output` where a kill
could matter, through its test hook: after the new result is staged, and between the two
renames (tokenize at both; convert, the same function, at the second). Training is killed
at random moments of a run that checkpoints every step, so kills land inside checkpoint
writes too; a truncated checkpoint (what a kill during `torch.save` leaves) is also placed
by hand where autoresume and convert meet it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shearing.files import KILL_POINT_ENV
from tests.helpers import train_here

REPO = Path(__file__).resolve().parents[2]


def run(args, kill_at=None, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(KILL_POINT_ENV, None)
    if kill_at:
        env[KILL_POINT_ENV] = kill_at
    args = [str(a) for a in args]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, **kwargs)


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def tokenize(ws, out, *extra, kill_at=None):
    args = [sys.executable, "data_prep/tokenize.py", "--input", ws["root"] / "corpus"]
    args += ["--output", out, "--tokenizer", ws["tokenizer"], "--eval-seqs", "2", *extra]
    return run(args, kill_at=kill_at)


def test_tokenize_killed_keeps_the_old_shards_and_the_next_run_cleans_up(tiny_workspace, tmp_path):
    out = tmp_path / "mds"
    assert tokenize(tiny_workspace, out, "--seq-len", "32").returncode == 0
    old = (out / "manifest.json").read_text()
    assert json.loads(old)["seq_len"] == 32

    # Killed once the new shards are staged: the old output is untouched.
    killed = tokenize(tiny_workspace, out, "--seq-len", "16", "--force", kill_at="staged")
    assert killed.returncode == -signal.SIGKILL
    assert (out / "manifest.json").read_text() == old
    assert [n.split("-")[0] for n in hidden(tmp_path)] == [".mds.partial"]

    # Killed between the two renames: the old output sits aside, nothing at `out`.
    killed = tokenize(tiny_workspace, out, "--seq-len", "16", "--force", kill_at="swapped")
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()
    # The next run (without --force) puts the old result back, removes the leftovers and
    # refuses to replace it.
    again = tokenize(tiny_workspace, out, "--seq-len", "16")
    assert again.returncode == 2 and "is not empty; pass --force" in again.stderr
    assert (out / "manifest.json").read_text() == old
    assert hidden(tmp_path) == []

    # And with --force the complete new result replaces it, leaving nothing behind.
    assert tokenize(tiny_workspace, out, "--seq-len", "16", "--force").returncode == 0
    assert json.loads((out / "manifest.json").read_text())["seq_len"] == 16
    assert hidden(tmp_path) == []


def prune(ws, folder, *extra):
    """A pruning run in this process (`tests.helpers.train_here`): the runs that are not
    killed; the killed ones below are child processes."""
    args = ["yaml/tiny_prune.yaml", f"model.path={ws['model']}"]
    args += [f"data.path={ws['data']}", f"save_folder={folder}", "run_name=r"]
    args += ["model.l0_module.lagrangian_warmup_steps=4", *extra]
    return train_here(args)


#: The run both tests below start from: checkpoints at steps 2, 4 and 6.
COMMON = ("max_duration=6ba", "save_interval=2ba", "eval_interval=2ba", "autoresume=true")


@pytest.fixture(scope="module")
def whole_run(tiny_workspace, tmp_path_factory):
    folder = tmp_path_factory.mktemp("interrupted") / "whole"
    result = prune(tiny_workspace, folder, *COMMON)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def test_convert_killed_keeps_the_old_model(whole_run, tmp_path):
    """Killed between its two renames (the harder of `staged_output`'s two kill points; the
    tokenize test above kills the same function at both)."""
    out = tmp_path / "hf"
    convert = ["bash", "scripts/convert_to_hf.sh"]
    assert run([*convert, whole_run / "ep0-ba2-rank0.pt", out]).returncode == 0
    old = (out / "model.safetensors").read_bytes()
    killed = run([*convert, whole_run, out, "--force"], kill_at="swapped")
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() or (out / "model.safetensors").read_bytes() == old
    again = run([*convert, whole_run, out])  # restores and refuses: not empty
    assert again.returncode == 2 and "is not empty" in again.stderr
    assert (out / "model.safetensors").read_bytes() == old
    assert hidden(tmp_path) == []
    assert run([*convert, whole_run, out, "--force"]).returncode == 0
    assert (out / "model.safetensors").read_bytes() != old  # step 6's weights
    assert hidden(tmp_path) == []


def truncate_copy(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) * 2 // 3])


def state_of(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["state"]


def assert_same_training_state(a: Path, b: Path) -> None:
    sa, sb = state_of(a), state_of(b)
    assert sa["model"].keys() == sb["model"].keys()
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key
    assert sa["dataset_state"] == sb["dataset_state"]


def test_a_checkpoint_cut_short_is_skipped_by_autoresume_and_convert(
    tiny_workspace, whole_run, tmp_path
):
    common, whole = COMMON, whole_run

    # Killed while writing step 4's checkpoint: step 2's is whole, step 4's cut short.
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy2(whole / "ep0-ba2-rank0.pt", cut / "ep0-ba2-rank0.pt")
    (cut / "latest-rank0.pt").symlink_to("ep0-ba2-rank0.pt")
    truncate_copy(whole / "ep0-ba4-rank0.pt", cut / "ep0-ba4-rank0.pt")
    shutil.copy2(whole / "config.yaml", cut / "config.yaml")

    converted = run(["bash", "scripts/convert_to_hf.sh", cut, tmp_path / "hf"])
    assert converted.returncode == 0, converted.stderr[-2000:]
    assert "skipping" in converted.stderr and "ep0-ba4-rank0.pt" in converted.stderr
    masks = json.loads((tmp_path / "hf" / "pruning_masks.json").read_text())
    assert masks  # converted from step 2, the newest complete checkpoint

    resumed = prune(tiny_workspace, cut, *common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "removing" in resumed.stderr and "incomplete" in resumed.stderr
    assert "Autoresuming training from checkpoint" in resumed.stderr
    assert_same_training_state(whole / "ep0-ba6-rank0.pt", cut / "ep0-ba6-rank0.pt")

    # Killed during the very first checkpoint: nothing to resume, the run starts afresh.
    first = tmp_path / "first"
    first.mkdir()
    truncate_copy(whole / "ep0-ba2-rank0.pt", first / "ep0-ba2-rank0.pt")
    again = prune(tiny_workspace, first, *common)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_training_state(whole / "ep0-ba6-rank0.pt", first / "ep0-ba6-rank0.pt")


def test_training_killed_at_random_moments_resumes_to_the_same_weights(tiny_workspace, tmp_path):
    common = ("max_duration=12ba", "save_interval=1ba", "eval_interval=4ba", "autoresume=true")
    whole = tmp_path / "whole"
    assert prune(tiny_workspace, whole, *common).returncode == 0

    folder = tmp_path / "killed"
    rng = random.Random(0)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "train.py", "yaml/tiny_prune.yaml"]
    args += [f"model.path={tiny_workspace['model']}", f"data.path={tiny_workspace['data']}"]
    args += [f"save_folder={folder}", "run_name=r", "model.l0_module.lagrangian_warmup_steps=4"]
    args += list(common)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # Wait for a first checkpoint of this attempt, then kill at a random moment.
        deadline = time.time() + 120
        start = len(list(folder.glob("ep*-ba*-rank0.pt"))) if folder.exists() else 0
        while time.time() < deadline and proc.poll() is None:
            if folder.exists() and len(list(folder.glob("ep*-ba*-rank0.pt"))) > start:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1
    final = prune(tiny_workspace, folder, *common)
    assert final.returncode == 0, final.stderr[-3000:]
    assert_same_training_state(whole / "ep0-ba12-rank0.pt", folder / "ep0-ba12-rank0.pt")
    names = {p.name for p in folder.iterdir()}
    assert names == {p.name for p in whole.iterdir()}  # no leftovers of the killed attempts
    # autoresume of the finished run: nothing to do, nothing rewritten
    records = {n: (folder / n).read_bytes() for n in ("config.yaml", "metrics.jsonl")}
    again = prune(tiny_workspace, folder, *common)
    assert again.returncode == 0 and "already holds the finished run (12 of 12" in again.stdout
    assert records == {n: (folder / n).read_bytes() for n in records}
