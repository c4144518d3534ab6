"""Clinical read-outs: LA volume, scar burden stages, and the warnings a report must carry."""

from __future__ import annotations

from ..core.image import Volume

IMPLAUSIBLE_LA_ML = (20.0, 400.0)
THICK_SLICE_MM = 2.5


def la_volume_ml(la: Volume) -> float:
    return float(la.array.astype(bool).sum() * la.geometry.voxel_volume_mm3 / 1000.0)


def utah_stage(burden_pct: float) -> str:
    """Utah stage from the % of LA wall enhanced: I <= 5 %, II 5-20 %, III 20-35 %, IV > 35 %."""
    if burden_pct <= 5:
        return "I"
    if burden_pct <= 20:
        return "II"
    if burden_pct <= 35:
        return "III"
    return "IV"


def decaaf_stage(burden_pct: float) -> int:
    """DECAAF stage: 1 < 10 %, 2 10-20 %, 3 20-30 %, 4 >= 30 %."""
    if burden_pct < 10:
        return 1
    if burden_pct < 20:
        return 2
    if burden_pct < 30:
        return 3
    return 4


def wall_burden_pct(scar: Volume, wall: Volume) -> float:
    """% of wall-band volume that is scar."""
    n = int(wall.array.astype(bool).sum())
    return 0.0 if n == 0 else float(100.0 * (scar.array.astype(bool) & wall.array.astype(bool)).sum() / n)


def geometry_warnings(image: Volume, la_ml: float, components_removed: int) -> list[str]:
    out = []
    if components_removed:
        out.append(f"{components_removed} disconnected LA component(s) removed (largest kept)")
    lo, hi = IMPLAUSIBLE_LA_ML
    if not lo <= la_ml <= hi:
        out.append(f"implausible LA volume {la_ml:.1f} mL (expected {lo:.0f} to {hi:.0f} mL): check the segmentation")
    thickest = max(image.geometry.spacing)
    if thickest > THICK_SLICE_MM:
        out.append(f"slices are {thickest:.2f} mm thick (over {THICK_SLICE_MM} mm): thin scar may be missed or smeared")
    out.append("the burden includes the pulmonary-vein ostia; Utah and DECAAF staging exclude veins and the mitral "
               "valve, so stages here are indicative")
    return out

