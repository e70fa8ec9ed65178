"""Builders that turn a resolved run (`shearing.run.Run`) into composer's parts: the
composer model, teacher, dataloaders, optimizer and scheduler."""

from __future__ import annotations

import logging
import math
import sys

import torch
from composer import Trainer
from composer.core import Callback
from composer.utils import dist
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from shearing.config import start_logits
from shearing.data.mixture import DomainEvalSet, DomainMixture
from shearing.models.decoder import MaskableDecoder
from shearing.models.hf_io import load_model
from shearing.pruning.importance import calibration_batches, importance_scores
from shearing.records import METRICS_FILE
from shearing.run import Run, build_l0
from shearing.trainer.callbacks import (
    DomainEvalLogger,
    JSONLinesLogger,
    PlainProgress,
    RecordsUpload,
    ReplicatedGradSync,
    TeacherPlacement,
    TrainingStateCallback,
    WeightGradClipping,
)
from shearing.trainer.dynamic import DynamicLoadingCallback
from shearing.trainer.folder import SaveFolder
from shearing.trainer.model import ShearingLM

log = logging.getLogger(__name__)


def build_model(run: Run, meta: bool = False) -> ShearingLM:
    """The composer model: source weights (or meta tensors) plus the L0 module."""
    if meta:
        with torch.device("meta"):
            model = MaskableDecoder(run.source)
    else:
        model = load_model(run.model_path, shape=run.source)
    cfg = run.cfg
    teacher = build_teacher(run, meta)
    with torch.device("meta" if meta else "cpu"):
        l0 = build_l0(run)
    if l0 is not None and cfg.model.l0_module.init == "importance" and not meta:
        batches = calibration_batches(
            run.data.corpus, cfg.model.l0_module.calibration_rows, domains=run.data.domains
        )
        kept, pruned = start_logits(cfg.model.l0_module)
        l0.init_from_scores(importance_scores(model, batches), pruned_logit=pruned, kept_logit=kept)
    d, l1, steps = cfg.distillation, cfg.activation_l1, run.steps
    # the schedules are training's: a model resolved without the corpus has none
    stages = [s.penalty for s in l1.stages] if l1 and steps is not None else None
    return ShearingLM(
        model,
        l0,
        run.data.domains if run.data is not None else ["all"],
        teacher=teacher,
        distill_alpha=d.alpha if d else 1.0,
        distill_temperature=d.temperature if d else 1.0,
        ce_weight=d.ce_weight if d else 1.0,
        l1_stages=list(zip(steps.l1_stages, stages, strict=True)) if stages else None,
        threshold_from_step=steps.threshold_shift if steps is not None else None,
        cpu_bf16=cpu_bf16(run),
    )


def cpu_bf16(run: Run) -> bool:
    """`precision: amp_bf16` where training runs on the CPU: the model autocasts its own
    forwards (`ShearingLM.cpu_bf16`) and composer runs in fp32, since composer's amp
    refuses a CPU device."""
    return run.cfg.precision == "amp_bf16" and not torch.cuda.is_available()


def build_teacher(run: Run, meta: bool = False) -> MaskableDecoder | None:
    """The distillation teacher in `distillation.teacher_dtype` (None without distillation);
    `ShearingLM` freezes it and keeps it out of its state: never trained, never
    checkpointed; `callbacks.TeacherPlacement` puts it on the device (sharded under FSDP)."""
    if run.teacher is None:
        return None
    dtype = getattr(torch, run.cfg.distillation.teacher_dtype)
    if not meta:
        return load_model(run.teacher_path, dtype=dtype, shape=run.teacher)
    with torch.device("meta"):
        return MaskableDecoder(run.teacher).to(dtype)


