"""One-shot structured pruning to a pruning config's target shape, with no training.

    shearing oneshot --config yaml/prune_smollm2.yaml --method importance|random
        --out HF_DIR [--data MDS_DIR] [--calibration-rows N] [--seed S] [--force]
        [key=value ...]

The baselines that targeted pruning is measured against. From the config's source model
(`model.path`) and target (`model.l0_module.target_model`, `pruning_modules`), every gate
row keeps its top-scoring units, with the same grouped-query structure as an L0 run:

- `importance`: activation importance on the first `--calibration-rows` train rows of each
  domain of `--data` (default: the config's corpus, `data.path` or `data.remote`); see
  shearing.pruning.importance.
- `random`: uniformly random scores from `--seed`.

The output is a stock Hugging Face directory checked like `convert_to_hf.sh` output (the
sliced model equals the masked one; transformers reloads it strictly with equal logits),
with the masks and scores in `pruning_masks.json`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shearing.cli import Stages, run
from shearing.commands.convert import export
from shearing.config import KEYS as K
from shearing.config import ConfigError, TrainConfig, expand_path, load_config
from shearing.data.corpus import Corpus
from shearing.files import check_replaceable, check_separate
from shearing.models.hf_io import load_model
from shearing.pruning.importance import calibration_batches, importance_scores, random_scores
from shearing.run import build_l0, provenance, resolve, target_line

METHODS = ("importance", "random")


def oneshot(
    config: str | Path,
    method: str,
    out: str | Path,
    *,
    data: str | Path | None = None,
    calibration_rows: int = 16,
    seed: int = 0,
    overrides: list[str] | None = None,
    force: bool = False,
) -> Path:
    """Prune the config's source model to its target in one shot; see the module docstring.

    Raises:
        ConfigError: the config has no l0_module or an invalid target.
        ValueError: an unknown method or bad calibration data.
        OutputError: `out` is a file, overlaps an input, or is not empty without `force`.
    """
    if method not in METHODS:
        raise ValueError(f"--method {method!r} is not valid; use {', '.join(METHODS)}")
    if calibration_rows <= 0:
        raise ValueError(f"--calibration-rows {calibration_rows} must be positive")
    out = Path(out).expanduser()
    check_replaceable(out, force, "--out")
    run = resolve(load_config(config, overrides), with_data=False)
    if run.target is None:
        raise ConfigError(f"{config} has no {K.model.l0_module}, so no target shape to prune to")
    corpus = calibration_corpus(run.cfg, data) if method == "importance" else None
    local = corpus.cache or corpus.root if corpus is not None else None
    inputs = {"--config": config, K.model.path: run.model_path, "--data": local}
    check_separate(out, "--out", inputs)
    stage = Stages("oneshot")
    stage(target_line(run))
    l0 = build_l0(run, warmup_steps=0)
    stage(f"loading {run.model_path}")
    model = load_model(run.model_path, shape=run.source)
    if method == "importance":
        stage(f"scoring activation importance on {calibration_rows} rows per domain of {corpus}")
        scores = importance_scores(model, calibration_batches(corpus, calibration_rows))
    else:
        scores = random_scores(model, seed)
    l0.init_from_scores(scores)
    masks = l0.deterministic_masks()
    dtype = str(run.source_config.get("torch_dtype") or "float32")
    kept_scores = {m: scores[m].float() for m in l0.log_alpha}
    stage(f"slicing, writing and checking {out} against the masked model and transformers")
    out = export(
        model, masks, out, source=run.model_path, dtype=dtype, scores=kept_scores,
        provenance=provenance(run, oneshot=method),
    )  # fmt: skip
    stage("done")
    return out


def calibration_corpus(cfg: TrainConfig, data: str | Path | None) -> Corpus:
    """`--data` (a local corpus folder), else the config's corpus (`data.path`, or
    `data.remote` cached in `data.local`).

    Raises:
        ConfigError: neither names a corpus.
    """
    if data is not None:
        return Corpus(str(expand_path(str(data))))
    d = cfg.data
    if d.path is None and (d.remote is None or d.local is None):
        raise ConfigError(
            f"--method importance needs a calibration corpus: --data, or {K.data.path} (or "
            f"{K.data.remote} with {K.data.local}) in the config"
        )
    return Corpus.of(d)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shearing oneshot",
        description=__doc__.split("\n\n")[0],
        epilog="output: --out, a stock Hugging Face model of the config's target shape, as "
        "convert_to_hf.sh writes one (checked against the masked model before it is moved "
        "into place). Never written over without --force.",
    )
    parser.add_argument("--config", required=True, help="a pruning config (yaml/prune_*.yaml)")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--out", required=True, help="output Hugging Face directory")
    parser.add_argument(
        "--data", help=f"calibration corpus folder (default: the config's {K.data.path} or remote)"
    )
    parser.add_argument("--calibration-rows", type=int, default=16, help="train rows per domain")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random method")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_intermixed_args(argv)

    def body() -> None:
        out = oneshot(
            args.config,
            args.method,
            args.out,
            data=args.data,
            calibration_rows=args.calibration_rows,
            seed=args.seed,
            overrides=args.overrides,
            force=args.force,
        )
        print(out)

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
