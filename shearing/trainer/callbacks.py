"""Composer callbacks: L0 bookkeeping, weight-only gradient clipping, per-domain eval logs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from composer.core import Callback, State
from composer.loggers import Logger, LoggerDestination

from shearing.data.metrics import EXPECTED_METRIC
from shearing.files import kill_point
from shearing.objectives import l1_penalty
from shearing.records import LOSS_PREFIX, SETTLE_KINDS, SETTLE_PREFIX
from shearing.trainer.dynamic import domain_losses
from shearing.trainer.folder import append_record, writes
from shearing.trainer.model import average_replicated_grads


def _unwrap(state: State):
    return state.model.module if hasattr(state.model, "module") else state.model


class TrainingStateCallback(Callback):
    """Sets the step on the model (L0 ramp and noise, L1 schedule, the scheduled FATReLU
    threshold) and logs L0 state and training activation sparsity."""

    def batch_start(self, state: State, logger: Logger) -> None:
        _unwrap(state).set_step(int(state.timestamp.batch.value))

    def batch_end(self, state: State, logger: Logger) -> None:
        model = _unwrap(state)
        metrics = {} if model.l0 is None else model.l0.metrics()
        if model.last_activation_sparsity is not None:
            metrics["sparsity/train_activation"] = float(model.last_activation_sparsity)
        if model.l1_stages is not None:
            metrics["sparsity/l1_penalty"] = l1_penalty(model.l1_stages, model.step)
        logger.log_metrics(metrics)
        kill_point(f"batch-{int(state.timestamp.batch.value)}")  # test hook: a node dies here


class PlainProgress(Callback):
    """Progress as plain lines, for output that is not a terminal (CI, `make demo > log`,
    SLURM), where composer's bar would write a carriage return and escape codes on every
    update: one line every `every` steps (the step, the training loss, seconds per step,
    the time left) and one line per evaluation (the held-out loss of each domain), on
    stderr like the bar, by the process that writes the run's records."""

    def __init__(self, total: int, every: int) -> None:
        self.total, self.every = total, max(1, every)
        self.start: tuple[int, float] | None = None

    def fit_start(self, state: State, logger: Logger) -> None:
        self.start = (int(state.timestamp.batch.value), time.perf_counter())

    def batch_end(self, state: State, logger: Logger) -> None:
        step = int(state.timestamp.batch.value)
        if step % self.every and step != self.total or not writes():
            return
        first, began = self.start or (0, time.perf_counter())
        per_step = (time.perf_counter() - began) / max(1, step - first)
        loss = state.total_loss_dict.get("loss/train/total")
        said = f", loss {loss:.4f}" if loss is not None else ""
        left = per_step * (self.total - step)
        left_text = f"{left:.0f} s" if left < 120 else f"{left / 60:.0f} min"
        done = f"step {step}/{self.total} ({100 * step / self.total:.0f}%)"
        print(f"train: {done}{said}, {per_step:.2f} s/step, {left_text} left",
              file=sys.stderr, flush=True)  # fmt: skip

    def eval_end(self, state: State, logger: Logger) -> None:
        if not writes():
            return
        losses = domain_losses(state)
        if losses:
            text = ", ".join(f"{d} {v:.4f}" for d, v in losses.items())
            step = int(state.timestamp.batch.value)
            print(f"eval: step {step}, held-out loss {text}", file=sys.stderr, flush=True)


class RecordsUpload(Callback):
    """Uploads the run's records to a save folder in object storage (`SaveFolder.upload`)
    at each checkpoint and at the end, so a run resumed on another machine continues them."""

    def __init__(self, saved, save_interval: int) -> None:
        self.saved, self.save_interval = saved, save_interval

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        if int(state.timestamp.batch.value) % self.save_interval == 0:
            self.saved.upload()

    def fit_end(self, state: State, logger: Logger) -> None:
        self.saved.upload()


