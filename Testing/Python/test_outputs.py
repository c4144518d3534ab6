"""Output folders never lose a file: what a hostile test of `segment --overwrite` found, each fixed.

`--overwrite` replaces only a folder lascarseg wrote (it holds MARKER), never one that holds an
input; a result that appeared at `--out` while the job ran is never replaced; SIGTERM removes the
staging folder; what a killed run left is cleaned (or put back) by the next; an `--out` that cannot
be written is a usage error before the image or the model is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from LAScarSegLib.app.cli import main
from LAScarSegLib.core.errors import InputError
from LAScarSegLib.core.image import write_volume
from LAScarSegLib.core.outputs import MARKER, atomic_output_dir, check_output_dir, write_marker
from LAScarSegLib.synth.phantom import make_phantom


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's case folder: the image and the manual labels beside it."""
    folder = tmp_path_factory.mktemp("case")
    ph = make_phantom(11, size=(48, 48, 32), spacing=(1.25, 1.25, 1.25), la_volume_ml=20.0)
    write_volume(ph.image, folder / "image.nii.gz")
    write_volume(ph.la, folder / "la.nii.gz")
    (folder / "notes.txt").write_text("the user's own notes\n")
    return folder


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_overwrite_never_deletes_the_input_or_its_folder(case_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """The reported defect: `segment DIR/image.nii.gz --out DIR --overwrite` deleted the image and the labels."""
    before = _digests(case_dir)
    code = main(["segment", str(case_dir / "image.nii.gz"), "--la-label", str(case_dir / "la.nii.gz"),
                 "--out", str(case_dir), "--overwrite"])
    assert code == 2 and "holds an input" in capsys.readouterr().err
    assert _digests(case_dir) == before


def test_overwrite_refuses_a_folder_lascarseg_did_not_write(case_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.docx").write_bytes(b"years of work")
    code = main(["segment", str(case_dir / "image.nii.gz"), "--out", str(theirs), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and "not written by lascarseg" in err and str(theirs) in err
    assert [p.name for p in theirs.iterdir()] == ["thesis.docx"]


def test_overwrite_replaces_lascarseg_output_only_as_a_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_output_dir(out) as stage:
        (stage / "report.json").write_text("{}")
    first = json.loads((out / MARKER).read_text())
    assert first["written_by"] == "lascarseg" and first["kind"] == "segment"
    with atomic_output_dir(out, overwrite=True) as stage:
        (stage / "report.json").write_text('{"second": true}')
    assert json.loads((out / MARKER).read_text())["run"] != first["run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging, no backup left


def test_a_result_that_appears_while_the_job_runs_is_never_replaced(tmp_path: Path) -> None:
    """Two runs to the same --out: the check at the start passed for both; the second to finish loses."""
    out = tmp_path / "out"
    target = check_output_dir(out)  # job A checks, then runs for a while...
    with atomic_output_dir(out) as stage:  # ...job B starts and finishes first
        (stage / "report.json").write_text('{"job": "B"}')
    with pytest.raises(InputError, match="another result appeared there while this job ran"):
        with atomic_output_dir(target) as stage:
            (stage / "report.json").write_text('{"job": "A"}')
    assert json.loads((out / "report.json").read_text()) == {"job": "B"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_does_not_replace_a_newer_result_either(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_output_dir(out) as stage:
        (stage / "report.json").write_text('{"job": "old"}')
    target = check_output_dir(out, overwrite=True)  # job A will replace "old"...
    with atomic_output_dir(out, overwrite=True) as stage:  # ...but B replaced it first
        (stage / "report.json").write_text('{"job": "B"}')
    with pytest.raises(InputError, match="another result appeared"):
        with atomic_output_dir(target, overwrite=True) as stage:
            (stage / "report.json").write_text('{"job": "A"}')
    assert json.loads((out / "report.json").read_text()) == {"job": "B"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_what_a_killed_run_left_is_cleaned_or_put_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pid = _dead_pid()
    staging = tmp_path / f".out.partial-{pid}-abc123"
    staging.mkdir()
    (staging / "la_mask.nii.gz").write_bytes(b"half")
    previous = tmp_path / f".out.old-{pid}-def456"  # killed between its two renames: the old result aside
    previous.mkdir()
    write_marker(previous, "segment")
    (previous / "report.json").write_text('{"previous": true}')
    alive = tmp_path / f".out.partial-{os.getpid()}-live99"  # a running job's staging is left alone
    alive.mkdir()
    check_output_dir(out, overwrite=True)
    assert not staging.exists() and not previous.exists() and alive.exists()
    assert json.loads((out / "report.json").read_text()) == {"previous": True}


def test_unwritable_out_is_a_usage_error_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Named as the user gave it, found before the image is read (this image does not even exist)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out in (blocker / "out", Path("/proc/lascarseg-out")):
        code = main(["segment", str(tmp_path / "missing.nii.gz"), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"lascarseg segment: error: {out}: cannot ") and ".partial" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_sigterm_removes_the_staging_folder(tmp_path: Path) -> None:
    """A scheduler's kill during the job: nothing half-written stays beside --out."""
    out = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "LAScarSegLib.app.cli", "demo", "--out", str(out),
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".demo.partial-*")):
        assert proc.poll() is None and time.monotonic() < deadline, "the demo ended before its staging folder showed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "stopped by SIGTERM" in err, err
    assert list(tmp_path.iterdir()) == []
