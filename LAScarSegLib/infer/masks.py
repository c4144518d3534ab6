"""The network's probabilities on the image grid, and the LA and scar masks read from them.

Torch-free: re-quantifying an edited LA (no network run) and the Slicer application's process use
these functions too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..core.distance import wall_band
from ..core.errors import InputError, ModelError, NoLAFound
from ..core.image import Geometry, Volume

#: What to do when the LA cannot be found or is in doubt: the one-click fallback.
PLACE_A_POINT = ("place a point inside the LA and run again (lascarseg segment --la-seed R,A,S, or 'Point in LA' "
                 "in Slicer)")
#: A seed's component may lie this far from the seed (mm): a point placed on the LA's edge.
SEED_REACH_MM = 10.0


@dataclass(frozen=True)
class LASeed:
    """A point inside the LA that the user gave: RAS millimetres (as Slicer shows coordinates), or
    the input image's 0-based voxel index in ITK's order (i along x, j along y, k along z)."""

    ras: tuple[float, float, float] | None = None
    ijk: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if (self.ras is None) == (self.ijk is None):
            raise InputError("a point inside the LA is given either in RAS millimetres or as a voxel index, not both")
        values = self.ras if self.ras is not None else self.ijk
        if len(values) != 3 or not all(np.isfinite(float(v)) for v in values):
            raise InputError(f"a point inside the LA needs three finite numbers, got {values}")

    def describe(self) -> str:
        if self.ras is not None:
            return "R,A,S = " + ", ".join(f"{v:g}" for v in self.ras) + " mm"
        return "voxel I,J,K = " + ", ".join(f"{v:g}" for v in self.ijk)

    def lps(self, geometry: Geometry) -> np.ndarray:
        """The point in LPS millimetres (the library's frame); an `InputError` when it lies outside
        the image."""
        if self.ras is not None:
            point = np.array([-float(self.ras[0]), -float(self.ras[1]), float(self.ras[2])])
        else:
            point = geometry.index_to_physical(np.array([[float(v) for v in self.ijk]]))[0]
        ijk = geometry.physical_to_index(point[None, :])[0]
        if np.any(ijk < -0.5) or np.any(ijk > np.asarray(geometry.size) - 0.5):
            raise InputError(f"the point inside the LA ({self.describe()}) lies outside the image "
                             f"(voxel {np.round(ijk, 1).tolist()} of a {list(geometry.size)} grid): place it inside "
                             "the left atrium")
        return point

    def index_zyx(self, geometry: Geometry) -> tuple[int, int, int]:
        """The nearest voxel of the image grid, as an array index (z, y, x)."""
        ijk = np.clip(np.round(geometry.physical_to_index(self.lps(geometry)[None, :])[0]).astype(int), 0,
                      np.asarray(geometry.size) - 1)
        return int(ijk[2]), int(ijk[1]), int(ijk[0])


@dataclass
class Localisation:
    """How the LA was found (CONTRACTS section 5, report["la"]["localisation"]): "automatic" or
    "seed", a confidence in 0..1, and whether it is doubtful (then a warning says what to do)."""

    mode: str
    confidence: float
    doubtful: bool

    def to_json(self) -> dict:
        return {"mode": self.mode, "confidence": round(float(self.confidence), 3), "doubtful": bool(self.doubtful)}


@dataclass
class Prediction:
    """Probabilities on the input grid (float32 0..1), each a Volume with the image's geometry;
    the point inside the LA the user gave, if any, and how the LA was found."""

    la: Volume | None = None
    p_normal: Volume | None = None
    p_scar: Volume | None = None
    device: str = "cpu"
    warnings: list[str] = field(default_factory=list)
    seed: LASeed | None = None
    localisation: Localisation | None = None


#: `la_mask`: an LA under this volume (mL) is no LA found. A 1 mL sphere is 12 mm across, narrower
#: than a pulmonary-vein ostium and 20 times under the implausible-volume warning's 20 mL; on an
#: image without any atrium (a smooth ramp) the bundled model marks a stray 0.3 mL.
MIN_LA_ML = 1.0


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 26-connected component of a boolean `mask`, and how many components it has."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask, n
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax()), n


def la_mask(prob: Volume, keep_largest: bool = True, seed: LASeed | None = None) -> tuple[Volume, int]:
    """LA mask = probability > 0.5; with `keep_largest` only one 26-connected component stays: the
    largest, or with a `seed` the one holding it (or nearest to it, within SEED_REACH_MM).

    Returns the mask and the number of components removed. No LA, or one under MIN_LA_ML, is
    `NoLAFound` (with a seed: an `InputError` that says no LA-like structure is at the point).
    """
    mask = prob.array > 0.5
    removed = 0
    if seed is not None and keep_largest:
        mask, removed = component_at(mask, prob, seed)
    elif keep_largest and mask.any():
        mask, n = largest_component(mask)
        removed = n - 1
    where = prob.source or "image"
    if not mask.any():
        raise NoLAFound(f"{where}: no left atrium found (no voxel with LA probability > 0.5): {PLACE_A_POINT}")
    ml = float(mask.sum()) * prob.geometry.voxel_volume_mm3 / 1000.0
    if ml < MIN_LA_ML:
        if seed is not None:
            raise InputError(f"{where}: no LA-like structure at the point ({seed.describe()}; {ml:.2f} mL found): "
                             "place it inside the left atrium")
        raise NoLAFound(f"{where}: no left atrium found (the largest candidate is {ml:.2f} mL, under {MIN_LA_ML:g} "
                        f"mL): {PLACE_A_POINT}")
    return prob.with_array(mask.astype(np.uint8)), removed


def component_at(mask: np.ndarray, prob: Volume, seed: LASeed) -> tuple[np.ndarray, int]:
    """The component holding the seed, or the nearest one within SEED_REACH_MM; an `InputError`
    when there is none."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    z, y, x = seed.index_zyx(prob.geometry)
    chosen = int(labels[z, y, x])
    if chosen == 0 and n:
        dist, (iz, iy, ix) = ndimage.distance_transform_edt(labels == 0, sampling=prob.geometry.spacing_zyx,
                                                          return_indices=True)
        if dist[z, y, x] <= SEED_REACH_MM:
            chosen = int(labels[iz[z, y, x], iy[z, y, x], ix[z, y, x]])
    if chosen == 0:
        raise InputError(f"{prob.source or 'image'}: no LA-like structure at the point ({seed.describe()}): "
                         f"nothing the network takes for LA within {SEED_REACH_MM:g} mm; place the point inside "
                         "the left atrium")
    return labels == chosen, n - 1


def scar_mask(pred: Prediction, la: Volume, wall_band_mm: float) -> tuple[Volume, Volume]:
    """Scar = wall band of the predicted LA where p_scar > p_normal; returns (scar, wall band)."""
    if pred.p_scar is None or pred.p_normal is None:
        raise ModelError("the model has no scar output")
    band = wall_band(la, wall_band_mm)
    scar = band.array.astype(bool) & (pred.p_scar.array > pred.p_normal.array)
    return la.with_array(scar.astype(np.uint8)), band
