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
from ..infer.masks import LASeed, Prediction, la_mask
from ..model.loading import REGISTERED, LoadedModel, load_for_inference, load_localiser
from ..quantify.metrics import la_metrics
from ..quantify.readout import read_out, scar_burdens
from ..quantify.report import ModelInfo
from ..quantify.stages import la_volume_ml, utah_stage
from ..synth.holdout import make_holdout_chest
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


def _find_la(loaded: LoadedModel, image: Volume, keep_largest: bool = True,
             localiser: LoadedModel | None = None, seed: LASeed | None = None) -> tuple[Prediction, Volume, int] | None:
    """The model on `image` as the product runs it (fine passes where the LA is in doubt, then the
    LA mask): (prediction, LA mask, components removed), or None when no LA is found (scored as a
    miss, not a reason to stop)."""
    pred = predict_localised(loaded, image, keep_largest=keep_largest, localiser=localiser, seed=seed)
    try:
        la, removed = la_mask(pred.la, keep_largest, pred.seed)
    except NoLAFound:
        return None
    return pred, la, removed


def evaluate_real(loaded: LoadedModel, root: str, ids: Sequence[str] | None, log: Log,
                  keep_largest: bool = True, localiser: LoadedModel | None = None) -> dict[str, Any]:
    """LA metrics on real cases with manual LA labels (any model with an LA output)."""
    ds = open_dataset(root)
    ids = list(ids) if ids else ds.ids()
    rows = []
    for cid in ids:
        case = ds.load(cid)
        t0 = time.perf_counter()
        found = _find_la(loaded, case.image, keep_largest, localiser)
        if found is None:
            rows.append({"id": cid, "la_found": False, "dice": 0.0, "jaccard": 0.0,
                         "seconds": round(time.perf_counter() - t0, 2)})
            log(f"  {cid}: no LA found (Dice 0)")
            continue
        m = la_metrics(found[1], case.la)
        rows.append({"id": cid, "la_found": True, **m, "components_removed": found[2],
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


def _phantom_row(seed: int, ph: Phantom, loaded: LoadedModel, found: tuple[Prediction, Volume, int]) -> dict[str, Any]:
    """One phantom's row: LA metrics and, for a model with a scar output, the report's scar metrics
    and each burden beside the truth measured the same way. The report is `read_out`'s, as
    `segment` makes it, with the phantom's truth as the manual labels."""
    pred, la, removed = found
    row: dict[str, Any] = {"seed": seed, "la_found": True, **{f"la_{k}": v for k, v in la_metrics(la, ph.la).items()}}
    if pred.p_scar is None:  # an LA-only variant
        return row
    card = loaded.card
    report = read_out(ph.image, pred, la, card=card, model=ModelInfo(card["name"], card["version"], loaded.sha256),
                      labels={"la": ph.la, "scar": ph.scar, "wall": ph.wall}, components_removed=removed).report
    row.update(report.metrics["scar"])
    row["true_burden_pct"] = ph.info.get("burden_pct")
    truth = phantom_true_burdens(ph, float(card["wall_band_mm"]))
    predicted = {"burden_surface_pct": report.scar.burden_surface_pct, "burden_wall_pct": report.scar.burden_wall_pct}
    for kind in ("surface", "wall"):
        key = f"burden_{kind}_pct"
        row[key], row[f"true_{key}"] = predicted[key], truth[key]
        row[f"burden_{kind}_error"] = round(predicted[key] - truth[key], 2)
    # the stage report.json gives (from the surface burden) against the truth's
    row["utah_stage"], row["true_utah_stage"] = report.scar.utah_stage, utah_stage(row["true_burden_surface_pct"])
    row["utah_stage_agrees"] = float(row["utah_stage"] == row["true_utah_stage"])
    return row


#: A found LA is right when its Dice with the truth is at least this (issue: whole-scan localisation).
LA_RIGHT_DICE = 0.85


def evaluate_phantoms(loaded: LoadedModel, seeds: Sequence[int], log: Log, full_fov: bool = False,
                      make: Callable[[int], Any] | None = None, what: str | None = None,
                      localiser: LoadedModel | None = None, seeded: bool = False) -> dict[str, Any]:
    """LA and surface scar metrics on fresh phantoms, and the scar burdens' errors against the truth
    measured the same way (`phantom_true_burdens`); `full_fov`: whole chests with the LA off centre
    (the LA must be found among the other blood pools, as in a scan that is not cropped). `make`:
    another generator of cases with image, la, wall, scar and info (the hold-out chests), named by
    `what`. Each row also says how the LA was found (mode, confidence, doubtful) and whether it is
    right (LA Dice >= LA_RIGHT_DICE); the summary counts wrong ones flagged and right ones doubted.
    `seeded`: each case runs again with a point inside the true LA (the voxel nearest its centre), as
    a user would place it: `seed_la_dice`."""
    rows = []
    for seed in seeds:
        ph = make(seed) if make is not None else make_phantom(seed, full_fov=full_fov)
        found = _find_la(loaded, ph.image, localiser=localiser)
        if found is None:  # scored as a miss: LA Dice 0, and no LA surface to score scar on
            rows.append({"seed": seed, "la_found": False, "la_dice": 0.0, "true_burden_pct": ph.info.get("burden_pct")})
            log(f"  phantom {seed}: no LA found (Dice 0)")
            continue
        row = _phantom_row(seed, ph, loaded, found)
        loc = found[0].localisation
        if loc is not None:
            row.update(localisation_confidence=round(float(loc.confidence), 3), localisation_doubtful=bool(loc.doubtful))
        row["la_right"] = bool(row["la_dice"] >= LA_RIGHT_DICE)
        if seeded:
            row["seed_la_dice"] = _seeded_dice(loaded, ph)
        rows.append(row)
        log(f"  phantom {seed}: " + _row_text(row))
    keys = ["la_dice", "la_hd95_mm", "accuracy", "dice_scar", "dice_normal", "gdice", "burden_surface_error",
            "burden_wall_error", "utah_stage_agrees", "seed_la_dice"]
    what = what or (f"fresh {'full-field-of-view (640x640x88, LA off centre) ' if full_fov else ''}synthetic LGE "
                     "phantoms (never seen in training)")
    return {"source": what, "seeds": list(seeds), "n": len(rows), "la_not_found": sum(not r["la_found"] for r in rows),
            "localisation": _flag_rates(rows), "summary": _summary(rows, keys), "cases": rows}


def _seeded_dice(loaded: LoadedModel, ph: Any) -> float:
    """LA Dice with a point placed inside the true LA, at its voxel nearest the LA's centre."""
    inside = np.argwhere(ph.la.array)
    zyx = inside[np.argmin(((inside - inside.mean(axis=0)) ** 2).sum(axis=1))]
    found = _find_la(loaded, ph.image, seed=LASeed(ijk=(float(zyx[2]), float(zyx[1]), float(zyx[0]))))
    return 0.0 if found is None else float(la_metrics(found[1], ph.la)["dice"])


def _row_text(row: dict[str, Any]) -> str:
    """One phantom's line of the log (a metric that does not apply, None, shows as n/a)."""
    def f(key: str, spec: str) -> str:
        return "n/a" if row.get(key) is None else format(row[key], spec)

    text = f"LA Dice {f('la_dice', '.4f')}"
    if "dice_scar" in row:
        text += (f"  surface Dice_scar {f('dice_scar', '.4f')}  GDice {f('gdice', '.4f')}  burden error surface "
                 f"{f('burden_surface_error', '+.1f')} / wall {f('burden_wall_error', '+.1f')} points, Utah "
                 f"{row['utah_stage']} (truth {row['true_utah_stage']})")
    if "seed_la_dice" in row:
        text += f"  with a point in the LA: LA Dice {row['seed_la_dice']:.4f}"
    if "localisation_confidence" in row:
        text += (f"  localisation {row['localisation_confidence']:.2f}"
                 f"{' doubtful' if row['localisation_doubtful'] else ''}")
    return text


def _flag_rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How many LAs are right (Dice >= LA_RIGHT_DICE), how many wrong ones the localisation flagged as
    doubtful (a miss, no LA found, counts as flagged: it exits asking for a point) and how many right
    ones it doubted."""
    right = [r for r in rows if r.get("la_right")]
    wrong = [r for r in rows if not r.get("la_right")]
    flagged = [r for r in wrong if r.get("localisation_doubtful", True)]
    doubted = [r for r in right if r.get("localisation_doubtful")]
    out = {"right": len(right), "wrong": len(wrong), "wrong_flagged": len(flagged), "right_doubted": len(doubted),
           "right_dice_threshold": LA_RIGHT_DICE}
    seeded = [r["seed_la_dice"] for r in rows if "seed_la_dice" in r]
    if seeded:
        out["right_with_a_point"] = sum(d >= LA_RIGHT_DICE for d in seeded)
    return out


def run_evaluation(model: str | None, *, real_root: str | None = None, ids: Sequence[str] | None = None,
                   phantom_seeds: Sequence[int] = (), full_fov_seeds: Sequence[int] = (),
                   whole_scan_seeds: Sequence[int] = (), device: str = "auto", log: Log = print,
                   localiser: str | None = REGISTERED) -> dict[str, Any]:
    loaded = load_for_inference(model, device)
    loc = load_localiser(localiser, device)
    result: dict[str, Any] = {"model": {"name": loaded.card["name"], "version": loaded.card["version"],
                                        "sha256": loaded.sha256},
                              "device": loaded.device,
                              "command": "lascarseg " + " ".join(shlex.quote(a) for a in sys.argv[1:])
                              if Path(sys.argv[0]).name.startswith("lascarseg") else None}
    if real_root:
        log(f"real cases from {real_root}:")
        result["real"] = evaluate_real(loaded, real_root, ids, log, localiser=loc)
    if phantom_seeds:
        log(f"phantoms {phantom_seeds[0]}..{phantom_seeds[-1]}:")
        result["phantoms"] = evaluate_phantoms(loaded, phantom_seeds, log, localiser=loc)
    if full_fov_seeds:
        log(f"full-field-of-view phantoms {full_fov_seeds[0]}..{full_fov_seeds[-1]}:")
        result["full_fov_phantoms"] = evaluate_phantoms(loaded, full_fov_seeds, log, full_fov=True, localiser=loc)
    if whole_scan_seeds:
        log(f"whole-scan hold-out chests {whole_scan_seeds[0]}..{whole_scan_seeds[-1]}:")
        result["whole_scan_phantoms"] = evaluate_phantoms(
            loaded, whole_scan_seeds, log, make=make_holdout_chest, localiser=loc, seeded=True,
            what="fresh whole-chest scans from the hold-out generator (other shapes and appearance than training)")
    return result


def ids_from_split(path: str | Path, source_index: int = 0) -> list[str]:
    """Validation case ids of a training run's split.json (entries "<source>:<id>")."""
    split = json.loads(Path(path).read_text())
    return [v.split(":", 1)[1] for v in split["val"] if v.split(":", 1)[0] == str(source_index)]
