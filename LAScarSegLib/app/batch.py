"""`lascarseg batch`: every case of a folder, each written as `segment` writes it, plus a summary.

A folder in a known data layout (la2018, LAScarQS 2022, 2018 challenge) brings its labels, so the
summary has metrics; a plain folder of images is segmented without. The model is loaded once per
process. Every case that can finish does; a failed case is a row with its error. For cohorts:
worker processes (`batch_pool`), shards of the sorted case list for a cluster's job array, and
resuming, all sharing one output folder (`batch_folder`).
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any

from ..core.datasets import detect_layout, open_dataset
from ..core.errors import InputError
from ..core.outputs import atomic_file
from ..infer.masks import LASeed
from ..model.loading import REGISTERED, load_for_inference, load_localiser
from .batch_folder import case_report, clear_failure, failures, open_batch_folder, record_failure
from .batch_pool import run_in_pool
from .pipeline import segment, write_outputs

SUMMARY_COLUMNS = ["id", "status", "error", "la_volume_ml", "burden_surface_pct", "utah_stage", "dice", "hd95_mm",
                   "dice_scar", "gdice", "seconds"]
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def find_cases(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """(id, image, la_label, scar_label) of every case: a known layout first, else image files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: input folder does not exist")
    try:
        ds = open_dataset(folder, detect_layout(folder))
        return [{"id": c.id, "image": c.image, "la_label": c.la, "scar_label": c.scar} for c in ds.cases()]
    except InputError:
        pass
    cases = []
    for p in sorted(folder.iterdir()):
        name = p.name
        suffix = next((s for s in IMAGE_SUFFIXES if name.lower().endswith(s)), None)
        if p.is_file() and suffix:
            cases.append({"id": name[: -len(suffix)], "image": p, "la_label": None, "scar_label": None})
    if not cases:
        raise InputError(f"{folder}: no image ({', '.join(IMAGE_SUFFIXES)}) and no case of a known layout found")
    return cases


def row_from_report(case_id: str, report: dict[str, Any], seconds: float) -> dict[str, Any]:
    """A done case's summary row, from its report.json (what the folder keeps of it)."""
    row = {k: "" for k in SUMMARY_COLUMNS}
    row.update(id=case_id, status="done", seconds=round(seconds, 2), la_volume_ml=report["la"]["volume_ml"],
               burden_surface_pct=report["scar"]["burden_surface_pct"], utah_stage=report["scar"]["utah_stage"])
    m = report.get("metrics", {})
    row.update(dice=m.get("la", {}).get("dice", ""), hd95_mm=m.get("la", {}).get("hd95_mm", ""),
               dice_scar=m.get("scar", {}).get("dice_scar", ""), gdice=m.get("scar", {}).get("gdice", ""))
    return row


def failed_row(case_id: str, error: str, seconds: float) -> dict[str, Any]:
    row = {k: "" for k in SUMMARY_COLUMNS}
    row.update(id=case_id, status="failed", error=error, seconds=round(seconds, 2))
    return row


def write_summary(rows: list[dict[str, Any]], path: Path) -> None:
    """A summary CSV, replaced atomically (a reader never sees half a file)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["id"]))
    with atomic_file(path) as tmp:
        Path(tmp).write_text(buf.getvalue())


def read_seeds(path: str | os.PathLike) -> dict[str, LASeed]:
    """{case id: point inside its LA} from a CSV with columns id, r, a, s (millimetres, RAS)."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"id", "r", "a", "s"} - {c.strip() for c in (reader.fieldnames or [])}
            if missing:
                raise InputError(f"{path}: a seeds file needs the columns id, r, a, s; missing {sorted(missing)}")
            seeds: dict[str, LASeed] = {}
            for n, row in enumerate(reader, start=2):
                row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
                try:
                    point = (float(row["r"]), float(row["a"]), float(row["s"]))
                except ValueError:
                    raise InputError(f"{path}, line {n}: r, a, s must be numbers (millimetres), got "
                                     f"{row['r']!r}, {row['a']!r}, {row['s']!r}") from None
                if row["id"] in seeds:
                    raise InputError(f"{path}, line {n}: case {row['id']!r} has a seed already")
                seeds[row["id"]] = LASeed(ras=point)
    except OSError as exc:
        raise InputError(f"{path}: the seeds file cannot be read ({exc})") from exc
    return seeds


def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" -> (K, N), 1 <= K <= N."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard takes K/N (for example 3/10), got {text!r}") from None
    if not 1 <= k <= n:
        raise InputError(f"--shard K/N needs 1 <= K <= N, got {text!r}")
    return k, n


