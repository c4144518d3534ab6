"""Scar projection onto the LA surface (LAScarSegLib.projection, CONTRACTS section 6).

Spheres on oblique grids (rotated, anisotropic, non-zero origin, one mirrored) have known answers:
outward normals are radial, a shell of scar is met everywhere, a hemisphere on half the area.
Trilinear interpolation reproduces an affine field exactly, so `max_value` has an exact answer.
"""

from __future__ import annotations

import numpy as np
import pytest
from vtkmodules.util import numpy_support as ns
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData

from LAScarSegLib.core.distance import inner_boundary
from LAScarSegLib.core.errors import InputError
from LAScarSegLib.core.image import Geometry, Volume
from LAScarSegLib.quantify.projection import band_offsets, classify_along_normals, evaluation_surface, la_surface_mesh, mesh_points_normals, project, project_on_mesh, surface_burden_pct

R = 12.0  # sphere radius, mm


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    ax, ay, az = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


OBLIQUE = _rotation(30.0, -20.0, 40.0)
GEOMETRIES = {
    "oblique": Geometry((56, 52, 44), (0.8, 0.9, 1.1), (-30.0, 40.0, 120.0), tuple(OBLIQUE.ravel())),
    "mirrored": Geometry((56, 52, 44), (0.8, 0.9, 1.1), (25.0, -60.0, -15.0),
                         tuple((OBLIQUE @ np.diag([1.0, -1.0, 1.0])).ravel())),
}


class Sphere:
    """Physical coordinates of every voxel of a grid and a sphere centred in it."""

    def __init__(self, geometry: Geometry) -> None:
        self.geo = geometry
        z, y, x = np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij")
        ijk = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1).astype(float)
        self.centre = geometry.index_to_physical((np.asarray(geometry.size, float) - 1) / 2)
        self.xyz = geometry.index_to_physical(ijk).reshape(*geometry.shape, 3)
        self.rel = self.xyz - self.centre
        self.r = np.linalg.norm(self.rel, axis=-1)

    def vol(self, mask: np.ndarray) -> Volume:
        return Volume(mask.astype(np.uint8), self.geo)

    def shell(self, r0: float, r1: float) -> np.ndarray:
        return (self.r > r0) & (self.r <= r1)

    @property
    def la(self) -> Volume:
        return self.vol(self.r <= R)


@pytest.fixture(scope="module", params=sorted(GEOMETRIES))
def sphere(request) -> Sphere:
    return Sphere(GEOMETRIES[request.param])


@pytest.fixture(scope="module")
def mesh(sphere):
    return la_surface_mesh(sphere.la)


