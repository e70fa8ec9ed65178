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
    PRECISIONS,
    ConfigError,
    L0Config,
    Steps,
    TrainConfig,
    check,
    expand_path,
    steps_of,
)
from shearing.data.corpus import Corpus
from shearing.data.dynamic import last_proportions
from shearing.data.mixture import read_position
from shearing.models.config import Act, DecoderShape, export_problem
from shearing.models.hf_io import read_hf_config
from shearing.pruning.l0 import L0Module
from shearing.pruning.modules import MODULE_KEYS, TABLE, resolve_modules
from shearing.pruning.sizing import sized_target

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

    #: Where the corpus is: a local folder, or a remote prefix and this node's cache.
    corpus: Corpus
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
    corpus = Corpus.of(d)
    manifest = corpus.manifest()
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
            row_seed, row_start = read_position(where, domains, manifest, corpus.root)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return DataPlan(
        corpus,
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
    check(cfg, training=with_data)  # what the config alone shows, before any file is read
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
    if with_data:
        _check_batch(cfg, world_size)  # before the durations: tokens over batches of rows
        _check_machine(cfg)
    steps = _check_steps(cfg, data.seq_len) if with_data else None
    _check_sparsity(cfg, original, steps)
    target = None if m.l0_module is None else target_shape(original, m.l0_module)
    if shift is not None:  # the run ends with FATReLU(threshold); ReLU before the shift
        trained |= {"hidden_act": Act.FATRELU.value, "fatrelu_threshold": shift.threshold}
    source = original.replace(**trained)
    if data is not None and data.vocab_size > source.vocab_size:
        raise ConfigError(
            f"{data.corpus.key} was tokenized with a vocabulary of {data.vocab_size}, larger than "
            f"the model's {source.vocab_size}"
        )
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


def _check_machine(cfg: TrainConfig) -> None:
    """What needs this machine or its files: the precision's device, `load_path`."""
    if cfg.precision not in PRECISIONS:
        raise ConfigError(
            f"{K.precision}={cfg.precision!r} is not valid; use {', '.join(PRECISIONS)}"
        )
    if cfg.precision == "amp_fp16":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"{K.precision}=amp_fp16 needs a GPU (composer's fp16 amp); on a CPU use fp32 or "
                "amp_bf16"
            )
    if cfg.load_path and "://" not in cfg.load_path and not expand_path(cfg.load_path).is_file():
        raise ConfigError(
            f"{K.load_path}={cfg.load_path!r} is not a checkpoint file (a local path or an "
            "object-store URI such as s3://bucket/ep1-ba100-rank0.pt)"
        )


def _check_steps(cfg: TrainConfig, seq_len: int) -> Steps:
    """Every duration in steps (durations in tokens need the corpus's row length), checked
    against the run and each other."""
    steps = steps_of(cfg, seq_len)
    if steps.total <= 0:
        raise ConfigError(f"{K.max_duration}={cfg.max_duration} must be at least 1 step")
    sch = cfg.scheduler
    if steps.warmup < 0:
        raise ConfigError(f"{K.scheduler.t_warmup}={sch.t_warmup} must not be negative")
    if steps.schedule_start < 0:
        raise ConfigError(f"{K.scheduler.t_start}={sch.t_start} must not be negative")
    if sch.t_max is not None and steps.schedule_length <= steps.schedule_start:
        raise ConfigError(
            f"{K.scheduler.t_max}={sch.t_max} must be longer than {K.scheduler.t_start} "
            f"({steps.schedule_start} steps): the run would begin after its schedule ended"
        )
    if steps.warmup > steps.schedule_length:
        if sch.t_max is None and steps.schedule_start == 0:
            where = f"the run ({steps.total} steps)"
        else:
            where = f"its schedule ({steps.schedule_length} steps from the schedule's start)"
        raise ConfigError(f"{K.scheduler.t_warmup}={sch.t_warmup} is longer than {where}")
    for key in (K.eval_interval, K.save_interval, K.console_log_interval):
        if getattr(steps, key) <= 0:
            raise ConfigError(f"{key}={getattr(cfg, key)} must be at least 1 step")
    d = cfg.data
    if steps.update_interval is not None:
        if steps.update_interval <= 0:
            raise ConfigError(f"{K.data.update_interval}={d.update_interval} must be positive")
        if d.update_type == "exponential" and d.reference_losses is None:
            raise ConfigError(
                f"{K.data.update_interval} is set but {K.data.reference_losses} is not"
            )
        if steps.update_interval % steps.eval_interval:
            raise ConfigError(
                f"{K.data.update_interval}={d.update_interval} is not a multiple of "
                f"{K.eval_interval}={cfg.eval_interval}; updates need a fresh evaluation"
            )
    l0 = cfg.model.l0_module
    if l0 is not None:
        if steps.lagrangian_warmup < 0:
            raise ConfigError(
                f"{K.model.l0_module.lagrangian_warmup_steps}={l0.lagrangian_warmup_steps} "
                "must not be negative"
            )
        if steps.lagrangian_warmup > steps.total:
            raise ConfigError(
                f"{K.model.l0_module.lagrangian_warmup_steps}={l0.lagrangian_warmup_steps} is "
                f"longer than the run ({K.max_duration}={cfg.max_duration}, {steps.total} steps)"
            )
        if not 0 <= steps.settle <= steps.total - steps.lagrangian_warmup:
            raise ConfigError(
                f"{K.model.l0_module.settle_steps}={l0.settle_steps} is not valid; it must be 0 or "
                f"more and leave the target ramp (lagrangian_warmup_steps="
                f"{l0.lagrangian_warmup_steps}) before it in the run's {steps.total} steps"
            )
    return steps