def shard_of(cases: list[dict[str, Any]], shard: tuple[int, int] | None) -> list[dict[str, Any]]:
    """The K-th of N disjoint shares of the cases sorted by id (every N-th from the K-th)."""
    ordered = sorted(cases, key=lambda c: c["id"])
    if shard is None:
        return ordered
    k, n = shard
    return ordered[k - 1::n]


def run_case(case: dict[str, Any], *, out: Path, overwrite: bool, seed: LASeed | None, loaded: Any, localiser: Any,
             **kwargs: Any) -> dict[str, Any]:
    """One case, segmented and written as `segment` writes it; its summary row (a failure is a row too)."""
    t0 = time.perf_counter()
    try:
        result = segment(case["image"], la_label=case["la_label"], scar_label=case["scar_label"], loaded=loaded,
                         localiser=localiser, la_seed=seed, **kwargs)
        write_outputs(result, out / case["id"], overwrite=overwrite)
        return row_from_report(case["id"], result.report.to_json(), time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - one bad case must not stop the batch
        return failed_row(case["id"], f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)


def run_batch(folder: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
              shard: tuple[int, int] | None = None, workers: int = 1, threads: int | None = None,
              model: str | None = None, device: str = "auto", seeds: dict[str, LASeed] | None = None, log=print,
              **kwargs: Any) -> list[dict[str, Any]]:
    """Segment every case of `folder` (this `shard` of them) into `out`/<id>/; the rows of those cases.

    `resume` (and any `shard`) keeps the cases already done in `out` and runs the rest, failed or
    never finished ones included; `overwrite` runs every case again. `workers` > 1 runs cases in that
    many processes (`batch_pool`). After every case the summary is rewritten: `summary-K-of-N.csv`
    with a shard's cases, else `summary.csv` with every case in the folder (other shards' too), so a
    killed batch leaves a summary of what it finished.
    """
    every = find_cases(folder)
    cases = shard_of(every, shard)
    unknown = sorted(set(seeds or {}) - {c["id"] for c in every})
    if unknown:
        raise InputError(f"the seeds file names cases that are not in {folder}: {unknown[:10]}")
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    out = open_batch_folder(out, overwrite=overwrite, adding=resume or shard is not None, inputs=[folder, model])
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for case in cases:
        report = None if overwrite else case_report(out, case["id"])
        if report is None:
            todo.append(case)
        else:
            rows[case["id"]] = row_from_report(case["id"], report, report.get("timings_s", {}).get("total", 0.0))
    if rows:
        log(f"{len(rows)} case(s) done already, kept; {len(todo)} to run")
    summary = out / (f"summary-{shard[0]}-of-{shard[1]}.csv" if shard else "summary.csv")

    def finished(case: dict[str, Any], row: dict[str, Any]) -> None:
        rows[case["id"]] = row
        if row["status"] == "done":
            clear_failure(out, case["id"])
        else:
            record_failure(out, case["id"], row["error"], float(row["seconds"]))
        write_summary(list(rows.values()) if shard else folder_rows(out), summary)
        log(f"{case['id']}: done ({row['seconds']} s)" if row["status"] == "done" else
            f"{case['id']}: failed: {row['error']}")

    which_localiser = kwargs.pop("localiser", REGISTERED)
    job = {"out": out, "overwrite": overwrite, **kwargs}
    if todo and (workers == 1 or len(todo) == 1):
        loaded = load_for_inference(model, device)
        localiser = load_localiser(which_localiser, device)
        for case in todo:
            finished(case, run_case(case, seed=(seeds or {}).get(case["id"]), loaded=loaded, localiser=localiser,
                                    **job))
    elif todo:
        run_in_pool([{**c, "seed": (seeds or {}).get(c["id"])} for c in todo], _pool_case, workers=workers,
                    threads=threads or os.cpu_count() or 1, model=model, localiser=which_localiser, device=device,
                    kwargs=job, on_row=finished,
                    on_lost=lambda case, error: finished(case, failed_row(case["id"], error, 0.0)))
    write_summary(list(rows.values()) if shard else folder_rows(out), summary)
    return [rows[c["id"]] for c in cases]


def _pool_case(case: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    seed = case.pop("seed", None)
    return run_case(case, seed=seed, **kwargs)


def folder_rows(out: Path) -> list[dict[str, Any]]:
    """A row for every case in the batch folder: done ones from their reports, failed ones from their records."""
    rows = {}
    for record in failures(out).values():
        rows[str(record["id"])] = failed_row(str(record["id"]), str(record.get("error", "")),
                                             float(record.get("seconds", 0.0)))
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        report = case_report(out, folder.name)
        if report is not None:
            rows[folder.name] = row_from_report(folder.name, report, report.get("timings_s", {}).get("total", 0.0))
    return list(rows.values())
