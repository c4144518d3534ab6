"""Scar projection onto the LA surface (CONTRACTS section 6): one sampler for the product and the metrics.

Projecting the wall onto the LA surface makes wall thickness drop out of burden and of the
evaluation. Every projection here goes through `project`: it samples a volume along each
surface point's outward normal, in physical LPS millimetres through the volume's own
`Geometry` (so spacing, origin and an oblique or mirrored direction are honoured, and the
surface and the volume need not share a grid).

- Product: `la_surface_mesh` (smoothed LA mesh in LPS mm with outward point normals) and
  `project_on_mesh` (band -1 mm to +3 mm: point arrays `ScarProbability` and `Scar`), with
  `surface_burden_pct` (area-weighted % of the surface that is scar).
- Evaluation (the paper's protocol, METHOD-NOTES section 3): `evaluation_surface` (boundary
  voxels of the manual LA, normals from the LA blurred with sigma 4 mm) and
  `classify_along_normals` (first scar or wall voxel met, alternating outward and inward).

No Python loop runs over voxels or points: all samples of all points are taken in one call.
VTK is imported only by the mesh functions, so the evaluation path does not need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage
from vtkmodules import vtkCommonCore, vtkCommonDataModel, vtkFiltersCore, vtkFiltersGeneral
from vtkmodules.util import numpy_support

from ..core.distance import inner_boundary
from ..core.errors import InputError
from ..core.image import Geometry, Volume, box_around

Order = Literal["outward-first-alternating", "linear"]
Interpolation = Literal["linear", "nearest"]

PRODUCT_BAND_MM = (-1.0, 3.0)
DEFAULT_STEP_MM = 0.5
EVAL_MAX_MM = 10.0
EVAL_SIGMA_MM = 4.0

SCAR = 1
NORMAL = 0
NEITHER = -1


@dataclass(frozen=True)
class ProjectionResult:
    """Per point: whether the band meets scar, the maximum value met and where it was met first.

    hit: (N,) bool, some sample > threshold.
    max_value: (N,) float32, maximum sampled value along the band (0 outside the image).
    first_index: (N,) int32, position in `t_mm` (the search order) of the first sample > threshold,
        -1 where there is none; this is what makes `order` matter.
    t_mm: (T,) float64, the offsets along the normal in the order they were searched.
    """

    hit: np.ndarray
    max_value: np.ndarray
    first_index: np.ndarray
    t_mm: np.ndarray

    @property
    def first_t_mm(self) -> np.ndarray:
        """Offset (mm) of the first sample over threshold, NaN where none was."""
        out = np.full(self.first_index.shape, np.nan, dtype=np.float32)
        ok = self.first_index >= 0
        out[ok] = self.t_mm[self.first_index[ok]]
        return out


# ------------------------------------------------------------------------------- sampling
def band_offsets(band_mm: tuple[float, float], step_mm: float, order: Order = "outward-first-alternating") -> np.ndarray:
    """Offsets (mm) along the normal: the multiples of `step_mm` within the band, plus both ends.

    'linear' runs from start to end. 'outward-first-alternating' runs by distance from the
    surface, outward before inward at equal distance: 0, +s, -s, +2s, -2s, ... (an asymmetric band
    continues on the longer side alone). The surface point itself (t = 0) is searched first when
    the band contains it.
    """
    start, end = float(band_mm[0]), float(band_mm[1])
    if not (np.isfinite(start) and np.isfinite(end)) or end < start:
        raise InputError(f"projection band must be [start_mm, end_mm] with start <= end, got {band_mm}")
    if not step_mm > 0:
        raise InputError(f"projection step must be positive, got {step_mm} mm")
    eps = 1e-6
    k = np.arange(np.ceil(start / step_mm - eps), np.floor(end / step_mm + eps) + 1)
    t = np.unique(np.round(np.concatenate([k * step_mm, [start, end]]), 9))
    if order == "linear":
        return t
    if order == "outward-first-alternating":
        return t[np.lexsort((t < 0, np.abs(t)))]
    raise InputError(f"unknown projection order {order!r}; use 'outward-first-alternating' or 'linear'")


def _check_points(points_lps: np.ndarray, normals_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(points_lps, dtype=np.float64)
    n = np.asarray(normals_lps, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or n.shape != p.shape:
        raise InputError(f"points and normals must both be (N, 3), got {p.shape} and {n.shape}")
    return p, n


def _nearest_flat_index(geo: Geometry, p: np.ndarray, n: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat (C-order) array index of the voxel nearest to point + t * normal, and whether it is inside.

    Both (N, T); the index is 0 where the sample lies outside the image. The voxel is
    floor(index + 0.5) per axis (half-voxel ties go one way, no banker's rounding), with the
    continuous index affine in t: idx(p) + t * (D^-1 n) / spacing, evaluated axis by axis with the
    same floating-point operations as a single (N, T, 3) array would use.
    """
    base = geo.physical_to_index(p)  # (N, 3) x, y, z
    step = (n @ np.linalg.inv(geo.direction_matrix).T) / np.asarray(geo.spacing)
    flat = np.zeros((len(p), len(t)), np.float64)  # integers below 2**53: exact in float64
    inside = np.ones((len(p), len(t)), bool)
    stride = 1
    for a in range(3):  # x, y, z: x varies fastest in the array's memory
        i = base[:, a, None] + t[None, :] * step[:, a, None]
        i += 0.5
        np.floor(i, out=i)
        inside &= (i >= 0) & (i < geo.size[a])
        if stride != 1:
            i *= stride
        flat += i
        stride *= int(geo.size[a])
    flat[~inside] = 0
    return flat.astype(np.intp), inside


