"""The training config: one schema for pruning and continued pretraining.

A YAML file plus `key=value` overrides (OmegaConf dot-list) are merged onto the
dataclasses below; defaults live only here. Unknown keys, missing required keys and
inconsistent values are one-line `ConfigError`s naming the key, raised before any model
weights are loaded.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import yaml
from shearing.models.config import ACTIVATION_REPLACEMENTS
from shearing.pruning.modules import (
    INIT_LOG_ALPHA,
    INITS,
    PRUNED_LOG_ALPHA,
)


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


PRECISIONS = ("fp32", "amp_bf16", "amp_fp16")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
TEACHER_DTYPES = ("float32", "bfloat16", "float16")
UPDATE_TYPES = ("exponential", "constant")


def choice(default: Any, options: tuple[str, ...]) -> Any:
    """A key that takes one of `options` (the check and `shearing keys` read them here)."""
    return field(default=default, metadata={"choices": options})


def duration(default: Any) -> Any:
    """A duration key's field. Every duration key takes the same forms (`parse_steps`): a
    bare integer (steps), "Nba" (steps), "Nsp" (samples), "Ntok" (tokens) or "X.Ydur" (a
    fraction of max_duration); `DURATION_KEYS` finds them by this mark."""
    return field(default=default, metadata={"duration": True})


@dataclass
class L0Config:
    """Structured-pruning settings (`model.l0_module`)."""

    #: Which gates to learn: layer, hidden, head, kv_group, intermediate.
    pruning_modules: list[str] = field(
        default_factory=lambda: ["layer", "hidden", "head", "intermediate"]
    )
    #: The shape to reach, with Hugging Face config names; omitted keys keep the source's
    #: (or, with target_params, follow its rule).
    target_model: dict[str, int] = field(default_factory=dict)
    #: A size to reach instead of a whole shape: a parameter count (2.7e9; embeddings
    #: included, as the paper counts) or a fraction of the source's (0.4). The shape is
    #: chosen by one rule (shearing/pruning/sizing.py: keep head width and layers, scale
    #: hidden, heads and FFN together) around the keys target_model gives, and printed
    #: before training.
    target_params: float | None = None
    #: Steps over which target sparsity ramps linearly from 0 to its final value (a
    #: number of steps or a duration: "640ba", "0.2dur", "1Btok").
    lagrangian_warmup_steps: int | str = duration(0)
    #: Gate logits at the start: "default" (all equal) or "importance" (ordered by
    #: activation importance on calibration rows, see shearing.pruning.importance).
    init: str = choice("default", INITS)
    #: Rows per domain of the train split that importance init scores the model on.
    calibration_rows: int = 16
    #: Importance init only: the gate logit the units outside the importance mask start
    #: at (in [x - 1, x], ordered by score). null = -3 (open in at most 20% of sampled
    #: masks); lower starts training nearer the sliced model (-6: about 1%), with less
    #: signal for a gate to reopen its unit. Must be below init_kept_logit - 1.
    init_pruned_logit: float | None = None
    #: Importance init only: the gate logit the units inside the importance mask start at
    #: (in [x - 1, x], ordered by score). null = 5 (a sampled mask scales a kept unit
    #: below 1 with probability 3-8%); higher trains nearer the sliced model (8: at most
    #: 0.5%), and a gate takes longer to close its unit. Must be above init_pruned_logit + 1.
    init_kept_logit: float | None = None
    #: The last `settle_steps` steps train the weights under the fixed final
    #: (deterministic) masks: gates and Lagrange multipliers stop, so the sliced model is
    #: the model the weights were last trained as. 0 = the paper's run (gates learn to the
    #: end). Must leave the target ramp (`lagrangian_warmup_steps`) before it. Steps or a
    #: duration.
    settle_steps: int | str = duration(0)


@dataclass
class ModelConfig:
    #: Source model: a Hugging Face directory or a .gguf file.
    path: str = MISSING
    #: Structured pruning; null for plain (continued) pretraining.
    l0_module: L0Config | None = None
    #: Replace the FFN activation on load: relu, fatrelu, drelu (null: keep the source's).
    activation: str | None = choice(None, ACTIVATION_REPLACEMENTS)
    #: Threshold T of fatrelu.
    fatrelu_threshold: float = 0.01


@dataclass
class DistillationConfig:
    """Logit distillation from a frozen teacher:
    loss = ce_weight * CE + alpha * T^2 * KL(teacher_T || student_T).

    ReluLLaMA's recipe is ce_weight 1, alpha 1; Minitron's pure distillation ce_weight 0.
    """

    #: Weight of the distillation term.
    alpha: float = 1.0
    #: Temperature T both distributions are softened by (the term is scaled by T^2).
    temperature: float = 1.0
    #: Weight of the next-token cross-entropy next to the distillation term (0 = pure
    #: distillation).
    ce_weight: float = 1.0
    #: Frozen teacher; null = the unpruned source: model.path, or, when model.path is a
    #: converted pruned model, the source its pruning run started from (recorded by
    #: convert_to_hf.sh in `shearing_run.json`). The resolved path is written into the
    #: run's config.yaml.
    teacher_path: str | None = None
    #: Teacher weights' dtype: float32, bfloat16 or float16 (the teacher only runs
    #: forward, so bf16 halves its memory on GPUs at ~no cost in the targets).
    teacher_dtype: str = choice("float32", TEACHER_DTYPES)


@dataclass
class L1Stage:
    #: Length of the stage in steps (or a duration).
    steps: int | str = duration(MISSING)
    #: L1 coefficient reached at the end of the stage (sine ramp from the previous one).
    penalty: float = MISSING


@dataclass
class ActivationL1Config:
    """ProSparse's progressive L1 on FFN activations: loss += lambda(step) * mean |h|."""

    #: The stages, in order: each ramps the coefficient along a sine to its `penalty`
    #: over its `steps`.
    stages: list[L1Stage] = field(default_factory=list)


