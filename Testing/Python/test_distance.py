"""Distance maps in millimetres: Eq. (1), Eq. (4) targets, the wall band and boundary masks."""

from __future__ import annotations

import numpy as np
import pytest

from LAScarSegLib.core import distance
from LAScarSegLib.core.distance import boundary_mask, distance_probability_maps, distance_to, signed_distance, wall_band
from LAScarSegLib.core.errors import InputError
from LAScarSegLib.core.image import Geometry, Volume

ANISO = Geometry((64, 60, 36), (0.625, 0.7, 1.25), (-5.0, 3.0, 11.0))


def radius_field(geom: Geometry, centre_mm=None) -> np.ndarray:
    """|x - c| in mm for every voxel centre (index space times spacing; identity direction)."""
    z, y, x = np.indices(geom.shape, dtype=np.float64)
    sz, sy, sx = geom.spacing_zyx
    c = centre_mm if centre_mm is not None else [(n - 1) / 2 * s for n, s in zip(geom.shape, geom.spacing_zyx)]
    return np.sqrt((z * sz - c[0]) ** 2 + (y * sy - c[1]) ** 2 + (x * sx - c[2]) ** 2)


def sphere(geom: Geometry, r: float) -> tuple[Volume, np.ndarray]:
    rad = radius_field(geom)
    return Volume((rad <= r).astype(np.uint8), geom), rad


@pytest.mark.parametrize("backend", ["edt", "scipy"])
def test_signed_distance_of_sphere_matches_analytic(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    if backend == "scipy":
        import sys

        monkeypatch.setitem(sys.modules, "edt", None)  # forces the SciPy fallback
    mask, rad = sphere(ANISO, 12.0)
    phi = signed_distance(mask).array
    err = np.abs(phi - (rad - 12.0))
    assert err.max() <= max(ANISO.spacing)  # within a voxel, in anisotropic spacing
    assert (phi[mask.array.astype(bool)] <= 0).all() and (phi[~mask.array.astype(bool)] > 0).all()
    assert (phi == 0).sum() == distance.inner_boundary(mask.array).sum()


def test_signed_distance_beta() -> None:
    mask, _ = sphere(ANISO, 10.0)
    phi1 = signed_distance(mask, beta=1.0).array
    phi2 = signed_distance(mask, beta=2.0).array
    np.testing.assert_allclose(phi2, np.sign(phi1) * phi1**2, rtol=1e-5)
    with pytest.raises(InputError, match="beta"):
        signed_distance(mask, beta=0)


def test_signed_distance_of_empty_mask_is_infinite_outside() -> None:
    empty = Volume(np.zeros(ANISO.shape, np.uint8), ANISO)
    assert np.isposinf(signed_distance(empty).array).all()


def test_distance_to_uses_spacing() -> None:
    geom = Geometry((5, 5, 5), (1.0, 2.0, 3.0), (0, 0, 0))
    m = np.zeros(geom.shape, bool)
    m[0, 0, 0] = True
    d = distance_to(m, geom.spacing_zyx)
    assert d[0, 0, 4] == pytest.approx(4.0)  # x step 1 mm
    assert d[0, 4, 0] == pytest.approx(8.0)  # y step 2 mm
    assert d[4, 0, 0] == pytest.approx(12.0)  # z step 3 mm
    assert np.isposinf(distance_to(np.zeros((3, 3, 3), bool), (1, 1, 1))).all()


def test_wall_band_is_outside_and_within_band() -> None:
    mask, rad = sphere(ANISO, 10.0)
    band = wall_band(mask, 3.0).array.astype(bool)
    assert not (band & mask.array.astype(bool)).any()
    assert rad[band].max() <= 10.0 + 3.0 + 0.5 * max(ANISO.spacing)
    assert rad[band].min() > 10.0
    shell = (rad > 11.0) & (rad < 12.5)
    assert band[shell].all()  # the whole shell near the surface is in the band
    thick = wall_band(mask, 5.0).array.astype(bool)
    assert thick.sum() > band.sum() and (band <= thick).all()


def test_distance_probability_maps() -> None:
    mask, rad = sphere(ANISO, 10.0)
    wall = wall_band(mask, 3.0)
    scar_arr = wall.array.copy()
    z, y, x = np.indices(ANISO.shape)
    scar_arr[x < ANISO.shape[2] // 2] = 0  # scar on one side of the wall
    scar = wall.with_array(scar_arr)
    p_normal, p_scar = distance_probability_maps(wall, scar)
    normal = wall.array.astype(bool) & ~scar_arr.astype(bool)
    assert (p_scar.array[scar_arr.astype(bool)] == 1).all() and (p_normal.array[normal] == 1).all()
    assert (p_scar.array[normal] < 1).all()
    # p = exp(-d) with d in mm: the voxel centre is far from scar in mm, its value matches exp(-d)
    d = distance_to(scar_arr.astype(bool), ANISO.spacing_zyx)
    np.testing.assert_allclose(p_scar.array, np.exp(-d), rtol=1e-6)
    # no scar: p_scar is 0 everywhere, p_normal still right; all finite
    pn0, ps0 = distance_probability_maps(wall, wall.with_array(np.zeros_like(scar_arr)))
    assert (ps0.array == 0).all() and np.isfinite(pn0.array).all()
    assert (pn0.array[wall.array.astype(bool)] == 1).all()
    # no wall at all: both zero
    empty = wall.with_array(np.zeros_like(scar_arr))
    pn, ps = distance_probability_maps(empty, empty)
    assert (pn.array == 0).all() and (ps.array == 0).all()


def test_boundary_mask_thickness_and_empty() -> None:
    mask, rad = sphere(ANISO, 10.0)
    m4 = boundary_mask(mask, 4.0).array.astype(bool)
    assert m4.any() and np.abs(rad[m4] - 10.0).max() <= 2.0 + max(ANISO.spacing)
    assert m4[(rad > 9.0) & (rad < 11.0)].all()
    m2 = boundary_mask(mask, 2.0).array.astype(bool)
    assert m2.sum() < m4.sum() and (m2 <= m4).all()
    empty = Volume(np.zeros(ANISO.shape, np.uint8), ANISO)
    assert not boundary_mask(empty, 4.0).array.any()


def test_non_binary_mask_is_refused() -> None:
    bad = Volume(np.full(ANISO.shape, 2, np.uint8), ANISO, "lab.nii.gz")
    with pytest.raises(InputError, match=r"lab\.nii\.gz.*0/1"):
        wall_band(bad)
