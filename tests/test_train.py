"""A tiny pruning run through the real command lines: train.py, then convert_to_hf.sh."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

import yaml as pyyaml
from shearing.models.hf_io import load_model
from shearing.models.llama import Masks

REPO = Path(__file__).resolve().parent.parent
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


def train(ws, *overrides, **kwargs):
    """`python train.py yaml/tiny_prune.yaml` on the tiny workspace, with overrides."""
    paths = [f"model.path={ws['model']}", f"data.path={ws['data']}"]
    return run([sys.executable, "train.py", "yaml/tiny_prune.yaml", *paths, *overrides], **kwargs)


@pytest.fixture(scope="module")
def pruning_run(tiny_workspace, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "prune"
    result = train(tiny_workspace, f"save_folder={folder}")
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


def test_two_processes_agree_on_proportions_and_checkpoint(tiny_workspace, tmp_path):
    """`composer -n 2 train.py` on CPU: dynamic loading updates identically on both ranks."""
    folder = tmp_path / "dist"
    composer = Path(sys.executable).parent / "composer"
    result = run(
        [
            str(composer),
            "-n",
            "2",
            "--stdout",
            str(tmp_path / "out_{rank}.txt"),
            "--stderr",
            str(tmp_path / "err_{rank}.txt"),
            "train.py",
            "yaml/tiny_prune.yaml",
            f"model.path={tiny_workspace['model']}",
            f"data.path={tiny_workspace['data']}",
            f"save_folder={folder}",
            "max_duration=20ba",
            "eval_interval=10ba",
            "save_interval=20ba",
            "model.l0_module.lagrangian_warmup_steps=10",
            "data.update_interval=10",
            "data.reference_losses=[1.0,3.0,3.0]",
            "log_to_console=true",
            "console_log_interval=10ba",
        ],
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (folder / "ep0-ba20-rank0.pt").exists()
    history = [
        __import__("json").loads(x)
        for x in (folder / "domain_history.jsonl").read_text().splitlines()
    ]
    assert [h["step"] for h in history] == [0, 10, 20]
    assert history[1]["proportions"] != history[0]["proportions"]  # alpha's excess loss is largest
    assert history[2]["proportions"]["alpha"] > history[1]["proportions"]["alpha"] > 0.5

    def proportion_lines(text):
        return [line.strip() for line in text.splitlines() if "Eval proportion/" in line]

    rank0 = proportion_lines(result.stdout + result.stderr)
    rank1 = proportion_lines(
        (tmp_path / "out_1.txt").read_text() + (tmp_path / "err_1.txt").read_text()
    )
    assert rank0 == rank1 and len(rank0) == 6


def test_autoresume_after_an_interruption_is_bit_for_bit(tiny_workspace, tmp_path):
    """Gates, lambdas, optimizer, data position and domain weights all resume exactly."""
    common = [
        "yaml/tiny_prune.yaml",
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
    assert run([sys.executable, "train.py", *common, f"save_folder={whole}"]).returncode == 0
    # an interrupted run: only what it had written by step 10
    resumed.mkdir()
    (resumed / "ep0-ba10-rank0.pt").write_bytes((whole / "ep0-ba10-rank0.pt").read_bytes())
    (resumed / "latest-rank0.pt").symlink_to("ep0-ba10-rank0.pt")
    history = (whole / "domain_history.jsonl").read_text().splitlines()
    (resumed / "domain_history.jsonl").write_text("\n".join(history[:2]) + "\n")
    result = run([sys.executable, "train.py", *common, f"save_folder={resumed}"])
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
