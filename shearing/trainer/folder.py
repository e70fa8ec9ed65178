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
import tempfile
from dataclasses import dataclass
from pathlib import Path

from composer.utils import ObjectStore, dist, maybe_create_object_store_from_uri, parse_uri

from shearing.checkpoints import (
    CHECKPOINT_PATTERN,
    CheckpointError,
    checkpoint_files,
    checkpoint_step,
    newest_complete,
    prepare_resume,
)
from shearing.config import KEYS as K
from shearing.config import ConfigError, expand_path, load_config, to_yaml
from shearing.data.corpus import is_url
from shearing.data.dynamic import HISTORY_FILE
from shearing.data.mixture import POSITION_FILE
from shearing.files import OutputError, check_separate, write_text_atomic
from shearing.records import METRICS_FILE
from shearing.run import Run, recorded

log = logging.getLogger(__name__)
#: What composer logs first in every batch, under the batches done before it.
BATCH_START = "time/batch"


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


@dataclass
class SaveFolder:
    """Where a run saves: `records` is the folder its records are written to (the save
    folder itself, or for one in object storage a local staging folder uploaded by
    `upload`); composer saves its checkpoints to `composer` (the folder or the URI); an
    autoresumed run continues from `resume` (a checkpoint path or URI; None: from the
    start, or from `load_path`)."""

    records: Path
    composer: str
    resume: str | None = None
    store: ObjectStore | None = None
    prefix: str = ""

    def upload(self) -> None:
        """Upload the run's records to a save folder in object storage (global rank 0)."""
        if self.store is None or not writes():
            return
        for name in RUN_RECORDS:
            if (self.records / name).is_file():
                self.store.upload_object(_join(self.prefix, name), str(self.records / name))

    def close(self) -> None:
        """Remove the local staging folder of a save folder in object storage."""
        if self.store is not None:
            shutil.rmtree(self.records, ignore_errors=True)


def _join(prefix: str, name: str) -> str:
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def prepare_save_folder(run: Run) -> SaveFolder | None:
    """Check `save_folder` before anything is loaded or written (None: no save folder).

    A folder that already holds a run is refused unless `autoresume` continues it or
    `save_overwrite` replaces it (`_set_aside`); a continued run must have the same model
    section (its checkpoints are of that model), continues from the newest complete
    checkpoint (`checkpoints.prepare_resume`), and its records keep what was recorded up to
    that checkpoint. A folder on a filesystem must not be, hold or lie inside an input. A
    folder in object storage (any URI composer's object stores take) is checked the same
    way through composer's object store; a run there is not replaced in place.

    Raises:
        ConfigError: one line naming the folder and what to do.
    """
    cfg = run.cfg
    if cfg.save_folder is None:
        return None
    if is_url(cfg.save_folder):
        return _prepare_remote(run)
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
    saved = SaveFolder(folder, str(folder))
    if not folder.is_dir() or not any(folder.iterdir()):
        return saved
    held = [n for n in RUN_RECORDS if (folder / n).exists()]
    held += [p.name for p in checkpoint_files(folder)]
    if cfg.save_overwrite:
        if writes():
            _set_aside(folder)
        return saved
    _check_continued(cfg, str(folder), held, folder / "config.yaml")
    if writes():
        try:
            prepare_resume(folder)
        except CheckpointError as err:
            raise ConfigError(f"{K.autoresume}: {err}") from None
    newest = newest_complete(folder)  # every process finds the one rank 0 prepared
    if newest is not None:
        if writes():
            _truncate_records(folder, checkpoint_step(newest))
        saved.resume = str(newest)
    return saved


