"""`lascarseg batch`: every case of a folder, each written as `segment` writes it, plus summary.csv.

A folder in a known data layout (la2018, LAScarQS 2022, 2018 challenge) brings its labels, so the
summary has metrics; a plain folder of images is segmented without. The model is loaded once.
Every case that can finish does; a failed case is a row with its error.
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
from ..infer.masks import LASeed
from ..core.outputs import check_output_dir
from ..model.loading import REGISTERED, load_for_inference, load_localiser
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


def _row(case_id: str, result=None, error: str = "", seconds: float = 0.0) -> dict[str, Any]:
    row = {k: "" for k in SUMMARY_COLUMNS}
    row.update(id=case_id, status="done" if result is not None else "failed", error=error, seconds=round(seconds, 2))
    if result is not None:
        r = result.report.to_json()
        row.update(la_volume_ml=r["la"]["volume_ml"], burden_surface_pct=r["scar"]["burden_surface_pct"],
                   utah_stage=r["scar"]["utah_stage"])
        m = r.get("metrics", {})
        row.update(dice=m.get("la", {}).get("dice", ""), hd95_mm=m.get("la", {}).get("hd95_mm", ""),
                   dice_scar=m.get("scar", {}).get("dice_scar", ""), gdice=m.get("scar", {}).get("gdice", ""))
    return row


def write_summary(rows: list[dict[str, Any]], path: Path) -> None:
    """summary.csv, replaced atomically (a reader never sees half a file)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


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


def run_batch(folder: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False, model: str | None = None,
              device: str = "auto", seeds: dict[str, LASeed] | None = None, log=print,
              **kwargs: Any) -> list[dict[str, Any]]:
    out = check_output_dir(out, overwrite)
    cases = find_cases(folder)
    unknown = sorted(set(seeds or {}) - {c["id"] for c in cases})
    if unknown:
        raise InputError(f"the seeds file names cases that are not in {folder}: {unknown[:10]}")
    loaded = load_for_inference(model, device)
    localiser = load_localiser(kwargs.pop("localiser", REGISTERED), device)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in cases:
        t0 = time.perf_counter()
        try:
            result = segment(case["image"], la_label=case["la_label"], scar_label=case["scar_label"], loaded=loaded,
                             localiser=localiser, la_seed=(seeds or {}).get(case["id"]), **kwargs)
            write_outputs(result, out / case["id"], overwrite=overwrite)
            rows.append(_row(case["id"], result, seconds=time.perf_counter() - t0))
        except Exception as exc:  # noqa: BLE001 - one bad case must not stop the batch
            rows.append(_row(case["id"], error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0))
        # after every case: a killed batch leaves its finished case folders and a summary of them
        write_summary(rows, out / "summary.csv")
        row = rows[-1]
        log(f"{case['id']}: done ({row['seconds']} s)" if row["status"] == "done" else
            f"{case['id']}: failed: {row['error']}")
    return rows