@dataclass
class ThresholdShiftConfig:
    """Switch relu -> fatrelu with `threshold` from `step` on (ProSparse)."""

    #: The step (or a duration into the run) the threshold comes into force.
    step: int | str = duration(MISSING)
    #: FATReLU's threshold from that step on (0, i.e. ReLU, before it).
    threshold: float = 0.01


@dataclass
class DataConfig:
    #: Corpus root written by data_prep/tokenize.py (manifest.json + MDS shards), a folder
    #: every training process reads in place. Set it, or `remote` with `local`.
    path: str | None = None
    #: A corpus in object storage, read through mosaicml-streaming: a URL its downloaders
    #: take (s3://, gs://, oci://, azure://, hf://, ...) or a path on a shared filesystem.
    #: Shards are fetched on first use into `local`; the manifest is read from here.
    remote: str | None = None
    #: Each node's cache folder of `remote` (a local disk; never one folder for two nodes).
    local: str | None = None
    #: Most bytes the cache may hold (an integer, or "500gb"; at least four shards): the
    #: shards read least recently are evicted to stay below it. null = no limit.
    cache_limit: int | str | None = None
    #: Attempts at each download of a remote corpus's file (streaming's download_retry).
    download_retry: int = 2
    #: Seconds one download may take.
    download_timeout: float = 60.0
    #: Domains to train on; null = every domain of the manifest.
    domains: list[str] | None = None
    #: Initial sampling proportions (same order as domains); null = the corpus' natural mix.
    proportions: list[float] | None = None
    #: Reference loss per domain for dynamic batch loading.
    reference_losses: list[float] | None = None
    #: Start from the proportions a previous run ended with (its domain_history.jsonl or
    #: run folder); replaces `proportions`.
    proportions_from: str | None = None
    #: Read each domain's rows on from where a finished earlier run on this corpus stopped
    #: (its save_folder or data_position.json), e.g. continued pretraining after the pruning
    #: run, so no row of that run is read again until a domain runs out; null = from the start.
    rows_from: str | None = None
    #: Steps (or a duration) between proportion updates, a multiple of eval_interval;
    #: null = fixed proportions.
    update_interval: int | str | None = duration(None)
    #: `exponential` (Sheared-LLaMA) or `constant` (evaluate and log, never re-weight).
    update_type: str = choice("exponential", UPDATE_TYPES)
    #: Step size of the exponential update.
    eta: float = 1.0
    #: Mix this much of the uniform distribution into each update.
    smoothing: float = 0.0
    #: Clip the excess loss at 0 (the paper); false reproduces the original code.
    clip_delta: bool = True
    #: DataLoader worker processes.
    num_workers: int = 0
    #: Held-out rows per domain used at each evaluation (null = all).
    eval_max_rows: int | None = None


