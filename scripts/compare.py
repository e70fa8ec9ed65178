"""Does targeted pruning beat the alternatives? A same-budget comparison.

    python scripts/compare.py [--quick] --out DIR [--methods a,b,...] [--model HF_DIR]
        [--data MDS_DIR] [--prune-config YAML] [--continue-config YAML]
        [--prune-steps N] [--continue-steps N] [--eval-rows N] [--force]

For one source model and the target shape of a pruning config, every method gets the same
number of training tokens (the L0 run's pruning steps plus its continued-pretraining steps)
and is evaluated on the same held-out rows:

| method                     | how the small model is made                                      |
|----------------------------|------------------------------------------------------------------|
| `shearing`                 | L0 pruning (prune config), convert, continued pretraining        |
| `shearing_importance_init` | the same with `model.l0_module.init=importance`                  |
| `importance`               | one-shot activation-importance pruning, continued pretraining    |
| `random`                   | one-shot random structured pruning, continued pretraining        |
| `scratch`                  | the target config randomly initialised, trained on all tokens    |

(`scratch` runs only when named in `--methods`.)

Continued pretraining uses the continue config with dynamic batch loading against the
source model's per-domain losses for every method. Defaults: the embedded default
(SmolLM2-135M, the demo corpus, yaml/prune_smollm2.yaml and yaml/continue_smollm2.yaml).

Writes `DIR/compare.json` (per method: per-domain and average loss, training tokens,
seconds, the eval-loss-vs-tokens curve), `DIR/compare_loss.png`, each method's final model
as a Hugging Face directory `DIR/<method>/`, and the runs' logs under `DIR/runs/<method>/`
(composer checkpoints are deleted once converted). Each stage is the project's own command
(train.py, convert, shearing.oneshot, shearing.eval); this script only chains and times them.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from demo import sh, tokenized  # scripts/demo.py, beside this file

from shearing.cli import run
from shearing.config import load_config
from shearing.convert import convert
from shearing.eval import evaluate, loss_table
from shearing.models.hf_io import load_model, save_pretrained
from shearing.models.llama import MaskableLlama
from shearing.oneshot import oneshot
from shearing.run import resolve


@dataclass(frozen=True)
class Method:
    """How a method makes its small model before continued pretraining."""

    #: "l0": a pruning run with the prune config, then conversion; "oneshot": one-shot
    #: pruning of the source; "scratch": the target shape, randomly initialised.
    start: str
    #: l0: the gate init (`model.l0_module.init`); oneshot: the scoring (`--method`).
    scores: str | None = None
    #: Run by default (scratch is opt-in: it adds a quarter to the time).
    default: bool = True

    @property
    def calibrates(self) -> bool:
        """Importance scores are computed (their calibration rows count as tokens)."""
        return self.scores == "importance"


METHOD_TABLE = {
    "shearing": Method("l0", "default"),
    "shearing_importance_init": Method("l0", "importance"),
    "importance": Method("oneshot", "importance"),
    "random": Method("oneshot", "random"),
    "scratch": Method("scratch", default=False),
}
METHODS = tuple(METHOD_TABLE)
DEFAULT_METHODS = tuple(name for name, m in METHOD_TABLE.items() if m.default)
PRUNE_CONFIG = "yaml/prune_smollm2.yaml"
CONTINUE_CONFIG = "yaml/continue_smollm2.yaml"
#: --quick: a few steps of each stage, for checking that everything runs.
QUICK = {"prune_steps": 8, "continue_steps": 8, "eval_rows": 4}
EVAL_ROWS = 16
CALIBRATION_ROWS = 16
#: Evaluations (and dynamic-loading updates) per training stage.
EVALS_PER_STAGE = 4


@dataclass
class Plan:
    model: Path
    data: Path
    prune_config: str
    continue_config: str
    prune_steps: int
    continue_steps: int
    eval_rows: int
    seq_len: int
    references: list[float]
    domains: list[str]

    @property
    def calibration_tokens(self) -> int:
        """Tokens that importance scoring reads (CALIBRATION_ROWS train rows per domain)."""
        return CALIBRATION_ROWS * len(self.domains) * self.seq_len

    def paths(self) -> list[str]:
        """Overrides that point a config at this comparison's model and data."""
        return [f"model.path={self.model}", f"data.path={self.data}"]

    @property
    def overrides(self) -> list[str]:
        refs = "[" + ",".join(f"{r:.6f}" for r in self.references) + "]"
        return [
            f"data.path={self.data}",
            f"data.reference_losses={refs}",
            f"data.eval_max_rows={self.eval_rows}",
        ]


