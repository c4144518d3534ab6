"""Conventional LA-scar baselines a clinical tool offers (METHOD-NOTES section 4).

They run on a given or predicted LA (0/1 mask on the image grid) and the LGE image, so the
network can be compared with what a clinician would otherwise use, on the same surface:

- Surface methods (CemrgApp style): every point of the LA mesh gets the maximum, along its
  outward normal from -1 to +3 mm in 0.5 mm steps, of the image's 3x3x3 voxel maximum. The
  point is scar when that intensity exceeds a threshold: an image intensity ratio (IIR) to the
  blood-pool mean, 0.97 / 1.61 (Khurram 2014) and 1.20 (Benito 2017), or the blood-pool
  mean + k SD, k = 2.3 / 3.3. Names: "iir-0.97", "iir-1.20", "iir-1.61", "mean+2.3sd",
  "mean+3.3sd".
- Voxel methods on the wall band (CONTRACTS section 2): "otsu" (Otsu's threshold of the wall-band
  intensities) and "gmm" (1D EM with two non-scar and one scar Gaussian, initialised from a
  three-class Otsu, as the paper's LAM+MGMM baseline). Their voxel mask is projected onto the
  mesh like the network's scar mask.

Blood pool: the LA eroded by 3 mm (a distance in mm, so any spacing), the whole LA when nothing is
that deep. Intensity ratios need a zero signal level. The project's real images are z-scored
(their zero is the volume mean; blood, wall and even negative values are common), where a plain
wall / blood-pool ratio is meaningless. Ratios are therefore taken above a zero level z0, by
default the image's 0.5th intensity percentile (air and lung), as `phantom.paint_synthetic_scar`
does: IIR = (I - z0) / (blood-pool mean - z0). This makes every result invariant to a positive
affine rescaling of the image (z-scoring included); on raw magnitude images z0 is the noise floor
and the IIR is within a few percent of the plain ratio. Pass `zero_level=0.0` for the literature's
plain ratio on raw magnitudes.

Burden is area-weighted on the mesh (`projection.point_areas`). `baseline_surface_metrics` scores
every method as the network is scored (the paper's accuracy, dice_scar, dice_normal, gdice).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..core.distance import DEFAULT_WALL_BAND_MM, distance_to, wall_band
from ..core.errors import InputError
from ..core.image import Geometry, Volume, box_around, crop
from .metrics import scar_surface_metrics
from .projection import (
    DEFAULT_STEP_MM,
    EVAL_MAX_MM,
    EVAL_SIGMA_MM,
    PRODUCT_BAND_MM,
    la_surface_mesh,
    mesh_points_normals,
    point_areas,
    project,
)

DEFAULT_IIR_THRESHOLDS = (0.97, 1.20, 1.61)
DEFAULT_SD_K = (2.3, 3.3)
BLOOD_POOL_EROSION_MM = 3.0
ZERO_PERCENTILE = 0.5  # z0: the image's 0.5th intensity percentile
VOXEL_METHODS = ("otsu", "gmm")
OTSU_BINS = 256
GMM_MAX_ITER = 300
GMM_TOL = 1e-7  # change of the mean log-likelihood (standardised intensities) that stops EM
SURFACE_KIND, VOXEL_KIND = "surface", "voxel"


# --------------------------------------------------------------------------------- results
@dataclass
class BaselineResult:
    """One baseline on one image: per-point scar on the LA mesh, burden and how it was decided.

    point_scar: (P,) uint8 per mesh point. point_values: the per-point quantity that was thresholded
    (IIR, or the projected max intensity in image units for mean+k*SD), None for voxel methods.
    scar_mask: voxel scar (wall-band voxels): thresholded voxels for "otsu" / "gmm"; for surface
        methods the wall-band voxels whose nearest mesh point is scar (`point_scar_to_voxels`),
        so that every method is scored by one protocol and shown as one kind of segment.
    threshold: the intensity threshold used, in image units (None when GMM found no scar).
    points, normals: the mesh points (LPS mm) and outward normals the projection used.
    wall_band: the wall band of the LA (the predicted wall for the metrics).
    """

    method: str
    kind: str
    point_scar: np.ndarray
    burden_surface_pct: float
    threshold: float | None
    info: dict[str, Any]
    scar_mask: Volume | None = None
    point_values: np.ndarray | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), repr=False)
    normals: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), repr=False)
    wall_band: Volume | None = field(default=None, repr=False)


@dataclass(frozen=True)
class BloodPool:
    """Blood-pool statistics: mean and SD of the LGE intensity in the eroded LA (image units)."""
    mean: float
    sd: float
    n_voxels: int
    eroded: bool  # False: no voxel was deeper than the erosion, the whole LA was used


@dataclass(frozen=True)
class GMMFit:
    """A 1D Gaussian mixture, components in ascending order of mean (the last is scar)."""
    weights: np.ndarray
    means: np.ndarray
    sds: np.ndarray
    log_likelihood: float  # mean per value, in the units of the values
    n_iter: int
    converged: bool

    def log_joint(self, x: np.ndarray) -> np.ndarray:
        """log(w_k N(x | mu_k, sd_k)), shape (N, K)."""
        x = np.asarray(x, np.float64)[:, None]
        var = self.sds ** 2
        return np.log(self.weights) - 0.5 * (np.log(2.0 * np.pi * var) + (x - self.means) ** 2 / var)

    def posteriors(self, x: np.ndarray) -> np.ndarray:
        """Responsibilities (N, K), computed with log-sum-exp so far tails do not underflow to 0/0."""
        lj = self.log_joint(x)
        return np.exp(lj - _logsumexp(lj))

    def as_dict(self) -> dict[str, Any]:
        return {"weights": [float(v) for v in self.weights], "means": [float(v) for v in self.means],
                "sds": [float(v) for v in self.sds], "log_likelihood": float(self.log_likelihood),
                "n_iter": int(self.n_iter), "converged": bool(self.converged)}


# ------------------------------------------------------------------------------ statistics
def _mask(volume: Volume, what: str) -> np.ndarray:
    arr = np.asarray(volume.array)
    if arr.dtype != bool and not bool(((arr == 0) | (arr == 1)).all()):
        values = np.unique(arr)[:10].tolist()
        raise InputError(f"{volume.source or what}: {what} must be a 0/1 mask, found values {values}")
    return arr.astype(bool)


def blood_pool_mask(la: Volume, erosion_mm: float = BLOOD_POOL_EROSION_MM) -> tuple[np.ndarray, bool]:
    """LA voxels farther than `erosion_mm` (mm, any spacing) from the outside, and whether any was.

    Partial volume and wall enhancement contaminate the LA's rim, so the literature's blood pool is
    the eroded LA; a thin LA (nothing that deep) falls back to the whole LA (second value False).
    Outside the image counts as outside the LA.
    """
    m = _mask(la, "LA mask")
    if not m.any():
        raise InputError(f"{la.source or 'LA mask'}: LA mask is empty; no blood pool")
    box = box_around(m, 1)
    sub = np.pad(m[box], 1)
    deep_sub = (distance_to(~sub, la.spacing_zyx) > float(erosion_mm))[1:-1, 1:-1, 1:-1]
    if not deep_sub.any():
        return m, False
    deep = np.zeros_like(m)
    deep[box] = deep_sub
    return deep, True


def blood_pool_stats(image: Volume, la: Volume, erosion_mm: float = BLOOD_POOL_EROSION_MM) -> BloodPool:
    """Mean and SD (population) of the image in the blood pool (`blood_pool_mask`)."""
    _same_grid(image, la)
    bp, eroded = blood_pool_mask(la, erosion_mm)
    vals = np.asarray(image.array)[bp].astype(np.float64)
    return BloodPool(float(vals.mean()), float(vals.std()), int(vals.size), eroded)


def zero_level(image: Volume, percentile: float = ZERO_PERCENTILE) -> float:
    """The zero-signal level z0 that intensity ratios are taken above (module docstring)."""
    return float(np.percentile(np.asarray(image.array), percentile))


def otsu_threshold(values: np.ndarray, bins: int = OTSU_BINS) -> float:
    """Otsu's threshold of 1D values (maximum between-class variance on a `bins` histogram).

    Returned as the upper edge of the last bin of the dark class: value > threshold is bright.
    """
    return float(multi_otsu_thresholds(values, 2, bins)[0])


def multi_otsu_thresholds(values: np.ndarray, classes: int = 2, bins: int = OTSU_BINS) -> np.ndarray:
    """Otsu's thresholds for 2 or 3 classes, by exhaustive search over histogram bin edges.

    Vectorised over all threshold pairs with cumulative sums (bins^2 / 2 pairs for 3 classes).
    """
    x = np.asarray(values, np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < classes:
        raise InputError(f"Otsu needs at least {classes} values, got {x.size}")
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.full(classes - 1, lo)
    hist, edges = np.histogram(x, bins=bins, range=(lo, hi))
    p = hist / hist.sum()
    centres = 0.5 * (edges[:-1] + edges[1:])
    w = np.concatenate([[0.0], np.cumsum(p)])  # w[i]: mass of bins < i
    s = np.concatenate([[0.0], np.cumsum(p * centres)])

    def between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """sum over a class of bins [a, b) of w * mu^2 (maximising it maximises between-class variance)."""
        wc = w[b] - w[a]
        return np.divide((s[b] - s[a]) ** 2, wc, out=np.zeros_like(wc), where=wc > 0)

    if classes == 2:
        k = np.arange(1, bins)
        score = between(np.zeros_like(k), k) + between(k, np.full_like(k, bins))
        i = int(k[np.argmax(score)])
        return np.array([edges[i]])
    if classes == 3:
        i, j = np.triu_indices(bins + 1, 1)
        keep = (i >= 1) & (j <= bins - 1)
        i, j = i[keep], j[keep]
        score = between(np.zeros_like(i), i) + between(i, j) + between(j, np.full_like(j, bins))
        best = int(np.argmax(score))
        return np.array([edges[i[best]], edges[j[best]]])
    raise InputError(f"multi-level Otsu supports 2 or 3 classes, got {classes}")


def _logsumexp(a: np.ndarray) -> np.ndarray:
    """log(sum(exp(a), axis=1)) as a column, stable for very negative entries."""
    m = a.max(axis=1, keepdims=True)
    return m + np.log(np.exp(a - m).sum(axis=1, keepdims=True))


def fit_gmm_1d(values: np.ndarray, n_components: int = 3, *, max_iter: int = GMM_MAX_ITER,
               tol: float = GMM_TOL) -> GMMFit:
    """EM for a 1D Gaussian mixture, initialised from a multi-class Otsu split (deterministic).

    Runs on standardised values (so the variance floor and `tol` do not depend on the image scale),
    in log space with log-sum-exp; stops when the mean log-likelihood changes by less than `tol` or
    after `max_iter` iterations. Variances are floored at 1e-4 of the data variance so a component
    cannot collapse onto a few identical values. Components come back sorted by mean.
    """
    if n_components not in (2, 3):
        raise InputError(f"the GMM baseline uses 2 or 3 components, got {n_components}")
    x = np.asarray(values, np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < 10 * n_components:
        raise InputError(f"too few wall values ({x.size}) to fit a {n_components}-component mixture")
    centre, scale = float(x.mean()), float(x.std())
    if not scale > 0:
        raise InputError("wall intensities are constant; a mixture cannot be fitted")
    z = (x - centre) / scale
    floor = 1e-4
    cuts = multi_otsu_thresholds(z, n_components)
    label = np.searchsorted(cuts, z, side="left")  # value <= cut -> lower class
    counts = np.bincount(label, minlength=n_components).astype(np.float64)
    if np.any(counts < 2):  # degenerate split: fall back to quantile classes
        label = np.minimum((np.argsort(np.argsort(z, kind="stable"), kind="stable") * n_components) // z.size,
                           n_components - 1)
        counts = np.bincount(label, minlength=n_components).astype(np.float64)
    means = np.bincount(label, weights=z, minlength=n_components) / counts
    var = np.bincount(label, weights=(z - means[label]) ** 2, minlength=n_components) / counts
    var = np.maximum(var, floor)
    weights = counts / z.size
    zc = z[:, None]
    prev = -np.inf
    ll = -np.inf
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        # E step (log space)
        lj = np.log(weights) - 0.5 * (np.log(2.0 * np.pi * var) + (zc - means) ** 2 / var)
        lse = _logsumexp(lj)
        ll = float(lse.mean())
        resp = np.exp(lj - lse)
        # M step
        nk = resp.sum(axis=0) + 1e-12
        weights = nk / z.size
        means = (resp * zc).sum(axis=0) / nk
        var = np.maximum((resp * (zc - means) ** 2).sum(axis=0) / nk, floor)
        if abs(ll - prev) < tol:
            converged = True
            break
        prev = ll
    order = np.argsort(means, kind="stable")
    return GMMFit(weights=weights[order], means=centre + scale * means[order], sds=scale * np.sqrt(var[order]),
                  log_likelihood=ll - float(np.log(scale)), n_iter=it, converged=converged)


def gmm_scar_threshold(fit: GMMFit, upper: float, samples: int = 4096) -> float | None:
    """The lowest intensity above the middle component's mean where the scar posterior exceeds 0.5.

    Applied as a threshold, the posterior rule stays monotone: with unequal variances a Gaussian's
    tail can dominate again far from its mean (the darkest voxels under a wide scar component, the
    brightest under a wide normal one), and neither is what the rule means. None: no such intensity
    up to `upper` (no scar).
    """
    lo = float(fit.means[-2])
    if not upper > lo:
        return None
    grid = np.linspace(lo, float(upper), samples)
    over = fit.posteriors(grid)[:, -1] > 0.5
    return float(grid[int(np.argmax(over))]) if over.any() else None


# --------------------------------------------------------------------------- the methods
def method_names(iir_thresholds: Sequence[float] = DEFAULT_IIR_THRESHOLDS,
                 sd_k: Sequence[float] = DEFAULT_SD_K) -> list[str]:
    """Method names for the configured thresholds, e.g. iir-1.20, mean+2.3sd, otsu, gmm."""
    return ([_iir_name(t) for t in iir_thresholds] + [_sd_name(k) for k in sd_k] + list(VOXEL_METHODS))


#: Names with other thresholds than the configured ones: iir-1.32, mean+2.8sd.
_IIR_NAME = re.compile(r"iir-(\d+(?:\.\d+)?)")
_SD_NAME = re.compile(r"mean\+(\d+(?:\.\d+)?)sd")


def _iir_name(t: float) -> str:
    return f"iir-{float(t):.2f}"


def _sd_name(k: float) -> str:
    return f"mean+{float(k):g}sd"


def _same_grid(image: Volume, la: Volume) -> None:
    if not image.geometry.same_grid(la.geometry):
        raise InputError(f"{la.source or 'LA mask'}: LA grid differs from the image {image.source or ''}: "
                         f"LA {la.geometry.describe()}; image {image.geometry.describe()}")


def _check_positive(values: Sequence[float], what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not all(np.isfinite(v) and v > 0 for v in out):
        raise InputError(f"{what} must be positive numbers, got {list(values)}")
    return out


def wall_max_projection(image: Volume, points: np.ndarray, normals: np.ndarray,
                        band_mm: tuple[float, float] = PRODUCT_BAND_MM, step_mm: float = DEFAULT_STEP_MM,
                        z0: float = 0.0) -> np.ndarray:
    """Per point, the maximum along the normal band of the image's 3x3x3 voxel maximum, minus z0.

    The maximum filter runs once, on a box around the points wide enough for the band (plus a
    voxel for the filter and for interpolation), so a full field of view costs no more than a crop.
    The image is shifted by z0 before sampling, so a sample outside the image reads zero signal.
    """
    p = np.asarray(points, np.float64)
    geo = image.geometry
    if len(p) == 0:
        return np.zeros(0, np.float32)
    reach = max(abs(float(band_mm[0])), abs(float(band_mm[1])))
    idx = geo.physical_to_index(p)  # x, y, z
    margin = int(np.ceil(reach / min(geo.spacing))) + 3
    lo = np.clip(np.floor(idx.min(axis=0)).astype(int) - margin, 0, np.asarray(geo.size))
    hi = np.clip(np.ceil(idx.max(axis=0)).astype(int) + margin + 1, lo, np.asarray(geo.size))
    if np.any(hi <= lo):  # the mesh lies outside the image: nothing to read
        return np.zeros(len(p), np.float32)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo[::-1], hi[::-1]))  # z, y, x
    part = crop(image, box)
    sub = ndimage.maximum_filter(part.array.astype(np.float32) - np.float32(z0), size=3, mode="nearest")
    return project(part.with_array(sub), p, normals, band_mm, step_mm, order="linear",
                   interpolation="linear").max_value


def _project_mask(mask: np.ndarray, geometry: Geometry, points: np.ndarray, normals: np.ndarray,
                  band_mm: tuple[float, float], step_mm: float) -> np.ndarray:
    """Per point, whether the band meets the mask (nearest-voxel lookups, as the product's Scar)."""
    vol = Volume(np.asarray(mask, dtype=bool).astype(np.uint8), geometry)
    return project(vol, points, normals, band_mm, step_mm, order="linear", interpolation="nearest").hit


def _burden(point_scar: np.ndarray, areas: np.ndarray) -> float:
    total = float(areas.sum())
    if not total > 0:
        raise InputError("the surface mesh has zero area")
    return 100.0 * float(areas[point_scar.astype(bool)].sum()) / total


@dataclass(frozen=True)
class _BaselineInputs:
    """What every method of one `run_baselines` call shares: image, LA, blood pool, z0, mesh, wall band."""
    image: Volume
    la: Volume
    blood_pool: BloodPool
    z0: float
    points: np.ndarray
    normals: np.ndarray
    areas: np.ndarray
    band: Volume
    band_mm: tuple[float, float]
    step_mm: float
    common: dict[str, Any]  # the info every result carries

    def iir_of(self, intensity: float) -> float:
        """The intensity ratio of an image intensity: (I - z0) / (blood-pool mean - z0)."""
        return (intensity - self.z0) / (self.blood_pool.mean - self.z0)


def _resolve_methods(methods: Sequence[str] | None, iir_thresholds: Sequence[float],
                     sd_k: Sequence[float]) -> tuple[list[str], list[float], list[float]]:
    """The asked names, canonical and without repeats, with the IIR thresholds and SD multipliers to run.

    A name with another threshold than the configured ones (iir-1.32, mean+2.8sd) adds that threshold,
    so any positive value can be asked by name. None asks for every configured method.
    """
    iir_t = list(_check_positive(iir_thresholds, "IIR thresholds"))
    ks = list(_check_positive(sd_k, "SD multipliers k"))
    asked = [] if methods is None else [str(m).strip() for m in methods]
    for i, name in enumerate(asked):  # other thresholds by name: iir-1.32, mean+2.8sd
        for pattern, values, canonical in ((_IIR_NAME, iir_t, _iir_name), (_SD_NAME, ks, _sd_name)):
            m = pattern.fullmatch(name)
            if m and float(m.group(1)) > 0:
                asked[i] = canonical(float(m.group(1)))
                if asked[i] not in map(canonical, values):
                    values.append(float(m.group(1)))
    known = method_names(iir_t, ks)
    asked = list(known) if methods is None else asked
    unknown = [m for m in asked if m not in known]
    if unknown:
        raise InputError(f"unknown baseline method(s) {unknown}; known: {', '.join(known)}, or iir-<threshold> "
                         "and mean+<k>sd with other positive values")
    return list(dict.fromkeys(asked)), iir_t, ks


def _blood_pool_and_zero_level(image: Volume, la: Volume, erosion_mm: float,
                               zero_level_value: float | None) -> tuple[BloodPool, float]:
    """Check the image and LA, and give the blood pool and the zero level z0 the ratios are taken above."""
    _same_grid(image, la)
    if not _mask(la, "LA mask").any():
        raise InputError(f"{la.source or 'LA mask'}: LA mask is empty; no baseline can run")
    bp = blood_pool_stats(image, la, erosion_mm)
    z0 = zero_level(image) if zero_level_value is None else float(zero_level_value)
    if not bp.mean > z0:
        raise InputError(f"{image.source or 'image'}: blood-pool mean {bp.mean:.4g} is not above the zero-signal "
                         f"level {z0:.4g}; intensity ratios are undefined (is this an LGE image?)")
    return bp, z0


def _surface_results(inp: _BaselineInputs, names: list[str], iir_t: list[float],
                     ks: list[float]) -> dict[str, BaselineResult]:
    """The asked surface methods: thresholds on each mesh point's projected 3x3x3 maximum."""
    bp, z0, points = inp.blood_pool, inp.z0, inp.points
    shifted = wall_max_projection(inp.image, points, inp.normals, inp.band_mm, inp.step_mm, z0).astype(np.float64)
    iir = shifted / (bp.mean - z0)
    intensity = shifted + z0  # projected 3x3x3 max in image units

    def result(name: str, scar: np.ndarray, thr: float, info: dict[str, Any], values: np.ndarray) -> BaselineResult:
        return BaselineResult(name, SURFACE_KIND, scar, _burden(scar, inp.areas), thr, {**inp.common, **info},
                              scar_mask=point_scar_to_voxels(inp.band, points, scar), point_values=values,
                              points=points, normals=inp.normals, wall_band=inp.band)

    out: dict[str, BaselineResult] = {}
    for t in iir_t:
        name = _iir_name(t)
        if name in names:
            out[name] = result(name, (iir > t).astype(np.uint8), z0 + t * (bp.mean - z0), {"iir_threshold": t}, iir)
    for k in ks:
        name = _sd_name(k)
        if name in names:
            thr = bp.mean + k * bp.sd
            out[name] = result(name, (intensity > thr).astype(np.uint8), thr,
                               {"sd_k": k, "iir_equivalent": inp.iir_of(thr)}, intensity)
    return out


def _voxel_results(inp: _BaselineInputs, names: list[str], wall_band_mm: float) -> dict[str, BaselineResult]:
    """The asked voxel methods ("otsu", "gmm"): a threshold of the wall-band intensities, projected onto the mesh."""
    band = inp.band.array.astype(bool)
    arr = np.asarray(inp.image.array)
    vals = arr[band].astype(np.float64)
    n_wall = int(band.sum())
    vcommon = {**inp.common, "wall_band_mm": float(wall_band_mm), "wall_voxels": n_wall}
    out: dict[str, BaselineResult] = {}
    for name in names:
        info = dict(vcommon)
        if name == "otsu":
            thr: float | None = otsu_threshold(vals)
        else:
            fit = fit_gmm_1d(vals, 3)
            thr = gmm_scar_threshold(fit, float(vals.max()))
            info["gmm"] = fit.as_dict()
        scar = band & (arr > thr) if thr is not None else np.zeros_like(band)
        n_scar = int(scar.sum())
        info.update({"scar_voxels": n_scar, "burden_wall_pct": 100.0 * n_scar / n_wall,
                     "iir_equivalent": None if thr is None else inp.iir_of(thr)})
        point = _project_mask(scar, inp.la.geometry, inp.points, inp.normals, inp.band_mm,
                              inp.step_mm).astype(np.uint8)
        out[name] = BaselineResult(name, VOXEL_KIND, point, _burden(point, inp.areas), thr, info,
                                   scar_mask=inp.la.with_array(scar.astype(np.uint8)), points=inp.points,
                                   normals=inp.normals, wall_band=inp.band)
    return out


def run_baselines(image: Volume, la: Volume, *, methods: Sequence[str] | None = None,
                  iir_thresholds: Sequence[float] = DEFAULT_IIR_THRESHOLDS, sd_k: Sequence[float] = DEFAULT_SD_K,
                  wall_band_mm: float = DEFAULT_WALL_BAND_MM, band_mm: tuple[float, float] = PRODUCT_BAND_MM,
                  step_mm: float = DEFAULT_STEP_MM, mesh: Any = None, zero_level_value: float | None = None,
                  blood_pool_erosion_mm: float = BLOOD_POOL_EROSION_MM) -> dict[str, BaselineResult]:
    """Run the named baselines (all configured ones when `methods` is None) on one image and LA.

    image: LGE intensities, any scale (module docstring: ratios are taken above z0).
    la: 0/1 LA on the image grid (given or predicted). mesh: its surface from
    `projection.la_surface_mesh` (built here when None). zero_level_value: z0 in image units;
    None is the image's 0.5th percentile, 0.0 the plain ratio of raw magnitude images.
    Returns {method: BaselineResult} in the order asked. Unknown names raise `InputError`
    listing the known ones.
    """
    asked, iir_t, ks = _resolve_methods(methods, iir_thresholds, sd_k)
    bp, z0 = _blood_pool_and_zero_level(image, la, blood_pool_erosion_mm, zero_level_value)
    if mesh is None:
        mesh = la_surface_mesh(la)
    points, normals = mesh_points_normals(mesh)
    areas = point_areas(mesh)
    common = {"blood_pool_mean": bp.mean, "blood_pool_sd": bp.sd, "blood_pool_voxels": bp.n_voxels,
              "blood_pool_eroded": bp.eroded, "blood_pool_erosion_mm": float(blood_pool_erosion_mm),
              "zero_level": z0, "zero_level_rule": "given" if zero_level_value is not None
              else f"{ZERO_PERCENTILE}th intensity percentile",
              "band_mm": [float(band_mm[0]), float(band_mm[1])], "step_mm": float(step_mm)}
    band_v = wall_band(la, wall_band_mm)
    if not band_v.array.any():
        raise InputError(f"{la.source or 'LA mask'}: the wall band of the LA is empty")
    inp = _BaselineInputs(image, la, bp, z0, points, normals, areas, band_v, band_mm, step_mm, common)
    out: dict[str, BaselineResult] = {}
    surface = [m for m in asked if m not in VOXEL_METHODS]
    if surface:
        out.update(_surface_results(inp, surface, iir_t, ks))
    voxel = [m for m in asked if m in VOXEL_METHODS]
    if voxel:
        out.update(_voxel_results(inp, voxel, wall_band_mm))
    return {m: out[m] for m in asked}


# ---------------------------------------------------------------------------------- scoring
def point_scar_to_voxels(wall: Volume, points: np.ndarray, point_scar: np.ndarray) -> Volume:
    """Wall voxels whose nearest mesh point (LPS mm, k-d tree) is scar: a per-point decision as voxels."""
    band = np.asarray(wall.array).astype(bool)
    out = np.zeros(band.shape, np.uint8)
    scar = np.asarray(point_scar).astype(bool).reshape(-1)
    idx = np.argwhere(band)  # z, y, x
    if len(idx) and scar.any():
        _, nearest = cKDTree(np.asarray(points, np.float64)).query(wall.geometry.index_to_physical(idx[:, ::-1]))
        out[tuple(idx.T)] = scar[nearest]
    return wall.with_array(out)


def baseline_surface_metrics(result: BaselineResult, ref_scar: Volume, ref_wall: Volume | None = None,
                             ref_la: Volume | None = None, *, wall_band_mm: float = DEFAULT_WALL_BAND_MM,
                             step_mm: float = DEFAULT_STEP_MM, max_mm: float = EVAL_MAX_MM,
                             sigma_mm: float = EVAL_SIGMA_MM) -> dict[str, Any]:
    """accuracy, dice_scar, dice_normal and gdice of one baseline against manual labels, exactly as
    the network is scored: `metrics.scar_surface_metrics` of the baseline's voxel scar (surface
    methods: their per-point decision as wall-band voxels) on the manual LA's evaluation surface,
    with the LA's wall band as the predicted wall. So every method's numbers compare directly.
    `ref_wall` None: the wall band of `ref_la` (CONTRACTS section 2).
    """

    if ref_la is None:
        raise InputError("scoring a baseline needs the manual LA (its surface is the evaluation surface)")
    if ref_wall is None:
        band_wall = wall_band(ref_la, wall_band_mm).array.astype(bool)
        ref_wall = ref_scar.with_array((band_wall | (np.asarray(ref_scar.array) != 0)).astype(np.uint8)) \
            if ref_scar.geometry.same_grid(ref_la.geometry) else ref_la.with_array(band_wall.astype(np.uint8))
    if result.scar_mask is None or result.wall_band is None:
        raise InputError(f"baseline {result.method!r} carries no voxel scar to score (run it with run_baselines)")
    out = scar_surface_metrics(result.scar_mask, ref_scar, ref_wall, ref_la, pred_wall=result.wall_band,
                               max_mm=max_mm, step_mm=step_mm, sigma_mm=sigma_mm)
    out["surface"] = "evaluation"
    return out