def _radial(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    d = points - centre
    return d / np.linalg.norm(d, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------- sampling
def test_band_offsets_orders() -> None:
    np.testing.assert_allclose(band_offsets((-1.0, 1.0), 0.5), [0, 0.5, -0.5, 1.0, -1.0])
    np.testing.assert_allclose(band_offsets((-1.0, 3.0), 0.5), [0, 0.5, -0.5, 1, -1, 1.5, 2, 2.5, 3])
    np.testing.assert_allclose(band_offsets((-1.0, 3.0), 0.5, "linear"), np.arange(-1.0, 3.01, 0.5))
    np.testing.assert_allclose(band_offsets((0.2, 1.2), 0.5, "linear"), [0.2, 0.5, 1.0, 1.2])  # ends kept
    with pytest.raises(InputError):
        band_offsets((3.0, -1.0), 0.5)
    with pytest.raises(InputError):
        band_offsets((-1.0, 3.0), 0.0)


def test_max_value_is_the_maximum_of_an_affine_field_on_an_oblique_grid() -> None:
    """Trilinear interpolation is exact for an affine field, so the band maximum is known exactly."""
    sph = Sphere(GEOMETRIES["oblique"])
    a = np.array([0.03, -0.05, 0.04])
    field = (sph.rel @ a + 0.5).astype(np.float32)
    rng = np.random.default_rng(0)
    points = sph.centre + rng.uniform(-6, 6, size=(500, 3))
    normals = rng.normal(size=(500, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    res = project(Volume(field, sph.geo), points, normals, (-1.0, 3.0), 0.5)
    at_point = (points - sph.centre) @ a + 0.5
    slope = normals @ a
    expected = at_point + np.maximum(-1.0 * slope, 3.0 * slope)
    np.testing.assert_allclose(res.max_value, expected, atol=2e-5)
    assert res.max_value.dtype == np.float32 and res.hit.dtype == bool
    np.testing.assert_array_equal(res.hit, expected > 0.5)
    assert 50 < res.hit.sum() < 450  # both outcomes occur, so the comparison means something
    # the first sample over threshold, in linear order, is the smallest t with value > 0.5
    lin = project(Volume(field, sph.geo), points, normals, (-1.0, 3.0), 0.5, order="linear")
    t = lin.t_mm
    vals = at_point[:, None] + slope[:, None] * t[None, :]
    first = np.where((vals > 0.5).any(1), t[np.argmax(vals > 0.5, axis=1)], np.nan)
    ok = np.abs(vals - 0.5).min(axis=1) > 1e-4
    np.testing.assert_allclose(lin.first_t_mm[ok], first[ok])


def test_outside_the_image_counts_as_zero() -> None:
    sph = Sphere(GEOMETRIES["oblique"])
    ones = sph.vol(np.ones(sph.r.shape))
    far = sph.centre + np.array([[500.0, 0, 0], [0, -400.0, 0]])
    res = project(ones, far, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (-1.0, 3.0), 0.5)
    assert not res.hit.any() and np.all(res.max_value == 0) and np.all(res.first_index == -1)
    inside = project(ones, sph.centre[None], np.array([[0, 0, 1.0]]), (-1.0, 3.0), 0.5, interpolation="nearest")
    assert inside.hit.all() and inside.max_value[0] == 1.0 and inside.first_index[0] == 0


# ---------------------------------------------------------------------------- product mesh
def test_mesh_lies_on_the_sphere_in_lps_with_outward_normals(sphere, mesh) -> None:
    pts, nrm = mesh_points_normals(mesh)
    assert len(pts) > 500
    dist = np.linalg.norm(pts - sphere.centre, axis=1)
    assert np.all(np.abs(dist - R) < max(sphere.geo.spacing)), (dist.min(), dist.max())
    assert abs(dist.mean() - R) < 0.5
    np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1.0, atol=1e-4)
    dots = np.einsum("ij,ij->i", nrm, _radial(pts, sphere.centre))
    assert dots.min() > 0.9, dots.min()


def test_probability_volume_gives_a_surface_at_one_half() -> None:
    sph = Sphere(GEOMETRIES["oblique"])
    prob = sph.la.with_array(np.clip(0.5 + (R - sph.r) / 3.0, 0.0, 1.0).astype(np.float32))
    pts, nrm = mesh_points_normals(la_surface_mesh(prob, smoothing_iterations=0))
    dist = np.linalg.norm(pts - sph.centre, axis=1)
    assert np.all(np.abs(dist - R) < 0.3), (dist.min(), dist.max())
    assert np.einsum("ij,ij->i", nrm, _radial(pts, sph.centre)).min() > 0.9


def test_empty_mask_raises_no_la_found(sphere) -> None:
    with pytest.raises(InputError, match="no LA found"):
        la_surface_mesh(sphere.vol(np.zeros(sphere.r.shape)))
    with pytest.raises(InputError, match="no LA found"):
        la_surface_mesh(sphere.la.with_array(np.full(sphere.r.shape, 0.3, np.float32)))


def test_full_shell_is_hit_everywhere_and_hemisphere_on_half_the_area(sphere, mesh) -> None:
    wall = sphere.shell(R, R + 3.0)
    prob = sphere.la.with_array(wall.astype(np.float32) * 0.8)
    full = project_on_mesh(mesh, sphere.vol(wall), prob)
    scar = ns.vtk_to_numpy(full.GetPointData().GetArray("Scar"))
    p_scar = ns.vtk_to_numpy(full.GetPointData().GetArray("ScarProbability"))
    assert scar.dtype == np.uint8 and p_scar.dtype == np.float32
    assert scar.all() and surface_burden_pct(full) == pytest.approx(100.0)
    # the band crosses the middle of the shell, where all 8 interpolation neighbours are wall
    assert p_scar.max() <= 0.8 + 1e-6 and np.all(p_scar > 0.79)
    assert mesh.GetPointData().GetArray("Scar") is None  # the input mesh is left alone

    u = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    half = wall & (sphere.rel @ u > 0)
    out = project_on_mesh(mesh, sphere.vol(half), prob)
    scar = ns.vtk_to_numpy(out.GetPointData().GetArray("Scar"))
    pts, _ = mesh_points_normals(out)
    side = (pts - sphere.centre) @ u
    assert scar[side > 2.0].all() and not scar[side < -2.0].any()
    assert 0.4 < scar.mean() < 0.6
    assert surface_burden_pct(out) == pytest.approx(50.0, abs=4.0)


def test_band_bounds_decide_what_is_met(sphere, mesh) -> None:
    """Scar 4.5-7 mm outside the surface: beyond the product band (-1, 3), inside (-1, 6)."""
    far = sphere.vol(sphere.shell(R + 4.5, R + 7.0))
    prob = far.with_array(far.array.astype(np.float32))
    near = project_on_mesh(mesh, far, prob, band_mm=(-1.0, 3.0))
    assert not ns.vtk_to_numpy(near.GetPointData().GetArray("Scar")).any()
    assert ns.vtk_to_numpy(near.GetPointData().GetArray("ScarProbability")).max() < 0.5
    wide = project_on_mesh(mesh, far, prob, band_mm=(-1.0, 6.0))
    assert ns.vtk_to_numpy(wide.GetPointData().GetArray("Scar")).all()
    assert surface_burden_pct(wide) == pytest.approx(100.0)


def test_surface_burden_is_area_weighted() -> None:
    """A big triangle marked scar and a tiny quad (triangulated) not: burden = big / total area."""
    pts = np.array([[0, 0, 0], [4, 0, 0], [0, 3, 0],  # area 6
                    [10, 0, 0], [11, 0, 0], [11, 1, 0], [10, 1, 0]], float)  # area 1
    poly = vtkPolyData()
    vp = vtkPoints()
    vp.SetData(ns.numpy_to_vtk(pts, deep=True))
    poly.SetPoints(vp)
    cells = vtkCellArray()
    for ids in ([0, 1, 2], [3, 4, 5, 6]):
        cells.InsertNextCell(len(ids), ids)
    poly.SetPolys(cells)
    arr = ns.numpy_to_vtk(np.array([1, 1, 1, 0, 0, 0, 0], np.uint8), deep=True)
    arr.SetName("Scar")
    poly.GetPointData().AddArray(arr)
    assert surface_burden_pct(poly) == pytest.approx(100.0 * 6.0 / 7.0)
    with pytest.raises(InputError):
        surface_burden_pct(poly, "Nope")


# ------------------------------------------------------------------------ evaluation surface
def test_evaluation_normals_point_outward_on_oblique_grids(sphere) -> None:
    points, normals = evaluation_surface(sphere.la)
    assert len(points) == int(inner_boundary(sphere.la.array).sum())
    dist = np.linalg.norm(points - sphere.centre, axis=1)
    assert dist.max() <= R + 1e-9 and dist.min() > R - max(sphere.geo.spacing) * 1.8
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-9)
    dots = np.einsum("ij,ij->i", normals, _radial(points, sphere.centre))
    assert dots.min() > 0.9, dots.min()
    # the points are voxel centres of the LA boundary
    idx = sphere.geo.physical_to_index(points)
    np.testing.assert_allclose(idx, np.round(idx), atol=1e-6)


def test_classify_hemisphere_and_missing_wall(sphere) -> None:
    points, normals = evaluation_surface(sphere.la)
    u = np.array([0.0, 0.6, -0.8])
    v = np.cross(u, [1.0, 0.0, 0.0])
    v /= np.linalg.norm(v)
    no_wall_cone = (sphere.rel @ v) > 0.85 * sphere.r  # a cap with no wall at all
    wall = sphere.shell(R, R + 3.0) & ~no_wall_cone
    scar = wall & (sphere.rel @ u > 0)  # wall includes its scar, as phantom walls do
    cls = classify_along_normals(sphere.vol(scar), sphere.vol(wall), points, normals)
    assert cls.dtype == np.int8 and set(np.unique(cls)) == {-1, 0, 1}
    side = (points - sphere.centre) @ u
    cap = (points - sphere.centre) @ v
    clear = cap < 0.5 * R  # well away from the wall-less cap
    assert np.all(cls[(side > 2.0) & clear] == 1)
    assert np.all(cls[(side < -2.0) & clear] == 0)
    assert np.all(cls[cap > 0.97 * R] == -1)  # nothing within 10 mm of the cap's centre


def test_classify_takes_the_first_met_alternating(sphere) -> None:
    """Scar 1-2.5 mm outside vs wall 6-8 mm inside: outward-first order meets the scar first,
    whereas a linear sweep from -10 mm would meet the wall first. And the other way round."""
    points, normals = evaluation_surface(sphere.la)
    outside = sphere.vol(sphere.shell(R + 1.0, R + 2.5))
    inside = sphere.vol(sphere.shell(R - 8.0, R - 6.0))
    assert np.all(classify_along_normals(outside, inside, points, normals) == 1)
    assert np.all(classify_along_normals(inside, outside, points, normals) == 0)
    lin_wall = project(inside, points, normals, (-10.0, 10.0), 0.5, order="linear", interpolation="nearest")
    lin_scar = project(outside, points, normals, (-10.0, 10.0), 0.5, order="linear", interpolation="nearest")
    assert lin_wall.hit.all() and lin_scar.hit.all()
    assert np.all(lin_wall.first_index < lin_scar.first_index)
    # beyond max_mm nothing is met
    assert np.all(classify_along_normals(outside, inside, points, normals, max_mm=0.5) == -1)


def test_surface_file_is_lz4_compressed_and_reads_back(sphere, mesh, tmp_path) -> None:
    """`pipeline.write_surface`: binary VTK XML with LZ4, readable by VTK's reader (as Slicer's is)."""
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    from LAScarSegLib.app.pipeline import write_surface

    wall = sphere.vol(sphere.shell(R, R + 3.0))
    out = project_on_mesh(mesh, wall, wall.with_array(wall.array * np.float32(0.8)))
    path = tmp_path / "la_surface.vtp"
    write_surface(out, path)
    assert b'compressor="vtkLZ4DataCompressor"' in path.read_bytes()[:2000]
    assert out.GetFieldData().GetArray("SPACE") is None and out.GetFieldData().GetNumberOfArrays() == 0
    reader = vtkXMLPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    back = reader.GetOutput()
    assert back.GetFieldData().GetAbstractArray("SPACE").GetValue(0) == "LPS"
    np.testing.assert_array_equal(ns.vtk_to_numpy(back.GetPoints().GetData()),
                                  ns.vtk_to_numpy(out.GetPoints().GetData()))
    for name in ("Scar", "ScarProbability", "Normals"):
        np.testing.assert_array_equal(ns.vtk_to_numpy(back.GetPointData().GetArray(name)),
                                      ns.vtk_to_numpy(out.GetPointData().GetArray(name)))
    assert back.GetNumberOfPolys() == out.GetNumberOfPolys()


def test_classify_pairs_on_shared_and_separate_grids(sphere) -> None:
    """Several pairs in one pass, and a pair whose scar and wall lie on different grids, label as one by one."""
    from LAScarSegLib.quantify.projection import classify_pairs

    points, normals = evaluation_surface(sphere.la)
    wall = sphere.shell(R, R + 3.0)
    pairs = [(sphere.vol(wall & (sphere.rel[..., k] > 0)), sphere.vol(wall)) for k in range(3)]
    pairs += [(sphere.vol(sphere.shell(R - 4.0, R - 2.0)), sphere.vol(wall)), (pairs[0][0], pairs[0][1])]
    # a scar mask on a grid shifted by 3 voxels in x: the same scar, sampled through its own geometry
    g = sphere.geo
    shifted = Geometry((g.size[0] - 3,) + tuple(g.size[1:]), g.spacing,
                       tuple(g.index_to_physical(np.array([[3.0, 0.0, 0.0]]))[0]), g.direction)
    pairs.append((Volume(np.ascontiguousarray(pairs[1][0].array[:, :, 3:]), shifted), pairs[1][1]))
    together = classify_pairs(pairs, points, normals)
    for (scar, w), got in zip(pairs, together):
        alone = classify_along_normals(scar, w, points, normals)
        np.testing.assert_array_equal(got, alone)
    np.testing.assert_array_equal(together[-1], together[1])  # cropping the empty side changes nothing
    assert all(set(np.unique(together[k])) == {0, 1} for k in range(3))  # hemispheres: scar and normal
    assert np.all(together[3] == 0)  # the wall outside is met before the scar 2 mm inside
