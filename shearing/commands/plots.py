"""Plots of a pruning (+ continued pretraining) run from its `metrics.jsonl` files.

    shearing plots --prune RUN/prune [--continue RUN/continue] --out RUN

Writes `sparsity.png` (expected vs target sparsity per module, and the expected parameter
count), `lambdas.png`, `proportions.png` (domain sampling proportions) and
`eval_loss.png` (held-out loss per domain against its reference loss). Steps of the
continued run are drawn after the pruning run's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from shearing.records import LOSS_PREFIX, METRICS_FILE  # noqa: E402


def read_metrics(run: str | Path) -> list[dict]:
    path = Path(run) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def series(records: list[dict], key: str, offset: int = 0) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric; the last value logged at a step wins."""
    points: dict[int, float] = {}
    for r in records:
        if key in r and r.get("step") is not None:
            points[r["step"] + offset] = r[key]
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def _keys(records: list[dict], prefix: str) -> list[str]:
    return sorted({k for r in records for k in r if k.startswith(prefix)})


def plot_run(prune: str | Path, out: str | Path, cont: str | Path | None = None) -> list[Path]:
    """Write the four plots into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = read_metrics(prune)
    c = read_metrics(cont) if cont else []
    offset = max((r["step"] for r in p if r.get("step") is not None), default=0)
    written = []

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in _keys(p, "l0/expected_sparsity/"):
        module = key.rsplit("/", 1)[1]
        line = ax.plot(*series(p, key), label=module)[0]
        ax.plot(*series(p, f"l0/target_sparsity/{module}"), "--", color=line.get_color())
    ax.set(title="expected (solid) and target (dashed) sparsity", xlabel="step", ylabel="sparsity")
    ax.legend(fontsize=8)
    ax2.plot(*series(p, "l0/expected_params"), label="expected")
    ax2.plot(*series(p, "l0/target_params"), "--", label="target")
    ax2.set(title="non-embedding parameters", xlabel="step")
    ax2.legend(fontsize=8)
    written.append(_save(fig, out / "sparsity.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in _keys(p, "l0/lambda"):
        ax.plot(*series(p, key), label=key.removeprefix("l0/"))
    ax.set(title="Lagrange multipliers", xlabel="step")
    ax.legend(fontsize=7, ncol=2)
    written.append(_save(fig, out / "lambdas.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in _keys(p + c, "proportion/"):
        steps, values = series(p, key)
        cs, cv = series(c, key, offset)
        ax.plot(steps + cs, values + cv, marker=".", label=key.removeprefix("proportion/"))
    if c:
        ax.axvline(offset, color="grey", lw=0.8, ls=":")
    ax.set(title="domain sampling proportions (pruning | continued)", xlabel="step")
    ax.legend(fontsize=8)
    written.append(_save(fig, out / "proportions.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    refs = _reference_losses(prune)
    for key in _keys(p + c, LOSS_PREFIX):
        domain = key.removeprefix(LOSS_PREFIX)
        steps, values = series(p, key)
        cs, cv = series(c, key, offset)
        line = ax.plot(steps + cs, values + cv, marker=".", label=domain)[0]
        if domain in refs:
            ax.axhline(refs[domain], color=line.get_color(), ls="--", lw=0.8)
    if c:
        ax.axvline(offset, color="grey", lw=0.8, ls=":")
    ax.set(title="held-out loss per domain (dashed: reference)", xlabel="step", ylabel="loss")
    ax.legend(fontsize=8)
    written.append(_save(fig, out / "eval_loss.png"))
    return written


def _reference_losses(run: str | Path) -> dict[str, float]:
    path = Path(run) / "domain_history.jsonl"
    if not path.is_file():
        return {}
    for line in path.read_text().splitlines():
        refs = json.loads(line).get("reference_losses")
        if refs:
            return refs
    return {}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shearing plots",
        description=__doc__.split("\n\n")[0],
        epilog="output: PNG files in --out (losses, domain proportions, sparsity and, while "
        "pruning, the settle gap), one per plot; their paths are printed.",
    )
    parser.add_argument("--prune", required=True, help="pruning run folder (save_folder)")
    parser.add_argument("--continue", dest="cont", help="continued-pretraining run folder")
    parser.add_argument("--out", required=True, help="where to write the PNG files")
    args = parser.parse_args(argv)
    for path in plot_run(args.prune, args.out, args.cont):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
