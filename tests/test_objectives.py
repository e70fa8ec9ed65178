"""Distillation, the ProSparse L1 schedule, and a tiny ProSparse run."""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

from shearing.objectives import distillation_loss, l1_penalty
from tests.helpers import WORKSPACE_VOCAB, tiny_hf_config, train_here

REPO = Path(__file__).resolve().parent.parent
STAGES = [(10, 0.0), (20, 5e-3), (20, 5e-2), (10, 2e-1)]


def test_l1_schedule_at_stage_boundaries_and_sine_midpoints():
    assert l1_penalty(STAGES, 0) == 0.0
    assert l1_penalty(STAGES, 10) == 0.0  # start of stage 1
    assert l1_penalty(STAGES, 20) == pytest.approx(5e-3 * math.sin(math.pi / 4))  # midpoint
    assert l1_penalty(STAGES, 30) == pytest.approx(5e-3)  # end of stage 1
    assert l1_penalty(STAGES, 40) == pytest.approx(5e-3 + (5e-2 - 5e-3) * math.sin(math.pi / 4))
    assert l1_penalty(STAGES, 50) == pytest.approx(5e-2)
    assert l1_penalty(STAGES, 1000) == pytest.approx(2e-1)  # holds after the last stage


def test_distillation_is_zero_for_equal_models_and_positive_otherwise():
    torch.manual_seed(0)
    teacher = torch.randn(2, 5, 11)
    assert distillation_loss(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-6)
    student = teacher + torch.randn(2, 5, 11)
    kd = distillation_loss(student, teacher, temperature=2.0).item()
    p = torch.softmax(teacher / 2, -1)
    by_hand = (p * (p.log() - torch.log_softmax(student / 2, -1))).sum(-1).mean() * 4
    assert kd > 0 and kd == pytest.approx(by_hand.item(), rel=1e-5)


def test_tiny_prosparse_run_increases_activation_sparsity(tiny_workspace, tmp_path):
    import transformers

    torch.manual_seed(0)
    cfg = tiny_hf_config(vocab_size=WORKSPACE_VOCAB)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "silu")
    folder = tmp_path / "run"
    args = ["yaml/prosparse_smollm2.yaml",
            f"model.path={tmp_path / 'silu'}", f"data.path={tiny_workspace['data']}",
            f"save_folder={folder}", "global_train_batch_size=4", "optimizer.lr=3e-3",
            "activation_l1.stages=[{steps: 15, penalty: 0.0}, {steps: 15, penalty: 0.3}, "
            "{steps: 15, penalty: 3.0}]",
            "threshold_shift.step=45", "max_duration=55ba", "eval_interval=55ba",
            "save_interval=55ba", "scheduler.t_warmup=1ba", "progress_bar=false"]  # fmt: skip
    result = train_here(args)  # the run, not the process, is the subject: in this process
    assert result.returncode == 0, result.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    sparsity = {r["step"]: r["sparsity/train_activation"] for r in records
                if "sparsity/train_activation" in r}  # fmt: skip

    def mean(lo, hi):
        values = [v for s, v in sparsity.items() if lo <= s < hi]
        return sum(values) / len(values)

    stage0, stage1, stage2, shifted = mean(10, 15), mean(25, 30), mean(40, 45), mean(50, 56)
    assert stage0 < stage1 < stage2 <= shifted
    assert stage2 - stage0 > 0.05

    # the run ends with FATReLU: the export ships its modeling file and reloads with it
    out = tmp_path / "hf"
    result = subprocess.run(["bash", "scripts/convert_to_hf.sh", str(folder), str(out)],
                            cwd=REPO, env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_act"] == "fatrelu" and config["fatrelu_threshold"] == 0.01
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert type(hf).__name__ == "ShearingLlamaForCausalLM"
