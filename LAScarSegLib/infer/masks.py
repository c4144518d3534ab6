"""The network's probabilities on the image grid, and the LA and scar masks read from them.

Torch-free: re-quantifying an edited LA (no network run) and the Slicer application's process use
these functions too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..core.distance import wall_band
from ..core.errors import ModelError, NoLAFound
from ..core.image import Volume


@dataclass
class Prediction:
    """Probabilities on the input grid (float32 0..1), each a Volume with the image's geometry."""

    la: Volume | None = None
    p_normal: Volume | None = None
    p_scar: Volume | None = None
    device: str = "cpu"
    warnings: list[str] = field(default_factory=list)


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


def la_mask(prob: Volume, keep_largest: bool = True) -> tuple[Volume, int]:
    """LA mask = probability > 0.5; with `keep_largest` only the largest 26-connected component stays.

    Returns the mask and the number of components removed. A result under MIN_LA_ML is `NoLAFound`.
    """
    mask = prob.array > 0.5
    removed = 0
    if keep_largest and mask.any():
        mask, n = largest_component(mask)
        removed = n - 1
    if not mask.any():
        raise NoLAFound(f"{prob.source or 'image'}: no left atrium found (no voxel with LA probability > 0.5)")
    ml = float(mask.sum()) * prob.geometry.voxel_volume_mm3 / 1000.0
    if ml < MIN_LA_ML:
        raise NoLAFound(f"{prob.source or 'image'}: no left atrium found (the largest candidate is {ml:.2f} mL, "
                        f"under {MIN_LA_ML:g} mL)")
    return prob.with_array(mask.astype(np.uint8)), removed


def scar_mask(pred: Prediction, la: Volume, wall_band_mm: float) -> tuple[Volume, Volume]:
    """Scar = wall band of the predicted LA where p_scar > p_normal; returns (scar, wall band)."""
    if pred.p_scar is None or pred.p_normal is None:
        raise ModelError("the model has no scar output")
    band = wall_band(la, wall_band_mm)
    scar = band.array.astype(bool) & (pred.p_scar.array > pred.p_normal.array)
    return la.with_array(scar.astype(np.uint8)), band