def _check_continued(cfg, where: str, held: list[str], config: Path) -> None:
    """A save folder that holds a run (`held`, its files): refused without `autoresume`;
    with it, the run (its `config` file) must be of the same model section and optimizer
    class."""
    if not held:
        return
    if not cfg.autoresume:
        what = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise ConfigError(
            f"{K.save_folder} {where!r} already holds a run ({what}); pass "
            f"{K.autoresume}=true to continue it, or choose a new folder"
        )
    if not config.is_file():
        return
    try:
        before = load_config(config)
    except ConfigError as err:
        raise ConfigError(f"{K.save_folder}'s config.yaml cannot be read: {err}") from None
    if before.model != cfg.model:
        raise ConfigError(
            f"{K.save_folder} {where!r} holds a run of another model section "
            "(model.*); autoresume continues only the same model and target"
        )
    was, now = before.optimizer.lambda_ascent_lr, cfg.optimizer.lambda_ascent_lr
    if (was is None) != (now is None):  # another optimizer class: its state would not load
        raise ConfigError(
            f"{K.optimizer.lambda_ascent_lr}={_yaml_value(now)} but the run in save_folder "
            f"{where!r} was started with {_yaml_value(was)}; autoresume continues its "
            "optimizer state only with both null or both set (a rate may change)"
        )


def _prepare_remote(run: Run) -> SaveFolder:
    """`prepare_save_folder` for a save folder in object storage: composer saves and
    uploads the checkpoints there; the records are kept in a local staging folder and
    uploaded beside them at each checkpoint and at the end (`SaveFolder.upload`). An
    autoresumed run downloads the records and continues from the newest checkpoint
    uploaded (an object appears whole or not at all)."""
    cfg = run.cfg
    uri = cfg.save_folder
    try:
        store = maybe_create_object_store_from_uri(uri)
        _, _, prefix = parse_uri(uri)
        names = [o.removeprefix(_join(prefix, "")) for o in store.list_objects(_join(prefix, ""))]
    except Exception as err:  # each store's client has its own errors
        line = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise ConfigError(f"{K.save_folder} {uri!r} cannot be reached ({line})") from None
    records = Path(tempfile.mkdtemp(prefix="shearing-run-"))
    saved = SaveFolder(records, uri, store=store, prefix=prefix)
    held = [n for n in RUN_RECORDS if n in names]
    held += sorted((n for n in names if CHECKPOINT_PATTERN.match(n)), key=_batch_of)
    if held and cfg.save_overwrite:
        raise ConfigError(
            f"{K.save_overwrite}=true with {K.save_folder} {uri!r}, which holds a run: a run in "
            "object storage is not replaced in place, object by object; choose a new folder"
        )
    if held and cfg.autoresume and "config.yaml" in names:
        store.download_object(_join(prefix, "config.yaml"), str(records / "config.yaml"))
    _check_continued(cfg, uri, held, records / "config.yaml")
    checkpoints = [n for n in held if CHECKPOINT_PATTERN.match(n) and _rank_of(n) == 0]
    if checkpoints:
        saved.resume = f"{uri.rstrip('/')}/{checkpoints[-1]}"
        for name in (METRICS_FILE, HISTORY_FILE):
            if name in names:
                store.download_object(_join(prefix, name), str(records / name))
        if writes():
            _truncate_records(records, _batch_of(checkpoints[-1]))
    return saved


def _batch_of(name: str) -> int:
    return int(CHECKPOINT_PATTERN.match(name)["batch"])


def _rank_of(name: str) -> int:
    return int(CHECKPOINT_PATTERN.match(name)["rank"])


def _truncate_records(folder: Path, step: int) -> None:
    """Drop what an interrupted run recorded after the checkpoint a resumed run continues
    from (taken after batch `step`): the resumed run records those batches again, so each
    is recorded once. The records are in the order they were logged, and composer starts
    every batch by logging `time/batch` under the batches done: batch `step + 1` begins at
    the first line of step `step` with it (its losses and gradient norm follow it under the
    same step), or at the first line of a later step. The history has one line per
    evaluation, under the batches done."""
    for name in (METRICS_FILE, HISTORY_FILE):
        path = folder / name
        if not path.is_file():
            continue
        lines = [x for x in path.read_text().splitlines() if x.strip()]
        cut = len(lines)
        for i, line in enumerate(lines):
            entry = json.loads(line)
            done = entry.get("step") or 0
            if done > step or (done == step and BATCH_START in entry):
                cut = i
                break
        if cut < len(lines):
            log.info("autoresume: %s keeps its records up to step %d", name, step)
            write_text_atomic(path, "".join(x + "\n" for x in lines[:cut]))
