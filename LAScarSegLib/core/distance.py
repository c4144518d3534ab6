"""Distance maps in millimetres: the signed map of Eq. (1), the scar targets of Eq. (4), the wall
band (CONTRACTS section 2) and LA boundary masks for the shape-attention loss.

All distances use the voxel spacing, so they are millimetres in any anisotropic grid. The exact
Euclidean distance transform comes from `edt` when it is installed (the `train` extra; about 18 ms
on 208x208x80) and from SciPy otherwise (same values, about 20x slower).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import InputError
from .image import Volume

DEFAULT_WALL_BAND_MM = 3.0


def _as_bool(mask: Volume, what: str) -> np.ndarray:
    arr = mask.array
    if arr.dtype != bool:
        if arr.size and (arr.min() < 0 or arr.max() > 1 or (arr.dtype.kind == "f" and not np.all((arr == 0) | (arr == 1)))):
            values = np.unique(arr)[:10].tolist()
            raise InputError(f"{mask.source or what}: {what} must be a 0/1 mask, found values {values}")
        arr = arr.astype(bool)
    return arr


def distance_to(mask: np.ndarray, spacing_zyx) -> np.ndarray:
    """Distance in mm from every voxel to the nearest voxel of `mask` (0 on it, inf if it is empty)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    try:
        import edt  # type: ignore[import-not-found]

        out = edt.edt(np.ascontiguousarray(~mask), anisotropy=tuple(float(s) for s in spacing_zyx),
                      black_border=False, parallel=1)
    except ImportError:
        out = ndimage.distance_transform_edt(~mask, sampling=spacing_zyx)
    return np.asarray(out, dtype=np.float32)


def inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with at least one 6-neighbour outside the mask (the discrete surface S)."""
    mask = np.asarray(mask, dtype=bool)
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)
    return mask & ~eroded


def signed_distance(mask: Volume, beta: float = 1.0) -> Volume:
    """Eq. (1): phi = -d^beta inside, 0 on the surface S, +d^beta outside; d in mm to S.

    S is the set of boundary voxels of the mask. An empty mask has no surface: phi is +inf
    everywhere outside, so the caller must handle it (the loss treats it as 'no LA here').
    """
    if beta <= 0:
        raise InputError(f"beta must be positive, got {beta}")
    m = _as_bool(mask, "mask")
    surface = inner_boundary(m)
    d = distance_to(surface, mask.spacing_zyx)
    if beta != 1.0:
        d = np.power(d, beta, dtype=np.float32)
    phi = np.where(m, -d, d).astype(np.float32)
    phi[surface] = 0.0
    return mask.with_array(phi)


def wall_band(la: Volume, band_mm: float = DEFAULT_WALL_BAND_MM) -> Volume:
    """Voxels outside the LA within `band_mm` of it (Euclidean, mm): where a wall is assumed."""
    if band_mm <= 0:
        raise InputError(f"wall band must be positive, got {band_mm} mm")
    m = _as_bool(la, "LA mask")
    d = distance_to(m, la.spacing_zyx)
    return la.with_array(((~m) & (d <= band_mm)).astype(np.uint8))


def distance_probability_maps(wall: Volume, scar: Volume) -> tuple[Volume, Volume]:
    """Eq. (4) targets: p_normal = exp(-d to normal wall), p_scar = exp(-d to scar), d in mm.

    Normal wall is the wall without scar. A class that is absent gives 0 everywhere (exp(-inf)),
    which is the correct target: no voxel is near that class.
    """
    w = _as_bool(wall, "wall mask")
    s = _as_bool(scar, "scar mask")
    normal = w & ~s
    p_normal = np.exp(-distance_to(normal, wall.spacing_zyx)).astype(np.float32)
    p_scar = np.exp(-distance_to(s, wall.spacing_zyx)).astype(np.float32)
    return wall.with_array(p_normal), wall.with_array(p_scar)


def boundary_mask(la: Volume, thickness_mm: float) -> Volume:
    """The LA boundary shell of the given thickness: voxels with |phi| <= thickness / 2 (mm).

    This is the attention mask M of Eq. (5): M1 from the ground-truth LA, M2 from the predicted LA
    (thresholded at 0.5). An empty LA gives an empty mask.
    """
    if thickness_mm <= 0:
        raise InputError(f"boundary thickness must be positive, got {thickness_mm} mm")
    m = _as_bool(la, "LA mask")
    if not m.any():
        return la.with_array(np.zeros(m.shape, np.uint8))
    phi = signed_distance(la.with_array(m)).array
    return la.with_array((np.abs(phi) <= thickness_mm / 2.0).astype(np.uint8))
