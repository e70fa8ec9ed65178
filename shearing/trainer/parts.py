"""Composer loggers, callbacks and algorithms named in a yaml, in llm-foundry's style.

    loggers:
      tensorboard: {log_dir: runs/prune}
      wandb: {project: shearing, entity: me}
    callbacks:
      lr_monitor: {}
      speed_monitor: {window_size: 10}
    algorithms:
      ema: {half_life: 50ba}

A name is one of the tables below (llm-foundry's names for composer's classes) or an
import path `package.module:Class` for a class of your own; the mapping under it holds
the constructor's keyword arguments. They run next to the project's own callbacks and
its metrics.jsonl logger (`train.py`). Algorithms that rewrite modules for other model
families (ALiBi, GLU surgery, ...) are not listed: the pruned layers are the project's own.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from shearing.config import ConfigError

LOGGERS = {
    "wandb": "composer.loggers:WandBLogger",
    "tensorboard": "composer.loggers:TensorboardLogger",
    "mlflow": "composer.loggers:MLFlowLogger",
    "file": "composer.loggers:FileLogger",
    "inmemory": "composer.loggers:InMemoryLogger",
    "in_memory_logger": "composer.loggers:InMemoryLogger",
    "comet_ml": "composer.loggers:CometMLLogger",
    "neptune": "composer.loggers:NeptuneLogger",
    "slack": "composer.loggers:SlackLogger",
    "remote_uploader_downloader": "composer.loggers:RemoteUploaderDownloader",
}
CALLBACKS = {
    "lr_monitor": "composer.callbacks:LRMonitor",
    "speed_monitor": "composer.callbacks:SpeedMonitor",
    "memory_monitor": "composer.callbacks:MemoryMonitor",
    "memory_snapshot": "composer.callbacks:MemorySnapshot",
    "optimizer_monitor": "composer.callbacks:OptimizerMonitor",
    "runtime_estimator": "composer.callbacks:RuntimeEstimator",
    "activation_monitor": "composer.callbacks:ActivationMonitor",
    "nan_monitor": "composer.callbacks:NaNMonitor",
    "oom_observer": "composer.callbacks:OOMObserver",
    "early_stopper": "composer.callbacks:EarlyStopper",
    "threshold_stopper": "composer.callbacks:ThresholdStopper",
    "system_metrics_monitor": "composer.callbacks:SystemMetricsMonitor",
    "free_outputs": "composer.callbacks:FreeOutputs",
}
ALGORITHMS = {
    "gradient_clipping": "composer.algorithms:GradientClipping",
    "ema": "composer.algorithms:EMA",
    "swa": "composer.algorithms:SWA",
    "layer_freezing": "composer.algorithms:LayerFreezing",
}
SECTIONS = {"loggers": LOGGERS, "callbacks": CALLBACKS, "algorithms": ALGORITHMS}


def _class(section: str, name: str) -> type:
    table = SECTIONS[section]
    target = table.get(name, name if ":" in name else None)
    if target is None:
        raise ConfigError(
            f"{section}.{name} is not known; use one of {', '.join(table)} or an import "
            "path package.module:Class"
        )
    module, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{section}.{name}: cannot import {target} ({err})") from None
    if not inspect.isclass(cls):
        raise ConfigError(f"{section}.{name}: {target} is not a class")
    return cls


def build_parts(section: str, specs: dict[str, Any]) -> list:
    """The objects a yaml section names, in its order.

    Raises:
        ConfigError: an unknown name, arguments the class does not take, or a class that
            refuses them (a missing optional package included), naming the entry.
    """
    parts = []
    for name, kwargs in specs.items():
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(kwargs, dict):
            raise ConfigError(
                f"{section}.{name} must map to its keyword arguments ({{}} for none), "
                f"not {kwargs!r}"
            )
        cls = _class(section, name)
        try:
            inspect.signature(cls).bind(**kwargs)
        except TypeError as err:
            valid = [p for p in inspect.signature(cls).parameters if p not in ("args", "kwargs")]
            raise ConfigError(
                f"{section}.{name}: {err}; its arguments are {', '.join(valid) or 'none'}"
            ) from None
        try:
            parts.append(cls(**kwargs))
        except Exception as err:  # the class's own refusal, e.g. a missing optional package
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"{section}.{name}: {first}") from None
    return parts
