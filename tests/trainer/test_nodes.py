"""Runs across nodes, simulated on this machine: the per-node cache rule, a cache on a
full disk, and two composer nodes reading a remote corpus, killed and resumed."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shearing.files import KILL_POINT_ENV
from tests.helpers import free_port, train_here

#: streaming registers its datasets in shared memory: these tests share one xdist worker
pytestmark = pytest.mark.xdist_group("streaming")

REPO = Path(__file__).resolve().parents[2]


def _node(rank: int, cache: str, port: int, out) -> None:
    """One process standing for node `rank` of two (its local rank 0), in a gloo group."""
    import torch.distributed as td

    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
        NODE_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    from shearing.config import ConfigError
    from shearing.trainer.nodes import check_own_cache

    td.init_process_group("gloo", rank=rank, world_size=2)
    try:
        check_own_cache(cache)
        out.put((rank, "accepted"))
    except ConfigError as err:
        out.put((rank, str(err)))
    finally:
        td.destroy_process_group()


def nodes_on(caches: list[str]) -> dict[int, str]:
    """What each of two nodes says of its cache folder."""
    ctx = multiprocessing.get_context("fork")  # composer is imported already: start at once
    out, port = ctx.Queue(), free_port()
    # daemons: a child that hangs fails the test (the timeouts below) and ends with the worker
    procs = [ctx.Process(target=_node, args=(r, caches[r], port, out), daemon=True) for r in (0, 1)]
    for p in procs:
        p.start()
    said = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return said


def test_one_cache_folder_for_two_nodes_is_refused_on_every_node(tmp_path):
    shared = str(tmp_path / "shared")
    said = nodes_on([shared, shared])
    expected = (
        f"data.local {shared!r} is one folder for nodes 0, 1; each node needs its own cache "
        "(streaming counts and evicts it per node): use a path on each node's local disk"
    )
    assert said == {0: expected, 1: expected}
    assert list(Path(shared).iterdir()) == []  # the marks are gone
    said = nodes_on([str(tmp_path / "node0"), str(tmp_path / "node1")])
    assert said == {0: "accepted", 1: "accepted"}


def in_namespace(script: str) -> list[str]:
    """`sh -c SCRIPT` in a mount namespace of its own (a user namespace maps this user to
    root there, so no privileges are needed): what it mounts, only it sees."""
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]


def test_a_cache_on_a_full_disk_is_refused_before_training(
    s3, remote_corpus, tiny_workspace, tmp_path
):
    """A 16 KB filesystem (a tmpfs mounted where only this command sees it) holds less than
    the tiny corpus (about 70 KB of shards): the run is refused before it downloads."""
    small = tmp_path / "small"
    small.mkdir()
    train = [sys.executable, "train.py", "yaml/tiny_prune.yaml",
             f"model.path={tiny_workspace['model']}", f"data.remote={remote_corpus}",
             f"data.local={small}/cache"]  # fmt: skip
    script = f'mount -t tmpfs -o size=16k tmpfs "{small}" && exec "$@"'
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [*in_namespace(script), "sh", *train], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    found = re.fullmatch(
        rf"error: data.local '{small}/cache' has ([\d.]+) KB free for the cache but the corpus "
        r"needs ([\d.]+) KB; set data.cache_limit below that \(at least four shards\) or "
        r"choose a folder with more room",
        line,
    )
    assert found, line
    # every row of both splits, 32 uint16 tokens each
    manifest = json.loads((tiny_workspace["data"] / "manifest.json").read_text())
    rows = sum(s["rows"] for d in manifest["domains"].values() for s in d.values())
    assert float(found[2]) == round(rows * 32 * 2 / 1024, 1)
    assert float(found[1]) <= 16.0
    assert list(small.iterdir()) == []  # nothing written (and the mount was its own)


#: A short pruning run that evaluates, re-weights its domains and checkpoints every 5 steps.
NODES_RUN = [
    "yaml/tiny_prune.yaml", "max_duration=20ba", "eval_interval=5ba", "save_interval=5ba",
    "model.l0_module.lagrangian_warmup_steps=10", "data.update_interval=10",
    "data.reference_losses=[1.0,3.0,3.0]", "run_name=nodes", "autoresume=true",
    "log_to_console=true", "console_log_interval=5ba",
]  # fmt: skip


def launch_two_nodes(
    args: list[str], tmp: Path, kill: dict[int, str] | None = None, program: str = "train.py"
) -> list:
    """Two composer nodes on this machine (`--world_size 2 --nproc 1 --node_rank R`), each in
    a mount namespace with a /dev/shm and a TMPDIR of its own, as on two hosts (streaming
    keeps a node's shared memory and locks there), and each with its own `data.local`.
    `kill`: node -> the kill point it dies at; `program`: what the launcher starts.
    Returns each node's (code, stdout + stderr)."""
    composer = Path(sys.executable).parent / "composer"
    port = str(free_port())
    nodes = []
    for node in (0, 1):
        (tmp / f"tmp{node}").mkdir(exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp / f"tmp{node}")}
        if kill and node in kill:
            env[KILL_POINT_ENV] = kill[node]
        launch = [str(composer), "--world_size", "2", "--nproc", "1", "--node_rank", str(node),
                  "--master_addr", "127.0.0.1", "--master_port", port, program, *args,
                  f"data.local={tmp / f'cache{node}'}"]  # fmt: skip
        script = 'mount -t tmpfs tmpfs /dev/shm && exec "$@"'
        nodes.append(
            subprocess.Popen(
                [*in_namespace(script), "sh", *launch],
                cwd=REPO,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        )
    outputs = [node.communicate(timeout=900)[0] for node in nodes]
    return [(node.returncode, out) for node, out in zip(nodes, outputs, strict=True)]


def records(folder: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (folder / name).read_text().splitlines()]


def losses(folder: Path) -> dict[int, float]:
    return {r["step"]: r["loss/train/total"] for r in records(folder, "metrics.jsonl")
            if "loss/train/total" in r}  # fmt: skip


def assert_same_run(folder: Path, one: Path) -> None:
    """The 20-step run saved in `folder` is the one-process run saved in `one`, to the
    bounds each caller justifies: every step's loss (1e-5 relative), the proportions of
    each update (1e-6) and the last checkpoint's weights and gates (1e-5 absolute)."""
    import torch

    ref, got = losses(one), losses(folder)
    assert sorted(got) == sorted(ref) == list(range(20))
    for step in ref:
        assert got[step] == pytest.approx(ref[step], rel=1e-5), step
    for a, b in zip(records(one, "domain_history.jsonl"),
                    records(folder, "domain_history.jsonl"), strict=True):  # fmt: skip
        assert a["step"] == b["step"]
        for d in a["proportions"]:
            assert b["proportions"][d] == pytest.approx(a["proportions"][d], abs=1e-6)
    mine = torch.load(folder / "ep0-ba20-rank0.pt", weights_only=False)["state"]["model"]
    theirs = torch.load(one / "ep0-ba20-rank0.pt", weights_only=False)["state"]["model"]
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert torch.allclose(mine[key], theirs[key], rtol=0, atol=1e-5), key


@pytest.fixture(scope="module")
def one_process(s3, remote_corpus, tiny_workspace, tmp_path_factory) -> tuple[list[str], Path]:
    """The run the two-node runs are compared with, in one process on the same global
    batch: its arguments (without `data.local` and `save_folder`) and its save folder."""
    args = [*NODES_RUN, f"model.path={tiny_workspace['model']}", f"data.remote={remote_corpus}"]
    tmp = tmp_path_factory.mktemp("one")
    reference = train_here([*args, f"data.local={tmp / 'cache'}", f"save_folder={tmp / 'run'}"])
    assert reference.returncode == 0, reference.stderr[-3000:]
    return args, tmp / "run"


def test_two_nodes_read_a_remote_corpus_die_resume_and_equal_one_process(one_process, tmp_path):

    args, one = one_process
    args = list(args)

    # one save folder for both nodes (a shared filesystem), holding an earlier run that the
    # first launch replaces (save_overwrite) and the user's own file
    folder = tmp_path / "two"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"step": 99}\n')  # the earlier run's
    (folder / "ep0-ba4-rank0.pt").write_text("the earlier run's checkpoint")
    (folder / "notes.txt").write_text("the user's")
    args.append(f"save_folder={folder}")
    replace = ["autoresume=false", "save_overwrite=true"]
    first = launch_two_nodes([*args, *replace], tmp_path, kill={1: "batch-12"})
    assert all(code != 0 for code, _ in first)  # node 1 died; node 0 lost its peer
    assert sorted(p.name for p in folder.glob("ep*")) == ["ep0-ba10-rank0.pt", "ep0-ba5-rank0.pt"]
    aside = folder / ".overwritten"  # kept while the replacing run is unfinished
    assert sorted(p.name for p in aside.iterdir()) == ["ep0-ba4-rank0.pt", "metrics.jsonl"]
    before = losses(folder)  # composer logs batch k's loss as step k - 1
    assert max(before) == 11  # the killed run recorded batches 11 and 12 past its checkpoint

    second = launch_two_nodes(args, tmp_path)
    for code, out in second:
        assert code == 0, out[-3000:]
        assert "Autoresuming training from checkpoint" in out
    # exact resume: the steps both attempts ran, from the same checkpoint, bit for bit
    after = losses(folder)
    assert sorted(after) == list(range(20))  # the records continue from the checkpoint, once
    assert [after[s] for s in (10, 11)] == [before[s] for s in (10, 11)]
    history = records(folder, "domain_history.jsonl")
    assert [h["step"] for h in history] == [0, 5, 10, 15, 20]
    # the replaced run dropped once this one finished; the user's file kept; global rank 0
    # alone wrote the records (a second writer would repeat each line)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.yaml", "data_position.json", "domain_history.jsonl", "ep0-ba10-rank0.pt",
        "ep0-ba15-rank0.pt", "ep0-ba20-rank0.pt", "ep0-ba5-rank0.pt", "latest-rank0.pt",
        "metrics.jsonl", "notes.txt",
    ]  # fmt: skip
    assert (folder / "notes.txt").read_text() == "the user's"

    # one process on the same global batch: 2 x 2 rows there, 4 rows here. The logged loss
    # is the mean over both nodes (composer all-reduces it); the gradients are averaged by
    # DDP; the gate noise of a step is drawn from (seed, step) on every rank. What differs
    # is the order of float sums (a half-batch mean, then the mean of two). Measured (AMD
    # EPYC, torch 2.14.1): losses 1.5e-7 relative, weights and gates 4.8e-7 absolute,
    # proportions 1.3e-8; the bounds are about 20 times that. Gate noise drawn per rank
    # instead moves the losses by ~1e-2.
    assert_same_run(folder, one)
    assert history[2]["proportions"] != history[0]["proportions"]  # they were re-weighted

    # each node's local rank 0 logs to its own console: the same proportions on both
    def proportion_lines(text):
        return [x.strip() for x in text.splitlines() if "Eval proportion/" in x]

    assert proportion_lines(second[0][1]) == proportion_lines(second[1][1]) != []
    assert sorted(p.name for p in (tmp_path / "cache0").rglob("*.mds"))  # each its own cache
    assert sorted(p.name for p in (tmp_path / "cache1").rglob("*.mds"))


