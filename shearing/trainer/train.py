"""Pruning, continued pretraining and sparsification with composer.

    composer train.py yaml/prune_smollm2.yaml [key=value ...]   # all local GPUs / processes
    python train.py yaml/prune_smollm2.yaml [key=value ...]     # one process
    shearing train yaml/prune_smollm2.yaml [key=value ...]      # the same, installed command

Overrides use OmegaConf dot-list syntax (`max_duration=12ba save_folder=/tmp/run`).
This file only wires: config -> resolved run (shearing.run) -> model, data, optimizer,
schedule, callbacks and composer's Trainer (shearing.trainer.build) -> Trainer.fit.
"""

from __future__ import annotations

import logging
import sys

from composer.utils import dist, reproducibility

from shearing import cli
from shearing.checkpoints import install_composer_validation
from shearing.config import load_config
from shearing.data.corpus import ShardUnavailable
from shearing.run import Run, resolve, target_line
from shearing.trainer.build import build_dataloaders, build_model, build_trainer
from shearing.trainer.folder import (
    SaveFolder,
    discard_overwritten,
    prepare_save_folder,
    record_config,
    writes,
)
from shearing.trainer.model import ShearingLM
from shearing.trainer.nodes import start_process_group
from shearing.trainer.parts import SECTIONS, build_parts


def prepare(argv: list[str]) -> tuple[Run, SaveFolder | None, ShearingLM, dict, tuple]:
    """Config -> resolved run -> save folder -> model -> data: every refusal here is one
    line, before training starts (a remote corpus's cache is checked as its datasets are
    built)."""
    cfg = load_config(argv[0], argv[1:])
    run = resolve(cfg, world_size=dist.get_world_size())
    level = cfg.python_log_level.upper()
    # force: a second run in one process (a notebook, a test) sets its own level too
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", force=True)
    logging.getLogger("shearing").setLevel(level)
    parts = {k: build_parts(k, getattr(cfg, k)) for k in SECTIONS}
    saved = prepare_save_folder(run)
    start_process_group(run)  # a remote corpus's datasets meet in it; its cache is checked
    install_composer_validation()  # composer's autoresume load checks files first
    reproducibility.seed_all(cfg.seed)
    return run, saved, build_model(run), parts, build_dataloaders(run)


USAGE = """usage: composer train.py RECIPE.yaml [key=value ...]
       (python train.py, or shearing train, for one process)

Pruning, continued pretraining and sparsification with composer.

input:  RECIPE.yaml (yaml/*.yaml) with key=value overrides (OmegaConf dot-list), e.g.
        model.path=DIR (a Hugging Face directory or .gguf file) and data.path=DIR (a
        corpus from data_prep/tokenize.py) or data.remote=URL data.local=DIR. Every key:
        docs/configuration.md, or `shearing keys`.
output: save_folder (a folder, or an object-store URI): composer checkpoints
        ep*-ba*-rank0.pt, config.yaml (the resolved run), metrics.jsonl,
        domain_history.jsonl (proportions), data_position.json (rows read). Progress on
        stderr. scripts/convert_to_hf.sh makes a model of a checkpoint.
exit:   0 done; 2 refused input (one `error:` line, before any weights load); 1 failed
        while training (one `error:` line, e.g. a shard that cannot be fetched)."""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0].startswith("-"):
        print(f"error: unknown option {argv[0]!r}; the first argument is a recipe (--help)",
              file=sys.stderr)  # fmt: skip
        return 2
    prepared: list = []
    code = cli.run(lambda: prepared.extend(prepare(argv)))
    if code:
        return code
    run, saved, model, parts, loaders = prepared
    if target_line(run) and writes():
        print(target_line(run), flush=True)
    trainer = build_trainer(run, model, saved, parts, loaders)
    steps = run.steps
    done = int(trainer.state.timestamp.batch.value)
    if done >= steps.total:  # autoresume of a finished run: nothing to train or write
        print(f"{saved.composer} already holds the finished run ({done} of {steps.total} steps)")
        trainer.close()
        saved.close()
        return 0
    # Records only once composer has accepted the folder (and resumed, if it does).
    if saved is not None:
        record_config(saved.records, run)
        saved.upload()

    def train() -> None:
        if run.cfg.eval_first and done == 0:
            trainer.eval()
        trainer.fit()

    # a remote corpus's shard that cannot be fetched ends the run with one line (exit 1)
    code = cli.run(train, failures=(ShardUnavailable,))
    trainer.close()
    if saved is not None:
        saved.close()
    if code:
        return code
    if saved is not None:
        discard_overwritten(saved.records)  # the replaced run, now that its successor is whole
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
