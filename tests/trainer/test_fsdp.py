"""FSDP as the real-scale configs use it, exercised on what a CPU allows.

- Every real-scale yaml's `fsdp_config` is accepted by composer's FSDPConfig.
- With the 7B configs' `fsdp_config`, composer's own `prepare_fsdp_module` wraps a tiny
  pruning model in two CPU processes (gloo): one FSDP unit per decoder layer, activation
  checkpointing on each, the L0 module left whole; one training step gives the losses and
  the parameters of the same step without FSDP (mean of the two ranks' gradients).

What only a GPU shows (bf16 mixed precision, NCCL, memory per rank) is listed in docs/multi-gpu.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from composer.utils.parallelism import FSDPConfig

from shearing.config import load_config
from tests.helpers import free_port
from tests.trainer.fsdp_reference import STEP, TOKENS, build
from tests.trainer.fsdp_step import VARIANTS

REPO = Path(__file__).resolve().parents[2]
#: The recipes with an FSDP block, as loaded (their own or their base's).
FSDP_YAMLS = sorted(
    p.name
    for p in (REPO / "yaml").glob("*.yaml")
    if load_config(p, ["model.path=unused", "data.path=unused"]).fsdp_config
)


def test_the_real_scale_configs_use_fsdp():
    assert set(FSDP_YAMLS) >= {
        "prune_2.7b.yaml", "prune_1.3b.yaml", "continue_2.7b.yaml", "continue_1.3b.yaml",
        "relufy_7b.yaml", "prosparse_7b.yaml",
    }  # fmt: skip


@pytest.mark.parametrize("name", FSDP_YAMLS)
def test_fsdp_config_is_one_composer_accepts(name):
    cfg = load_config(REPO / "yaml" / name, ["model.path=unused", "data.path=unused"])
    config = FSDPConfig(**dict(cfg.fsdp_config))
    assert config.sharding_strategy == "FULL_SHARD"


def reference_step(teacher: bool = False, ascent: bool = False):
    """The FSDP step without FSDP: both ranks' gradients, averaged, then AdamW."""
    model, optimizer = build(teacher, ascent)
    losses, grads = [], []
    for ids in TOKENS:
        model.set_step(STEP)
        batch = {"input_ids": ids}
        loss = model.loss(model(batch), batch)["total"]
        loss.backward()
        losses.append(float(loss))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        optimizer.zero_grad()
    for n, p in model.named_parameters():
        if n in grads[0]:
            p.grad = (grads[0][n] + grads[1][n]) / 2
    optimizer.step()
    return losses, {n: p.detach() for n, p in model.named_parameters()}


def _head_and_tail(text: str, each: int = 3000) -> str:
    """The first error a rank printed and the launcher's summary at the end."""
    if len(text) <= 2 * each:
        return text
    return f"{text[:each]}\n[... {len(text) - 2 * each} characters ...]\n{text[-each:]}"


@pytest.fixture(scope="module")
def fsdp_steps(tmp_path_factory) -> Path:
    """One launch of two processes for the three variants (fsdp_step.py): each variant's
    file in the folder returned."""
    out = tmp_path_factory.mktemp("fsdp")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    args += ["--master_port", str(free_port()), "tests/trainer/fsdp_step.py"]
    args += ["yaml/prune_2.7b.yaml", str(out), *VARIANTS]
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, _head_and_tail(result.stderr)
    return out


#: the launch is shared: its tests run in one worker
@pytest.mark.xdist_group("fsdp_steps")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_fsdp_step_on_cpu_equals_the_step_without_fsdp(variant, fsdp_steps):
    teacher, ascent = VARIANTS[variant]
    got = torch.load(fsdp_steps / f"{variant}.pt", weights_only=False)

    # composer's wrapping: the LLaMA and each of its decoder layers, not the L0 module
    assert got["units"].count("DecoderLayer") == got["layers"] == 3
    assert "MaskableDecoder" in got["units"] and "L0Module" not in got["units"]
    assert got["checkpointed"] == 3  # activation_checkpointing: true

    if teacher:  # sharded like the student, one unit per layer; each rank keeps half
        assert got["units"].count("teacher.DecoderLayer") == 3
        assert "teacher.MaskableDecoder" in got["units"]
        (kept0, full), (kept1, _) = got["teacher_kept"]
        assert kept0 == kept1 and full / 2 <= kept0 < full / 2 + 2 * 97  # padding per unit
        assert not any("teacher" in k for k in got["state_keys"])
    losses, expected = reference_step(teacher, ascent)
    # Same data, same gates: the per-rank losses agree to float32 rounding of the
    # differently ordered (sharded) computation.
    assert got["losses"] == pytest.approx(losses, rel=1e-5)
    names = {n.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
             for n in got["params"]}  # fmt: skip
    assert names == set(expected)
    for name, value in got["params"].items():
        clean = name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
        # One AdamW step moves each weight by about lr; the two computations differ by
        # float32 rounding in gradient reduction, which Adam's normalisation can amplify
        # only for gradients near zero: 1e-4 absolute is 1% of the lr of 1e-2.
        torch.testing.assert_close(value, expected[clean], atol=1e-4, rtol=1e-4, msg=clean)
