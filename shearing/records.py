"""The names a run records under, for the code that writes them (the composer wing) and the
code that reads them (convert, plots, compare): its metrics log and the keys logged there."""

from __future__ import annotations

#: The run's metrics, one JSON object per logging step, in its save folder.
METRICS_FILE = "metrics.jsonl"
#: `eval/loss/<domain>`: held-out loss of each domain at an evaluation.
LOSS_PREFIX = "eval/loss/"
#: `eval/settle/<kind>` while pruning: the average held-out loss under the final binary
#: masks (`deterministic`, what conversion slices), under the gates' expected values
#: (`expected`), and their difference (`gap`).
SETTLE_PREFIX = "eval/settle/"
SETTLE_KINDS = ("deterministic", "expected", "gap")