def build_dataloaders(run: Run) -> tuple[DataLoader, DataLoader]:
    cfg, data = run.cfg, run.data
    world, rank = dist.get_world_size(), dist.get_global_rank()
    device_batch = cfg.global_train_batch_size // world
    workers = cfg.data.num_workers
    prefetch = 2 if workers > 0 else None
    train_set = DomainMixture(
        data.corpus,
        data.domains,
        data.proportions,
        device_batch_size=device_batch,
        world_size=world,
        rank=rank,
        seed=cfg.seed,
        prefetch_batches=workers * (prefetch or 0),
        row_start=data.row_start,
        row_seed=data.row_seed,
    )
    train = DataLoader(
        train_set, batch_size=device_batch, num_workers=workers, prefetch_factor=prefetch
    )
    eval_set = DomainEvalSet(data.corpus, data.domains, cfg.data.eval_max_rows, rank, world)
    evaluation = DataLoader(eval_set, batch_size=cfg.device_eval_batch_size)
    return train, evaluation


class AdamWDualAscent(torch.optim.AdamW):
    """AdamW, except that parameter groups marked `plain_ascent` (the Lagrange multipliers
    under `optimizer.lambda_ascent_lr`) take a plain gradient-ascent step, p += lr * grad.
    Their only state is a count of steps, so that every parameter has an entry in the
    optimizer's state dict (torch's distributed checkpoint, which composer resumes with,
    expects one)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plain = [g for g in self.param_groups if g.get("plain_ascent")]
        held = [(p, p.grad) for g in plain for p in g["params"]]
        for p, _ in held:  # AdamW skips parameters without a gradient
            p.grad = None
        try:
            super().step()
        finally:
            for p, grad in held:
                p.grad = grad
        for group in plain:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = state.get("step", torch.zeros(())) + 1
                if p.grad is not None:
                    p.add_(p.grad, alpha=group["lr"])
        return loss


def build_optimizer(run: Run, model: ShearingLM) -> torch.optim.Optimizer:
    """AdamW with three groups: weights; gate logits; Lagrange multipliers (ascending, by
    AdamW at `l0_lr`, or by plain gradient ascent at `optimizer.lambda_ascent_lr`)."""
    o = run.cfg.optimizer
    groups = [
        {"params": list(model.model.parameters()), "lr": o.lr, "weight_decay": o.weight_decay}
    ]
    optimizer = torch.optim.AdamW
    if model.l0 is not None:
        groups.append({"params": model.l0.gate_parameters(), "lr": o.l0_lr, "weight_decay": 0.0})
        multipliers = {"params": model.l0.lambda_parameters(), "lr": o.l0_lr,
                       "weight_decay": 0.0, "maximize": True}  # fmt: skip
        if o.lambda_ascent_lr is not None:
            multipliers |= {"lr": o.lambda_ascent_lr, "plain_ascent": True}
            optimizer = AdamWDualAscent
        groups.append(multipliers)
    return optimizer(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def build_scheduler(run: Run, optimizer: torch.optim.Optimizer) -> LambdaLR:
    """Linear warmup then cosine decay to `alpha_f` for the weights; constant for L0 groups.

    The schedule spans `scheduler.t_max` steps and the run starts `scheduler.t_start` steps
    into it (by default the run and the schedule coincide)."""
    start, total, warmup = run.steps.schedule_start, run.steps.schedule_length, run.steps.warmup
    alpha_f = run.cfg.scheduler.alpha_f

    def weights(run_step: int) -> float:
        step = start + run_step
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return alpha_f + (1 - alpha_f) * 0.5 * (1 + math.cos(math.pi * progress))

    fns = [weights] + [lambda step: 1.0] * (len(optimizer.param_groups) - 1)
    return LambdaLR(optimizer, fns)


def build_callbacks(
    run: Run, model: ShearingLM, data: DomainMixture, saved: SaveFolder | None
) -> list[Callback]:
    """The project's callbacks, in the order they run: per-domain evaluation, dynamic batch
    loading (with its records in the save folder), the training-state bookkeeping, and where
    the run needs them the teacher's placement, FSDP's replicated-gradient sync, the
    weights' gradient clip and the upload of the records to a save folder in object
    storage (last: after the records of a checkpoint or of the end are written)."""
    cfg, d = run.cfg, run.cfg.data
    callbacks: list[Callback] = [
        DomainEvalLogger(),
        DynamicLoadingCallback(
            data,
            run.data.reference_losses,
            run.steps.update_interval,
            eta=d.eta,
            smoothing=d.smoothing,
            clip=d.clip_delta,
            update_type=d.update_type,
            history_dir=None if saved is None else saved.records,
        ),
        TrainingStateCallback(),
    ]
    if model.teacher is not None:
        callbacks.append(TeacherPlacement(dict(cfg.fsdp_config) if cfg.fsdp_config else None))
    if cfg.fsdp_config:
        callbacks.append(ReplicatedGradSync())
    if cfg.max_grad_norm is not None:
        callbacks.append(WeightGradClipping(cfg.max_grad_norm))
    if saved is not None and saved.store is not None:
        callbacks.append(RecordsUpload(saved, run.steps.save_interval))
    if plain_progress(run):
        callbacks.append(PlainProgress(run.steps.total, max(1, run.steps.total // 100)))
    return callbacks


def plain_progress(run: Run) -> bool:
    """Whether progress goes as plain lines (`PlainProgress`) instead of composer's bar:
    `progress_bar` asked for, and stderr not a terminal."""
    return run.cfg.progress_bar and not sys.stderr.isatty()


def build_trainer(
    run: Run,
    model: ShearingLM,
    saved: SaveFolder | None,
    parts: dict,
    loaders: tuple[DataLoader, DataLoader],
) -> Trainer:
    """composer's Trainer for the run: its data (`build_dataloaders`), optimizer, schedule,
    the project's callbacks and loggers, then the yaml's own (`parts`: loggers, callbacks,
    algorithms), every duration in steps.

    An autoresumed run continues from the checkpoint `prepare_save_folder` found
    (`saved.resume`), which composer loads as its `load_path` (else `load_path` as
    configured): composer's own autoresume is not used. composer 0.32.1's names one signal
    file for every node, and on a save folder the nodes share, the second node to remove
    it fails."""
    cfg, steps = run.cfg, run.steps
    train_loader, eval_loader = loaders
    resume = saved.resume if saved is not None else None
    if resume is not None:
        log.info("Autoresuming training from checkpoint %s", resume)
    load_path = resume or cfg.load_path
    weights_only = cfg.load_weights_only and resume is None
    optimizer = build_optimizer(run, model)
    callbacks = build_callbacks(run, model, train_loader.dataset, saved)
    loggers = [] if saved is None else [JSONLinesLogger(saved.records / METRICS_FILE)]
    return Trainer(
        loggers=loggers + parts["loggers"],
        algorithms=parts["algorithms"],
        model=model,
        run_name=cfg.run_name,
        seed=cfg.seed,
        train_dataloader=train_loader,
        eval_dataloader=eval_loader,
        eval_interval=f"{steps.eval_interval}ba",
        eval_subset_num_batches=cfg.eval_subset_num_batches,
        max_duration=f"{steps.total}ba",
        optimizers=optimizer,
        schedulers=build_scheduler(run, optimizer),
        step_schedulers_every_batch=True,
        device_train_microbatch_size=(
            cfg.device_train_microbatch_size or cfg.global_train_batch_size // dist.get_world_size()
        ),
        precision="fp32" if model.cpu_bf16 else cfg.precision,
        parallelism_config={"fsdp": dict(cfg.fsdp_config)} if cfg.fsdp_config else None,
        callbacks=callbacks + parts["callbacks"],
        save_folder=None if saved is None else saved.composer,
        save_interval=f"{steps.save_interval}ba",
        save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
        load_path=load_path,
        load_weights_only=weights_only,
        save_overwrite=cfg.save_overwrite,
        dist_timeout=cfg.dist_timeout,
        python_log_level=cfg.python_log_level.lower(),
        progress_bar=cfg.progress_bar and not plain_progress(run),
        log_to_console=cfg.log_to_console,
        console_log_interval=f"{steps.console_log_interval}ba",
    )
