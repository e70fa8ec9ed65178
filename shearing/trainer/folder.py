"""The save folder's lifecycle, before and after a training run: refuse a folder that
holds another run, set aside the run `save_overwrite` replaces (and drop it once the new
one has finished), check and prepare an autoresume.

Which rank writes: global rank 0, alone, writes and moves everything in `save_folder` that
is the project's (this module, `config.yaml`, the position and history records, the
metrics log), whether the folder is shared by the nodes or local to each. Every rank reads
and checks it. composer writes the checkpoints (with `state_dict_type: full`, global rank 0
as well) and resumes from them on every node, so a run across nodes needs a `save_folder`
that every node sees: a shared filesystem or an object-store URI. The ranks meet when
composer starts the process group, after global rank 0 has prepared the folder."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from composer.utils import dist

from shearing.checkpoints import CheckpointError, checkpoint_files, checkpoint_step, prepare_resume
from shearing.config import KEYS as K
from shearing.config import ConfigError, expand_path, load_config, to_yaml
from shearing.data.corpus import is_url
from shearing.data.dynamic import HISTORY_FILE
from shearing.data.mixture import POSITION_FILE
from shearing.files import OutputError, check_separate, write_text_atomic
from shearing.records import METRICS_FILE
from shearing.run import Run, recorded

log = logging.getLogger(__name__)
#: The prefix of the training losses composer logs.
TRAIN_LOSS = "loss/train/"


#: Files a run writes into its save folder besides checkpoints.
RUN_RECORDS = ("config.yaml", METRICS_FILE, HISTORY_FILE, POSITION_FILE)


#: Where `save_overwrite` keeps the run it replaces until the new one has finished.
OVERWRITTEN = ".overwritten"


def _run_files(folder: Path) -> list[Path]:
    """A run's files in its save folder: records, checkpoints of every rank, `latest`
    links (anything else the user keeps there is not the run's)."""
    pattern = re.compile(r"^(ep\d+-ba\d+|latest)-rank\d+\.pt$")
    return [p for p in folder.iterdir() if p.name in RUN_RECORDS or pattern.match(p.name)]


def _set_aside(folder: Path) -> None:
    """`save_overwrite`: move the folder's run into `OVERWRITTEN`, where it stays until
    the new run finishes (`discard_overwritten`). If an earlier replacement was cut off,
    the run set aside then is kept and the cut-off run's files are removed."""
    aside = folder / OVERWRITTEN
    keep = not aside.exists()
    aside.mkdir(exist_ok=True)
    for p in _run_files(folder):
        if keep:
            os.replace(p, aside / p.name)
        else:
            p.unlink()
    log.info("save_overwrite: the earlier run is in %s until this one finishes", aside)


def discard_overwritten(folder: Path) -> None:
    """Delete the run `save_overwrite` set aside, once its successor has finished."""
    if writes():
        shutil.rmtree(folder / OVERWRITTEN, ignore_errors=True)


def writes() -> bool:
    """The rule of this module's first paragraph: True on the one process (global rank 0)
    that writes the run's records; every writer below asks it."""
    return dist.get_global_rank() == 0


def record_config(folder: Path, run: Run) -> None:
    """`config.yaml`: the resolved run, read back by autoresume, convert and compare."""
    if writes():
        write_text_atomic(folder / "config.yaml", to_yaml(recorded(run)))


def append_record(path: Path, entry: dict) -> None:
    """One JSON line appended to a record (`metrics.jsonl`, `domain_history.jsonl`); an
    autoresumed run continues the same file."""
    if writes():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def write_position(folder: Path, record: dict) -> None:
    """`data_position.json`: the rows a finished run read (for `data.rows_from`)."""
    if writes():
        write_text_atomic(folder / POSITION_FILE, json.dumps(record, indent=1) + "\n")


def _yaml_value(value: object) -> str:
    return "null" if value is None else str(value)


def prepare_save_folder(run: Run) -> Path | None:
    """Check `save_folder` before anything is loaded or written; return it (or None).

    A folder that already holds a run is refused unless `autoresume` continues it or
    `save_overwrite` replaces it (`_set_aside`); a
    continued run must have the same model section (its checkpoints are of that model),
    and the checkpoint it resumes from is prepared (`checkpoints.prepare_resume`). The
    folder must not be, hold or lie inside an input.

    Raises:
        ConfigError: one line naming the folder and what to do.
    """
    cfg = run.cfg
    if cfg.save_folder is None:
        return None
    folder = expand_path(cfg.save_folder)
    corpus = run.data.corpus
    inputs = {K.model.path: run.model_path}
    if corpus.remote:  # the cache is written by the run, the remote only read
        inputs[K.data.local] = corpus.cache
        if not is_url(corpus.root):
            inputs[K.data.remote] = corpus.root
    else:
        inputs[K.data.path] = corpus.root
    if run.teacher_path is not None:
        inputs[K.distillation.teacher_path] = run.teacher_path
    for key in (K.data.proportions_from, K.data.rows_from):
        if getattr(cfg.data, key.name):
            inputs[str(key)] = expand_path(getattr(cfg.data, key.name))
    try:
        check_separate(folder, "save_folder", inputs)
    except OutputError as err:
        raise ConfigError(str(err)) from None
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{K.save_folder} {str(folder)!r} is a file, not a folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return folder
    held = [n for n in RUN_RECORDS if (folder / n).exists()]
    held += [p.name for p in checkpoint_files(folder)]
    if cfg.save_overwrite:
        if writes():
            _set_aside(folder)
        return folder
    if not cfg.autoresume:
        what = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "") if held else "files"
        raise ConfigError(
            f"{K.save_folder} {str(folder)!r} already holds a run ({what}); pass "
            f"{K.autoresume}=true to continue it, or choose a new folder"
        )
    previous = folder / "config.yaml"
    if previous.is_file():
        try:
            before = load_config(previous)
        except ConfigError as err:
            raise ConfigError(f"{K.save_folder}'s config.yaml cannot be read: {err}") from None
        if before.model != cfg.model:
            raise ConfigError(
                f"{K.save_folder} {str(folder)!r} holds a run of another model section "
                "(model.*); autoresume continues only the same model and target"
            )
        was, now = before.optimizer.lambda_ascent_lr, cfg.optimizer.lambda_ascent_lr
        if (was is None) != (now is None):  # another optimizer class: its state would not load
            raise ConfigError(
                f"{K.optimizer.lambda_ascent_lr}={_yaml_value(now)} but the run in save_folder "
                f"{str(folder)!r} was started with {_yaml_value(was)}; autoresume continues its "
                "optimizer state only with both null or both set (a rate may change)"
            )
    if writes():
        try:
            resumed = prepare_resume(folder)
        except CheckpointError as err:
            raise ConfigError(f"{K.autoresume}: {err}") from None
        if resumed is not None:
            _truncate_records(folder, checkpoint_step(resumed))
    return folder


def _truncate_records(folder: Path, step: int) -> None:
    """Drop what an interrupted run recorded after the checkpoint a resumed run continues
    from (taken after batch `step`): the resumed run records those batches again, so each
    is recorded once. composer logs a batch's training losses under the batches done before
    it, everything else (evaluations, the gates, the history) under the batches done."""

    def batch(entry: dict) -> int:
        done = entry.get("step") or 0
        return done + 1 if any(k.startswith(TRAIN_LOSS) for k in entry) else done

    for name in (METRICS_FILE, HISTORY_FILE):
        path = folder / name
        if not path.is_file():
            continue
        lines = path.read_text().splitlines()
        kept = [x for x in lines if x.strip() and batch(json.loads(x)) <= step]
        if len(kept) != len(lines):
            log.info("autoresume: %s keeps its records up to step %d", name, step)
            write_text_atomic(path, "".join(x + "\n" for x in kept))
