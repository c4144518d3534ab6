"""`lascarseg batch` at cohort scale: shards of one folder, resuming, worker processes, and a soak
with broken files and a worker killed midway. Real phantoms, the bundled model, real processes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from LAScarSegLib.app.batch import parse_shard, run_batch, shard_of
from LAScarSegLib.app.cli import main
from LAScarSegLib.core.errors import InputError
from LAScarSegLib.core.image import write_volume
from LAScarSegLib.core.outputs import MARKER
from LAScarSegLib.synth.phantom import make_phantom

SMALL = {"size": (64, 64, 40), "spacing": (1.25, 1.25, 1.25), "la_volume_ml": 30.0}


def _cohort(folder: Path, good: int, seed0: int = 100) -> dict[str, str]:
    """`good` small phantoms and three broken files: {case id: "good" | what is wrong}."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds = {}
    for k in range(good):
        write_volume(make_phantom(seed0 + k, **SMALL).image, folder / f"case{k:03d}.nii.gz")
        kinds[f"case{k:03d}"] = "good"
    packed = (folder / "case000.nii.gz").read_bytes()
    (folder / "cut.nii.gz").write_bytes(packed[: len(packed) // 2])
    (folder / "noise.nrrd").write_bytes(np.random.default_rng(0).bytes(700))
    (folder / "empty.mha").write_bytes(b"")
    kinds.update({"cut": "truncated", "noise": "cannot read", "empty": "empty"})
    return kinds


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {r["id"]: r for r in csv.DictReader(fh)}


def _runs(out: Path) -> dict[str, str]:
    """The run id each done case was written by: a case done twice would change it."""
    return {p.name: json.loads((p / MARKER).read_text())["run"] for p in out.iterdir()
            if p.is_dir() and not p.name.startswith(".")}


def test_shards_are_disjoint_and_cover_every_case_once() -> None:
    cases = [{"id": f"c{i:02d}"} for i in (5, 3, 9, 1, 7, 2, 8)]
    parts = [shard_of(cases, (k, 3)) for k in (1, 2, 3)]
    ids = [c["id"] for part in parts for c in part]
    assert sorted(ids) == sorted(c["id"] for c in cases) and len(ids) == len(set(ids))
    assert parse_shard("2/5") == (2, 5)
    for bad in ("0/3", "4/3", "a/b", "3"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)


def test_shards_share_one_folder_and_resume_keeps_finished_cases(tmp_path: Path) -> None:
    kinds = _cohort(tmp_path / "in", good=4)
    out = tmp_path / "out"
    for k in (1, 2, 3):
        assert main(["batch", str(tmp_path / "in"), "--out", str(out), "--shard", f"{k}/3", "--threads", "2"]) == \
            (1 if any(kinds[c["id"]] != "good" for c in shard_of([{"id": i} for i in kinds], (k, 3))) else 0)
    per_shard = [_rows(out / f"summary-{k}-of-3.csv") for k in (1, 2, 3)]
    ids = [i for rows in per_shard for i in rows]
    assert sorted(ids) == sorted(kinds) and len(ids) == len(set(ids))  # the union is every case, once
    done_before = _runs(out)
    assert sorted(done_before) == sorted(k for k, v in kinds.items() if v == "good")
    # a batch into a folder that holds one already needs --resume (or --overwrite)
    assert main(["batch", str(tmp_path / "in"), "--out", str(out)]) == 2
    assert main(["batch", str(tmp_path / "in"), "--out", str(out), "--resume", "--threads", "2"]) == 1
    assert _runs(out) == done_before  # finished cases kept, not run again
    summary = _rows(out / "summary.csv")
    assert sorted(summary) == sorted(kinds)
    for case, kind in kinds.items():
        assert (summary[case]["status"] == "done") == (kind == "good")
        if kind != "good":
            assert kind in summary[case]["error"].lower(), summary[case]
    assert not list(out.glob(".*partial*")) and not list(tmp_path.glob(".*partial*"))


def test_resume_redoes_failed_and_partial_cases(tmp_path: Path) -> None:
    _cohort(tmp_path / "in", good=3)
    out = tmp_path / "out"
    run_batch(tmp_path / "in", out, log=lambda m: None, threads=2)
    done = _runs(out)
    # as a killed batch leaves it: one case's staging half-written by a dead process, its folder gone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".case001.partial-{dead.pid}-xyz"
    stale.mkdir()
    (stale / "la_mask.nii.gz").write_bytes(b"half")
    os.rename(out / "case001", tmp_path / "moved-away")
    rows = run_batch(tmp_path / "in", out, resume=True, log=lambda m: None, threads=2)
    assert {r["id"]: r["status"] for r in rows}["case001"] == "done" and not stale.exists()
    after = _runs(out)
    assert after["case000"] == done["case000"] and after["case002"] == done["case002"]
    assert after["case001"] != done["case001"]


def test_workers_give_the_same_answers(tmp_path: Path) -> None:
    _cohort(tmp_path / "in", good=3)
    one = run_batch(tmp_path / "in", tmp_path / "one", log=lambda m: None, threads=2)
    two = run_batch(tmp_path / "in", tmp_path / "two", workers=2, log=lambda m: None, threads=2)
    key = ("id", "status", "la_volume_ml", "burden_surface_pct", "utah_stage")
    assert [[r[k] for k in key] for r in one] == [[r[k] for k in key] for r in two]


def _worker_pids(batch_pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat[1]) == batch_pid and "spawn_main" in cmd:
            found.append(int(entry))
    return found


def test_soak_with_broken_files_and_a_worker_killed_midway(tmp_path: Path) -> None:
    """Every good case done once, every bad one in summary.csv with its error, nothing partial on disk."""
    kinds = _cohort(tmp_path / "in", good=int(os.environ.get("LASCARSEG_SOAK_CASES", "12")))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "LAScarSegLib.app.cli", "batch", str(tmp_path / "in"), "--out", str(out),
           "--workers", "2", "--threads", "2"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    while proc.poll() is None and time.monotonic() - t0 < 300:
        done = [p for p in out.glob("case*") if (p / "report.json").is_file()] if out.is_dir() else []
        workers = _worker_pids(proc.pid)
        if killed is None and len(done) >= 2 and workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)  # as the kernel's OOM killer would
        time.sleep(0.05)
    first_out, first_err = proc.communicate(timeout=300)
    assert killed is not None, "the batch ended before a worker could be killed"
    assert proc.returncode == 1, first_err  # the broken files failed; nothing else
    first = _rows(out / "summary.csv")
    assert sorted(k for k, r in first.items() if r["status"] == "done") == sorted(
        k for k, v in kinds.items() if v == "good"), (first_out, first_err)
    second = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - t0
    summary = _rows(out / "summary.csv")
    assert sorted(summary) == sorted(kinds)
    good = sorted(k for k, v in kinds.items() if v == "good")
    assert sorted(_runs(out)) == good and all(summary[k]["status"] == "done" for k in good)
    for case, kind in kinds.items():
        if kind != "good":
            assert summary[case]["status"] == "failed" and kind in summary[case]["error"].lower()
    assert f"{len(good)} case(s) done already" in second.stdout
    leftovers = [p for p in tmp_path.rglob("*") if ".partial" in p.name or ".old-" in p.name]
    assert leftovers == []
    print(f"soak: {len(kinds)} cases ({len(good)} good), a worker killed, resumed: {elapsed:.1f} s")


def record_times(case: dict, *, loaded, localiser, log: str) -> dict:
    """A stand-in job (picklable for the worker processes): when it ran, in a file of its own."""
    t0 = time.time()
    time.sleep(0.6)
    Path(log, case["id"]).write_text(f"{t0} {time.time()}")
    return {"id": case["id"], "status": "done"}


@pytest.mark.parametrize("free", [0, 1 << 50])
def test_a_case_waits_for_memory_instead_of_crowding_the_others(tmp_path: Path, free: int) -> None:
    """With no memory free each case waits for the one running (alone, a case always starts); with
    plenty, two run at once."""
    from LAScarSegLib.app.batch_pool import run_in_pool

    image = tmp_path / "img.nii.gz"
    write_volume(make_phantom(1, **SMALL).image, image)
    cases = [{"id": f"c{i}", "image": image} for i in range(4)]
    rows: list[dict] = []
    run_in_pool(cases, record_times, workers=2, threads=2, model=None, localiser=None, device="cpu",
                kwargs={"log": str(tmp_path)}, on_row=lambda case, row: rows.append(row),
                on_lost=lambda case, error: pytest.fail(error), memory=lambda: free)
    spans = sorted(tuple(float(v) for v in (tmp_path / c["id"]).read_text().split()) for c in cases)
    overlaps = sum(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))
    assert len(rows) == 4 and (overlaps == 0 if free == 0 else overlaps >= 1)
