"""All-or-nothing output folders (CONTRACTS section 5), and nothing of the user's ever lost.

Files are written into a temporary folder beside the destination and moved into place only when
the job has finished. After a failure (or a kill) the destination does not exist, or, with
`overwrite`, is exactly as it was. `overwrite` replaces only a folder lascarseg wrote (it holds
MARKER), never one that holds an input, and never a result that appeared while the job ran.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import InputError

#: Every output folder lascarseg writes holds this file; `--overwrite` replaces only such a folder.
MARKER = ".lascarseg.json"


@dataclass(frozen=True)
class OutputTarget:
    """An output folder checked before the job: where it is, as the user named it, and the run id of
    the lascarseg output it will replace (None: a new or empty folder). The final move refuses to
    replace anything else, such as another run's result that appeared while this job ran."""

    path: Path  # absolute
    given: str
    replaces: str | None = None


def _marker_run(folder: Path) -> str | None:
    """The run id in `folder`'s marker, or None when it has none (not a lascarseg output)."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    run = data.get("run") if isinstance(data, dict) and data.get("written_by") == "lascarseg" else None
    return str(run) if run else None


def marker_kind(folder: Path) -> str | None:
    """What kind of lascarseg output `folder` is ("segment", "batch", "demo"), or None."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return str(data.get("kind")) if isinstance(data, dict) and data.get("written_by") == "lascarseg" else None


def write_marker(folder: Path, kind: str) -> str:
    """Mark `folder` as lascarseg's own output (what `--overwrite` may replace); returns its run id."""
    run = uuid.uuid4().hex
    write_json({"written_by": "lascarseg", "kind": kind, "run": run,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, folder / MARKER)
    return run


def holds_input(folder: Path, path: str | os.PathLike) -> bool:
    """Whether `path` (an input) lies inside `folder`."""
    try:
        Path(path).resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def probe_writable(out: Path, given: str) -> None:
    """Create and remove a folder where the staging folder will go (`out`'s parent, or the nearest
    folder above it that exists), so that an unwritable `--out` is a usage error before any work."""
    where = out.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise InputError(f"{given}: cannot create the output folder: {where} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=where))
    except OSError as exc:
        raise InputError(f"{given}: cannot write the output folder here ({exc.strerror or exc}: {where})") from None


def check_output_dir(out: str | os.PathLike, overwrite: bool = False,
                     inputs: Sequence[str | os.PathLike | None] = ()) -> OutputTarget:
    """Check the output folder before the job runs, and clear what killed runs left beside it.

    Refused: a file in the way; a folder that holds one of `inputs`; a non-empty folder without
    `overwrite`; with `overwrite`, a non-empty folder lascarseg did not write (no MARKER); a place
    that cannot be written. Staging folders of dead runs are removed, and the previous result a run
    killed during the final swap had moved aside is put back (`remove_stale_staging`)."""
    if isinstance(out, OutputTarget):
        return out
    given = str(out)
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"{given}: output path exists and is not a folder")
    if out.parent.is_dir():
        remove_stale_staging(out)
    replaces = None
    if out.is_dir() and any(out.iterdir()):
        held = [str(p) for p in inputs if p is not None and holds_input(out, p)]
        if held:
            raise InputError(f"{given}: the output folder holds an input ({held[0]}); choose another folder")
        if not overwrite:
            raise InputError(f"{given}: output folder already holds files; pass --overwrite to replace them")
        replaces = _marker_run(out)
        if replaces is None:
            raise InputError(f"{given}: this folder was not written by lascarseg (it has no {MARKER}); --overwrite "
                             "replaces only lascarseg's own output folders: choose a new or empty folder")
    probe_writable(out, given)
    return OutputTarget(out, given, replaces)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_runs(out: Path, kind: str) -> list[Path]:
    """`out`'s `.partial-` (staging) or `.old-` (previous result moved aside) folders of dead processes."""
    found = []
    for p in out.parent.glob(f".{out.name}.{kind}-*"):
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            found.append(p)
    return found


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders of `out` that killed runs left; a previous result that a run killed
    between its two renames had moved aside goes back to `out` (when `out` is missing)."""
    removed = []
    for p in _dead_runs(out, "partial"):
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    for p in _dead_runs(out, "old"):
        if not out.exists():
            os.rename(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _conflict(target: OutputTarget) -> InputError:
    return InputError(f"{target.given}: another result appeared there while this job ran; this job's result "
                      "was not written (run it again with another --out)")


def _commit(staging: Path, target: OutputTarget) -> None:
    """Move the finished staging folder to the target, replacing only what the check saw there."""
    out = target.path
    if target.replaces is None:
        try:  # rename(2) onto nothing or an empty folder; a folder that holds files refuses it
            os.rename(staging, out)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise _conflict(target) from None
            raise
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
    os.rename(out, backup)  # onto the empty folder just made
    if _marker_run(backup) != target.replaces:  # another run replaced it meanwhile: leave its result
        os.rename(backup, out)
        raise _conflict(target)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


@contextmanager
def atomic_output_dir(out: str | os.PathLike | OutputTarget, overwrite: bool = False,
                      kind: str = "segment") -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `out` in one rename, on failure it vanishes.

    `out`: a path (checked here) or the `OutputTarget` `check_output_dir` returned before the job.
    The staging folder `.<name>.partial-<pid>-<random>` sits beside `out` (same file system, so the
    final rename is atomic) and gets the MARKER. A run killed outright cannot clean up; the next
    run removes what it left (`remove_stale_staging`); SIGTERM and SIGINT do clean up (the CLI turns
    them into exceptions).
    """
    target = check_output_dir(out, overwrite)
    target.path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.path.name}.partial-{os.getpid()}-", dir=target.path.parent))
    try:
        yield staging
        write_marker(staging, kind)
        os.chmod(staging, 0o755)
        _commit(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def temp_file_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """A temporary file in `path`'s folder (same file system, so os.replace is atomic).

    mkstemp creates it 0600; it gets the permissions a plain open() would give (0666 minus the
    umask), so a model or report written atomically is as readable as any other output.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A temporary file beside `path` for the caller to write; it replaces `path` in one rename when
    the block ends, and is removed if the block fails (a reader never sees half a file)."""
    fd, tmp = temp_file_beside(Path(path), suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _plain(value: Any) -> Any:
    """NumPy scalars (a bool or float that came out of an array) as the Python values JSON knows."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (temporary file, then rename); NumPy scalars are written as numbers and booleans."""
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=_plain)
        fh.write("\n")
    return path
