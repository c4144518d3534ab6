"""Evaluation metrics: LA overlap and surface distances, and the paper's surface-based scar metrics.

LA (METHOD-NOTES section 3): Dice, Jaccard, ASD, HD (the maximum) and HD95 in mm, plus ASD and
HD95 in voxel units for comparison with the LA-segmentation literature.
Scar: the MICCAI-2020 protocol on the surface points of the MANUAL LA (`projection`), counted on
surface points only, never on background voxels.

Every result is a plain dict of Python floats / ints / None, so `json.dumps(..., allow_nan=False)`
accepts it: a quantity that is undefined (a distance to a surface that does not exist) is None,
never NaN or inf.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from ..core.distance import inner_boundary
from ..core.errors import InputError
from ..core.image import Volume, box_around
from .projection import DEFAULT_STEP_MM, EVAL_MAX_MM, EVAL_SIGMA_MM, NEITHER, SCAR, classify_pairs, evaluation_surface

LA_KEYS = ("dice", "jaccard", "asd_mm", "hd_mm", "hd95_mm", "asd_vox", "hd95_vox")
SCAR_KEYS = ("accuracy", "dice_scar", "dice_normal", "gdice")


def _mask(volume: Volume, what: str) -> np.ndarray:
    """A 0/1 label as bool; anything else (a probability, label values 255) is refused."""
    arr = np.asarray(volume.array)
    if arr.dtype == bool:
        return arr
    if arr.size and (arr.min() < 0 or arr.max() > 1 or (arr.dtype.kind == "f" and not np.all((arr == 0) | (arr == 1)))):
        raise InputError(f"{volume.source or what}: {what} must be a 0/1 mask, found values {np.unique(arr)[:10].tolist()}")
    return arr.astype(bool)


def _overlap(a: int, b: int, both: int) -> tuple[float, float]:
    """Dice and Jaccard from |A|, |B| and |A and B|; two empty sets agree perfectly (1.0)."""
    if a + b == 0:
        return 1.0, 1.0
    union = a + b - both
    return 2.0 * both / (a + b), both / union


def _surface_distances(sa: np.ndarray, sb: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm, float32) from each surface voxel of A to the surface of B, and of B to A.

    Exact nearest-neighbour distances between the voxel centres of the two surfaces (k-d trees;
    the same values as reading an exact Euclidean distance transform of one surface at the voxels
    of the other, without transforming the whole box). A voxel on both surfaces is at 0.
    """
    sp = np.asarray(spacing_zyx, dtype=np.float64)
    pa, pb = np.argwhere(sa) * sp, np.argwhere(sb) * sp  # C order, as boolean indexing reads them
    return _nearest_distances(pa, pb, sb[sa]), _nearest_distances(pb, pa, sa[sb])


def _nearest_distances(src: np.ndarray, dst: np.ndarray, on_dst: np.ndarray) -> np.ndarray:
    """Distance from each row of `src` to the nearest row of `dst`; rows flagged `on_dst` are 0."""
    out = np.zeros(len(src), np.float32)
    away = ~on_dst
    if away.any():
        tree = cKDTree(dst, balanced_tree=False, compact_nodes=False)
        out[away] = tree.query(src[away], k=1)[0]
    return out


def _distance_summary(d_ab: np.ndarray, d_ba: np.ndarray) -> tuple[float, float, float]:
    """ASD, HD and HD95 of the two directed surface-distance sets."""
    both = np.concatenate([d_ab, d_ba]).astype(np.float64)
    asd = float(both.mean())
    hd = float(both.max())
    hd95 = float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))
    return asd, hd, hd95


