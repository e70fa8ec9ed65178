"""The composer callback of dynamic batch loading: after each evaluation, re-weight the
training domains by `shearing.data.dynamic.update_proportions`, log the proportions and
append them to `domain_history.jsonl`; at the end, record the rows read
(`data_position.json`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from shearing.data.dynamic import HISTORY_FILE, update_proportions
from shearing.data.metrics import DOMAIN_METRIC
from shearing.data.mixture import DomainMixture, position_record
from shearing.trainer.folder import append_record, write_position


def _check_ranks_agree(schedule: list) -> None:
    """Every rank must hold the same proportion schedule, or their domain draws diverge."""
    if dist.get_world_size() == 1:
        return
    schedules = dist.all_gather_object(schedule)
    if any(s != schedules[0] for s in schedules):
        raise RuntimeError("domain proportions differ across ranks; the domain draws would diverge")


def domain_losses(state: State, metric_name: str = DOMAIN_METRIC) -> dict[str, float]:
    """Per-domain losses of the evaluation that just ended (composer's copy of the metric;
    {} when the model has no such metric)."""
    for metrics in state.eval_metrics.values():
        metric = metrics.get(metric_name)
        if metric is not None:
            return metric.per_domain()
    return {}


class DynamicLoadingCallback(Callback):
    """Re-weights the training domains after evaluations, logs and records the history.

    Args:
        dataset: the training `DomainMixture` (its proportions reach dataloader workers).
        reference_losses: l_ref per domain, in the dataset's domain order.
        update_interval: steps between updates (evaluation must run at these steps).
        eta, smoothing, clip: see `update_proportions`.
        update_type: `exponential` (the paper) or `constant` (log losses, never re-weight).
        history_dir: where `domain_history.jsonl` is appended, and where a finished run
            writes `data_position.json` (the rows it read, for `data.rows_from`), or None
            (both written by `shearing.trainer.folder`, on the one rank that writes).
    """

    def __init__(
        self,
        dataset: DomainMixture,
        reference_losses: Sequence[float] | None,
        update_interval: int | None,
        eta: float = 1.0,
        smoothing: float = 0.0,
        clip: bool = True,
        update_type: str = "exponential",
        history_dir: str | Path | None = None,
    ) -> None:
        self.dataset = dataset
        self.reference_losses = None if reference_losses is None else list(reference_losses)
        self.update_interval = update_interval
        self.eta, self.smoothing, self.clip, self.update_type = eta, smoothing, clip, update_type
        self.folder = None if history_dir is None else Path(history_dir)

    def fit_start(self, state: State, logger: Logger) -> None:
        step = int(state.timestamp.batch.value)
        if step == 0:
            self._record(step, 0, {}, logger)

    def fit_end(self, state: State, logger: Logger) -> None:
        if self.folder is not None:
            samples = int(state.timestamp.sample.value)
            write_position(self.folder, position_record(self.dataset, samples))

    def eval_end(self, state: State, logger: Logger) -> None:
        step = int(state.timestamp.batch.value)
        by_name = domain_losses(state)
        domains = self.dataset.domains
        losses = {domains.index(d): v for d, v in by_name.items() if d in domains}
        due = self.update_interval and step > 0 and step % self.update_interval == 0
        first = None
        if due and self.update_type == "exponential" and self.reference_losses is not None:
            new = update_proportions(
                self.dataset.proportions,
                losses,
                self.reference_losses,
                self.eta,
                self.smoothing,
                self.clip,
            )
            first = self.dataset.set_proportions(new, completed_steps=step)
        _check_ranks_agree(self.dataset.schedule())
        self._record(step, first, by_name, logger)

    def _record(self, step: int, first: int | None, losses: dict, logger: Logger) -> None:
        props = dict(zip(self.dataset.domains, self.dataset.proportions, strict=True))
        metrics = {f"proportion/{d}": w for d, w in props.items()}
        logger.log_metrics(metrics)
        if self.folder is not None:
            entry = {"step": step, "first_sample": first, "proportions": props, "losses": losses}
            if self.reference_losses is not None:
                entry["reference_losses"] = dict(
                    zip(self.dataset.domains, self.reference_losses, strict=True)
                )
            append_record(self.folder / HISTORY_FILE, entry)
