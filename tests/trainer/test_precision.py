"""`precision: amp_bf16` on a CPU: bf16 autocast of the forwards, fp32 everything else."""

import json

import torch

from shearing.trainer.model import ShearingLM
from tests.helpers import tiny_pair
from tests.trainer.test_train import train_in_process as train


def test_cpu_bf16_autocasts_the_forward_and_keeps_fp32_weights_and_loss():
    _, model = tiny_pair()
    lm = ShearingLM(model, None, ["all"], cpu_bf16=True).train()
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    logits = lm({"input_ids": ids})
    assert logits.dtype == torch.bfloat16  # the matrix products ran in bf16
    loss = lm.loss(logits, {"input_ids": ids})
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32
               for p in model.parameters())  # fmt: skip
    assert ShearingLM(model, None, ["all"])({"input_ids": ids}).dtype == torch.float32


def losses(folder):
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss/train/ce"] for r in rows if "loss/train/ce" in r}


def test_a_bf16_run_tracks_the_fp32_run(tiny_workspace, tmp_path):
    """40 pruning steps each way from the same seed; the cross-entropy (the Lagrangian
    added to it grows with the multipliers, whatever the precision). bf16 keeps 8
    significant bits, so each matrix product is off by ~2^-9 relative; through 3 layers
    and 40 steps of training the losses (4.19 falling to ~3.5 nats) stay within 0.02."""
    runs = {}
    for precision in ("fp32", "amp_bf16"):
        folder = tmp_path / precision
        result = train(
            tiny_workspace, f"save_folder={folder}", f"precision={precision}",
            "max_duration=40ba", "eval_interval=40ba", "save_interval=40ba",
            "model.l0_module.lagrangian_warmup_steps=20",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        runs[precision] = losses(folder)
    fp32, bf16 = runs["fp32"], runs["amp_bf16"]
    assert fp32.keys() == bf16.keys() and len(fp32) == 40
    gaps = [abs(fp32[s] - bf16[s]) for s in fp32]
    assert max(gaps) <= 0.02, max(gaps)
    assert 0 < max(gaps)  # bf16 really ran: the two runs are not the same computation
    first, last = min(fp32), max(fp32)
    assert bf16[last] < bf16[first]  # and it trains


def test_fp16_amp_without_a_gpu_is_a_one_line_error(tiny_workspace, monkeypatch):
    import pytest

    from shearing.config import ConfigError
    from shearing.run import resolve
    from tests.test_config import tiny

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="precision=amp_fp16 needs a GPU"):
        resolve(tiny(tiny_workspace, "precision=amp_fp16"))
