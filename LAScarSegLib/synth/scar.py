"""The synthetic scar model: scar patches in a wall, and scar painted into a real LGE image.

No real scar labels exist on the project's machines (METHOD-NOTES section 6), so scar work is
developed and tested on synthetic scar. The same patch model serves both kinds:

- the phantom's wall (`LAScarSegLib.synth.phantom.make_phantom`), through `scar_patches`;
- `paint_synthetic_scar`: scar painted into the wall band of a real LGE image that has an LA
  label only.

Also the blood pool (the LA eroded by 3 mm, METHOD-NOTES section 4), the reference of every
intensity ratio. Every number comes from the `numpy.random.Generator` the caller passes, or one
seeded by `seed`: the same seed gives identical arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..core.distance import DEFAULT_WALL_BAND_MM, distance_to, wall_band
from ..core.errors import InputError
from ..core.image import Volume

PAINT_PROVENANCE = "synthetic scar painted into the wall band of a real image"

BURDEN_PCT = (0.0, 40.0)
SCAR_RATIO = (1.2, 2.0)  # scar / blood pool
BLOOD_POOL_EROSION_MM = 3.0  # blood pool = LA eroded by this much (METHOD-NOTES section 4)


@dataclass
class PaintedScar:
    """A real image with synthetic scar painted into the wall band of its LA label."""

    image: Volume  # a new float32 volume; the input is never modified
    wall: Volume  # the wall band of the LA (LAScarSegLib.distance.wall_band)
    scar: Volume  # subset of wall
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------- scar model
def smooth_field(rng: np.random.Generator, points: np.ndarray, wavelength_mm: tuple[float, float],
                 n_modes: int = 16) -> np.ndarray:
    """A smooth random field of about unit variance at `points` (N, 3) mm: a sum of plane waves.

    Evaluated only at the points that need it (wall voxels), so no grid-sized filtering is done;
    the random draws do not depend on N, so the field is the same function for any grid.
    """
    k = rng.normal(size=(n_modes, 3))
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    k *= (2.0 * np.pi / rng.uniform(*wavelength_mm, size=n_modes))[:, None]
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n_modes)
    if len(points) == 0:
        return np.zeros(0, np.float32)
    arg = np.asarray(points, np.float32) @ k.T.astype(np.float32) + phase.astype(np.float32)
    return (np.sqrt(2.0 / n_modes) * np.cos(arg).sum(axis=1)).astype(np.float32)


def scar_patches(rng: np.random.Generator, points: np.ndarray, burden_pct: float, scar_ratio: float,
                 hotspots: Sequence[tuple[np.ndarray, float]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Choose scar among wall voxels (frame or physical mm, (N, 3)) and its intensity ratio.

    Confluent patches are the top of a coarse random field (wavelengths 18-45 mm), discrete spots
    the top of a fine one (4-9 mm) among the rest; `hotspots` (centre, sigma mm) raise the coarse
    field around the vein ostia as ablation lesions do. Taking exact top-k voxels makes the voxel
    burden equal to the request. The ratio to the blood pool is brighter in a patch's core than
    at its rim (a grey zone), within SCAR_RATIO. Returns (scar bool (N,), ratio float32 (N,)).
    """
    frac_large = rng.uniform(0.55, 0.9)
    hot_weight = rng.uniform(0.0, 1.5)
    coarse = smooth_field(rng, points, (18.0, 45.0), 16)
    fine = smooth_field(rng, points, (4.0, 9.0), 24)
    texture = smooth_field(rng, points, (15.0, 40.0), 8)
    n = len(points)
    scar = np.zeros(n, bool)
    ratio = np.zeros(n, np.float32)
    n_scar = int(round(burden_pct / 100.0 * n))
    if n_scar <= 0:
        return scar, ratio
    for centre, sigma in hotspots:
        d2 = np.sum((points - np.asarray(centre, np.float32)) ** 2, axis=1)
        coarse += np.float32(hot_weight) * np.exp(-d2 / np.float32(2.0 * sigma * sigma))
    core = np.zeros(n, np.float32)
    n_large = int(round(frac_large * n_scar))
    if n_large > 0:
        top = np.argpartition(-coarse, n_large - 1)[:n_large]
        scar[top] = True
        core[top] = np.tanh((coarse[top] - coarse[top].min()) / 0.5)
    n_small = n_scar - n_large
    if n_small > 0:
        rest = np.flatnonzero(~scar)
        top = rest[np.argpartition(-fine[rest], n_small - 1)[:n_small]]
        scar[top] = True
        core[top] = np.tanh((fine[top] - fine[top].min()) / 0.5)
    ratio[scar] = np.clip(scar_ratio + 0.1 * texture[scar] + 0.3 * (core[scar] - 0.5), *SCAR_RATIO)
    return scar, ratio


