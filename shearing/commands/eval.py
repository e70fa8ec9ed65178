"""Held-out loss per domain of any LLaMA-architecture model, and downstream accuracy.

    shearing eval --model HF_DIR_OR_GGUF --data MDS_DIR [--split eval]
        [--max-rows N] [--batch-size B] [--sparse-ffn] [--json OUT]
    shearing eval --model HF_DIR --lm-eval TASKS [--lm-eval-limit N]
        [--lm-eval-fewshot K] [--json OUT]

Prints, per domain, the token-weighted next-token cross-entropy and perplexity on the rows
of `MDS_DIR/<split>/<domain>/` (a corpus written by data_prep/tokenize.py), then their
average over domains (each domain counts once, as in Sheared-LLaMA's reports) and the
token-weighted average. The source, pruned and continued models can be compared on the
same rows. `--lm-eval` runs lm-evaluation-harness tasks on the model
(`shearing.commands.downstream`: the optional extra, and the offline task set the project
ships); both can run at once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from shearing.cli import Stages, run
from shearing.commands import downstream
from shearing.commands.generate import stepwise_logits
from shearing.data.mixture import open_domain, read_manifest
from shearing.files import OutputError, check_separate, write_text_atomic
from shearing.models.decoder import MaskableDecoder
from shearing.models.hf_io import load_model
from shearing.objectives import next_token_loss


@torch.no_grad()
def evaluate(
    model: MaskableDecoder,
    data: str | Path,
    split: str = "eval",
    max_rows: int | None = None,
    batch_size: int = 4,
    domains: list[str] | None = None,
    sparse_ffn: bool = False,
) -> dict:
    """Per-domain and average loss of `model` on a tokenized corpus.

    With `sparse_ffn` the logits are computed as decoding computes them (one token per
    forward, key/value cache, only the active FFN units; see `MLP.set_sparse_decode`),
    which is slow but shows on real rows that sparse inference loses nothing.

    Returns:
        {"domains": {d: {"loss", "perplexity", "tokens", "rows"}}, "average": {...},
         "token_weighted": {...}}
    """
    if max_rows is not None and max_rows <= 0:
        raise ValueError(f"--max-rows {max_rows} must be positive (omit it for all rows)")
    if batch_size <= 0:
        raise ValueError(f"--batch-size {batch_size} must be positive")
    manifest = read_manifest(data)
    domains = domains or list(manifest["domains"])
    model.eval()
    stage = Stages("eval", off_terminal_only=True)
    model.set_sparse_decode(sparse_ffn)
    forward = stepwise_logits if sparse_ffn else lambda m, ids: m(ids)
    results = {}
    for domain in domains:
        rows = open_domain(data, split, domain)
        n = len(rows) if max_rows is None else min(len(rows), max_rows)
        stage(f"{domain}: {n} rows")
        loss_sum, tokens = 0.0, 0
        for start in tqdm(
            range(0, n, batch_size), desc=f"eval {domain}", unit="batch", disable=None
        ):
            ids = torch.from_numpy(
                np.stack(
                    [rows[i]["tokens"] for i in range(start, min(n, start + batch_size))]
                ).astype(np.int64)
            )
            logits = forward(model, ids)
            loss = next_token_loss(logits, ids, reduction="sum")
            loss_sum += float(loss)
            tokens += ids[:, 1:].numel()
        if tokens:
            results[domain] = _summary(loss_sum / tokens) | {"tokens": tokens, "rows": n}
    if not results:
        raise ValueError(f"--data {str(data)!r} has no {split} rows to evaluate on")
    losses = [r["loss"] for r in results.values()]
    total_tokens = sum(r["tokens"] for r in results.values())
    weighted = sum(r["loss"] * r["tokens"] for r in results.values()) / max(total_tokens, 1)
    return {
        "domains": results,
        "average": _summary(sum(losses) / len(losses)) if losses else {},
        "token_weighted": _summary(weighted) if total_tokens else {},
    }


def _summary(loss: float) -> dict:
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def format_table(result: dict) -> str:
    lines = [f"{'domain':<16} {'loss':>8} {'ppl':>10} {'tokens':>10}"]
    for domain, r in result["domains"].items():
        lines.append(f"{domain:<16} {r['loss']:>8.4f} {r['perplexity']:>10.2f} {r['tokens']:>10}")
    for name in ("average", "token_weighted"):
        if result[name]:
            r = result[name]
            lines.append(f"{name:<16} {r['loss']:>8.4f} {r['perplexity']:>10.2f}")
    return "\n".join(lines)


#: A column of `loss_table`: header, key in the row, width, format spec (e.g. ",", ".0f").
Column = tuple[str, str, int, str]


def loss_table(
    rows: dict[str, dict],
    domains: list[str],
    first: str = "model",
    before: tuple[Column, ...] = (),
    after: tuple[Column, ...] = (),
) -> str:
    """Models (or methods) as rows: name, `before` columns, loss per domain, average,
    `after` columns. Each row holds `domains` ({domain: loss}), `average` (a loss) and the
    keys its columns name; the demo and the comparison print their results with it."""
    width = max(len(first), *(len(n) for n in rows)) + 1
    head = [f"{first:<{width}}", *(f"{h:>{w}}" for h, _, w, _ in before)]
    head += [f"{d:>8}" for d in (*domains, "average")]
    head += [f"{h:>{w}}" for h, _, w, _ in after]
    lines = [" ".join(head)]
    for name, r in rows.items():
        cells = [f"{name:<{width}}", *(f"{r.get(k, 0):>{w}{f}}" for _, k, w, f in before)]
        cells += [f"{r['domains'][d]:>8.3f}" for d in domains] + [f"{r['average']:>8.3f}"]
        cells += [f"{r.get(k, 0):>{w}{f}}" for _, k, w, f in after]
        lines.append(" ".join(cells))
    return "\n".join(lines)


def model_data_parser(
    prog: str, doc: str, data_required: bool = True, epilog: str | None = None
) -> argparse.ArgumentParser:
    """Arguments shared by the commands that measure a model on a tokenized corpus."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0], epilog=epilog)
    parser.add_argument("--model", required=True, help="Hugging Face directory or .gguf file")
    parser.add_argument(
        "--data", required=data_required, help="corpus written by data_prep/tokenize.py"
    )
    parser.add_argument("--split", default="eval", choices=["eval", "train"])
    parser.add_argument("--max-rows", type=int, default=None, help="rows per domain (default all)")
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser


def check_json_output(args: argparse.Namespace) -> None:
    """`--json` must be writable as a file and apart from the model and the data; checked
    before the (long) evaluation, so its results are never lost to a bad path."""
    if not args.json:
        return
    path = Path(args.json).expanduser()
    if path.is_dir():
        raise OutputError(f"--json {args.json!r} is a directory; give a file name")
    check_separate(path, "--json", {"--model": args.model, "--data": args.data})
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise OutputError(f"--json {args.json!r}: {str(parent)!r} is a file, not a folder")


def main(argv: list[str] | None = None) -> int:
    parser = model_data_parser(
        "shearing eval",
        __doc__,
        data_required=False,
        epilog="output: a table of held-out cross-entropy and perplexity per domain, their "
        "average over domains and the token-weighted average, and with --lm-eval each task's "
        "acc / acc_norm; with --json the same as JSON.",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--lm-eval",
        metavar="TASKS",
        help="comma-separated lm-evaluation-harness tasks (the shipped offline ones: "
        f"{','.join(downstream.TASKS)}); needs pip install 'shearing[lm-eval]'",
    )
    parser.add_argument(
        "--lm-eval-limit", type=int, default=None, help="items per lm-eval task (default all)"
    )
    parser.add_argument(
        "--lm-eval-fewshot", type=int, default=None, help="shots (default: each task's own)"
    )
    parser.add_argument(
        "--sparse-ffn",
        action="store_true",
        help="decode token by token computing only active FFN units (ReLU-family models; slow)",
    )
    args = parser.parse_args(argv)

    def body() -> None:
        if not args.data and not args.lm_eval:
            raise ValueError(
                "give --data (held-out loss on a tokenized corpus), --lm-eval TASKS "
                "(downstream accuracy), or both"
            )
        if args.lm_eval and str(args.model).endswith(".gguf"):
            raise ValueError(
                f"--lm-eval needs a Hugging Face directory, not the GGUF file {args.model!r}"
            )
        if args.lm_eval_limit is not None and args.lm_eval_limit <= 0:
            raise ValueError(f"--lm-eval-limit {args.lm_eval_limit} must be positive")
        if args.lm_eval_fewshot is not None and args.lm_eval_fewshot < 0:
            raise ValueError(f"--lm-eval-fewshot {args.lm_eval_fewshot} must be 0 or more")
        check_json_output(args)
        result = {"model": str(args.model)}
        if args.data:
            model = load_model(args.model)
            result |= evaluate(
                model, args.data, args.split, args.max_rows, args.batch_size,
                sparse_ffn=args.sparse_ffn,
            )  # fmt: skip
            result |= {
                "data": str(args.data),
                "split": args.split,
                "parameters": model.num_params(),
                "non_embedding_parameters": model.num_params(include_embeddings=False),
            }
            print(format_table(result))
        if args.lm_eval:
            tasks = [t.strip() for t in args.lm_eval.split(",") if t.strip()]
            result["lm_eval"] = downstream.run_lm_eval(
                args.model, tasks, limit=args.lm_eval_limit, num_fewshot=args.lm_eval_fewshot
            )
            print(downstream.format_accuracy(result["lm_eval"]))
        if args.json:
            write_text_atomic(Path(args.json).expanduser(), json.dumps(result, indent=2) + "\n")

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