def _nearest_samples(arr: np.ndarray, flat: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """`arr` at the flat indices of `_nearest_flat_index`, 0 (of arr's dtype) outside the image."""
    vals = np.ravel(arr)[flat]
    vals[~inside] = 0
    return vals


def sample_along_normals(volume: Volume, points_lps: np.ndarray, normals_lps: np.ndarray, t_mm: np.ndarray,
                         interpolation: Interpolation = "linear") -> np.ndarray:
    """Values of `volume` at point + t * normal, shape (N, T), float32; outside the image 0.

    'linear' is trilinear interpolation (probabilities); 'nearest' reads the nearest voxel (masks:
    a sample is scar exactly when the voxel it falls in is).
    """
    p, n = _check_points(points_lps, normals_lps)
    t = np.asarray(t_mm, dtype=np.float64)
    if len(p) == 0 or len(t) == 0:
        return np.zeros((len(p), len(t)), np.float32)
    geo: Geometry = volume.geometry
    arr = np.asarray(volume.array)
    if interpolation == "linear":
        # the index of point + t * normal is affine in t: idx(p) + t * (D^-1 n) / spacing
        base = geo.physical_to_index(p)  # (N, 3) x, y, z
        step = (n @ np.linalg.inv(geo.direction_matrix).T) / np.asarray(geo.spacing)
        idx = base[:, None, :] + t[None, :, None] * step[:, None, :]  # (N, T, 3) x, y, z
        zyx = idx[..., ::-1].reshape(-1, 3).T  # (3, N*T) in array order
        data = arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float32)
        vals = ndimage.map_coordinates(data, zyx, order=1, mode="grid-constant", cval=0.0, output=np.float32)
        return vals.reshape(len(p), len(t))
    if interpolation == "nearest":
        flat, inside = _nearest_flat_index(geo, p, n, t)
        return _nearest_samples(arr, flat, inside).astype(np.float32, copy=False)
    raise InputError(f"unknown interpolation {interpolation!r}; use 'linear' or 'nearest'")