@dataclass
class OptimizerConfig:
    #: Peak learning rate of the model weights (AdamW).
    lr: float = 1e-4
    #: AdamW's decoupled weight decay on the model weights (not the gates or multipliers).
    weight_decay: float = 0.0
    #: AdamW's two moment coefficients.
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    #: AdamW's epsilon.
    eps: float = 1e-8
    #: Learning rate of the gate logits and (ascending) of the Lagrange multipliers.
    l0_lr: float = 1.0
    #: null: the Lagrange multipliers take AdamW steps at `l0_lr`, as in the reference code
    #: (every step moves a multiplier by about l0_lr however small the constraint gap, so
    #: they wind up while the expected sparsity sits a hair off its target). A rate: plain
    #: gradient ascent instead, lambda1 += rate * (s - t) and lambda2 += rate * (s - t)^2,
    #: steps in proportion to the gap.
    lambda_ascent_lr: float | None = None


@dataclass
class SchedulerConfig:
    #: Linear warmup of the weights' learning rate: "Nba" or a fraction of the run "0.03dur".
    t_warmup: int | str = duration("0ba")
    #: Final learning rate as a fraction of the peak (cosine decay).
    alpha_f: float = 0.1
    #: Where this run begins on its schedule: steps of the same schedule an earlier stage
    #: already ran (e.g. the pruning run before a continued-pretraining run), so that the two
    #: stages share one warmup and one cosine. "0ba": the schedule starts with the run.
    t_start: int | str = duration("0ba")
    #: Length of the whole schedule (warmup included), counted from its start; null: t_start
    #: plus max_duration. Set it on the first stage of a shared schedule to the sum of the
    #: stages. Past t_max the rate stays at alpha_f x lr.
    t_max: int | str | None = duration(None)


@dataclass
class TrainConfig:
    #: The model to train: its source, and what pruning or activation change it gets.
    model: ModelConfig = field(default_factory=ModelConfig)
    #: The corpus, its domains and how their proportions move (dynamic batch loading).
    data: DataConfig = field(default_factory=DataConfig)
    #: AdamW for the weights; the gates' and the Lagrange multipliers' rates.
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    #: The weights' learning-rate schedule: linear warmup, then cosine to alpha_f x lr.
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    distillation: DistillationConfig | None = None
    activation_l1: ActivationL1Config | None = None
    threshold_shift: ThresholdShiftConfig | None = None
    #: Free-form values for ${variables.x} interpolation.
    variables: dict[str, Any] = field(default_factory=dict)
    #: The run's name (composer's); autoresume needs it.
    run_name: str | None = None
    #: Seeds the weights' init where there is one, the domain draws, the row order and the
    #: gates' noise.
    seed: int = 17
    #: Training length: steps (a bare integer or "Nba"), "Nsp" (samples) or "Ntok" (tokens).
    max_duration: int | str = duration(MISSING)
    #: Rows per optimizer step, over all processes (split evenly among them).
    global_train_batch_size: int = MISSING
    #: Per-device microbatch (gradient accumulation splits the device batch into these).
    device_train_microbatch_size: int | None = None
    #: Rows per evaluation batch on each device.
    device_eval_batch_size: int = 8
    #: fp32, amp_bf16, amp_fp16 (GPUs only). amp_bf16 on a CPU: the forwards run under
    #: CPU bf16 autocast, weights, gradients, optimizer state and losses stay fp32 (it pays
    #: off on CPUs with native bf16: avx512_bf16 or AMX).
    precision: str = choice("fp32", PRECISIONS)
    #: Steps (or a duration) between evaluations of every domain's held-out loss.
    eval_interval: int | str = duration("50ba")
    #: Where checkpoints, the resolved config and run records go (null = no checkpoints): a
    #: folder every node sees, or an object-store URI (s3://, gs://, oci://, ...).
    save_folder: str | None = None
    #: Steps (or a duration) between checkpoints.
    save_interval: int | str = duration("1000ba")
    #: Checkpoints kept in save_folder (the oldest go first); -1 = all.
    save_num_checkpoints_to_keep: int = -1
    #: Continue the run in save_folder from its newest complete checkpoint (needs run_name);
    #: with no checkpoint there, start (from load_path, if set).
    autoresume: bool = False
    #: Global gradient-norm clip on model weights only (gates and lambdas are not clipped).
    max_grad_norm: float | None = 1.0
    #: composer FSDP settings (parallelism_config.fsdp); null = no FSDP.
    fsdp_config: dict[str, Any] | None = None
    #: composer's progress bar on a terminal (off the terminal, console lines replace it).
    progress_bar: bool = True
    #: composer's console log lines (the metrics every console_log_interval).
    log_to_console: bool = False
    #: Steps (or a duration) between console log lines.
    console_log_interval: int | str = duration("1ba")
    #: composer loggers, callbacks and algorithms by llm-foundry name (wandb, tensorboard,
    #: mlflow, file; lr_monitor, speed_monitor, memory_monitor, ...; gradient_clipping, ema)
    #: or `package.module:Class`, each mapped to its keyword arguments; see
    #: shearing/trainer/parts.py. They run next to the project's own.
    loggers: dict[str, Any] = field(default_factory=dict)
    #: composer callbacks by name (lr_monitor, speed_monitor, ...), as `loggers`.
    callbacks: dict[str, Any] = field(default_factory=dict)
    #: composer algorithms by name (gradient_clipping, ema, ...), as `loggers`.
    algorithms: dict[str, Any] = field(default_factory=dict)
    #: A composer checkpoint to start from (a path or an object-store URI), e.g. another
    #: run's; with autoresume, the save folder's own latest checkpoint comes first.
    load_path: str | None = None
    #: Take only the model's weights from load_path (not optimizer, schedule or step).
    load_weights_only: bool = False
    #: Reuse a save_folder that holds an earlier run: its checkpoints and records are moved
    #: into save_folder/.overwritten when training starts and deleted when it finishes (an
    #: interrupted run leaves them there). Not with autoresume.
    save_overwrite: bool = False
    #: Evaluate before the first training step (not when resuming).
    eval_first: bool = False
    #: Batches of the held-out set per evaluation (-1 = all). The set is domain by domain,
    #: so a subset covers the first domains only; data.eval_max_rows evaluates fewer rows
    #: of every domain instead.
    eval_subset_num_batches: int = -1
    #: Level of the composer and shearing log lines: debug, info, warning, error, critical.
    python_log_level: str = choice("info", LOG_LEVELS)
    #: Seconds to wait for every process when the process group starts.
    dist_timeout: float = 300.0