class Stage:
    """One training run: its config scaled to `steps`, its folder, its tokens."""

    def __init__(self, config: str, model: Path, steps: int, folder: Path, plan: Plan) -> None:
        self.config, self.folder, self.steps, self.seq_len = config, folder, steps, plan.seq_len
        run = resolve(load_config(config, [f"model.path={model}", *plan.overrides]))
        cfg = run.cfg
        scale = steps / run.steps.total
        warmup = run.steps.warmup
        every = max(1, steps // EVALS_PER_STAGE)
        self.batch = cfg.global_train_batch_size
        self.tokens = steps * self.batch * plan.seq_len
        self.overrides = [
            f"model.path={model}",
            *plan.overrides,
            f"max_duration={steps}ba",
            f"scheduler.t_warmup={min(steps, round(warmup * scale))}ba",
            f"eval_interval={every}ba",
            f"data.update_interval={every}",
            f"save_interval={steps}ba",
            f"save_folder={folder}",
        ]
        if cfg.model.l0_module is not None:
            l0_warmup = round(cfg.model.l0_module.lagrangian_warmup_steps * scale)
            self.overrides.append(
                f"model.l0_module.lagrangian_warmup_steps={min(steps, l0_warmup)}"
            )

    def run(self, *extra: str) -> None:
        sh(sys.executable, "train.py", self.config, *self.overrides, *extra)

    def curve(self, offset: int) -> list[list[float]]:
        """(tokens, average eval loss) at every evaluation of the run."""
        points = []
        for line in (self.folder / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            losses = [v for k, v in record.items() if k.startswith("eval/loss/")]
            if losses:
                tokens = offset + record["step"] * self.batch * self.seq_len
                points.append([tokens, sum(losses) / len(losses)])
        return points

    def convert(self, out: Path) -> None:
        convert(self.folder, out, force=True)
        for checkpoint in self.folder.glob("*.pt"):  # the HF directory is the result
            checkpoint.unlink()


def run_method(method: str, plan: Plan, out: Path) -> dict:
    """Make, train and evaluate one method's model; return its results."""
    work = out / "runs" / method
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    final = out / method
    clock = Clock()  # the method's own work (incl. in-training evals), not final evaluations
    curve: list[list[float]] = []
    tokens = 0
    how = METHOD_TABLE[method]
    if how.calibrates:  # the rows importance is scored on count as training tokens
        tokens += plan.calibration_tokens
    if how.start == "l0":
        prune = Stage(plan.prune_config, plan.model, plan.prune_steps, work / "prune", plan)
        extra = [f"model.l0_module.init={how.scores}"]
        if how.calibrates:  # scored on the rows counted above
            extra.append(f"model.l0_module.calibration_rows={CALIBRATION_ROWS}")
        with clock:
            prune.run(*extra)
            prune.convert(work / "pruned_hf")
        curve += prune.curve(tokens)
        tokens += prune.tokens
        cont = Stage(
            plan.continue_config, work / "pruned_hf", plan.continue_steps, work / "continue", plan
        )
        extra = [f"data.proportions_from={work / 'prune'}"]
    else:
        init = work / "init_hf"
        with clock:
            if how.start == "scratch":
                scratch_model(plan, init)
            else:
                oneshot(plan.prune_config, how.scores, init, data=plan.data,
                        calibration_rows=CALIBRATION_ROWS, overrides=plan.paths())  # fmt: skip
        curve.append([tokens, evaluate_dir(init, plan)["average"]["loss"]])
        cont = Stage(plan.continue_config, init, budget_steps(plan), work / "continue", plan)
        extra = []
    with clock:
        cont.run(*extra)
        cont.convert(final)
    curve += cont.curve(tokens)
    tokens += cont.tokens
    seconds = clock.seconds
    result = evaluate_dir(final, plan)
    return {
        "domains": {d: r["loss"] for d, r in result["domains"].items()},
        "average": result["average"]["loss"],
        "tokens": tokens,
        "seconds": round(seconds, 1),
        "parameters": result["parameters"],
        "non_embedding_parameters": result["non_embedding_parameters"],
        "curve": curve,
        "model": str(final),
    }


class Clock:
    """Wall seconds spent inside `with clock:` blocks."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> Clock:
        self._start = time.time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.time() - self._start


def budget_steps(plan: Plan) -> int:
    """Continue-config steps with the tokens of the L0 run's prune + continue stages."""
    batch = {
        c: load_config(c, plan.paths()).global_train_batch_size
        for c in (plan.prune_config, plan.continue_config)
    }
    prune_rows = plan.prune_steps * batch[plan.prune_config]
    return plan.continue_steps + math.ceil(prune_rows / batch[plan.continue_config])


def scratch_model(plan: Plan, out: Path) -> None:
    """The target shape with transformers' initialisation (normal(0, initializer_range))."""
    run = resolve(load_config(plan.prune_config, plan.paths()), with_data=False)
    torch.manual_seed(run.cfg.seed)
    model = MaskableLlama(run.target)
    save_pretrained(model, out, source=plan.model, force=True)


def evaluate_dir(model_dir: Path, plan: Plan) -> dict:
    model = load_model(model_dir)
    result = evaluate(model, plan.data, max_rows=plan.eval_rows, domains=plan.domains)
    result["parameters"] = model.num_params()
    result["non_embedding_parameters"] = model.num_params(include_embeddings=False)
    return result


def table(results: dict, domains: list[str]) -> str:
    size = (("non-emb", "non_embedding_parameters", 11, ","),)
    budget = (("tokens", "tokens", 10, ","), ("seconds", "seconds", 8, ".0f"))
    return loss_table(results, domains, "method", before=size, after=budget)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        if r.get("curve"):
            xs, ys = zip(*r["curve"], strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, label=f"{name} ({r['average']:.2f})")
    if "source" in results:
        ax.axhline(results["source"]["average"], color="grey", linestyle=":", label="source")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("held-out loss, average over domains")
    ax.set_title("Same token budget: eval loss vs tokens")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def default_inputs() -> tuple[Path, Path]:
    """The embedded default: SmolLM2-135M and the demo corpus, tokenized (cached)."""
    from shearing.assets import cache_dir

    model = Path(sh(sys.executable, "-m", "shearing.assets", "smollm2"))
    corpus = Path(sh(sys.executable, "data_prep/fetch_demo_corpus.py", "--out",
                     cache_dir() / "corpus" / "demo"))  # fmt: skip
    return model, tokenized(corpus, model, cache_dir() / "data" / "demo-smollm2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/compare.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--quick", action="store_true", help="a few steps per stage")
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, from {', '.join(METHODS)} (default: all but scratch)",
    )
    parser.add_argument("--model", help="source Hugging Face directory (default: SmolLM2-135M)")
    parser.add_argument("--data", help="tokenized corpus (default: the demo corpus)")
    parser.add_argument("--prune-config", default=PRUNE_CONFIG)
    parser.add_argument("--continue-config", default=CONTINUE_CONFIG)
    parser.add_argument("--prune-steps", type=int, help="default: the prune config's")
    parser.add_argument("--continue-steps", type=int, help="default: the continue config's")
    parser.add_argument("--eval-rows", type=int, help=f"held-out rows per domain ({EVAL_ROWS})")
    parser.add_argument("--force", action="store_true", help="replace a previous comparison")
    args = parser.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods entry {m!r} is unknown; valid: {', '.join(METHODS)}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.force:
            parser.error(f"--out {str(out)!r} is not empty; pass --force to replace a comparison")
        for name in (*METHODS, "runs", "compare.json", "compare_loss.png"):
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    quick = QUICK if args.quick else {}
    if args.model and args.data:
        model, data = Path(args.model), Path(args.data)
    elif args.model or args.data:
        parser.error("--model and --data go together (or neither, for the embedded default)")
    else:
        model, data = default_inputs()

    def steps(config: str, given: int | None, key: str) -> int:
        if given:
            return given
        if key in quick:
            return quick[key]
        cfg = load_config(config, [f"model.path={model}", f"data.path={data}"])
        return resolve(cfg).steps.total

    manifest = json.loads((data / "manifest.json").read_text())
    domains = list(manifest["domains"])
    eval_rows = args.eval_rows or quick.get("eval_rows", EVAL_ROWS)
    started = time.time()
    source = load_model(model)
    src = evaluate(source, data, max_rows=eval_rows, domains=domains)
    del source
    plan = Plan(
        model=model,
        data=data,
        prune_config=args.prune_config,
        continue_config=args.continue_config,
        prune_steps=steps(args.prune_config, args.prune_steps, "prune_steps"),
        continue_steps=steps(args.continue_config, args.continue_steps, "continue_steps"),
        eval_rows=eval_rows,
        seq_len=manifest["seq_len"],
        references=[src["domains"][d]["loss"] for d in domains],
        domains=domains,
    )
    results: dict = {}
    report = {
        "settings": {
            "model": str(model),
            "data": str(data),
            "prune_config": plan.prune_config,
            "continue_config": plan.continue_config,
            "prune_steps": plan.prune_steps,
            "continue_steps": plan.continue_steps,
            "eval_rows_per_domain": eval_rows,
            "seq_len": plan.seq_len,
        },
        "source": {
            "domains": {d: src["domains"][d]["loss"] for d in domains},
            "average": src["average"]["loss"],
        },
        "methods": results,
    }
    for method in methods:
        results[method] = run_method(method, plan, out)
        (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    plot({**results, "source": report["source"]}, out / "compare_loss.png")
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\nheld-out loss per domain at equal training tokens (lower is better)")
    print(table(results, domains))
    print(f"source model average loss: {report['source']['average']:.3f}")
    print(f"\ncomparison finished in {(time.time() - started) / 60:.1f} min; outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