def project(volume: Volume, points_lps: np.ndarray, normals_lps: np.ndarray,
            band_mm: tuple[float, float] = PRODUCT_BAND_MM, step_mm: float = DEFAULT_STEP_MM, *,
            order: Order = "outward-first-alternating", threshold: float = 0.5,
            interpolation: Interpolation = "linear") -> ProjectionResult:
    """Project a scar mask or probability volume onto surface points along their outward normals.

    Samples `volume` at point + t * normal for t in `band_offsets(band_mm, step_mm, order)`
    (normals are unit and outward, LPS). `hit`: some sample > `threshold`; `max_value`: the
    maximum sampled value; `first_index`: the first sample over threshold in search order.
    """
    t = band_offsets(band_mm, step_mm, order)
    vals = sample_along_normals(volume, points_lps, normals_lps, t, interpolation)
    over = vals > threshold
    hit = over.any(axis=1)
    first = np.where(hit, over.argmax(axis=1), -1).astype(np.int32)
    max_value = vals.max(axis=1) if vals.shape[1] else np.zeros(len(vals), np.float32)
    return ProjectionResult(hit, max_value.astype(np.float32, copy=False), first, t)


# ------------------------------------------------------------------------- evaluation protocol
def classify_along_normals(scar: Volume, wall: Volume, points_lps: np.ndarray, normals_lps: np.ndarray,
                           max_mm: float = EVAL_MAX_MM, step_mm: float = DEFAULT_STEP_MM) -> np.ndarray:
    """The paper's 3-class surface label: 1 scar, 0 normal wall, -1 neither within +-max_mm.

    Searches 0, +s, -s, +2s, -2s, ... up to +-max_mm (nearest-voxel lookups); the first scar
    voxel met makes the point scar, the first wall voxel met makes it normal wall. `wall` may
    include the scar (as phantom walls do): a sample in both is scar. -1 means no wall was found
    near the point (vein ends, mitral opening); `scar_surface_metrics` excludes such points when
    they are -1 in the reference and counts them as not scar in a prediction.
    """
    return classify_pairs([(scar, wall)], points_lps, normals_lps, max_mm, step_mm)[0]


def classify_pairs(pairs: list[tuple[Volume, Volume]], points_lps: np.ndarray, normals_lps: np.ndarray,
                   max_mm: float = EVAL_MAX_MM, step_mm: float = DEFAULT_STEP_MM) -> list[np.ndarray]:
    """`classify_along_normals` for several (scar, wall) pairs on the same points, in one pass.

    Volumes on the same grid share the sample positions, and up to four pairs are packed into
    one uint8 code volume (bit 2k: scar of pair k, bit 2k+1: its wall), so one lookup per
    sample serves them all. A point is scar when the first sample meeting scar or wall of its
    pair meets scar (that is, the first scar sample comes no later than the first wall sample),
    normal when it meets wall only, neither when nothing is met.
    """
    p, n = _check_points(points_lps, normals_lps)
    t = band_offsets((-float(max_mm), float(max_mm)), step_mm, "outward-first-alternating")
    out: list[np.ndarray] = [np.full(len(p), NEITHER, dtype=np.int8) for _ in pairs]
    if len(p) == 0:
        return out
    groups: dict[Geometry, list[int]] = {}
    for k, (scar, wall) in enumerate(pairs):
        if scar.geometry == wall.geometry:
            groups.setdefault(scar.geometry, []).append(k)
        else:  # the scar and wall of a pair on different grids: sampled one by one
            fs, hs = _first_met(scar, p, n, t)
            fw, hw = _first_met(wall, p, n, t)
            out[k][hw] = NORMAL
            out[k][hs & (fs <= fw)] = SCAR
    for geo, ks in groups.items():
        flat, inside = _nearest_flat_index(geo, p, n, t)
        rows = np.arange(len(p))
        for chunk in range(0, len(ks), 4):
            kk = ks[chunk:chunk + 4]
            code = np.zeros(geo.shape, np.uint8)
            for j, k in enumerate(kk):
                scar, wall = pairs[k]
                code |= (np.asarray(wall.array) != 0).astype(np.uint8) << np.uint8(2 * j + 1)
                code |= (np.asarray(scar.array) != 0).astype(np.uint8) << np.uint8(2 * j)
            samples = _nearest_samples(code, flat, inside)  # (N, T) uint8
            for j, k in enumerate(kk):
                mine = samples & np.uint8(3 << (2 * j))
                met = mine != 0
                first = met.argmax(axis=1)
                at_first = mine[rows, first] >> np.uint8(2 * j)  # 0 nothing, 1 or 3 scar, 2 wall only
                out[k][at_first == 2] = NORMAL
                out[k][(at_first & 1) == 1] = SCAR
    return out