def duration_keys(schema: type = TrainConfig, prefix: str = "") -> tuple[str, ...]:
    """The dotted paths of the schema's duration keys (`duration`), a list's entries as
    `[]` ("activation_l1.stages[].steps")."""
    hints = typing.get_type_hints(schema)
    keys: list[str] = []
    for f in dataclasses.fields(schema):
        if f.metadata.get("duration"):
            keys.append(prefix + f.name)
        for inner, in_list in _nested_schemas(hints[f.name]):
            keys += duration_keys(inner, f"{prefix}{f.name}{'[]' if in_list else ''}.")
    return tuple(keys)


def _nested_schemas(hint: Any, in_list: bool = False):
    if dataclasses.is_dataclass(hint):
        yield hint, in_list
    for arg in typing.get_args(hint):  # X | None, list[X], dict[str, X]
        yield from _nested_schemas(arg, in_list or typing.get_origin(hint) is list)


#: Every duration key of the schema: one rule reads them all (`parse_steps`).
DURATION_KEYS = duration_keys()


class KeyPath(str):
    """A key's dotted path, taken from the schema: `KEYS.model.l0_module.settle_steps` is
    "model.l0_module.settle_steps", and a key the schema lacks is an AttributeError, so
    messages name keys that exist and a key's checks are found by searching for it.
    `[i]` names a list entry ("activation_l1.stages[0]"), `[name]` a mapping's entry."""

    schema: type | None

    def __new__(cls, path: str, schema: type | None = None) -> KeyPath:
        key = super().__new__(cls, path)
        key.schema = schema
        return key

    def __reduce__(self):  # copies and pickles keep the schema (str's own would drop it)
        return (KeyPath, (str(self), self.schema))

    def __getattr__(self, name: str) -> KeyPath:
        if name.startswith("__") or self.schema is None:
            raise AttributeError(name)
        hints = typing.get_type_hints(self.schema)
        if name not in hints or name.startswith("_"):
            raise AttributeError(f"the schema has no key {self._join(name)!r}")
        inner = next(iter(_nested_schemas(hints[name])), (None, False))
        return KeyPath(self._join(name), inner[0])

    def __getitem__(self, entry: int | str) -> KeyPath:
        if isinstance(entry, int):
            return KeyPath(f"{self}[{entry}]", self.schema)
        return KeyPath(self._join(entry), None)

    @property
    def name(self) -> str:
        """The last key of the path: `KEYS.data.rows_from.name` is "rows_from"."""
        return self.rsplit(".", 1)[-1]

    def _join(self, name: str) -> str:
        return f"{self}.{name}" if self else name


