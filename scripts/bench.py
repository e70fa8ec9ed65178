"""Speed and memory goals of shearing, measured side by side in one process.

Each row compares two things on the same input in the same run, alternating them over
several repetitions and taking the median, and reports the ratio against its goal.

    python scripts/bench.py [--reps 5] [--only forward] [--json bench.json]

Rows:
    forward  Forward tokens/s of shearing's MaskableLlama vs transformers'
             LlamaForCausalLM on SmolLM2-135M (fp32, same batch). Goal: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shearing.assets import smollm2  # noqa: E402
from shearing.models.hf_io import load_model  # noqa: E402


def alternate(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each function, run in alternation after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_forward(reps: int, batch: int = 4, seq: int = 256) -> dict:
    from transformers import AutoModelForCausalLM

    path = smollm2()
    ours = load_model(path).eval()
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.randint(
        0, ours.shape.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0)
    )

    def run_ours():
        with torch.inference_mode():
            ours(ids)

    def run_ref():
        with torch.inference_mode():
            ref(ids, use_cache=False)

    t = alternate({"shearing": run_ours, "transformers": run_ref}, reps)
    tokens = batch * seq
    ratio = t["transformers"] / t["shearing"]
    return {
        "row": "forward",
        "what": f"forward tokens/s, SmolLM2-135M fp32, batch {batch} x {seq}",
        "shearing": tokens / t["shearing"],
        "baseline": tokens / t["transformers"],
        "baseline_name": "transformers LlamaForCausalLM",
        "ratio": ratio,
        "goal": ">= 0.95",
        "met": ratio >= 0.95,
    }


ROWS = {"forward": bench_forward}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5, help="repetitions per side (median)")
    parser.add_argument("--only", choices=sorted(ROWS), action="append", help="run only these rows")
    parser.add_argument("--json", default="bench.json", help="where to write the results")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    results = [ROWS[name](args.reps) for name in (args.only or ROWS)]
    print(f"{'row':<10} {'shearing':>12} {'baseline':>12} {'ratio':>7}  goal      met  what")
    for r in results:
        print(
            f"{r['row']:<10} {r['shearing']:>12.1f} {r['baseline']:>12.1f} {r['ratio']:>7.3f}  "
            f"{r['goal']:<9} {'yes' if r['met'] else 'NO':<4} {r['what']} (vs {r['baseline_name']})"
        )
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "reps": args.reps,
    }
    Path(args.json).write_text(json.dumps({"meta": meta, "rows": results}, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