def _check_sparsity(cfg: TrainConfig, source: DecoderShape, steps: Steps | None) -> None:
    """The threshold shift against the source's activation and the run's steps; the L1
    stages' lengths (None `steps`: not training, the shift's step is not checked)."""
    final = cfg.model.activation or source.hidden_act
    shift = cfg.threshold_shift
    if shift is not None and final not in (Act.RELU, Act.FATRELU):
        raise ConfigError(f"threshold_shift needs a relu or fatrelu model, not {final!r}")
    at = steps.threshold_shift if steps is not None else None
    in_run = steps is None or (at is not None and 0 <= at < steps.total)
    if shift is not None and not (in_run and shift.threshold >= 0):
        raise ConfigError(
            f"threshold_shift needs 0 <= step < {steps.total if steps else 'the run'} (the "
            f"run's steps) and threshold >= 0, got step={shift.step}, "
            f"threshold={shift.threshold}"
        )
    if cfg.activation_l1 is not None:
        if not cfg.activation_l1.stages:
            raise ConfigError(f"{K.activation_l1.stages} is empty")
        for i, stage in enumerate(cfg.activation_l1.stages):
            length = steps.l1_stages[i] if steps is not None else 1
            if length <= 0 or stage.penalty < 0:
                raise ConfigError(
                    f"{K.activation_l1.stages}[{i}] needs steps > 0 and penalty >= 0, "
                    f"got steps={stage.steps}, penalty={stage.penalty}"
                )


def target_shape(source: DecoderShape, l0: L0Config) -> DecoderShape:
    """The target shape: the source with `target_model` applied, validated against it.

    Raises:
        ConfigError: unknown target keys, a target larger than the source, heads not a
            multiple of key/value heads, or a change no pruning module can make.
    """
    target_key = K.model.l0_module.target_model
    for key in l0.target_model:
        if key not in MODULE_KEYS.values():
            raise ConfigError(
                f"{target_key[key]} is not a prunable dimension; valid: "
                f"{', '.join(MODULE_KEYS.values())}"
            )
    try:
        modules = resolve_modules(source, l0.pruning_modules)
    except ValueError as err:
        raise ConfigError(f"{K.model.l0_module.pruning_modules}: {err}") from None
    t = dict(l0.target_model)
    if l0.target_params is not None:
        try:
            t = sized_target(
                source, modules, t, l0.target_params, lambda s: export_problem(s) is None
            )
        except ValueError as err:
            raise ConfigError(f"{K.model.l0_module.target_params} {err}") from None
    if "num_key_value_heads" not in t:
        mha = source.group_size == 1
        t["num_key_value_heads"] = (
            t.get("num_attention_heads", source.num_attention_heads)
            if mha
            else source.num_key_value_heads
        )
    for key, value in t.items():
        src = getattr(source, key)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{target_key[key]}={value!r} must be a positive integer")
        if value > src:
            raise ConfigError(f"{target_key[key]}={value} is larger than the source's {src}")
    heads = t.get("num_attention_heads", source.num_attention_heads)
    if heads % t["num_key_value_heads"]:
        raise ConfigError(
            f"{target_key['num_attention_heads']}={heads} is not a multiple of "
            f"num_key_value_heads={t['num_key_value_heads']}"
        )
    target = source.replace(**t)
    if source.group_size == 1 and target.group_size != 1:
        raise ConfigError(
            f"{target_key['num_key_value_heads']}={target.num_key_value_heads}: a multi-head "
            f"source can only be pruned to a multi-head target (num_key_value_heads = "
            f"num_attention_heads = {target.num_attention_heads})"
        )
    if source.family.fixed_layers and target.num_hidden_layers != source.num_hidden_layers:
        raise ConfigError(
            f"{target_key['num_hidden_layers']}={target.num_hidden_layers}: "
            f"{source.model_type} keeps all {source.num_hidden_layers} layers (its config makes "
            "the last layer full-attention, which a pruned last layer may not be); prune "
            "width only"
        )
    for module in TABLE.values():
        if module.changes(source, target) and module.name not in modules:
            key = module.hf_key
            name = "head" if module.name == "kv_group" and source.group_size == 1 else module.name
            raise ConfigError(
                f"{target_key[key]}={getattr(target, key)} differs from the source's "
                f"{getattr(source, key)} but {name!r} is not in {K.model.l0_module.pruning_modules}"
            )
    problem = export_problem(target)
    if problem is not None:
        dims = ", ".join(f"{k}={getattr(target, k)}" for k in MODULE_KEYS.values())
        raise ConfigError(f"{target_key} ({dims}) cannot be exported: {problem}")
    return target


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
    if cfg.global_train_batch_size <= 0:
        raise ConfigError(
            f"{K.global_train_batch_size}={cfg.global_train_batch_size} must be positive"
        )
    if cfg.global_train_batch_size % world:
        raise ConfigError(
            f"{K.global_train_batch_size}={cfg.global_train_batch_size} is not divisible by the "
            f"{world} training processes"
        )
    micro = cfg.device_train_microbatch_size
    device_batch = cfg.global_train_batch_size // world
    if micro is not None and (micro <= 0 or device_batch % micro):
        raise ConfigError(
            f"{K.device_train_microbatch_size}={micro} must be a positive divisor of the "
            f"per-device batch {device_batch} ({K.global_train_batch_size}="
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
