"""Evaluate a model on held-out real LA labels and on fresh synthetic phantoms.

Real cases (la2018 layout or any reader): LA metrics at each case's native resolution.
Phantoms (seeds never used in training): LA metrics and the paper's surface-based scar metrics
(the evaluation protocol of CONTRACTS section 6). Scar numbers are on synthetic scar only.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core.datasets import open_dataset
from ..core.distance import wall_band
from ..core.errors import NoLAFound
from ..core.image import Volume
from ..infer.localise import predict_localised
from ..infer.masks import la_mask
from ..model.loading import LoadedModel, load_for_inference
from ..quantify.readout import PipelineResult, read_out, scar_burdens
from ..quantify.report import ModelInfo
from ..quantify.stages import la_volume_ml, utah_stage
from ..synth.phantom import Phantom, make_phantom

Log = Callable[[str], None]


def _summary(rows: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None and np.isfinite(r[k])]
        if vals:
            out[k] = {"mean": round(float(np.mean(vals)), 4), "sd": round(float(np.std(vals)), 4),
                      "min": round(float(np.min(vals)), 4), "n": len(vals)}
    return out


def _read_out(loaded: LoadedModel, image: Volume, labels: dict[str, Volume],
              keep_largest: bool = True) -> PipelineResult | None:
    """The model on `image` through the product's own path (fine passes, LA mask, `read_out`) with
    `labels` as the manual labels; None when no LA is found (scored as a miss, not a reason to stop)."""
    pred = predict_localised(loaded, image, keep_largest=keep_largest)
    try:
        la, removed = la_mask(pred.la, keep_largest)
    except NoLAFound:
        return None
    card = loaded.card
    return read_out(image, pred, la, card=card, model=ModelInfo(card["name"], card["version"], loaded.sha256),
                    labels=labels, components_removed=removed)


def evaluate_real(loaded: LoadedModel, root: str, ids: Sequence[str] | None, log: Log,
                  keep_largest: bool = True) -> dict[str, Any]:
    ds = open_dataset(root)
    ids = list(ids) if ids else ds.ids()
    rows = []
    for cid in ids:
        case = ds.load(cid)
        t0 = time.perf_counter()
        result = _read_out(loaded, case.image, {"la": case.la}, keep_largest)
        if result is None:  # a miss is a result (Dice 0), not a reason to stop the evaluation
            rows.append({"id": cid, "la_found": False, "dice": 0.0, "jaccard": 0.0,
                         "seconds": round(time.perf_counter() - t0, 2)})
            log(f"  {cid}: no LA found (Dice 0)")
            continue
        m = result.report.metrics["la"]
        rows.append({"id": cid, "la_found": True, **m, "components_removed": result.report.la.components_removed,
                     "seconds": round(time.perf_counter() - t0, 2)})
        log(f"  {cid}: LA Dice {m['dice']:.4f}  HD95 {m['hd95_mm']} mm")
    keys = ["dice", "jaccard", "asd_mm", "hd_mm", "hd95_mm", "asd_vox", "hd95_vox"]
    return {"source": str(root), "n": len(rows), "la_not_found": sum(not r["la_found"] for r in rows),
            "summary": _summary(rows, keys), "cases": rows}


def phantom_true_burdens(ph: Phantom, wall_band_mm: float) -> dict[str, float]:
    """The phantom's true LA volume and scar burdens, measured as the report measures the prediction.

    The surface burden projects the true scar onto the true LA's surface with the product's band,
    beside report.scar.burden_surface_pct; the wall burden is true scar voxels over the model's wall
    band (`wall_band_mm`, from its card) around the true LA, beside report.scar.burden_wall_pct.
    (The phantom's own voxel burden, scar over its thinner true wall, is ph.info["burden_pct"].)
    """
    return {"la_volume_ml": round(la_volume_ml(ph.la), 2),
            **scar_burdens(ph.la, ph.scar, wall_band(ph.la, wall_band_mm))}


def _phantom_row(seed: int, ph: Phantom, result: PipelineResult, wall_mm: float) -> dict[str, Any]:
    """One phantom's row: LA and scar metrics, and each burden beside the truth measured the same way."""
    report = result.report
    row: dict[str, Any] = {"seed": seed, "la_found": True, **{f"la_{k}": v for k, v in report.metrics["la"].items()},
                           **report.metrics["scar"], "true_burden_pct": ph.info.get("burden_pct")}
    truth = phantom_true_burdens(ph, wall_mm)
    predicted = {"burden_surface_pct": report.scar.burden_surface_pct, "burden_wall_pct": report.scar.burden_wall_pct}
    for kind in ("surface", "wall"):
        key = f"burden_{kind}_pct"
        row[key], row[f"true_{key}"] = predicted[key], truth[key]
        row[f"burden_{kind}_error"] = round(predicted[key] - truth[key], 2)
    # the stage report.json gives (from the surface burden) against the truth's
    row["utah_stage"], row["true_utah_stage"] = report.scar.utah_stage, utah_stage(row["true_burden_surface_pct"])
    row["utah_stage_agrees"] = float(row["utah_stage"] == row["true_utah_stage"])
    return row


def evaluate_phantoms(loaded: LoadedModel, seeds: Sequence[int], log: Log, full_fov: bool = False) -> dict[str, Any]:
    """LA and surface scar metrics on fresh phantoms, and the scar burdens' errors against the truth
    measured the same way (`phantom_true_burdens`); `full_fov`: whole chests with the LA off centre
    (the LA must be found among the other blood pools, as in a scan that is not cropped)."""
    rows = []
    for seed in seeds:
        ph = make_phantom(seed, full_fov=full_fov)
        result = _read_out(loaded, ph.image, {"la": ph.la, "scar": ph.scar, "wall": ph.wall})
        if result is None:  # scored as a miss: LA Dice 0, and no LA surface to score scar on
            rows.append({"seed": seed, "la_found": False, "la_dice": 0.0, "true_burden_pct": ph.info.get("burden_pct")})
            log(f"  phantom {seed}: no LA found (Dice 0)")
            continue
        row = _phantom_row(seed, ph, result, float(loaded.card["wall_band_mm"]))
        rows.append(row)
        log(f"  phantom {seed}: LA Dice {row['la_dice']:.4f}  surface Dice_scar {row['dice_scar']:.4f}  GDice "
            f"{row['gdice']:.4f}  burden error surface {row['burden_surface_error']:+.1f} / wall "
            f"{row['burden_wall_error']:+.1f} points, Utah {row['utah_stage']} (truth {row['true_utah_stage']})")
    keys = ["la_dice", "la_hd95_mm", "accuracy", "dice_scar", "dice_normal", "gdice", "burden_surface_error",
            "burden_wall_error", "utah_stage_agrees"]
    what = "full-field-of-view (640x640x88, LA off centre) " if full_fov else ""
    return {"source": f"fresh {what}synthetic LGE phantoms (never seen in training)", "seeds": list(seeds),
            "n": len(rows), "la_not_found": sum(not r["la_found"] for r in rows),
            "summary": _summary(rows, keys), "cases": rows}


def run_evaluation(model: str | None, *, real_root: str | None = None, ids: Sequence[str] | None = None,
                   phantom_seeds: Sequence[int] = (), full_fov_seeds: Sequence[int] = (), device: str = "auto",
                   log: Log = print) -> dict[str, Any]:
    loaded = load_for_inference(model, device)
    result: dict[str, Any] = {"model": {"name": loaded.card["name"], "version": loaded.card["version"],
                                        "sha256": loaded.sha256},
                              "device": loaded.device,
                              "command": "lascarseg " + " ".join(shlex.quote(a) for a in sys.argv[1:])
                              if Path(sys.argv[0]).name.startswith("lascarseg") else None}
    if real_root:
        log(f"real cases from {real_root}:")
        result["real"] = evaluate_real(loaded, real_root, ids, log)
    if phantom_seeds:
        log(f"phantoms {phantom_seeds[0]}..{phantom_seeds[-1]}:")
        result["phantoms"] = evaluate_phantoms(loaded, phantom_seeds, log)
    if full_fov_seeds:
        log(f"full-field-of-view phantoms {full_fov_seeds[0]}..{full_fov_seeds[-1]}:")
        result["full_fov_phantoms"] = evaluate_phantoms(loaded, full_fov_seeds, log, full_fov=True)
    return result


def ids_from_split(path: str | Path, source_index: int = 0) -> list[str]:
    """Validation case ids of a training run's split.json (entries "<source>:<id>")."""
    split = json.loads(Path(path).read_text())
    return [v.split(":", 1)[1] for v in split["val"] if v.split(":", 1)[0] == str(source_index)]
