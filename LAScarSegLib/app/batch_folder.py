"""A batch's output folder as the record of the batch: what is done, what failed, what is left.

Everything a summary needs is on disk, so any number of shards, a resumed batch and a batch killed
half-way share one folder: a case is done when its folder holds lascarseg's marker and report.json
(written all or nothing, so never half); a failed case has a record in `.failed/<id>.json` (removed
when the case is later done). `summary.csv` can be rebuilt from the folder at any time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

from ..core.errors import InputError
from ..core.outputs import MARKER, check_output_dir, holds_input, marker_kind, probe_writable, write_json, write_marker

FAILED = ".failed"
BATCH_KIND = "batch"


def open_batch_folder(out: str | os.PathLike, *, overwrite: bool, adding: bool,
                      inputs: Sequence[str | os.PathLike | None]) -> Path:
    """The batch folder, created and marked when new. An existing batch folder (lascarseg's marker,
    kind batch) takes more cases when `adding` (`--resume`, `--shard`) or `overwrite`; any other
    non-empty folder is refused as `segment` refuses it (`core.outputs.check_output_dir`)."""
    path = Path(out).absolute()
    is_batch = path.is_dir() and marker_kind(path) == BATCH_KIND
    if is_batch and not (adding or overwrite):
        raise InputError(f"{out}: holds a batch already; --resume continues it (finished cases are kept), "
                         "--overwrite runs its cases again")
    if is_batch:
        held = [str(p) for p in inputs if p is not None and holds_input(path, p)]
        if held:
            raise InputError(f"{out}: the output folder holds an input ({held[0]}); choose another folder")
        probe_writable(path / "case", str(out))
    else:
        check_output_dir(out, False, inputs)  # new or empty: never another folder, even with --overwrite
    path.mkdir(parents=True, exist_ok=True)
    if marker_kind(path) != BATCH_KIND:
        write_marker(path, BATCH_KIND)
    return path


def case_report(out: Path, case_id: str) -> dict[str, Any] | None:
    """A done case's report (None: not done). Its folder was moved into place whole, marker included."""
    folder = out / case_id
    if not (folder / MARKER).is_file():
        return None
    try:
        return json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return None


def record_failure(out: Path, case_id: str, error: str, seconds: float) -> None:
    write_json({"id": case_id, "error": error, "seconds": round(seconds, 2),
                "failed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, _failure_path(out, case_id, make=True))


def clear_failure(out: Path, case_id: str) -> None:
    _failure_path(out, case_id).unlink(missing_ok=True)


def failures(out: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for p in sorted((out / FAILED).glob("*.json")):
        try:
            record = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        found[str(record.get("id", p.stem))] = record
    return found


def _failure_path(out: Path, case_id: str, make: bool = False) -> Path:
    folder = out / FAILED
    if make:
        folder.mkdir(exist_ok=True)
    return folder / f"{case_id}.json"
