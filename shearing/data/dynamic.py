"""Dynamic batch loading (Sheared-LLaMA, arXiv 2310.06694, Algorithm 1).

Every `update_interval` steps, after evaluating per-domain loss l_i on held-out data:
    delta_i = max(l_i - l_ref_i, 0)              (clip=False: no clipping, as the original code)
    w_i    <- w_i * exp(eta * delta_i), normalised
    w      <- (1 - c) * w + c / k                (smoothing c, default 0)
A domain with no loss in an evaluation keeps delta = 0 (its weight only renormalises).

The update rule and the history reader; the composer callback that applies them after
each evaluation is `shearing.trainer.dynamic.DynamicLoadingCallback`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from shearing.config import KEYS as K

log = logging.getLogger(__name__)

UPDATE_TYPES = ("exponential", "constant")
HISTORY_FILE = "domain_history.jsonl"


def update_proportions(
    proportions: Sequence[float],
    losses: Mapping[int, float],
    reference_losses: Sequence[float],
    eta: float = 1.0,
    smoothing: float = 0.0,
    clip: bool = True,
) -> list[float]:
    """One dynamic-batch-loading step.

    Args:
        proportions: current sampling proportions w.
        losses: held-out loss per domain index; absent domains are not moved.
        reference_losses: l_ref per domain.
        eta: step size of the exponential update.
        smoothing: mix c of the uniform distribution into the result.
        clip: clip the excess loss at 0 (the paper) or not (the original code).
    """
    k = len(proportions)
    weights = []
    for i, w in enumerate(proportions):
        delta = losses[i] - reference_losses[i] if i in losses else 0.0
        if clip:
            delta = max(delta, 0.0)
        weights.append(w * math.exp(eta * delta))
    total = sum(weights)
    return [(1 - smoothing) * w / total + smoothing / k for w in weights]


def last_proportions(history: str | Path, domains: Sequence[str]) -> list[float]:
    """The proportions a previous run ended with, read from its `domain_history.jsonl`.

    With the same domains the written values are returned unchanged; for a subset they are
    renormalised over it.

    Raises:
        ValueError: no history, or it lacks one of `domains`.
    """
    path = Path(history).expanduser()
    if path.is_dir():
        path = path / HISTORY_FILE
    lines = path.read_text().splitlines() if path.is_file() else []
    if not lines:
        raise ValueError(f"{K.data.proportions_from} {str(history)!r} has no domain history")
    last = json.loads(lines[-1])["proportions"]
    missing = [d for d in domains if d not in last]
    if missing:
        raise ValueError(
            f"{K.data.proportions_from} {str(history)!r} has no proportion for domain "
            f"{missing[0]!r}"
        )
    if set(domains) == set(last):
        # The same domains: the proportions exactly as written (JSON round-trips floats
        # bit for bit), so a continued run starts where the previous one ended.
        return [float(last[d]) for d in domains]
    # A subset of the domains: renormalise over the ones kept.
    total = sum(last[d] for d in domains)
    if not total > 0:
        raise ValueError(
            f"{K.data.proportions_from} {str(history)!r} gives the domains "
            f"{', '.join(domains)} a total proportion of {total}; nothing to sample"
        )
    return [last[d] / total for d in domains]