def test_two_nodes_under_fsdp_equal_one_process(one_process, tmp_path):
    """The same run with the real-scale recipes' `fsdp_config` (yaml/base/fsdp.yaml: full
    sharding, activation checkpointing) on the two-node layout, gloo on CPU."""
    from omegaconf import OmegaConf

    args, one = one_process
    fsdp = OmegaConf.to_container(OmegaConf.load(REPO / "yaml" / "base" / "fsdp.yaml"))
    folder = tmp_path / "fsdp"
    nodes = launch_two_nodes([*args, f"save_folder={folder}",
                              f"fsdp_config={json.dumps(fsdp['fsdp_config'])}"],
                             tmp_path, program="tests/trainer/fsdp_train.py")  # fmt: skip
    for code, out in nodes:
        assert code == 0, out[-3000:]
        # composer shards the model over the two nodes
        assert "setting data_parallel_shard to have parallelization degree 2" in out

    # FSDP reduce-scatters the gradients and gathers the weights in shards: other float
    # sums than DDP's (the test above), the same bounds as there. Measured (AMD EPYC, torch
    # 2.14.1): losses 1.1e-7 relative, proportions 2.6e-8, weights and gates (l0.log_alpha)
    # 1.4e-6 absolute.
    assert_same_run(folder, one)  # the full state dict: unsharded, no FSDP names