def la_metrics(pred: Volume, ref: Volume) -> dict[str, Any]:
    """LA overlap and surface distances of a predicted against a reference 0/1 mask (same grid).

    Surfaces are the boundary voxels (`distance.inner_boundary`: voxels with a 6-neighbour
    outside); distances are exact Euclidean distances (mm) from each voxel of one surface to the
    nearest voxel of the other, both directions pooled.
    - asd_mm: mean of all distances of both directions (average symmetric surface distance).
    - hd_mm: maximum of all of them (the symmetric Hausdorff distance, not HD95).
    - hd95_mm: the larger of the two directed 95th percentiles (as MONAI's hausdorff distance at percentile
      95; medpy's hd95 pools both directions first, which gives an equal or smaller value).
    - asd_vox, hd95_vox: the same with unit spacing in every axis, i.e. distances in index units
      of the image grid (what code that ignores the spacing reports). With anisotropic voxels
      this is not mm / spacing: a z step counts 1 like an x step.
    Empty masks: dice and jaccard are 0 when exactly one mask is empty and 1 when both are; the
    distances are None (undefined without two surfaces), which keeps the dict JSON-serialisable.
    Different grids raise `InputError` naming both (resample onto the reference grid first).
    """
    if not pred.geometry.same_grid(ref.geometry):
        raise InputError(f"{pred.source or 'prediction'}: prediction and reference are on different grids: "
                         f"prediction {pred.geometry.describe()}; reference {ref.geometry.describe()}")
    a = _mask(pred, "predicted LA")
    b = _mask(ref, "reference LA")
    na, nb = int(a.sum()), int(b.sum())
    dice, jaccard = _overlap(na, nb, int(np.count_nonzero(a & b)))
    out: dict[str, Any] = {"dice": dice, "jaccard": jaccard}
    if na == 0 or nb == 0:
        out.update({k: None for k in LA_KEYS[2:]})
        return out
    # only the box around both masks matters: every surface voxel lies in it
    box = box_around(a | b, pad=1)
    a, b = a[box], b[box]
    sa, sb = inner_boundary(a), inner_boundary(b)
    asd, hd, hd95 = _distance_summary(*_surface_distances(sa, sb, ref.spacing_zyx))
    asd_v, _, hd95_v = _distance_summary(*_surface_distances(sa, sb, (1.0, 1.0, 1.0)))
    out.update({"asd_mm": asd, "hd_mm": hd, "hd95_mm": hd95, "asd_vox": asd_v, "hd95_vox": hd95_v})
    return out


def _dice(tp: int, fp: int, fn: int) -> float:
    """2TP / (2TP + FP + FN); 1.0 when the class is absent from both (nothing to disagree on)."""
    den = 2 * tp + fp + fn
    return 1.0 if den == 0 else 2.0 * tp / den


def scar_surface_metrics(pred_scar: Volume, ref_scar: Volume, ref_wall: Volume, ref_la: Volume,
                         pred_wall: Volume | None = None, *, max_mm: float = EVAL_MAX_MM,
                         step_mm: float = DEFAULT_STEP_MM, sigma_mm: float = EVAL_SIGMA_MM) -> dict[str, Any]:
    """The paper's surface-based scar metrics (METHOD-NOTES section 3), on surface points only.

    The surface is the MANUAL LA's (`evaluation_surface(ref_la, sigma_mm)`). Manual and predicted
    scar are both labelled on it with `classify_along_normals` (first scar or wall voxel met,
    alternating outward and inward up to +-max_mm): the manual one with `ref_wall`, the predicted
    one with `pred_wall` (the wall band of the predicted LA) when given, else `ref_wall`; scar
    and wall are searched in the same order, so which wall is used decides only whether a
    predicted scar farther out than the wall is still met.
    Points the manual labels cannot classify (no wall within max_mm: vein ends, mitral opening)
    have no ground truth and are excluded (`n_excluded`); a point the prediction cannot
    classify counts as predicted normal, since the prediction did not call it scar.
    TP both scar, FP predicted only, FN manual only, TN both normal, over the N points:
    accuracy (TP+TN)/N, dice_scar 2TP/(2TP+FP+FN), dice_normal 2TN/(2TN+FN+FP),
    gdice (|GT scar| dice_scar + |GT normal| dice_normal) / N. A Dice whose class is absent from
    both is 1.0; with no evaluable point every metric is None. Volumes may lie on different grids
    (each is sampled through its own geometry).
    """
    points, normals = evaluation_surface(ref_la, sigma_mm)
    # both labellings in one pass (a point's label depends on that point alone, so labelling the
    # prediction at every point and keeping the valid ones is the same as labelling only those)
    ref_cls, pred_all = classify_pairs([(ref_scar, ref_wall),
                                        (pred_scar, pred_wall if pred_wall is not None else ref_wall)],
                                       points, normals, max_mm, step_mm)
    valid = ref_cls != NEITHER
    pred_cls = pred_all[valid]
    gt = ref_cls[valid] == SCAR
    pr = pred_cls == SCAR
    n = int(valid.sum())
    tp = int(np.count_nonzero(gt & pr))
    fp = int(np.count_nonzero(~gt & pr))
    fn = int(np.count_nonzero(gt & ~pr))
    tn = n - tp - fp - fn
    out: dict[str, Any] = {"accuracy": None, "dice_scar": None, "dice_normal": None, "gdice": None,
                           "n_points": n, "n_excluded": int(len(ref_cls) - n)}
    if n == 0:
        return out
    dice_scar, dice_normal = _dice(tp, fp, fn), _dice(tn, fn, fp)
    out.update({"accuracy": (tp + tn) / n, "dice_scar": dice_scar, "dice_normal": dice_normal,
                "gdice": ((tp + fn) * dice_scar + (tn + fp) * dice_normal) / n})
    return out