#: The schema's keys as paths (`KeyPath`): `KEYS.data.update_interval`.
KEYS = K = KeyPath("", TrainConfig)
K_L0 = K.model.l0_module
#: The loader's own key: the files a recipe is composed on (`read_recipe`).
BASE_KEY = "base"


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """Merge a YAML file (with the bases it names, `read_recipe`) and dot-list overrides
    onto the schema.

    Raises:
        ConfigError: unknown or missing keys, values of the wrong type, a missing base.
    """
    if not Path(path).expanduser().is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        schema = OmegaConf.structured(TrainConfig)
        merged = schema
        recipe = read_recipe(Path(path).expanduser())
        for source in (recipe, OmegaConf.from_dotlist(overrides or [])):
            try:
                merged = OmegaConf.merge(merged, source)
            except TypeError:  # a list where the schema has a mapping, or the reverse
                raise ConfigError(_misfit(merged, source)) from None
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(f"config key {missing[0]!r} is required and has no value")
        OmegaConf.resolve(merged)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        msg = str(err).splitlines()[0]
        if "not in struct" in msg or "Key '" in msg and "not in" in msg:
            raise ConfigError(f"unknown config key {key!r}") from None
        raise ConfigError(f"config key {key!r}: {msg}") from None
    except yaml.YAMLError as err:
        msg = str(err).splitlines()[0]
        raise ConfigError(f"config file {str(path)!r} is not valid YAML ({msg})") from None


def read_recipe(path: Path, within: tuple[Path, ...] = ()):
    """A recipe file composed on its bases: `base: [FILE, ...]` (paths relative to the
    recipe) names YAML files merged in order beneath the recipe's own keys, so a block
    that several recipes share (yaml/base/fsdp.yaml) is written once. A base may name bases
    of its own; keys are merged as OmegaConf merges (mappings key by key, lists replaced).

    Raises:
        ConfigError: a base that is missing, not a list of paths, or that names itself.
    """
    conf = OmegaConf.load(path)
    if not OmegaConf.is_dict(conf) or BASE_KEY not in conf:
        return conf
    bases = conf.pop(BASE_KEY)
    names = [bases] if isinstance(bases, str) else list(bases) if OmegaConf.is_list(bases) else None
    if names is None or not all(isinstance(b, str) for b in names):
        raise ConfigError(f"{BASE_KEY}={bases!r} in {path} must be a list of YAML paths")
    composed = OmegaConf.create()
    for name in names:
        base = (path.parent / name).resolve()
        if not base.is_file():
            raise ConfigError(
                f"{BASE_KEY} {name!r} named by {path} does not exist ({path.parent / name})"
            )
        if base in (*within, path.resolve()):
            raise ConfigError(f"{BASE_KEY} {name!r} named by {path} includes {path} again")
        composed = OmegaConf.merge(composed, read_recipe(base, (*within, path.resolve())))
    return OmegaConf.merge(composed, conf)


def _misfit(config, source, prefix: str = "") -> str:
    """The message for a list given where `config` has a mapping, or the reverse."""
    for key in source:
        if key not in config or OmegaConf.is_missing(config, key):
            continue
        want, got = config[key], source[key]
        if OmegaConf.is_dict(want) and OmegaConf.is_dict(got):
            found = _misfit(want, got, f"{prefix}{key}.")
            if found:
                return found
        elif OmegaConf.is_dict(want) and OmegaConf.is_list(got):
            return f"config key {prefix + str(key)!r} must be a mapping, not {got!r}"
        elif OmegaConf.is_list(want) and OmegaConf.is_dict(got):
            return f"config key {prefix + str(key)!r} must be a list, not {got!r}"
    return "" if prefix else "config values do not fit the schema (a list or a mapping misplaced)"


