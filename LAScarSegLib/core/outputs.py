"""All-or-nothing output folders (CONTRACTS section 5).

Files are written into a temporary folder beside the destination and moved into place only when
the job has finished. After a failure (or a kill) the destination does not exist, or, with
`overwrite`, is exactly as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import InputError


def check_output_dir(out: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing non-empty folder unless `overwrite`; refuse a file in the way."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: output folder already holds files; pass --overwrite to replace them")
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove staging folders of `out` left by a killed run (their process is gone)."""
    removed = []
    for p in out.parent.glob(f".{out.name}.partial-*"):
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextmanager
def atomic_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `out` in one rename, on failure it vanishes.

    The staging folder `.<name>.partial-<pid>-<random>` sits beside `out` (same file system, so the
    final rename is atomic). A run killed outright cannot clean up; the next run removes it.
    """
    out = check_output_dir(out, overwrite).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = None
    if out.exists():
        backup = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, backup)
    try:
        os.replace(staging, out)
    except BaseException:
        if backup is not None:
            os.replace(backup, out)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    os.chmod(out, 0o755)


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
