"""A save folder in object storage (a real S3-compatible server on 127.0.0.1): composer
saves the checkpoints there, the run's records go beside them, an interrupted run resumes
from what is there alone, and `load_path` starts a run from a checkpoint there."""

from __future__ import annotations

import io
import json

import torch

from tests.helpers import train_here

#: 12 steps, a checkpoint and a proportion update every 6.
RUN = ["yaml/tiny_prune.yaml", "max_duration=12ba", "eval_interval=6ba", "save_interval=6ba",
       "model.l0_module.lagrangian_warmup_steps=6", "data.update_interval=6",
       "data.reference_losses=[1.0,3.0,3.0]", "run_name=r"]  # fmt: skip


def fetch(s3, key: str) -> bytes:
    return s3.client().get_object(Bucket="runs", Key=key)["Body"].read()


def lines(s3, key: str) -> list[dict]:
    return [json.loads(x) for x in fetch(s3, key).decode().splitlines()]


def state(s3, key: str) -> dict:
    return torch.load(io.BytesIO(fetch(s3, key)), map_location="cpu", weights_only=False)["state"]


def test_a_run_in_object_storage_resumes_from_it_alone_and_starts_another(
    s3, tiny_workspace, tmp_path
):
    s3.bucket("runs")
    common = [*RUN, f"model.path={tiny_workspace['model']}", f"data.path={tiny_workspace['data']}"]
    whole = train_here([*common, "save_folder=s3://runs/whole"])
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert s3.keys("runs", "whole/") == [
        f"whole/{n}" for n in ("config.yaml", "data_position.json", "domain_history.jsonl",
        "ep0-ba12-rank0.pt", "ep0-ba6-rank0.pt", "latest-rank0.pt.symlink", "metrics.jsonl")
    ]  # fmt: skip

    # an interrupted run, as the store holds it: a run killed after it uploaded its records
    # at step 12 but before its step-12 checkpoint was up (composer uploads checkpoints in
    # the background); nothing of it on this machine
    for name in ("config.yaml", "ep0-ba6-rank0.pt", "metrics.jsonl", "domain_history.jsonl"):
        s3.client().copy_object(Bucket="runs", Key=f"cut/{name}",
                                CopySource={"Bucket": "runs", "Key": f"whole/{name}"})  # fmt: skip
    resumed = train_here([*common, "save_folder=s3://runs/cut", "autoresume=true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Autoresuming training from checkpoint s3://runs/cut/ep0-ba6-rank0.pt" in resumed.stderr
    a, b = state(s3, "whole/ep0-ba12-rank0.pt"), state(s3, "cut/ep0-ba12-rank0.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:  # the same computation, resumed: bit for bit
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["dataset_state"] == b["dataset_state"]

    # the records: each entry once, in order, equal but for wall-clock times
    def steady(entries):
        return [{k: v for k, v in e.items() if "wall_clock" not in k} for e in entries]

    assert steady(lines(s3, "cut/metrics.jsonl")) == steady(lines(s3, "whole/metrics.jsonl"))
    assert fetch(s3, "cut/domain_history.jsonl") == fetch(s3, "whole/domain_history.jsonl")
    assert fetch(s3, "cut/data_position.json") == fetch(s3, "whole/data_position.json")

    # another run starts from the finished one's checkpoint there, weights only
    start = train_here([*common, "load_path=s3://runs/whole/ep0-ba12-rank0.pt",
                        "load_weights_only=true", "max_duration=1ba", "eval_interval=1ba",
                        "model.l0_module.lagrangian_warmup_steps=1", "eval_first=true",
                        "data.update_interval=null", "scheduler.t_warmup=0ba",
                        f"save_folder={tmp_path / 'next'}"])  # fmt: skip
    assert start.returncode == 0, start.stderr[-3000:]
    first = [json.loads(x) for x in (tmp_path / "next" / "metrics.jsonl").read_text().splitlines()]
    evaluated = next(e for e in first if "eval/loss/alpha" in e)
    final = [e for e in lines(s3, "whole/metrics.jsonl") if "eval/loss/alpha" in e][-1]
    assert evaluated["eval/loss/alpha"] == final["eval/loss/alpha"]  # the same weights and gates
