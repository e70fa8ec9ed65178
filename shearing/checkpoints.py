"""Composer checkpoints, read without running code from them, and made safe to resume.

A composer checkpoint is a pickle. `torch.load(weights_only=False)`, which composer's own
loader uses, runs whatever code a crafted file names. Every load in this project goes
through `load_state`: torch's weights-only unpickler, which builds tensors, containers
and plain values only, plus the few data-only types a composer checkpoint holds
(`SAFE_GLOBALS`). `verify` is installed as composer's `CHECKPOINT_VALIDATION_FUNCTION`, so
autoresume refuses a file before composer unpickles it.

`torch.save` writes a zip archive whose directory is written last: a file cut short by a
killed process has none and is recognised as incomplete (`is_complete`).
"""

from __future__ import annotations

import datetime
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

#: Composer's checkpoint files for rank R in a save folder, and the symlink to the latest.
CHECKPOINT_PATTERN = re.compile(r"^ep\d+-ba(?P<batch>\d+)-rank(?P<rank>\d+)\.pt$")
LATEST = "latest-rank{rank}.pt"
#: Data-only types in a composer checkpoint besides tensors and builtins: wall-clock times
#: (timedelta), the torch version in its metadata, and numpy's RNG state (a uint32 array).
SAFE_GLOBALS = [
    datetime.timedelta,
    torch.torch_version.TorchVersion,
    np._core.multiarray._reconstruct,
    np.ndarray,
    np.dtype,
    *(
        getattr(np.dtypes, name)
        for name in (
            "BoolDType",
            "Int8DType",
            "Int16DType",
            "Int32DType",
            "Int64DType",
            "UInt8DType",
            "UInt16DType",
            "UInt32DType",
            "UInt64DType",
            "Float16DType",
            "Float32DType",
            "Float64DType",
        )
    ),
]
#: Composer reads this environment variable (a dotted function name) and calls the function
#: on every checkpoint file before it loads it.
VALIDATION_ENV = "CHECKPOINT_VALIDATION_FUNCTION"


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, corrupt, or holds more than tensors and data."""


def is_complete(path: str | os.PathLike) -> bool:
    """Whether `path` is a whole torch zip archive (its directory, written last, is there)."""
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def load_state(path: str | os.PathLike, *, mmap: bool = False) -> dict:
    """A checkpoint's contents, loaded weights-only on the CPU.

    Raises:
        CheckpointError: the file is incomplete or corrupt, or names a Python global that
            is not a tensor, container, plain value or one of `SAFE_GLOBALS`.
    """
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(
            f"{path} is not a complete torch checkpoint (no zip directory: an interrupted "
            "write, or not a checkpoint)"
        )
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)|got <class '([^']+)'>", str(err))
        what = next((g for g in found.groups() if g), "an object") if found else "an object"
        raise CheckpointError(
            f"{path} refused: it asks to build {what}, which is not tensor data; loading it "
            "could run code (checkpoints of this project hold only tensors and plain data)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is corrupt ({first})") from None


def verify(path: str | os.PathLike, specs=None) -> bool:
    """Composer's checkpoint validation hook: True if `load_state` accepts the file."""
    try:
        load_state(path, mmap=True)
    except CheckpointError as err:
        log.error("%s", err)
        return False
    return True


def install_composer_validation() -> None:
    """Make composer check every checkpoint with `verify` before its own (unsafe) load."""
    os.environ[VALIDATION_ENV] = f"{__name__}.verify"


def checkpoint_files(folder: str | os.PathLike, rank: int = 0) -> list[Path]:
    """Rank `rank`'s checkpoint files in a save folder, by batch."""
    found = []
    for p in Path(folder).iterdir():
        m = CHECKPOINT_PATTERN.match(p.name)
        if m and int(m["rank"]) == rank and not p.is_symlink():
            found.append((int(m["batch"]), p))
    return [p for _, p in sorted(found)]


def complete_checkpoints(folder: str | os.PathLike, rank: int = 0) -> list[Path]:
    """`checkpoint_files`, less incomplete ones (each skipped with a warning)."""
    complete, incomplete = _by_completeness(folder, rank)
    for p in incomplete:
        log.warning("skipping %s: incomplete (a checkpoint write was interrupted)", p)
    return complete


def _by_completeness(folder: str | os.PathLike, rank: int) -> tuple[list[Path], list[Path]]:
    complete, incomplete = [], []
    for p in checkpoint_files(folder, rank):
        (complete if is_complete(p) else incomplete).append(p)
    return complete, incomplete


def newest_complete(folder: str | os.PathLike, rank: int = 0) -> Path | None:
    """The checkpoint an autoresume continues from: rank `rank`'s newest complete one in
    `folder` (read only; every process of a run finds the same one)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    complete, _ = _by_completeness(folder, rank)
    return complete[-1] if complete else None


def checkpoint_step(path: str | os.PathLike) -> int:
    """The batch a composer checkpoint file was written after (its name says)."""
    return int(CHECKPOINT_PATTERN.match(Path(path).name)["batch"])


def prepare_resume(folder: str | os.PathLike, rank: int = 0) -> Path | None:
    """Make a save folder safe for composer's autoresume; return the checkpoint it will load.

    An incomplete checkpoint (a write killed part way) is removed with a warning: it holds
    nothing usable, and composer would refuse to write the same name again. The `latest`
    symlink is pointed at the newest complete checkpoint (a kill between composer's
    removing and re-creating it leaves none). That checkpoint is verified weights-only.

    Raises:
        CheckpointError: the checkpoint to resume from is corrupt or unsafe.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    complete, incomplete = _by_completeness(folder, rank)
    for p in incomplete:
        log.warning("removing %s: incomplete (a checkpoint write was interrupted)", p)
        p.unlink()
    latest = folder / LATEST.format(rank=rank)
    if not complete:
        if latest.is_symlink():
            latest.unlink()
        return None
    newest = complete[-1]
    if not (latest.is_symlink() and latest.resolve() == newest.resolve()):
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        log.warning("pointing %s at %s, the newest complete checkpoint", latest.name, newest.name)
        latest.symlink_to(newest.name)
    load_state(newest, mmap=True)
    return newest