def _first_met(volume: Volume, p: np.ndarray, n: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Search position of the first non-zero nearest-voxel sample (int32 max where none) and whether any is."""
    flat, inside = _nearest_flat_index(volume.geometry, p, n, t)
    met = _nearest_samples(np.asarray(volume.array) != 0, flat, inside)
    hit = met.any(axis=1)
    return np.where(hit, met.argmax(axis=1), np.iinfo(np.int32).max), hit


def evaluation_surface(la: Volume, sigma_mm: float = EVAL_SIGMA_MM) -> tuple[np.ndarray, np.ndarray]:
    """Surface points and outward normals of a (manual) LA mask, the paper's evaluation surface.

    Points: centres of the LA's boundary voxels (`distance.inner_boundary`), LPS mm. Normals: minus
    the gradient of the mask blurred with a Gaussian of `sigma_mm` (per-axis sigma in voxels from
    the spacing; outside the image counts as not LA), taken in index space by central differences
    at the points and carried to LPS as D @ (g / spacing), normalised. A point whose gradient
    vanishes (a symmetric thin structure) gets a zero normal and is only sampled at itself.
    """
    if not sigma_mm > 0:
        raise InputError(f"normal smoothing sigma must be positive, got {sigma_mm} mm")
    m = np.asarray(la.array) != 0
    if not m.any():
        raise InputError(f"{la.source or 'LA label'}: LA label is empty; no surface to evaluate on")
    geo = la.geometry
    sigma_vox = np.asarray(la.spacing_zyx, dtype=float)
    sigma_vox = sigma_mm / sigma_vox
    truncate = 3.0
    # Blur only the LA's bounding box grown by one voxel (clipped to the image): the gradient is read
    # at boundary voxels and their 6-neighbours, all inside it. The separable passes (z, then y,
    # then x, each rounded to float32) only add mask values that lie inside the box; whatever lies
    # beyond it is 0 in the mask and every partial sum, and the constant-0 padding adds the same
    # exact zeros, so the blurred values there are bit for bit those of the whole image.
    box = box_around(m, pad=1)
    blurred = ndimage.gaussian_filter(m[box].astype(np.float32), sigma_vox, mode="constant", cval=0.0,
                                      truncate=truncate)
    surf = inner_boundary(m[box])
    zyx = np.stack(np.nonzero(surf), axis=1)  # (N, 3) in the box
    shape = np.asarray(blurred.shape)
    grad_zyx = np.empty(zyx.shape, np.float64)
    for a in range(3):  # three axes, each vectorised over all points
        up, dn = zyx.copy(), zyx.copy()
        up[:, a] = np.minimum(up[:, a] + 1, shape[a] - 1)
        dn[:, a] = np.maximum(dn[:, a] - 1, 0)
        num = blurred[tuple(up.T)].astype(np.float64) - blurred[tuple(dn.T)]
        grad_zyx[:, a] = num / np.maximum(up[:, a] - dn[:, a], 1)
    g_xyz = grad_zyx[:, ::-1] / np.asarray(geo.spacing)  # d/d(mm along each index axis)
    grad_lps = g_xyz @ geo.direction_matrix.T  # D @ g for each row
    normals = -grad_lps
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, norm, out=np.zeros_like(normals), where=norm > 1e-12)
    lo = np.array([s.start for s in box])
    points = geo.index_to_physical((zyx + lo)[:, ::-1].astype(np.float64))
    return points, normals


# ------------------------------------------------------------------------------- the product
def _vtk():
    """VTK modules, imported on first use."""
    return vtkCommonCore, vtkCommonDataModel, vtkFiltersCore, vtkFiltersGeneral, numpy_support


def _triangles(mesh: Any) -> tuple[np.ndarray, np.ndarray]:
    """Points (P, 3) and triangle vertex ids (T, 3) of a polydata (triangulated when needed)."""
    _, _, fc, _, ns = _vtk()
    polys = mesh.GetPolys()
    if polys is None or polys.GetNumberOfCells() == 0:
        raise InputError("the surface mesh has no polygons")
    offsets = ns.vtk_to_numpy(polys.GetOffsetsArray())
    if not np.all(np.diff(offsets) == 3):
        tri = fc.vtkTriangleFilter()
        tri.SetInputData(mesh)
        tri.PassVertsOff()
        tri.PassLinesOff()
        tri.Update()
        mesh = tri.GetOutput()
        polys = mesh.GetPolys()
    conn = ns.vtk_to_numpy(polys.GetConnectivityArray()).reshape(-1, 3)
    pts = ns.vtk_to_numpy(mesh.GetPoints().GetData()).astype(np.float64)
    return pts, conn


def _signed_volume(points: np.ndarray, tris: np.ndarray) -> float:
    """Signed volume enclosed by a triangle mesh: positive when the faces wind outward."""
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _is_probability(arr: np.ndarray) -> bool:
    return arr.dtype.kind == "f" and not bool(np.all((arr == 0) | (arr == 1)))


def la_surface_mesh(la: Volume, smoothing_iterations: int = 20, pass_band: float = 0.01,
                    threshold: float = 0.5) -> Any:
    """The LA surface as a vtkPolyData in LPS millimetres with outward point normals ("Normals").

    A 0/1 mask goes through vtkDiscreteFlyingEdges3D, a probability volume (float, not just 0/1)
    through vtkFlyingEdges3D at `threshold`. The image is padded by one empty voxel so the surface
    is closed where the LA touches the image border. Contouring runs in index space; the points
    are then carried to LPS with the volume's origin, spacing and direction (oblique and mirrored
    directions included), smoothed with vtkWindowedSincPolyDataFilter (normalised coordinates;
    `pass_band` 0.01 is Slicer's default smoothing), and given consistent point normals, flipped
    when the signed volume says the faces wind inward (a mirrored direction reverses them).
    Raises `InputError` when there is no LA (nothing over threshold) instead of an empty mesh.
    """
    _, dm, fc, fg, ns = _vtk()
    arr = np.asarray(la.array)
    prob = _is_probability(arr)
    inside = arr > threshold if prob else arr != 0
    if not inside.any():
        raise InputError(f"{la.source or 'LA'}: no LA found (the LA {'probability' if prob else 'mask'} is empty); "
                         "cannot build a surface")
    data = np.pad(arr.astype(np.float32) if prob else inside.astype(np.uint8), 1)
    image = dm.vtkImageData()
    image.SetDimensions(data.shape[2], data.shape[1], data.shape[0])
    image.SetOrigin(-1.0, -1.0, -1.0)  # the padding: index (0, 0, 0) of the volume stays at 0
    image.SetSpacing(1.0, 1.0, 1.0)
    image.GetPointData().SetScalars(ns.numpy_to_vtk(data.ravel(), deep=True))
    if prob:
        contour = fc.vtkFlyingEdges3D()
        contour.SetValue(0, float(threshold))
    else:
        contour = fg.vtkDiscreteFlyingEdges3D()
        contour.SetValue(0, 1.0)
    contour.SetInputData(image)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()
    contour.Update()
    surface = contour.GetOutput()
    if surface.GetNumberOfPoints() == 0:
        raise InputError(f"{la.source or 'LA'}: no LA found (the contour is empty); cannot build a surface")
    ijk = ns.vtk_to_numpy(surface.GetPoints().GetData()).astype(np.float64)
    lps = la.geometry.index_to_physical(ijk)
    surface.GetPoints().SetData(ns.numpy_to_vtk(np.ascontiguousarray(lps), deep=True))

    smooth = fc.vtkWindowedSincPolyDataFilter()
    smooth.SetInputData(surface)
    smooth.SetNumberOfIterations(int(smoothing_iterations))
    smooth.SetPassBand(float(pass_band))
    smooth.NormalizeCoordinatesOn()
    smooth.BoundarySmoothingOff()
    smooth.FeatureEdgeSmoothingOff()
    smooth.NonManifoldSmoothingOn()
    normals = fc.vtkPolyDataNormals()
    if smoothing_iterations > 0:
        normals.SetInputConnection(smooth.GetOutputPort())
    else:
        normals.SetInputData(surface)
    normals.ConsistencyOn()
    normals.SplittingOff()
    normals.AutoOrientNormalsOff()
    normals.ComputePointNormalsOn()
    normals.ComputeCellNormalsOff()
    normals.Update()
    mesh = normals.GetOutput()
    pts, tris = _triangles(mesh)
    if _signed_volume(pts, tris) < 0:
        rev = fc.vtkReverseSense()
        rev.SetInputData(mesh)
        rev.ReverseCellsOn()
        rev.ReverseNormalsOn()
        rev.Update()
        mesh = rev.GetOutput()
    out = dm.vtkPolyData()
    out.DeepCopy(mesh)
    return out


def mesh_points_normals(mesh: Any) -> tuple[np.ndarray, np.ndarray]:
    """Point coordinates and point normals (N, 3) of a mesh from `la_surface_mesh`."""
    *_, ns = _vtk()
    normals = mesh.GetPointData().GetNormals()
    if normals is None:
        raise InputError("the surface mesh has no point normals")
    pts = ns.vtk_to_numpy(mesh.GetPoints().GetData()).astype(np.float64)
    return pts, ns.vtk_to_numpy(normals).astype(np.float64)


def project_on_mesh(mesh: Any, scar_mask: Volume, scar_prob: Volume,
                    band_mm: tuple[float, float] = PRODUCT_BAND_MM, step_mm: float = DEFAULT_STEP_MM) -> Any:
    """A copy of `mesh` with point arrays "ScarProbability" and "Scar" (CONTRACTS section 5).

    ScarProbability (float32): maximum p_scar along the band on the vertex normal (trilinear).
    Scar (uint8): 1 where the band meets a `scar_mask` voxel (nearest-voxel lookups).
    """
    pts, nrm = mesh_points_normals(mesh)
    prob = project(scar_prob, pts, nrm, band_mm, step_mm, order="linear", interpolation="linear")
    mask = scar_mask.with_array((np.asarray(scar_mask.array) != 0).astype(np.uint8))
    scar = project(mask, pts, nrm, band_mm, step_mm, order="linear", interpolation="nearest")
    return with_point_arrays(mesh, {"ScarProbability": prob.max_value.astype(np.float32),
                                    "Scar": scar.hit.astype(np.uint8)})


def with_point_arrays(mesh: Any, arrays: dict[str, np.ndarray]) -> Any:
    """A copy of `mesh` (geometry shared, point data its own) with these point arrays set by name."""
    _, dm, _, _, ns = _vtk()
    out = dm.vtkPolyData()
    out.ShallowCopy(mesh)
    for name, values in arrays.items():
        values = np.asarray(values).reshape(-1)
        if values.size != out.GetNumberOfPoints():
            raise InputError(f"point array {name!r} has {values.size} values, the surface {out.GetNumberOfPoints()} "
                             "points: it was computed on another surface")
        array = ns.numpy_to_vtk(np.ascontiguousarray(values), deep=True)
        array.SetName(name)
        out.GetPointData().RemoveArray(name)
        out.GetPointData().AddArray(array)
    return out


def point_areas(mesh: Any) -> np.ndarray:
    """Area (mm^2) owned by each point: a third of the area of each incident triangle."""
    pts, tris = _triangles(mesh)
    a, b, c = pts[tris[:, 0]], pts[tris[:, 1]], pts[tris[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    return np.bincount(tris.ravel(), weights=np.repeat(area / 3.0, 3), minlength=len(pts))


def surface_burden_pct(mesh: Any, array_name: str = "Scar") -> float:
    """Scar burden as % of the LA surface area (area-weighted, so mesh density does not bias it)."""
    *_, ns = _vtk()
    arr = mesh.GetPointData().GetArray(array_name)
    if arr is None:
        raise InputError(f"the surface mesh has no point array {array_name!r}")
    scar = ns.vtk_to_numpy(arr).reshape(-1) > 0
    areas = point_areas(mesh)
    total = float(areas.sum())
    if not total > 0:
        raise InputError("the surface mesh has zero area")
    return 100.0 * float(areas[scar].sum()) / total