# ------------------------------------------------------------------------------- blood pool
def mask_bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds (lower, upper exclusive) of a non-empty mask along each array axis."""
    lo, hi = [], []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo.append(int(hit[0]) if hit.size else 0)
        hi.append(int(hit[-1]) + 1 if hit.size else 0)
    return np.array(lo), np.array(hi)


def blood_pool(la: np.ndarray, spacing_zyx) -> np.ndarray:
    """LA voxels deeper than BLOOD_POOL_EROSION_MM (the whole LA if none is that deep).

    Computed in the LA's bounding box plus a margin, where the distance transform is cheap."""
    if not la.any():
        return la.copy()
    lo, hi = mask_bounds(la)
    lo = np.maximum(lo - 2, 0)
    hi = np.minimum(hi + 2, la.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    sub = la[sl]
    padded = np.pad(sub, 1)  # outside the image counts as outside the LA
    deep = (distance_to(~padded, spacing_zyx) > BLOOD_POOL_EROSION_MM)[1:-1, 1:-1, 1:-1] & sub
    if not deep.any():
        deep = sub
    out = np.zeros_like(la)
    out[sl] = deep
    return out


# ------------------------------------------------------------------- scar in a real image
def paint_synthetic_scar(image: Volume, la: Volume, seed: int, *, burden: float | None = None,
                         wall_band_mm: float = DEFAULT_WALL_BAND_MM) -> PaintedScar:
    """Paint synthetic scar into the wall band of a real LGE image that has an LA label only.

    The wall is `wall_band(la, wall_band_mm)`; scar patches come from the phantom's patch model
    (confluent and discrete, exact voxel burden; `burden` in percent, default drawn from 0-40 %).

    Intensity. The la2018 images are z-scored, so their zero is the volume mean, not zero signal,
    and a plain `ratio * blood-pool mean` would be wrong (even negative). Ratios are therefore
    taken above an estimated zero-signal level z0, the 0.5th intensity percentile (air and lung,
    about -0.65 in la2018): a scar voxel becomes z0 + ratio * (bp_mean - z0) + e, with ratio in
    1.2-2.0 (the image intensity ratio, IIR, in original units as far as z0 is right) and e a
    random texture with the blood pool's SD and a 1.5-4 mm correlation length, so painted scar
    is as noisy as the blood pool without white-noise speckle the real images do not have. The blood pool is
    the LA eroded by 3 mm. For an image with a true zero (raw magnitudes) z0 is close to it.
    Only scar voxels change; the input arrays are never modified.
    """
    la_mask = _checked_la_mask(image, la, burden)
    src = np.asarray(image.array, dtype=np.float32)
    rng = np.random.default_rng([seed, 7])
    burden_pct = float(rng.uniform(*BURDEN_PCT))
    if burden is not None:
        burden_pct = float(burden)
    scar_ratio = float(rng.uniform(1.35, 1.85))

    wall_v = wall_band(la.with_array(la_mask.astype(np.uint8)), wall_band_mm)
    wall = wall_v.array.astype(bool)
    bp_mean, bp_sd, z0 = _signal_levels(image, src, la_mask)
    idx = np.nonzero(wall)
    pts = image.geometry.index_to_physical(np.stack([idx[2], idx[1], idx[0]], axis=1).astype(float))
    scar_w, ratio_w = scar_patches(rng, pts, burden_pct, scar_ratio)
    # texture: spatially correlated like the real image's (1.5-4 mm), SD of the blood pool
    noise = smooth_field(rng, pts[scar_w], (1.5, 4.0), 24)
    out = src.copy()  # never the caller's array, whatever its dtype was
    sel = tuple(i[scar_w] for i in idx)
    out[sel] = np.float32(z0) + ratio_w[scar_w] * np.float32(bp_mean - z0) + np.float32(bp_sd) * noise
    scar = np.zeros(wall.shape, np.uint8)
    scar[sel] = 1
    n_wall, n_scar = int(wall.sum()), int(scar_w.sum())
    info: dict[str, Any] = {
        "provenance": f"{PAINT_PROVENANCE} (LAScarSegLib.synth.scar.paint_synthetic_scar, seed {seed}); "
                      f"image: {image.source or 'in memory'}",
        "seed": int(seed),
        "wall_band_mm": float(wall_band_mm),
        "burden_pct": round(100.0 * n_scar / n_wall, 4) if n_wall else 0.0,
        "burden_target_pct": round(burden_pct, 4),
        "wall_voxels": n_wall,
        "scar_voxels": n_scar,
        "blood_pool_mean": round(bp_mean, 5),
        "blood_pool_sd": round(bp_sd, 5),
        "zero_level": round(z0, 5),
        "scar_ratio_mean": round(float(ratio_w[scar_w].mean()), 4) if n_scar else None,
        "intensity_model": "z0 + ratio * (blood_pool_mean - z0) + texture (SD blood_pool_sd, 1.5-4 mm); "
                           "z0 = 0.5th intensity percentile",
    }
    return PaintedScar(image.with_array(out), wall_v, Volume(scar, image.geometry, image.source), info)


def _checked_la_mask(image: Volume, la: Volume, burden: float | None) -> np.ndarray:
    """The LA label as a non-empty bool mask on the image's grid, or InputError."""
    if not image.geometry.same_grid(la.geometry):
        raise InputError(f"{la.source or 'LA label'}: label grid differs from the image {image.source or ''}: "
                         f"label {la.geometry.describe()}; image {image.geometry.describe()}")
    if burden is not None and not 0.0 <= float(burden) <= 100.0:
        raise InputError(f"burden is a percentage of wall voxels (0-100), got {burden}")
    la_mask = np.asarray(la.array)
    values = np.unique(la_mask)
    if not np.all(np.isin(values, (0, 1))):
        raise InputError(f"{la.source or 'LA label'}: LA must be a 0/1 mask, found values {values[:10].tolist()}")
    la_mask = la_mask.astype(bool)
    if not la_mask.any():
        raise InputError(f"{la.source or 'LA label'}: LA label is empty; no wall to paint scar into")
    return la_mask


def _signal_levels(image: Volume, src: np.ndarray, la_mask: np.ndarray) -> tuple[float, float, float]:
    """Blood-pool mean and SD, and the zero-signal level z0 (see `paint_synthetic_scar`)."""
    bp_vals = src[blood_pool(la_mask, image.spacing_zyx)]
    bp_mean, bp_sd = float(bp_vals.mean()), float(bp_vals.std())
    z0 = float(np.percentile(src, 0.5))
    if not bp_mean > z0:
        raise InputError(f"{image.source or 'image'}: blood-pool mean {bp_mean:.4g} is not above the image's "
                         f"zero-signal level {z0:.4g}; this does not look like an LGE image")
    return bp_mean, bp_sd, z0
