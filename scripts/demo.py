"""`make demo`: the whole pipeline on the embedded default, on a CPU.

fetch SmolLM2-135M (print its shape, size and a greedy continuation) and a small real
corpus -> tokenize -> evaluate the source (its
per-domain losses become the reference losses) -> prune with yaml/prune_smollm2.yaml ->
convert -> continue pretraining with yaml/continue_smollm2.yaml on equal, fixed domain
proportions -> convert -> evaluate pruned and continued models (held-out loss, and
downstream accuracy on the shipped lm-eval tasks) -> table and plots.
Both training stages recover with `OBJECTIVE` (docs/results.md: "Does it beat the alternatives?" has
the measurement behind the choice).

Every stage is the project's own command line; this script only chains them. Outputs go
to `$RUN` (default `runs/demo`); model, corpus and shards are cached under
`$SHEARING_CACHE` (default `~/.cache/shearing`) and reused by later runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from shearing.cli import CommandFailed, run
from shearing.commands.downstream import TASKS
from shearing.commands.eval import loss_table
from shearing.files import cache_dir

REPO = Path(__file__).resolve().parent.parent
#: Overrides of both training stages (the recovery objective). Cross-entropy: at the
#: demo's token budget, scripts/compare.py measured pure distillation from the source
#: within 0.02 nats of it (5.305 vs 5.326) at 1.55x the wall time, so at the demo's
#: 2-core time budget cross-entropy is the better use of it. Distillation instead:
#: ("distillation.alpha=1.0", "distillation.ce_weight=0.0").
OBJECTIVE: tuple[str, ...] = ()
#: Each stage's own overrides (docs/results.md, the demo, has the measurements).
#: Pruning: gates start at the importance mask with the pruned units' logits at -6 (open
#: in ~1% of sampled masks), and dynamic batch loading re-weights at every evaluation.
#: Continued pretraining: the rest of the demo's 20-minute budget on 2 cores (288 steps at
#: lr 1e-3), on equal proportions per domain, held fixed (`equal_proportions`, which
#: main() adds to these), because the held-out average weighs the domains
#: equally and, against the source's losses as references, the exponential update moved
#: 96% of the batches to wiki. From one pruned model, 256 steps: 4.806 fixed and equal,
#: 4.883 with eta 0.25, 4.986 with the paper's eta 1.
CONTINUE_STEPS = 288
PRUNE = ("data.update_interval=12", "model.l0_module.init_pruned_logit=-6")
CONTINUE = ("data.update_interval=32", f"max_duration={CONTINUE_STEPS}ba",
            f"save_interval={CONTINUE_STEPS}ba", "optimizer.lr=1.0e-3")  # fmt: skip
SEQ_LEN = 256
EVAL_ROWS = 16
#: Items per downstream task (of 400): about a minute per model on 2 cores.
LM_EVAL_ITEMS = 50
#: What a previous demo left in $RUN and a new one replaces (nothing else is touched).
ARTEFACTS = (
    "prune", "continue", "pruned_hf", "continued_hf", "eval.json", "eval_source.json",
    "eval_pruned.json", "eval_continued.json", "domain_history.jsonl",
    "sparsity.png", "lambdas.png", "proportions.png", "eval_loss.png",
)  # fmt: skip


def sh(*args: str | Path) -> str:
    """Run one stage's command line, streaming its output; return its stdout's last line."""
    cmd = [str(a) for a in args]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(proc.stdout)
    print(f"[{time.time() - start:.0f} s: {' '.join(cmd[1:3])}]", flush=True)
    if proc.returncode != 0:
        raise CommandFailed(f"stage failed (exit {proc.returncode}): {' '.join(cmd)}")
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def equal_proportions(domains: list[str]) -> tuple[str, ...]:
    """Overrides that train on equal proportions per domain, held fixed
    (`update_type=constant` still evaluates and logs every domain)."""
    equal = "[" + ",".join([str(1 / len(domains))] * len(domains)) + "]"
    return (f"data.proportions={equal}", "data.update_type=constant")


def tokenized(corpus: Path, model: Path, out: Path) -> Path:
    """Tokenize the corpus unless the cached shards were made from it with these settings."""
    manifest = out / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        if m.get("seq_len") == SEQ_LEN and m.get("source") == str(corpus):
            return out
    py = sys.executable
    sh(py, "data_prep/tokenize.py", "--input", corpus, "--output", out, "--tokenizer", model,
       "--seq-len", SEQ_LEN, "--eval-seqs", EVAL_ROWS, "--workers", 2, "--force")  # fmt: skip
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "source": str(corpus)}, indent=2, sort_keys=True))
    return out


def evaluate(model: Path, data: Path, out: Path) -> dict:
    """Held-out loss, and, with the lm-eval extra installed (`make demo` installs it), the
    shipped downstream tasks on `LM_EVAL_ITEMS` items each."""
    downstream = ()
    if importlib.util.find_spec("lm_eval") is not None:
        downstream = ("--lm-eval", ",".join(TASKS), "--lm-eval-limit", LM_EVAL_ITEMS)
    sh(sys.executable, "-m", "shearing.commands.eval", "--model", model, "--data", data,
       "--max-rows", EVAL_ROWS, *downstream, "--json", out)  # fmt: skip
    return json.loads(out.read_text())


def main() -> int:
    start = time.time()
    run = Path(os.environ.get("RUN", "runs/demo"))
    run.mkdir(parents=True, exist_ok=True)
    for name in ARTEFACTS:
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    py = sys.executable
    cache = cache_dir()

    model = Path(sh(py, "-m", "shearing.commands.assets", "smollm2"))
    sh(py, "-m", "shearing.commands.generate", "--model", model)
    corpus = Path(sh(py, "data_prep/fetch_demo_corpus.py", "--out", cache / "corpus" / "demo"))
    data = tokenized(corpus, model, cache / "data" / "demo-smollm2")
    domains = list(json.loads((data / "manifest.json").read_text())["domains"])

    source = evaluate(model, data, run / "eval_source.json")
    refs = "[" + ",".join(f"{source['domains'][d]['loss']:.4f}" for d in domains) + "]"
    dynamic = [f"data.path={data}", f"data.reference_losses={refs}"]

    sh(py, "train.py", "yaml/prune_smollm2.yaml", f"save_folder={run / 'prune'}", *dynamic,
       *PRUNE, *OBJECTIVE)  # fmt: skip
    sh("bash", "scripts/convert_to_hf.sh", run / "prune", run / "pruned_hf", "--force")
    sh(py, "train.py", "yaml/continue_smollm2.yaml", f"model.path={run / 'pruned_hf'}",
       f"save_folder={run / 'continue'}", f"data.rows_from={run / 'prune'}",
       *equal_proportions(domains), *dynamic, *CONTINUE, *OBJECTIVE)  # fmt: skip
    sh("bash", "scripts/convert_to_hf.sh", run / "continue", run / "continued_hf", "--force")
    sh(py, "-m", "shearing.commands.generate", "--model", run / "continued_hf")

    results = {
        "source": source,
        "pruned": evaluate(run / "pruned_hf", data, run / "eval_pruned.json"),
        "continued": evaluate(run / "continued_hf", data, run / "eval_continued.json"),
    }
    (run / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    with open(run / "domain_history.jsonl", "w") as f:
        for stage in ("prune", "continue"):
            for line in (run / stage / "domain_history.jsonl").read_text().splitlines():
                f.write(json.dumps({"stage": stage, **json.loads(line)}) + "\n")
    sh(py, "-m", "shearing.commands.plots", "--prune", run / "prune",
       "--continue", run / "continue", "--out", run)  # fmt: skip

    print(report(results, domains, run))
    print(f"\ndemo finished in {(time.time() - start) / 60:.1f} min; outputs in {run}/")
    return 0


def report(results: dict, domains: list[str], run: Path) -> str:
    """The demo's summary table: size and held-out loss per model, final proportions."""
    rows = {
        name: r
        | {
            "domains": {d: r["domains"][d]["loss"] for d in domains},
            "average": r["average"]["loss"],
        }
        for name, r in results.items()
    }
    sizes = (("params", "parameters", 12, ","), ("non-emb", "non_embedding_parameters", 12, ","))
    lines = ["", "held-out loss per domain (lower is better)"]
    lines.append(loss_table(rows, domains, "model", before=sizes))
    history = (run / "domain_history.jsonl").read_text().splitlines()
    final = json.loads(history[-1])["proportions"]
    lines.append("final domain proportions: " + ", ".join(f"{d} {final[d]:.3f}" for d in domains))
    accuracy = {n: r["lm_eval"] for n, r in results.items() if "lm_eval" in r}
    if accuracy:
        items = next(iter(accuracy.values()))["limit"]
        lines += ["", f"downstream accuracy, {items} items per task, 4 choices (chance 0.25)"]
        lines.append(f"{'model':<10} " + " ".join(f"{t:>22} {'(norm)':>7}" for t in TASKS))
        for name, acc in accuracy.items():
            cells = [f"{acc['results'][t]['acc']:>22.3f} {acc['results'][t]['acc_norm']:>7.3f}"
                     for t in TASKS]  # fmt: skip
            lines.append(f"{name:<10} " + " ".join(cells))
    else:
        lines.append("(downstream accuracy skipped: pip install 'shearing[lm-eval]')")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run(main))