def to_yaml(cfg: TrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


#: A duration string: a number (integer, decimal or scientific) and a unit, as composer's
#: `Time` writes them ("640ba", "0.2dur", "3e4tok"); composer reads the same strings for the
#: keys it is handed (tests/trainer/test_composer_yaml.py checks the two readings agree).
DURATION = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*(ba|sp|tok|dur|ep)$", re.I)


def parse_duration(text: str) -> tuple[float, str]:
    """(value, unit) of a duration string; unit one of ba, sp, tok, dur, ep.

    Raises:
        ValueError: not a duration string.
    """
    m = DURATION.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a duration")
    value, unit = float(m[1]), m[2].lower()
    if unit != "dur" and value != int(value):
        raise ValueError(f"{text!r} is not a whole number of {unit}")
    return value, unit


def parse_steps(value: int | str, key: str, cfg: TrainConfig, seq_len: int | None = None) -> int:
    """A duration in training steps: "Nba" (steps), "Nsp" (samples), "Ntok" (tokens),
    "X.Ydur" (a fraction of max_duration; not for max_duration itself), or a bare integer
    (steps), for every duration key (`duration`). Epochs are refused: training draws from an
    endless mixture of domains.

    Raises:
        ConfigError: one line naming the key and the units it takes.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():  # "50" from a command line
        return int(value)
    units = (
        "N or Nba (steps), Nsp or Ntok"
        if key == "max_duration"
        else "N or Nba (steps), Nsp, Ntok or X.Ydur"
    )
    try:
        amount, unit = parse_duration(str(value))
    except ValueError:
        raise ConfigError(f"{key}={value!r} is not a duration; use {units}") from None
    if unit == "ba":
        return int(amount)
    if unit == "sp":
        return math.ceil(amount / cfg.global_train_batch_size)
    if unit == "tok":
        if not seq_len:
            raise ConfigError(
                f"{key}={value!r}: a token duration needs the corpus ({K.data.path} or "
                f"{K.data.remote})"
            )
        return math.ceil(amount / (cfg.global_train_batch_size * seq_len))
    if unit == "dur" and key != "max_duration":
        return int(amount * parse_steps(cfg.max_duration, "max_duration", cfg, seq_len))
    if unit == "ep":
        raise ConfigError(
            f"{key}={value!r}: epochs are not defined (training draws from an endless mixture "
            f"of domains); use {units}"
        )
    raise ConfigError(f"{key}={value!r} is not a duration; use {units}")


@dataclass(frozen=True)
class Steps:
    """Every duration of a run, in steps (batches)."""

    total: int
    warmup: int
    eval_interval: int
    save_interval: int
    console_log_interval: int
    #: Where the run begins on its learning-rate schedule, and the schedule's length.
    schedule_start: int
    schedule_length: int
    #: Steps over which the L0 target sparsity ramps (0 when not pruning).
    lagrangian_warmup: int
    #: The last steps that train under fixed masks (0: none, or not pruning).
    settle: int
    #: From this step on the FATReLU threshold is in force (ProSparse); None = from the start.
    threshold_shift: int | None
    #: Steps between domain-proportion updates (None: fixed proportions).
    update_interval: int | None
    #: Length of each activation-L1 stage.
    l1_stages: tuple[int, ...]


def steps_of(cfg: TrainConfig, seq_len: int | None) -> Steps:
    """Every duration key of `cfg` in steps, by one rule (`parse_steps`)."""

    def steps(key: str, value: int | str) -> int:
        return parse_steps(value, key, cfg, seq_len)

    l0, shift, d, sch = cfg.model.l0_module, cfg.threshold_shift, cfg.data, cfg.scheduler
    stages = cfg.activation_l1.stages if cfg.activation_l1 is not None else []
    total = steps(K.max_duration, cfg.max_duration)
    start = steps(K.scheduler.t_start, sch.t_start)
    return Steps(
        total=total,
        warmup=steps(K.scheduler.t_warmup, cfg.scheduler.t_warmup),
        schedule_start=start,
        schedule_length=(
            start + total if sch.t_max is None else steps(K.scheduler.t_max, sch.t_max)
        ),
        eval_interval=steps(K.eval_interval, cfg.eval_interval),
        save_interval=steps(K.save_interval, cfg.save_interval),
        console_log_interval=steps(K.console_log_interval, cfg.console_log_interval),
        lagrangian_warmup=(
            steps(K_L0.lagrangian_warmup_steps, l0.lagrangian_warmup_steps) if l0 else 0
        ),
        settle=steps(K_L0.settle_steps, l0.settle_steps) if l0 else 0,
        threshold_shift=steps(K.threshold_shift.step, shift.step) if shift else None,
        update_interval=(
            None if d.update_interval is None else steps(K.data.update_interval, d.update_interval)
        ),
        l1_stages=tuple(
            steps(K.activation_l1.stages[i].steps, s.steps) for i, s in enumerate(stages)
        ),
    )


def start_logits(l0: L0Config) -> tuple[float, float]:
    """The importance init's starting logits (kept units, pruned units), nulls resolved."""
    kept = INIT_LOG_ALPHA if l0.init_kept_logit is None else l0.init_kept_logit
    pruned = PRUNED_LOG_ALPHA if l0.init_pruned_logit is None else l0.init_pruned_logit
    return kept, pruned


def check(cfg: TrainConfig, *, training: bool = True) -> None:
    """Every check that needs nothing but the config: names, signs and ranges, and keys
    that need or exclude one another. The checks that need the source model, the corpus
    (durations in tokens, the batch over processes) or the machine are the resolver's
    (`shearing.run.resolve`), and so are all the checks of a key that has one of those:
    each key is checked in one place. (What a key must be against an earlier run in
    `save_folder` is checked where that folder is read, `shearing.trainer.folder`.)

    With `training` false only what shapes the model is checked (activation, pruning
    init, sparsity and distillation settings): what conversion and one-shot pruning read.

    Raises:
        ConfigError: one line naming the key and what is valid.
    """
    if training:
        _check_training(cfg)
    _check_model(cfg)


def _check_training(cfg: TrainConfig) -> None:
    """The training keys: the composer keys, numbers, dynamic loading."""
    fsdp = cfg.fsdp_config or {}
    if (
        cfg.model.l0_module is not None
        and fsdp.get("activation_checkpointing")
        and fsdp.get("activation_checkpointing_reentrant", True)
    ):
        raise ConfigError(
            f"{K.fsdp_config}.activation_checkpointing with {K.model.l0_module} needs "
            f"{K.fsdp_config}.activation_checkpointing_reentrant: false (the layers take the "
            "pruning masks, which carry gradients)"
        )
    if cfg.optimizer.lambda_ascent_lr is not None and cfg.model.l0_module is None:
        raise ConfigError(
            f"{K.optimizer.lambda_ascent_lr}={cfg.optimizer.lambda_ascent_lr} needs "
            f"{K.model.l0_module} (it steps a pruning run's Lagrange multipliers); remove it here"
        )
    if cfg.autoresume and (cfg.save_folder is None or cfg.run_name is None):
        missing = K.save_folder if cfg.save_folder is None else K.run_name
        raise ConfigError(
            f"{K.autoresume}=true needs {missing}: it finds the run to resume by both"
        )
    if cfg.autoresume and cfg.save_overwrite:
        raise ConfigError(
            f"{K.save_overwrite}=true with {K.autoresume}=true: autoresume continues the run "
            "in save_folder, save_overwrite replaces it; keep one"
        )
    if cfg.python_log_level.lower() not in LOG_LEVELS:
        levels = ", ".join(LOG_LEVELS)
        raise ConfigError(
            f"{K.python_log_level}={cfg.python_log_level!r} is not valid; use {levels}"
        )
    _check_numbers(cfg)
    _check_corpus(cfg)
    d = cfg.data
    if d.update_type not in UPDATE_TYPES:
        raise ConfigError(
            f"{K.data.update_type}={d.update_type!r} is not valid; use {', '.join(UPDATE_TYPES)}"
        )
    if d.update_interval is not None and not 0 <= d.smoothing <= 1:
        raise ConfigError(f"{K.data.smoothing}={d.smoothing} must be in [0, 1]")


def _check_corpus(cfg: TrainConfig) -> None:
    """Where the corpus is: `data.path`, or `data.remote` with its cache `data.local`."""
    d = cfg.data
    if d.path is None and d.remote is None:
        raise ConfigError(
            f"the corpus is not set: give {K.data.path} (a local folder) or {K.data.remote} "
            f"with {K.data.local} (object storage and this node's cache folder)"
        )
    if d.path is not None and d.remote is not None:
        raise ConfigError(
            f"{K.data.path} and {K.data.remote} are both set; a run reads one corpus: keep one"
        )
    if d.remote is not None and d.local is None:
        raise ConfigError(
            f"{K.data.remote}={d.remote!r} needs {K.data.local}: the folder on each node that "
            "caches its shards"
        )
    for key in (K.data.local, K.data.cache_limit):
        if d.remote is None and getattr(d, key.name) is not None:
            raise ConfigError(
                f"{key} is set without {K.data.remote}; it caches a remote corpus (a local "
                f"{K.data.path} is read in place): remove it"
            )
    if d.cache_limit is not None:
        size = parse_bytes(d.cache_limit)
        if size is None or size <= 0:
            raise ConfigError(
                f"{K.data.cache_limit}={d.cache_limit!r} is not valid; give a positive size: "
                'bytes, or a number with kb, mb, gb or tb ("500gb")'
            )
    if d.download_retry < 1 or d.download_timeout <= 0:
        raise ConfigError(
            f"{K.data.download_retry}={d.download_retry} and {K.data.download_timeout}="
            f"{d.download_timeout} must be at least 1 attempt and a positive number of seconds"
        )


def value_at(cfg: Any, key: str) -> Any:
    """The value of a dotted key in a loaded config (`value_at(cfg, "optimizer.lr")`)."""
    for part in str(key).split("."):
        cfg = getattr(cfg, part)
    return cfg


#: The plain numbers' rules: (key, test of its value, what is valid). `_check_numbers`
#: applies them and `shearing keys` prints them.
NUMBER_RULES: tuple[tuple[KeyPath, Any, str], ...] = (
    (K.device_eval_batch_size, lambda v: v > 0, "a positive integer"),
    (K.save_num_checkpoints_to_keep, lambda v: v >= -1, "-1 (keep all) or more"),
    (K.max_grad_norm, lambda v: v is None or v > 0, "positive, or null (no clipping)"),
    (K.optimizer.lr, lambda v: v >= 0, "0 or more"),
    (K.optimizer.l0_lr, lambda v: v >= 0, "0 or more"),
    (K.optimizer.lambda_ascent_lr, lambda v: v is None or v > 0, "positive, or null (AdamW)"),
    (K.optimizer.weight_decay, lambda v: v >= 0, "0 or more"),
    (K.optimizer.eps, lambda v: v > 0, "positive"),
    (K.optimizer.betas, lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
     "two values in [0, 1)"),
    (K.scheduler.alpha_f, lambda v: 0 <= v <= 1, "in [0, 1]"),
    (K.data.num_workers, lambda v: v >= 0, "0 or more"),
    (K.data.eval_max_rows, lambda v: v is None or v > 0, "positive, or null (all rows)"),
    (K.data.eta, lambda v: v > 0, "positive"),
    (K.eval_subset_num_batches, lambda v: v == -1 or v > 0,
     "-1 (all) or a positive number of batches"),
    (K.dist_timeout, lambda v: v > 0, "positive (seconds)"),
    (K.model.fatrelu_threshold, lambda v: v >= 0, "0 or more"),
)  # fmt: skip


def _check_numbers(cfg: TrainConfig) -> None:
    """Signs and ranges of plain numbers (`NUMBER_RULES`); each error names the key and
    what is valid."""
    for key, ok, valid in NUMBER_RULES:
        value = value_at(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key}={value} is not valid; it must be {valid}")


def _check_model(cfg: TrainConfig) -> None:
    """What shapes the model: the activation, the pruning init, sparsity and distillation
    settings."""
    act = cfg.model.activation
    if act is not None and act not in ACTIVATION_REPLACEMENTS:
        raise ConfigError(
            f"{K.model.activation}={act!r} is not supported; use "
            f"{', '.join(ACTIVATION_REPLACEMENTS)}"
        )
    d = cfg.distillation
    if d is not None and (d.alpha < 0 or d.temperature <= 0):
        raise ConfigError(
            f"distillation needs alpha >= 0 and temperature > 0, got {d.alpha}, {d.temperature}"
        )
    if d is not None and not (d.ce_weight >= 0 and d.alpha + d.ce_weight > 0):
        raise ConfigError(
            f"{K.distillation.ce_weight}={d.ce_weight} is not valid; it must be 0 or more, and "
            "alpha and ce_weight not both 0"
        )
    if d is not None and d.teacher_dtype not in TEACHER_DTYPES:
        raise ConfigError(
            f"{K.distillation.teacher_dtype}={d.teacher_dtype!r} is not valid; use "
            f"{', '.join(TEACHER_DTYPES)}"
        )
    l0 = cfg.model.l0_module
    if l0 is None:
        return
    if l0.init not in INITS:
        raise ConfigError(
            f"{K.model.l0_module.init}={l0.init!r} is not valid; use {', '.join(INITS)}"
        )
    kept, pruned = start_logits(l0)
    if l0.init_pruned_logit is not None and not (l0.init == "importance" and pruned < kept - 1):
        raise ConfigError(
            f"{K.model.l0_module.init_pruned_logit}={pruned:g} is not valid; it needs "
            f"init: importance and a value below {kept - 1:g} (or null)"
        )
    if l0.init_kept_logit is not None and not (l0.init == "importance" and kept > pruned + 1):
        raise ConfigError(
            f"{K.model.l0_module.init_kept_logit}={kept:g} is not valid; it needs "
            f"init: importance and a value above {pruned + 1:g} (or null)"
        )
    if l0.calibration_rows <= 0:
        raise ConfigError(
            f"{K.model.l0_module.calibration_rows}={l0.calibration_rows} must be positive"
        )


_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(b|kb|mb|gb|tb|pb)?\s*$", re.I)
_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}


def parse_bytes(value: int | str) -> int | None:
    """A size in bytes: an integer, or a number with b, kb, mb, gb, tb, pb (1024-based, as
    mosaicml-streaming reads `cache_limit`); None if `value` is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if m is None:
        return None
    return int(float(m[1]) * _UNITS[(m[2] or "b").lower()])


def expand_path(path: str) -> Path:
    return Path(os.path.expandvars(path)).expanduser()
