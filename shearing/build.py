"""Builders that turn a validated `TrainConfig` into composer's parts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from composer.utils import dist
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from shearing.checkpoints import CheckpointError, checkpoint_files, prepare_resume
from shearing.composer_model import ShearingLM
from shearing.config import (
    ConfigError,
    TrainConfig,
    expand_path,
    load_config,
    parse_steps,
    validate,
)
from shearing.data.dynamic import last_proportions
from shearing.data.mixture import DomainEvalSet, DomainMixture, read_manifest
from shearing.files import OutputError, check_separate
from shearing.models.config import LlamaShape
from shearing.models.hf_io import load_model, read_hf_config
from shearing.models.llama import MaskableLlama
from shearing.pruning.importance import calibration_batches, importance_scores
from shearing.pruning.l0 import L0Module

PROPORTION_TOLERANCE = 1e-6


@dataclass
class DataPlan:
    """What the data section resolves to, checked against the corpus manifest."""

    root: str
    domains: list[str]
    proportions: list[float]
    reference_losses: list[float] | None
    seq_len: int
    vocab_size: int


def plan_data(cfg: TrainConfig) -> DataPlan:
    """Resolve domains, proportions and reference losses against the manifest.

    Raises:
        ConfigError: a domain not in the manifest, lengths that differ, proportions
            that are negative or do not sum to 1, non-positive reference losses.
    """
    d = cfg.data
    manifest = read_manifest(expand_path(d.path))
    available = list(manifest["domains"])
    domains = list(d.domains) if d.domains is not None else available
    for name in domains:
        if name not in available:
            raise ConfigError(
                f"data.domains entry {name!r} is not in the corpus; "
                f"available: {', '.join(available)}"
            )
    if d.proportions is not None and d.proportions_from is not None:
        raise ConfigError("data.proportions and data.proportions_from are both set; keep one")
    if d.proportions_from is not None:
        try:
            proportions = last_proportions(expand_path(d.proportions_from), domains)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    elif d.proportions is None:
        tokens = [manifest["domains"][n]["train"]["tokens"] for n in domains]
        proportions = [t / sum(tokens) for t in tokens]
    else:
        proportions = list(d.proportions)
        if len(proportions) != len(domains):
            raise ConfigError(
                f"data.proportions has {len(proportions)} values for {len(domains)} domains"
            )
        if any(p < 0 for p in proportions):
            raise ConfigError(f"data.proportions={proportions} has a negative value")
        if abs(sum(proportions) - 1.0) > PROPORTION_TOLERANCE:
            raise ConfigError(f"data.proportions sum to {sum(proportions):.8f}, not 1")
    refs = None if d.reference_losses is None else list(d.reference_losses)
    if refs is not None:
        if len(refs) != len(domains):
            raise ConfigError(
                f"data.reference_losses has {len(refs)} values for {len(domains)} domains"
            )
        if any(r <= 0 for r in refs):
            raise ConfigError(f"data.reference_losses={refs} must all be positive")
    return DataPlan(
        str(expand_path(d.path)),
        domains,
        proportions,
        refs,
        manifest["seq_len"],
        manifest["vocab_size"],
    )


def check_config(
    cfg: TrainConfig, data: DataPlan | None = None
) -> tuple[LlamaShape, LlamaShape | None]:
    """Validate everything before any weights load; return source and target shapes."""
    try:
        source = LlamaShape.from_hf(read_hf_config(expand_path(cfg.model.path)))
    except ValueError as err:
        raise ConfigError(f"model.path: {err}") from None
    target = validate(cfg, source, data.seq_len if data else None)
    if data is not None and data.vocab_size > source.vocab_size:
        raise ConfigError(
            f"data.path was tokenized with a vocabulary of {data.vocab_size}, larger than the "
            f"model's {source.vocab_size}"
        )
    world = dist.get_world_size()
    if cfg.global_train_batch_size % world:
        raise ConfigError(
            f"global_train_batch_size={cfg.global_train_batch_size} is not divisible by the "
            f"{world} training processes"
        )
    micro = cfg.device_train_microbatch_size
    device_batch = cfg.global_train_batch_size // world
    if micro is not None and (micro <= 0 or device_batch % micro):
        raise ConfigError(
            f"device_train_microbatch_size={micro} must be a positive divisor of the "
            f"per-device batch {device_batch} (global_train_batch_size="
            f"{cfg.global_train_batch_size} over {world} process(es))"
        )
    return source, target


#: Files a run writes into its save folder besides checkpoints.
RUN_RECORDS = ("config.yaml", "metrics.jsonl", "domain_history.jsonl")


def check_save_folder(cfg: TrainConfig) -> Path | None:
    """Check `save_folder` before anything is loaded or written; return it (or None).

    A folder that already holds a run is refused unless `autoresume` continues it; a
    continued run must have the same model section (its checkpoints are of that model),
    and the checkpoint it resumes from is prepared (`checkpoints.prepare_resume`). The
    folder must not be, hold or lie inside an input.

    Raises:
        ConfigError: one line naming the folder and what to do.
    """
    if cfg.save_folder is None:
        return None
    folder = expand_path(cfg.save_folder)
    inputs = {"model.path": expand_path(cfg.model.path), "data.path": expand_path(cfg.data.path)}
    if cfg.distillation is not None and cfg.distillation.teacher_path:
        inputs["distillation.teacher_path"] = expand_path(cfg.distillation.teacher_path)
    if cfg.data.proportions_from:
        inputs["data.proportions_from"] = expand_path(cfg.data.proportions_from)
    try:
        check_separate(folder, "save_folder", inputs)
    except OutputError as err:
        raise ConfigError(str(err)) from None
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"save_folder {str(folder)!r} is a file, not a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return folder
    held = [n for n in RUN_RECORDS if (folder / n).exists()]
    held += [p.name for p in checkpoint_files(folder)]
    if not cfg.autoresume:
        what = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "") if held else "files"
        raise ConfigError(
            f"save_folder {str(folder)!r} already holds a run ({what}); pass autoresume=true "
            "to continue it, or choose a new folder"
        )
    previous = folder / "config.yaml"
    if previous.is_file():
        try:
            before = load_config(previous).model
        except ConfigError as err:
            raise ConfigError(f"save_folder's config.yaml cannot be read: {err}") from None
        if before != cfg.model:
            raise ConfigError(
                f"save_folder {str(folder)!r} holds a run of another model section "
                "(model.*); autoresume continues only the same model and target"
            )
    if dist.get_local_rank() == 0:
        try:
            prepare_resume(folder)
        except CheckpointError as err:
            raise ConfigError(f"autoresume: {err}") from None
    return folder


def build_model(
    cfg: TrainConfig,
    source: LlamaShape,
    target: LlamaShape | None,
    domains: list[str],
    meta: bool = False,
) -> ShearingLM:
    """The composer model: source weights (or meta tensors) plus the L0 module."""
    activation = cfg.model.activation
    if meta:
        with torch.device("meta"):
            model = MaskableLlama(source)
    else:
        model = load_model(
            expand_path(cfg.model.path),
            hidden_act=activation,
            fatrelu_threshold=cfg.model.fatrelu_threshold,
        )
    teacher = None
    if cfg.distillation is not None and not meta:
        teacher = load_model(expand_path(cfg.distillation.teacher_path or cfg.model.path))
    l0 = None
    if cfg.model.l0_module is not None:
        l0_cfg = cfg.model.l0_module
        with torch.device("meta" if meta else "cpu"):
            l0 = L0Module(
                source, target, l0_cfg.pruning_modules, l0_cfg.lagrangian_warmup_steps, cfg.seed
            )
        if l0_cfg.init == "importance" and not meta:
            batches = calibration_batches(
                expand_path(cfg.data.path), l0_cfg.calibration_rows, domains=domains
            )
            l0.init_from_scores(importance_scores(model, batches))
    d = cfg.distillation
    l1 = cfg.activation_l1
    return ShearingLM(
        model,
        l0,
        domains,
        teacher=teacher,
        distill_alpha=d.alpha if d else 1.0,
        distill_temperature=d.temperature if d else 1.0,
        l1_stages=[(s.steps, s.penalty) for s in l1.stages] if l1 else None,
    )


def build_dataloaders(cfg: TrainConfig, data: DataPlan) -> tuple[DataLoader, DataLoader]:
    world, rank = dist.get_world_size(), dist.get_global_rank()
    device_batch = cfg.global_train_batch_size // world
    workers = cfg.data.num_workers
    prefetch = 2 if workers > 0 else None
    train_set = DomainMixture(
        data.root,
        data.domains,
        data.proportions,
        device_batch_size=device_batch,
        world_size=world,
        rank=rank,
        seed=cfg.seed,
        prefetch_batches=workers * (prefetch or 0),
    )
    train = DataLoader(
        train_set, batch_size=device_batch, num_workers=workers, prefetch_factor=prefetch
    )
    eval_set = DomainEvalSet(data.root, data.domains, cfg.data.eval_max_rows, rank, world)
    evaluation = DataLoader(eval_set, batch_size=cfg.device_eval_batch_size)
    return train, evaluation


def build_optimizer(cfg: TrainConfig, model: ShearingLM) -> torch.optim.Optimizer:
    """AdamW with three groups: weights; gate logits; Lagrange multipliers (ascending)."""
    o = cfg.optimizer
    groups = [
        {"params": list(model.model.parameters()), "lr": o.lr, "weight_decay": o.weight_decay}
    ]
    if model.l0 is not None:
        groups.append({"params": model.l0.gate_parameters(), "lr": o.l0_lr, "weight_decay": 0.0})
        groups.append(
            {
                "params": model.l0.lambda_parameters(),
                "lr": o.l0_lr,
                "weight_decay": 0.0,
                "maximize": True,
            }
        )
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, seq_len: int) -> LambdaLR:
    """Linear warmup then cosine decay to `alpha_f` for the weights; constant for L0 groups."""
    total = parse_steps(cfg.max_duration, "max_duration", cfg, seq_len)
    warmup = parse_steps(cfg.scheduler.t_warmup, "scheduler.t_warmup", cfg, seq_len)
    alpha_f = cfg.scheduler.alpha_f

    def weights(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return alpha_f + (1 - alpha_f) * 0.5 * (1 + math.cos(math.pi * progress))

    fns = [weights] + [lambda step: 1.0] * (len(optimizer.param_groups) - 1)
    return LambdaLR(optimizer, fns)
