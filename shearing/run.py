"""One resolution of a run: a loaded config, checked, turned into what everything else uses.

    cfg = load_config("yaml/prune_2.7b.yaml", overrides)
    run = resolve(cfg)              # every error here: one line, before any weights load

A `Run` holds the source and target shapes, the resolved pruning modules, the shape the run
ends with (its final activation included), the data plan (domains, proportions, reference
losses), every step count in batches, the teacher and the save folder. `train.py`'s
builders (`shearing.trainer.build`), `convert_to_hf.sh`, one-shot pruning, the comparison and the
benchmarks read it; none of them re-derives what it holds.

How a yaml key reaches its owner: `load_config` (schema, `shearing/config.py`) ->
`resolve` (here) -> `shearing.trainer.build` (model, L0 module, data loaders, optimizer, schedule)
-> composer's Trainer (`train.py`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from shearing.config import KEYS as K
from shearing.config import (
    ConfigError,
    Steps,
    TrainConfig,
    expand_path,
    validate,
)
from shearing.data.dynamic import last_proportions
from shearing.data.mixture import read_manifest, read_position
from shearing.models.config import Act, DecoderShape
from shearing.models.hf_io import read_hf_config
from shearing.pruning.l0 import L0Module
from shearing.pruning.modules import MODULE_KEYS, resolve_modules

log = logging.getLogger(__name__)

PROPORTION_TOLERANCE = 1e-6
#: What `convert_to_hf.sh` records next to a model it writes: the unpruned source the
#: model descends from (`source_model`), the checkpoint and step, the settle losses.
PROVENANCE = "shearing_run.json"


def source_model_of(path: Path) -> Path:
    """The unpruned model `path` descends from: the `source_model` its `PROVENANCE` names
    (a model this project converted), else `path` itself."""
    record = Path(path) / PROVENANCE
    if record.is_file():
        try:
            return Path(json.loads(record.read_text())["source_model"])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{record} is not a provenance record (no source_model)") from None
    return Path(path)


def provenance(run: Run, **extra) -> dict:
    """The `PROVENANCE` record of a model made from `run`'s source: the unpruned model it
    descends from, the model it was made from, and `extra` (checkpoint, method, ...)."""
    return {
        "source_model": str(source_model_of(run.model_path).resolve()),
        "model_path": str(run.model_path.resolve()),
        **extra,
    }


@dataclass(frozen=True)
class DataPlan:
    """What the data section resolves to, checked against the corpus manifest."""

    root: str
    domains: list[str]
    proportions: list[float]
    reference_losses: list[float] | None
    seq_len: int
    vocab_size: int
    #: Where each domain's row sequence starts, and the seed of its permutations
    #: (`data.rows_from`; None: this run's seed).
    row_start: list[int] | None = None
    row_seed: int | None = None


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
                f"{K.data.domains} entry {name!r} is not in the corpus; "
                f"available: {', '.join(available)}"
            )
    if d.proportions is not None and d.proportions_from is not None:
        raise ConfigError(
            f"{K.data.proportions} and {K.data.proportions_from} are both set; keep one"
        )
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
                f"{K.data.proportions} has {len(proportions)} values for {len(domains)} domains"
            )
        if any(p < 0 for p in proportions):
            raise ConfigError(f"{K.data.proportions}={proportions} has a negative value")
        if abs(sum(proportions) - 1.0) > PROPORTION_TOLERANCE:
            raise ConfigError(f"{K.data.proportions} sum to {sum(proportions):.8f}, not 1")
    refs = None if d.reference_losses is None else list(d.reference_losses)
    if refs is not None:
        if len(refs) != len(domains):
            raise ConfigError(
                f"{K.data.reference_losses} has {len(refs)} values for {len(domains)} domains"
            )
        if any(r <= 0 for r in refs):
            raise ConfigError(f"{K.data.reference_losses}={refs} must all be positive")
    row_seed, row_start = None, None
    if d.rows_from is not None:
        try:
            where = expand_path(d.rows_from)
            row_seed, row_start = read_position(where, domains, manifest, expand_path(d.path))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return DataPlan(
        str(expand_path(d.path)),
        domains,
        proportions,
        refs,
        manifest["seq_len"],
        manifest["vocab_size"],
        row_start,
        row_seed,
    )


@dataclass(frozen=True)
class Run:
    """A resolved run; see the module docstring."""

    cfg: TrainConfig
    model_path: Path
    #: The source model's Hugging Face config, as read.
    source_config: dict
    #: The model being trained: the source's shape with the run's activation. With a
    #: scheduled threshold shift this is already the final FATReLU, whose threshold is 0
    #: (exactly ReLU) before `steps.threshold_shift`.
    source: DecoderShape
    #: The shape to prune to (None: no pruning).
    target: DecoderShape | None
    #: Resolved pruning modules (`head` becomes `kv_group` for multi-head attention).
    modules: tuple[str, ...]
    #: The shape of the model the run ends with (what convert_to_hf.sh writes).
    final: DecoderShape
    #: The frozen distillation teacher (None: no distillation).
    teacher_path: Path | None
    #: The teacher's shape (None: no distillation).
    teacher: DecoderShape | None
    #: The data section against the corpus manifest (None when resolved without data).
    data: DataPlan | None
    #: Durations in batches (None when resolved without data: token durations need it).
    steps: Steps | None
    world_size: int = 1


def resolve(cfg: TrainConfig, *, with_data: bool = True, world_size: int = 1) -> Run:
    """Check `cfg` against its source model (and corpus) and resolve everything it implies.

    Args:
        cfg: a loaded config (`shearing.config.load_config`).
        with_data: resolve (and check) the data section, step counts and other training keys
            against `data.path`; convert and one-shot pruning resolve only the model's
            shapes, without the corpus (which need not be on that machine).
        world_size: training processes (the batch must divide among them).

    Raises:
        ConfigError: one line naming the key, before any weights load.
    """
    data = plan_data(cfg) if with_data else None
    model_path = expand_path(cfg.model.path)
    try:
        source_config = read_hf_config(model_path)
    except ValueError as err:
        raise ConfigError(f"{K.model.path}: {err}") from None
    m = cfg.model
    shift = cfg.threshold_shift
    try:
        original = DecoderShape.from_hf(source_config)
    except ValueError as err:
        raise ConfigError(f"{K.model.path}: {err}") from None
    trained = {"fatrelu_threshold": m.fatrelu_threshold}
    if m.activation is not None:
        trained["hidden_act"] = m.activation
    target, steps = validate(cfg, original, data.seq_len if data else None, training=with_data)
    if shift is not None:  # the run ends with FATReLU(threshold); ReLU before the shift
        trained |= {"hidden_act": Act.FATRELU.value, "fatrelu_threshold": shift.threshold}
    source = original.replace(**trained)
    if data is not None and data.vocab_size > source.vocab_size:
        raise ConfigError(
            f"{K.data.path} was tokenized with a vocabulary of {data.vocab_size}, larger than the "
            f"model's {source.vocab_size}"
        )
    if with_data:
        _check_batch(cfg, world_size)
    l0 = m.l0_module
    modules = resolve_modules(source, l0.pruning_modules) if l0 is not None else ()
    # the target with the trained activation; the run ends with it (or with the source)
    target = None if target is None else source.replace(**_dims(target))
    final = target or source
    teacher_path, teacher = _teacher(cfg, model_path, source)
    return Run(
        cfg, model_path, source_config, source, target, modules, final, teacher_path, teacher,
        data, steps, world_size,
    )  # fmt: skip


def _teacher(
    cfg: TrainConfig, model_path: Path, student: DecoderShape
) -> tuple[Path | None, DecoderShape | None]:
    """The distillation teacher's path and shape: `distillation.teacher_path`, or the
    unpruned source of `model.path` (`source_model_of`)."""
    d = cfg.distillation
    if d is None:
        return None, None
    if d.teacher_path:
        path, key = expand_path(d.teacher_path), K.distillation.teacher_path
    else:
        path = source_model_of(model_path)
        key = f"{K.distillation.teacher_path} (default: the source of {K.model.path})"
    try:
        shape = DecoderShape.from_hf(read_hf_config(path))
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None
    if shape.vocab_size != student.vocab_size:
        raise ConfigError(
            f"{key}={str(path)!r} has a vocabulary of {shape.vocab_size}, the student "
            f"{student.vocab_size}; distillation compares the two over one vocabulary"
        )
    return path, shape


def target_line(run: Run) -> str | None:
    """What the run prunes to, in one line (printed before any work): the shape and its
    size next to the source's; None when it does not prune."""
    if run.target is None:
        return None
    l0 = run.cfg.model.l0_module
    how = "target_model" if l0.target_params is None else f"target_params={l0.target_params:g}"
    dims = ", ".join(f"{k}={v}" for k, v in _dims(run.target).items())
    return (
        f"pruning to {dims}: {run.target.num_params():,} parameters, the source "
        f"{run.source.num_params():,} (from {how})"
    )


def _dims(shape: DecoderShape) -> dict:
    """The prunable dimensions of `shape` (the module table's HF keys)."""
    return {k: getattr(shape, k) for k in MODULE_KEYS.values()}


def _check_batch(cfg: TrainConfig, world: int) -> None:
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


def recorded(run: Run) -> TrainConfig:
    """The config a run writes to its save folder: as given, with what resolution chose
    that a later command must not re-derive (the teacher, when defaulted)."""
    cfg = run.cfg
    if cfg.distillation is None or cfg.distillation.teacher_path:
        return cfg
    teacher = replace(cfg.distillation, teacher_path=str(run.teacher_path))
    return replace(cfg, distillation=teacher)


def build_l0(run: Run, warmup_steps: int | None = None) -> L0Module | None:
    """The run's L0 module (gates at their initial values), or None when not pruning."""
    if run.target is None:
        return None
    steps = run.steps  # None when resolved without the corpus: no ramp, no settle phase
    if warmup_steps is None:
        warmup_steps = steps.lagrangian_warmup if steps is not None else 0
    settle = steps.total - steps.settle if steps is not None and steps.settle else None
    return L0Module(run.source, run.target, run.modules, warmup_steps, run.cfg.seed, settle)