class WeightGradClipping(Callback):
    """Clip the global gradient norm of the model weights only.

    Gate logits and Lagrange multipliers are excluded, so the Lagrangian's ascent is not
    scaled by the size of the language-model gradient. Under FSDP each rank holds a shard
    of every gradient; the squared norms are summed across ranks.

    Args:
        max_norm: the largest allowed norm.
    """

    def __init__(self, max_norm: float) -> None:
        self.max_norm = max_norm

    def after_train_batch(self, state: State, logger: Logger) -> None:
        params = [p for p in _unwrap(state).model.parameters() if p.grad is not None]
        if not params:
            return
        sq = torch.stack([p.grad.detach().float().pow(2).sum() for p in params]).sum()
        if state.fsdp_enabled and dist.is_initialized():
            dist.all_reduce(sq)
        norm = sq.sqrt()
        scale = (self.max_norm / (norm + 1e-6)).clamp(max=1.0)
        for p in params:
            p.grad.detach().mul_(scale.to(p.grad.dtype))
        logger.log_metrics({"grad_norm/weights": float(norm)})


class ReplicatedGradSync(Callback):
    """Under FSDP, keep the unwrapped L0 module whole on every rank: place it on the
    training device once (composer moves only what FSDP wraps) and average its gradients
    over ranks before each optimizer step (`composer_model.average_replicated_grads`)."""

    def fit_start(self, state: State, logger: Logger) -> None:
        model = _unwrap(state)
        if state.fsdp_enabled and model.l0 is not None:
            state.device.module_to_device(model.l0)

    def after_train_batch(self, state: State, logger: Logger) -> None:
        if state.fsdp_enabled:
            average_replicated_grads(_unwrap(state))


def shard_teacher(teacher: torch.nn.Module, fsdp_config: dict, device: torch.device):
    """Wrap the frozen teacher with FSDP like the student: one unit per decoder layer, the
    student's sharding strategy, parameters kept in the teacher's own dtype (it only runs
    forward, under `torch.no_grad`). Its shards are never checkpointed."""
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from shearing.models.decoder import DecoderLayer

    strategy = str(fsdp_config.get("sharding_strategy", "FULL_SHARD")).upper()
    return FullyShardedDataParallel(
        teacher,
        auto_wrap_policy=ModuleWrapPolicy({DecoderLayer}),
        sharding_strategy=ShardingStrategy[strategy],
        device_id=device,
        use_orig_params=False,
        limit_all_gathers=True,
    )


class TeacherPlacement(Callback):
    """Puts the distillation teacher on the training device when training starts; under
    FSDP, sharded over the ranks (`shard_teacher`). The teacher is not a submodule of the
    composer model, so composer neither moves, wraps, trains nor checkpoints it."""

    def __init__(self, fsdp_config: dict | None = None) -> None:
        self.fsdp_config = fsdp_config

    def fit_start(self, state: State, logger: Logger) -> None:
        model = _unwrap(state)
        teacher = model.teacher
        if teacher is None:
            return
        if state.fsdp_enabled and self.fsdp_config is not None:
            # FSDP moves each unit to the GPU (`device_id`) as it shards it
            model.set_teacher(shard_teacher(teacher, self.fsdp_config, state.device._device))
        else:
            state.device.module_to_device(teacher)


class DomainEvalLogger(Callback):
    """Logs held-out loss per domain after every evaluation; while pruning also how far the
    gates have settled: `eval/settle/deterministic` (average over domains under the final
    binary masks: the model conversion slices), `eval/settle/expected` (under the gates'
    expected values) and `eval/settle/gap` (deterministic - expected)."""

    def eval_end(self, state: State, logger: Logger) -> None:
        losses = domain_losses(state)
        metrics = {LOSS_PREFIX + d: v for d, v in losses.items()}
        expected = domain_losses(state, EXPECTED_METRIC)
        if expected and losses:
            det = sum(losses.values()) / len(losses)
            exp = sum(expected.values()) / len(expected)
            values = dict(zip(SETTLE_KINDS, (det, exp, det - exp), strict=True))
            metrics |= {SETTLE_PREFIX + kind: v for kind, v in values.items()}
        logger.log_metrics(metrics)


class JSONLinesLogger(LoggerDestination):
    """A composer logger destination: one JSON object per logged step in `path`.

    Appends, so an autoresumed run continues the same file; `shearing.commands.plots` reads it.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        record = {"step": step}
        for key, value in metrics.items():
            value = value.item() if torch.is_tensor(value) and value.numel() == 1 else value
            if isinstance(value, int | float):
                record[key] = value
        append_record(self.path, record)  # on the one rank that writes
