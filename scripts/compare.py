"""Does targeted pruning beat the alternatives? A same-budget comparison.

    python scripts/compare.py [--quick] --out DIR [--methods a,b,...] [--objectives ce,kd]
        [--budgets 1,4] [--model HF_DIR] [--data MDS_DIR] [--prune-config YAML]
        [--continue-config YAML] [--prune-steps N] [--continue-steps N] [--eval-rows N]
        [--seeds 17,18,...] [--proportions dynamic|equal] [--schedule split|one] [--reread]
        [--prune-set KEY=VALUE ...] [--force]

For one source model and the target shape of a pruning config, every method gets the same
number of training tokens (the L0 run's pruning steps plus its continued-pretraining steps,
times the budget) and is evaluated on the same held-out rows:

| method                     | how the small model is made                                      |
|----------------------------|------------------------------------------------------------------|
| `shearing`                 | L0 pruning (prune config), convert, continued pretraining        |
| `shearing_importance_init` | the same with `model.l0_module.init=importance`                  |
| `importance`               | one-shot activation-importance pruning, continued pretraining    |
| `random`                   | one-shot random structured pruning, continued pretraining        |
| `scratch`                  | the target config randomly initialised, trained on all tokens    |

(By default `shearing_importance_init` and `importance`, the best L0 and the best one-shot
pipeline of earlier comparisons; the others run when named in `--methods`.)

Every method is trained with each recovery objective of `--objectives` (every training
stage, pruning included, uses it):

| objective | training loss                                                                     |
|-----------|-----------------------------------------------------------------------------------|
| `ce`      | next-token cross-entropy                                                           |
| `kd`      | pure logit distillation from the frozen source (forward KL, T = 1; Minitron's)     |
| `ce+kd`   | cross-entropy + distillation, equal weights (ReluLLaMA's)                          |

and at each budget of `--budgets` (multiples of the default steps of both stages). With
`--seeds` every cell runs once per seed (`seed=N` in every training stage: data order, gate
noise; the one-shot scores are the same), results are keyed `<method>/<objective>/<budget>x/
seedN`, and the summary gives each cell's mean and sample standard deviation over the seeds:
the run-to-run spread a difference between methods has to exceed.

Continued pretraining uses the continue config with dynamic batch loading against the
source model's per-domain losses for every method (`--proportions dynamic`; an L0 run
continues from the proportions its pruning ended with), or equal proportions per domain held
fixed (`--proportions equal`, as `make demo` continues). An L0 pipeline's two stages each
have their config's warmup and cosine (`--schedule split`, the default), or share one: the
pruning run is the first `prune steps` of a warmup-and-cosine over both stages and continued
pretraining picks it up where pruning stopped (`--schedule one`: `scheduler.t_max` and
`scheduler.t_start`), as the one-shot pipelines' single training stage has it. An L0
run's continue stage reads each domain's rows on from where its pruning run stopped
(`data.rows_from`), so the pipeline reads as many distinct rows as a one-shot pipeline's
single stage; `--reread` starts it at the first rows again, re-reading the pruning run's
rows first (how the comparisons before `data.rows_from` existed ran).
`--prune-set KEY=VALUE` (repeatable) adds a config override to every L0 pruning run (e.g.
`model.l0_module.init_pruned_logit=-6`).
Defaults: the embedded default (SmolLM2-135M, the demo corpus, yaml/prune_smollm2.yaml and
yaml/continue_smollm2.yaml).

Writes `DIR/compare.json` (per method, objective, budget and seed: per-domain and average
loss, training tokens, seconds per stage, the eval-loss-vs-tokens curve; and the summary over
seeds), `DIR/compare_loss.png` (held-out loss against training tokens: each run's curve, and
each method and objective's final losses across budgets joined, the seeds' mean), each final
model as a Hugging Face directory `DIR/<method>/<objective>/<budget>x/[seedN/]`, and the
runs' logs under `DIR/runs/` (composer checkpoints are deleted once converted). Each stage is
the project's own command (train.py, convert, `shearing oneshot`, `shearing eval`); this
script only chains and times them.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from demo import equal_proportions, sh, tokenized  # scripts/demo.py, beside this file

from shearing.cli import run
from shearing.commands.convert import convert
from shearing.commands.eval import evaluate, loss_table
from shearing.commands.oneshot import oneshot
from shearing.config import load_config
from shearing.models.decoder import MaskableDecoder
from shearing.models.hf_io import load_model, save_pretrained
from shearing.records import LOSS_PREFIX, METRICS_FILE
from shearing.run import resolve


@dataclass(frozen=True)
class Method:
    """How a method makes its small model before continued pretraining."""

    #: "l0": a pruning run with the prune config, then conversion; "oneshot": one-shot
    #: pruning of the source; "scratch": the target shape, randomly initialised.
    start: str
    #: l0: the gate init (`model.l0_module.init`); oneshot: the scoring (`--method`).
    scores: str | None = None
    #: Run by default (the others are opt-in: each adds about a quarter to the time).
    default: bool = False

    @property
    def calibrates(self) -> bool:
        """Importance scores are computed (their calibration rows count as tokens)."""
        return self.scores == "importance"


METHOD_TABLE = {
    "shearing": Method("l0", "default"),
    "shearing_importance_init": Method("l0", "importance", default=True),
    "importance": Method("oneshot", "importance", default=True),
    "random": Method("oneshot", "random"),
    "scratch": Method("scratch"),
}
METHODS = tuple(METHOD_TABLE)
DEFAULT_METHODS = tuple(name for name, m in METHOD_TABLE.items() if m.default)
#: Recovery objectives: the overrides every training stage of a method gets.
OBJECTIVES = {
    "ce": (),
    "kd": ("distillation.alpha=1.0", "distillation.ce_weight=0.0"),
    "ce+kd": ("distillation.alpha=1.0", "distillation.ce_weight=1.0"),
}
DEFAULT_OBJECTIVES = ("ce", "kd")
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
    #: "dynamic" (dynamic batch loading in every continue stage) or "equal" (fixed).
    proportions: str = "dynamic"
    #: Overrides of every L0 pruning run.
    prune_set: tuple[str, ...] = ()
    #: "split" (each L0 stage its own schedule) or "one" (one schedule across both).
    schedule: str = "split"
    #: An L0 continue stage starts at the first rows again instead of after the pruning's.
    reread: bool = False

    @property
    def calibration_tokens(self) -> int:
        """Tokens that importance scoring reads (CALIBRATION_ROWS train rows per domain)."""
        return CALIBRATION_ROWS * len(self.domains) * self.seq_len

    def continue_data(self, prune: Path | None) -> list[str]:
        """The continue stage's proportions: from the pruning run `prune` ended with (or the
        corpus' natural mix) re-weighted by dynamic batch loading, or equal and fixed."""
        if self.proportions == "equal":
            return list(equal_proportions(self.domains))
        return [f"data.proportions_from={prune}"] if prune is not None else []

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
        self.warmup = min(steps, round(run.steps.warmup * scale))
        every = max(1, steps // EVALS_PER_STAGE)
        self.batch = cfg.global_train_batch_size
        self.tokens = steps * self.batch * plan.seq_len
        self.overrides = [
            f"model.path={model}",
            *plan.overrides,
            f"max_duration={steps}ba",
            f"scheduler.t_warmup={self.warmup}ba",
            f"eval_interval={every}ba",
            f"data.update_interval={every}",
            f"save_interval={steps}ba",
            f"save_folder={folder}",
        ]
        if cfg.model.l0_module is not None:
            l0_warmup = min(steps, round(run.steps.lagrangian_warmup * scale))
            settle = min(steps - l0_warmup, round(run.steps.settle * scale))
            self.overrides += [
                f"model.l0_module.lagrangian_warmup_steps={l0_warmup}",
                f"model.l0_module.settle_steps={settle}",
            ]

    def shared_schedule(self, then: int) -> tuple[str, ...]:
        """Overrides that make this stage the first part of one schedule with a next stage of
        `then` steps, and the next stage's overrides that pick it up where this one stops."""
        length = self.steps + then
        self.overrides.append(f"scheduler.t_max={length}ba")
        return (f"scheduler.t_warmup={self.warmup}ba", f"scheduler.t_start={self.steps}ba",
                f"scheduler.t_max={length}ba")  # fmt: skip

    def run(self, *extra: str) -> None:
        sh(sys.executable, "train.py", self.config, *self.overrides, *extra)

    def curve(self, offset: int) -> list[list[float]]:
        """(tokens, average eval loss) at every evaluation of the run."""
        points = []
        for line in (self.folder / METRICS_FILE).read_text().splitlines():
            record = json.loads(line)
            losses = [v for k, v in record.items() if k.startswith(LOSS_PREFIX)]
            if losses:
                tokens = offset + record["step"] * self.batch * self.seq_len
                points.append([tokens, sum(losses) / len(losses)])
        return points

    def convert(self, out: Path) -> None:
        convert(self.folder, out, force=True)
        for checkpoint in self.folder.glob("*.pt"):  # the HF directory is the result
            checkpoint.unlink()


@dataclass(frozen=True)
class Cell:
    """One run of the comparison: a method, a recovery objective, a budget (and a seed)."""

    method: str
    objective: str
    budget: float
    #: `seed` of every training stage (None: each config's own).
    seed: int | None = None

    @property
    def group(self) -> str:
        """The cell without its seed: what the summary averages over seeds."""
        return f"{self.method}/{self.objective}/{self.budget:g}x"

    @property
    def key(self) -> str:
        return self.group if self.seed is None else f"{self.group}/seed{self.seed}"

    @property
    def seeded(self) -> list[str]:
        return [] if self.seed is None else [f"seed={self.seed}"]


def run_cell(cell: Cell, plan: Plan, out: Path) -> dict:
    """Make, train and evaluate one method's model; return its results."""
    work = out / "runs" / cell.key
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    final = out / cell.key
    objective = list(OBJECTIVES[cell.objective])
    prune_steps = max(1, round(plan.prune_steps * cell.budget))
    continue_steps = max(1, round(plan.continue_steps * cell.budget))
    # the method's own work (incl. in-training evals), not final evaluations
    clocks = {name: Clock() for name in ("prune", "convert", "continue")}
    curve: list[list[float]] = []
    tokens = 0
    how = METHOD_TABLE[cell.method]
    if how.calibrates:  # the rows importance is scored on count as training tokens
        tokens += plan.calibration_tokens
    if how.start == "l0":
        prune = Stage(plan.prune_config, plan.model, prune_steps, work / "prune", plan)
        extra = [f"model.l0_module.init={how.scores}", *objective]
        if how.calibrates:  # scored on the rows counted above
            extra.append(f"model.l0_module.calibration_rows={CALIBRATION_ROWS}")
        schedule = prune.shared_schedule(continue_steps) if plan.schedule == "one" else ()
        with clocks["prune"]:
            prune.run(*cell.seeded, *extra, *plan.prune_set)
        with clocks["convert"]:
            prune.convert(work / "pruned_hf")
        curve += prune.curve(tokens)
        tokens += prune.tokens
        cont = Stage(
            plan.continue_config, work / "pruned_hf", continue_steps, work / "continue", plan
        )
        rows = [f"data.rows_from={'null' if plan.reread else work / 'prune'}"]
        extra = [*plan.continue_data(work / "prune"), *rows, *schedule, *objective]
    else:
        init = work / "init_hf"
        with clocks["prune"]:
            if how.start == "scratch":
                scratch_model(plan, init, cell.seed)
            else:
                oneshot(plan.prune_config, how.scores, init, data=plan.data,
                        calibration_rows=CALIBRATION_ROWS, overrides=plan.paths())  # fmt: skip
        curve.append([tokens, evaluate_dir(init, plan)["average"]["loss"]])
        steps = budget_steps(plan, prune_steps, continue_steps)
        cont = Stage(plan.continue_config, init, steps, work / "continue", plan)
        extra = [*plan.continue_data(None), *objective]
    with clocks["continue"]:
        cont.run(*cell.seeded, *extra)
    with clocks["convert"]:
        cont.convert(final)
    curve += cont.curve(tokens)
    tokens += cont.tokens
    seconds = {name: round(c.seconds, 1) for name, c in clocks.items()}
    print(f"{cell.key}: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()), flush=True)
    result = evaluate_dir(final, plan)
    return {
        "method": cell.method,
        "objective": cell.objective,
        "budget": cell.budget,
        "seed": cell.seed,
        "group": cell.group,
        "domains": {d: r["loss"] for d, r in result["domains"].items()},
        "average": result["average"]["loss"],
        "tokens": tokens,
        "seconds": round(sum(seconds.values()), 1),
        "stage_seconds": seconds,
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


def budget_steps(plan: Plan, prune_steps: int, continue_steps: int) -> int:
    """Continue-config steps with the tokens of the L0 run's prune + continue stages."""
    batch = {
        c: load_config(c, plan.paths()).global_train_batch_size
        for c in (plan.prune_config, plan.continue_config)
    }
    prune_rows = prune_steps * batch[plan.prune_config]
    return continue_steps + math.ceil(prune_rows / batch[plan.continue_config])


def scratch_model(plan: Plan, out: Path, seed: int | None = None) -> None:
    """The target shape with transformers' initialisation (normal(0, initializer_range))."""
    run = resolve(load_config(plan.prune_config, plan.paths()), with_data=False)
    torch.manual_seed(run.cfg.seed if seed is None else seed)
    model = MaskableDecoder(run.target)
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
    return loss_table(results, domains, "method/objective/budget", before=size, after=budget)


def summary(results: dict) -> dict:
    """Per cell without its seed: the seeds' average losses, their mean and sample standard
    deviation (None for a single seed)."""
    groups: dict[str, list[float]] = {}
    for r in results.values():
        groups.setdefault(r["group"], []).append(r["average"])
    return {
        group: {"runs": len(losses), "average": losses, "mean": statistics.fmean(losses),
                "std": statistics.stdev(losses) if len(losses) > 1 else None}
        for group, losses in groups.items()
    }  # fmt: skip


def summary_table(groups: dict) -> str:
    width = max(len("method/objective/budget"), *(len(g) for g in groups)) + 1
    lines = [f"{'method/objective/budget':<{width}}  seeds     mean      std  averages"]
    for group, g in groups.items():
        std = "-" if g["std"] is None else f"{g['std']:.3f}"
        runs = ", ".join(f"{x:.3f}" for x in g["average"])
        lines.append(f"{group:<{width}} {g['runs']:>6} {g['mean']:>8.3f} {std:>8}  {runs}")
    return "\n".join(lines)


def plot(results: dict, source: float, path: Path) -> None:
    """Held-out loss against training tokens: each run's in-training curve (thin), and per
    method and objective its final losses across budgets (thick, joined), so a crossover
    between methods is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    lines: dict[tuple[str, str], list] = {}
    for r in results.values():
        lines.setdefault((r["method"], r["objective"]), []).append(r)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((method, objective), runs) in enumerate(sorted(lines.items())):
        color = colors[i % len(colors)]
        style = "-" if objective == "ce" else "--" if objective == "kd" else ":"
        for r in runs:
            if r.get("curve"):
                xs, ys = zip(*r["curve"], strict=True)
                ax.plot(xs, ys, color=color, linestyle=style, linewidth=0.8, alpha=0.5)
        by_tokens: dict[int, list[float]] = {}  # the seeds' mean at each budget
        for r in runs:
            by_tokens.setdefault(r["tokens"], []).append(r["average"])
        xs = sorted(by_tokens)
        ys = [statistics.fmean(by_tokens[x]) for x in xs]
        ax.plot(xs, ys, color=color, linestyle=style, linewidth=2, marker="o",
                label=f"{method} / {objective} ({ys[-1]:.2f})")  # fmt: skip
    ax.axhline(source, color="grey", linestyle=":", label=f"source ({source:.2f})")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("held-out loss, average over domains")
    ax.set_title("Equal token budgets: held-out loss vs training tokens")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def default_inputs() -> tuple[Path, Path]:
    """The embedded default: SmolLM2-135M and the demo corpus, tokenized (cached)."""
    from shearing.files import cache_dir

    model = Path(sh(sys.executable, "-m", "shearing.commands.assets", "smollm2"))
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
        help=f"comma-separated, from {', '.join(METHODS)} (default: {','.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--objectives",
        default=",".join(DEFAULT_OBJECTIVES),
        help=f"comma-separated, from {', '.join(OBJECTIVES)} (default: "
        f"{','.join(DEFAULT_OBJECTIVES)})",
    )
    parser.add_argument(
        "--budgets",
        default="1",
        help="comma-separated multiples of the default steps of both stages (default: 1)",
    )
    parser.add_argument(
        "--seeds",
        help="comma-separated seeds: every cell once per seed (default: each config's seed)",
    )
    parser.add_argument("--model", help="source Hugging Face directory (default: SmolLM2-135M)")
    parser.add_argument("--data", help="tokenized corpus (default: the demo corpus)")
    parser.add_argument("--prune-config", default=PRUNE_CONFIG)
    parser.add_argument("--continue-config", default=CONTINUE_CONFIG)
    parser.add_argument("--prune-steps", type=int, help="default: the prune config's")
    parser.add_argument("--continue-steps", type=int, help="default: the continue config's")
    parser.add_argument("--eval-rows", type=int, help=f"held-out rows per domain ({EVAL_ROWS})")
    parser.add_argument(
        "--proportions",
        choices=("dynamic", "equal"),
        default="dynamic",
        help="continue stages: dynamic batch loading (default) or equal fixed proportions",
    )
    parser.add_argument(
        "--schedule",
        choices=("split", "one"),
        default="split",
        help="L0 pipelines: a schedule per stage (default) or one across both stages",
    )
    parser.add_argument(
        "--reread",
        action="store_true",
        help="L0 continue stages start at the first rows again (re-reading the pruning rows)",
    )
    parser.add_argument(
        "--prune-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every L0 pruning run (repeatable)",
    )
    parser.add_argument("--force", action="store_true", help="replace a previous comparison")
    args = parser.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods entry {m!r} is unknown; valid: {', '.join(METHODS)}")
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    for o in objectives:
        if o not in OBJECTIVES:
            parser.error(f"--objectives entry {o!r} is unknown; valid: {', '.join(OBJECTIVES)}")
    budgets = []
    for b in args.budgets.split(","):
        try:
            budgets.append(float(b))
        except ValueError:
            budgets.append(-1.0)
        if not budgets[-1] > 0:
            parser.error(f"--budgets entry {b.strip()!r} is not a positive number")
    seeds: list[int | None] = [None]
    if args.seeds is not None:
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            parser.error(f"--seeds {args.seeds!r} is not a comma-separated list of integers")
        if not seeds or len(set(seeds)) != len(seeds):
            parser.error(f"--seeds {args.seeds!r} needs at least one seed, each once")
    if not (methods and objectives and budgets):
        parser.error("--methods, --objectives and --budgets each need at least one entry")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.force:
            parser.error(f"--out {str(out)!r} is not empty; pass --force to replace a comparison")
        for name in (*METHODS, "runs", "compare.json", "compare_loss.png"):  # only ours
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
        proportions=args.proportions,
        prune_set=tuple(args.prune_set),
        schedule=args.schedule,
        reread=args.reread,
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
            "objectives": {o: list(OBJECTIVES[o]) for o in objectives},
            "budgets": budgets,
            "seeds": seeds,
            "proportions": plan.proportions,
            "prune_set": list(plan.prune_set),
            "schedule": plan.schedule,
            "reread": plan.reread,
        },
        "source": {
            "domains": {d: src["domains"][d]["loss"] for d in domains},
            "average": src["average"]["loss"],
        },
        "methods": results,
    }
    cells = [
        Cell(m, o, b, seed)
        for b in sorted(budgets)
        for m in methods
        for o in objectives
        for seed in seeds
    ]
    for cell in cells:
        results[cell.key] = run_cell(cell, plan, out)
        (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, report["source"]["average"], out / "compare_loss.png")
    report["summary"] = summary(results)
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\nheld-out loss per domain; equal training tokens per budget (lower is better)")
    print(table(results, domains))
    if len(seeds) > 1:
        print("\naverage held-out loss over the seeds (sample standard deviation)")
        print(summary_table(report["summary"]))
    print(f"source model average loss: {report['source']['average']:.3f}")
    print(f"\ncomparison finished in {(time.time() - started) / 60:.1f} min; outputs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
