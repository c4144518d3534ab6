"""LA and surface-based scar metrics (LAScarSegLib.metrics, METHOD-NOTES section 3).

Spheres have analytic answers (overlap of two shifted spheres, surface distances that equal the
shift at the poles); the scar protocol is checked on a sphere with hemisphere / quarter scar and on
a synthetic LGE phantom.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from LAScarSegLib.core.errors import InputError
from LAScarSegLib.core.image import Geometry, Volume
from LAScarSegLib.quantify.metrics import LA_KEYS, la_metrics, scar_surface_metrics
from LAScarSegLib.synth.phantom import make_phantom
from LAScarSegLib.quantify.projection import classify_along_normals, evaluation_surface

R = 12.0


def _grid(size=(48, 48, 48), spacing=(1.0, 1.0, 1.0), origin=(10.0, -20.0, 5.0)) -> Geometry:
    return Geometry(size, spacing, origin)


def _ball(geo: Geometry, centre_shift_mm=(0.0, 0.0, 0.0), radius: float = R) -> Volume:
    z, y, x = np.meshgrid(*(np.arange(n) for n in geo.shape), indexing="ij")
    ijk = np.stack([x, y, z], axis=-1).reshape(-1, 3).astype(float)
    centre = geo.index_to_physical((np.asarray(geo.size, float) - 1) / 2) + np.asarray(centre_shift_mm)
    r = np.linalg.norm(geo.index_to_physical(ijk) - centre, axis=1).reshape(geo.shape)
    return Volume((r <= radius).astype(np.uint8), geo)


def _sphere_overlap_dice(radius: float, d: float) -> float:
    lens = np.pi * (4 * radius + d) * (2 * radius - d) ** 2 / 12.0
    return lens / (4.0 / 3.0 * np.pi * radius**3)


# ------------------------------------------------------------------------------------- LA
def test_identical_masks() -> None:
    la = _ball(_grid())
    m = la_metrics(la, la)
    assert m["dice"] == 1.0 and m["jaccard"] == 1.0
    assert all(m[k] == 0.0 for k in LA_KEYS[2:])
    assert set(m) == set(LA_KEYS)


def test_shifted_sphere_distances_and_overlap() -> None:
    geo = _grid()
    ref, pred = _ball(geo), _ball(geo, (3.0, 0.0, 0.0))
    m = la_metrics(pred, ref)
    assert abs(m["hd_mm"] - 3.0) <= 1.0, m
    assert m["dice"] == pytest.approx(_sphere_overlap_dice(R, 3.0), abs=0.02)
    assert m["jaccard"] == pytest.approx(m["dice"] / (2 - m["dice"]))
    # nearest-surface distance is about 3 |cos theta|: mean 1.5, 95th percentile 2.85
    assert m["asd_mm"] == pytest.approx(1.5, abs=0.4)
    assert m["hd95_mm"] == pytest.approx(2.85, abs=0.5)
    assert m["hd95_mm"] <= m["hd_mm"]
    assert m["asd_vox"] == pytest.approx(m["asd_mm"]) and m["hd95_vox"] == pytest.approx(m["hd95_mm"])  # 1 mm voxels


def test_hd_is_the_maximum_not_hd95() -> None:
    """One far-away false-positive voxel sets HD (the maximum) but hardly moves HD95."""
    geo = _grid()
    ref = _ball(geo)
    pred = ref.array.copy()
    pred[2, 2, 2] = 1  # index (x, y, z) = (2, 2, 2), far from the ball centred at 23.5
    m = la_metrics(ref.with_array(pred), ref)
    far = np.linalg.norm(np.array([2.0, 2.0, 2.0]) - 23.5) - R
    assert abs(m["hd_mm"] - far) <= 1.0, m
    assert m["hd95_mm"] < 1.0 and m["dice"] > 0.99


def test_voxel_units_use_unit_spacing_on_anisotropic_grids() -> None:
    """A 4 mm shift along z on 2 mm slices is 2 voxels: the voxel-unit distances are about half."""
    geo = _grid(size=(40, 40, 24), spacing=(1.0, 1.0, 2.0))
    ref, pred = _ball(geo), _ball(geo, (0.0, 0.0, 4.0))
    m = la_metrics(pred, ref)
    assert abs(m["hd_mm"] - 4.0) <= 1.0, m
    assert m["hd95_vox"] == pytest.approx(1.9, abs=0.5), m
    assert m["hd95_vox"] < 0.75 * m["hd95_mm"] and m["asd_vox"] < 0.75 * m["asd_mm"]


def test_empty_masks_give_documented_json_safe_results() -> None:
    geo = _grid()
    ref, empty = _ball(geo), Volume(np.zeros(geo.shape, np.uint8), geo)
    for pred, gt in ((empty, ref), (ref, empty)):
        m = la_metrics(pred, gt)
        assert m["dice"] == 0.0 and m["jaccard"] == 0.0
        assert all(m[k] is None for k in LA_KEYS[2:])
        json.dumps(m, allow_nan=False)
    assert la_metrics(empty, empty)["dice"] == 1.0
    json.dumps(la_metrics(_ball(geo, (2.0, 1.0, 0.0)), ref), allow_nan=False)


def test_la_metrics_refuse_other_grids_and_non_binary_labels() -> None:
    ref = _ball(_grid())
    with pytest.raises(InputError, match="different grids"):
        la_metrics(_ball(_grid(origin=(0.0, 0.0, 0.0))), ref)
    with pytest.raises(InputError, match="0/1"):
        la_metrics(ref.with_array(ref.array * 255), ref)


# ----------------------------------------------------------------------------------- scar
@pytest.fixture(scope="module")
def ball_case():
    """Sphere LA, 3 mm wall, scar on the hemisphere x > 0 of the wall."""
    geo = _grid(size=(56, 56, 56), spacing=(0.9, 1.0, 1.1))
    la = _ball(geo)
    outer = _ball(geo, radius=R + 3.0)
    wall = la.with_array(((outer.array == 1) & (la.array == 0)).astype(np.uint8))
    z, y, x = np.meshgrid(*(np.arange(n) for n in geo.shape), indexing="ij")
    rel = geo.index_to_physical(np.stack([x, y, z], -1).reshape(-1, 3).astype(float)) \
        - geo.index_to_physical((np.asarray(geo.size, float) - 1) / 2)
    rel = rel.reshape(*geo.shape, 3)
    scar = wall.with_array(wall.array * (rel[..., 0] > 0))
    quarter = wall.with_array(wall.array * ((rel[..., 0] > 0) & (rel[..., 1] > 0)))
    return la, wall, scar, quarter, rel


def test_prediction_equal_to_truth_is_perfect(ball_case) -> None:
    la, wall, scar, _, _ = ball_case
    m = scar_surface_metrics(scar, scar, wall, la)
    assert m["accuracy"] == 1.0 and m["dice_scar"] == 1.0 and m["dice_normal"] == 1.0 and m["gdice"] == 1.0
    assert m["n_points"] > 1000 and m["n_excluded"] == 0
    json.dumps(m, allow_nan=False)


def test_all_normal_prediction(ball_case) -> None:
    la, wall, scar, _, _ = ball_case
    m = scar_surface_metrics(scar.with_array(np.zeros_like(scar.array)), scar, wall, la)
    points, normals = evaluation_surface(la)
    ref = classify_along_normals(scar, wall, points, normals)
    normal_fraction = float(np.mean(ref[ref >= 0] == 0))
    assert m["dice_scar"] == 0.0
    assert m["accuracy"] == pytest.approx(normal_fraction) and 0.4 < normal_fraction < 0.6
    assert m["dice_normal"] == pytest.approx(2 * normal_fraction / (1 + normal_fraction))
    assert m["gdice"] == pytest.approx(normal_fraction * m["dice_normal"])


def test_quarter_against_hemisphere(ball_case) -> None:
    """Predicting half of the true scar: Dice_scar 2/3, accuracy 3/4, on surface points only."""
    la, wall, scar, quarter, _ = ball_case
    m = scar_surface_metrics(quarter, scar, wall, la)
    assert m["dice_scar"] == pytest.approx(2 / 3, abs=0.04)
    assert m["accuracy"] == pytest.approx(0.75, abs=0.03)
    assert m["dice_normal"] == pytest.approx(0.8, abs=0.04)  # 2 * 1/2 / (2 * 1/2 + 1/4)
    assert m["gdice"] == pytest.approx(0.5 * m["dice_scar"] + 0.5 * m["dice_normal"], abs=0.02)


def test_pred_wall_is_used_for_the_prediction(ball_case) -> None:
    """A predicted LA 3 mm larger puts its scar beyond the manual wall: its own wall band finds it,
    the manual wall (met first, at +0.5 mm) would hide it."""
    la, wall, scar, _, rel = ball_case
    r = np.linalg.norm(rel, axis=-1)
    pred_wall = la.with_array(((r > R + 3.0) & (r <= R + 6.0)).astype(np.uint8))
    pred_scar = pred_wall.with_array(pred_wall.array * (rel[..., 0] > 0))
    own = scar_surface_metrics(pred_scar, scar, wall, la, pred_wall=pred_wall)
    assert own["dice_scar"] > 0.95
    manual = scar_surface_metrics(pred_scar, scar, wall, la)
    assert manual["dice_scar"] < 0.1


def test_points_without_reference_wall_are_excluded(ball_case) -> None:
    la, wall, scar, _, rel = ball_case
    cap = (rel[..., 2] > 0.6 * np.linalg.norm(rel, axis=-1))  # no wall on the top cap
    wall_cut = wall.with_array(wall.array * ~cap)
    scar_cut = scar.with_array(scar.array * ~cap)
    m = scar_surface_metrics(scar_cut, scar_cut, wall_cut, la)
    assert m["n_excluded"] > 50 and m["gdice"] == 1.0
    # a prediction with scar on the cap is not penalised there: no ground truth to compare with
    assert scar_surface_metrics(scar, scar_cut, wall_cut, la)["accuracy"] == 1.0


def test_no_scar_anywhere_is_agreement(ball_case) -> None:
    """Scar absent from truth and prediction: Dice_scar is 1.0 by convention (nothing to disagree on)."""
    la, wall, scar, _, _ = ball_case
    none = scar.with_array(np.zeros_like(scar.array))
    m = scar_surface_metrics(none, none, wall, la)
    assert m["dice_scar"] == 1.0 and m["accuracy"] == 1.0 and m["gdice"] == 1.0
    assert scar_surface_metrics(scar, none, wall, la)["dice_scar"] == 0.0


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(3, burden=20)


def test_phantom_truth_perfect_and_perturbed_in_between(phantom) -> None:
    ph = phantom
    m = scar_surface_metrics(ph.scar, ph.scar, ph.wall, ph.la)
    assert (m["accuracy"], m["dice_scar"], m["dice_normal"], m["gdice"]) == (1.0, 1.0, 1.0, 1.0)
    assert m["n_points"] > 5000
    dilated = ph.scar.with_array(ndimage.binary_dilation(ph.scar.array, iterations=3).astype(np.uint8))
    shifted = ph.scar.with_array(np.roll(ph.scar.array, 8, axis=2))
    for pred in (dilated, shifted):
        m = scar_surface_metrics(pred, ph.scar, ph.wall, ph.la)
        for k in ("accuracy", "dice_scar", "dice_normal", "gdice"):
            assert 0.0 < m[k] < 1.0, (k, m)
    la = la_metrics(ph.la.with_array(ndimage.binary_erosion(ph.la.array, iterations=2).astype(np.uint8)), ph.la)
    assert 0.0 < la["dice"] < 1.0 and 0.0 < la["asd_mm"] < la["hd_mm"]
    json.dumps(la, allow_nan=False)


# ------------------------------------------- the fast paths against straightforward references
def _reference_surface(la: Volume, sigma_mm: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation surface the slow, obvious way: the WHOLE image blurred, gradients at the points."""
    from LAScarSegLib.core.distance import inner_boundary

    m = la.array != 0
    blurred = ndimage.gaussian_filter(m.astype(np.float32), sigma_mm / np.asarray(la.spacing_zyx), mode="constant",
                                      cval=0.0, truncate=3.0)
    zyx = np.argwhere(inner_boundary(m))
    grad = np.empty(zyx.shape)
    for a in range(3):
        up, dn = zyx.copy(), zyx.copy()
        up[:, a] = np.minimum(up[:, a] + 1, m.shape[a] - 1)
        dn[:, a] = np.maximum(dn[:, a] - 1, 0)
        num = blurred[tuple(up.T)].astype(np.float64) - blurred[tuple(dn.T)]
        grad[:, a] = num / np.maximum(up[:, a] - dn[:, a], 1)
    g = (grad[:, ::-1] / np.asarray(la.geometry.spacing)) @ la.geometry.direction_matrix.T
    nrm = np.linalg.norm(g, axis=1, keepdims=True)
    normals = np.divide(-g, nrm, out=np.zeros_like(g), where=nrm > 1e-12)
    return la.geometry.index_to_physical(zyx[:, ::-1].astype(np.float64)), normals


def _reference_classify(scar: Volume, wall: Volume, points, normals, max_mm=10.0, step_mm=0.5) -> np.ndarray:
    """One offset at a time, in search order, each point labelled by the first scar or wall voxel met."""
    k = np.arange(1, int(round(max_mm / step_mm)) + 1) * step_mm
    ts = [0.0] + [s * v for v in k for s in (1.0, -1.0)]
    out = np.full(len(points), -1, np.int8)
    todo = np.ones(len(points), bool)
    for t in ts:
        vals = []
        for vol in (scar, wall):
            g = vol.geometry
            step = (normals @ np.linalg.inv(g.direction_matrix).T) / np.asarray(g.spacing)
            idx = np.floor(g.physical_to_index(points) + t * step + 0.5).astype(int)[:, ::-1]
            ok = np.all((idx >= 0) & (idx < vol.array.shape), axis=1)
            v = np.zeros(len(points), bool)
            v[ok] = vol.array[tuple(idx[ok].T)] != 0
            vals.append(v)
        out[todo & vals[0]] = 1
        out[todo & ~vals[0] & vals[1]] = 0
        todo &= ~(vals[0] | vals[1])
    return out


def _crop(vol: Volume, sl: tuple[slice, slice, slice]) -> Volume:
    """A sub-volume (z, y, x slices) at the same place in space."""
    start = np.array([sl[2].start, sl[1].start, sl[0].start], float)
    arr = np.ascontiguousarray(vol.array[sl])
    g = vol.geometry
    return Volume(arr, Geometry(arr.shape[::-1], g.spacing, tuple(g.index_to_physical(start[None])[0]), g.direction))


@pytest.fixture(scope="module")
def phantom_cases(phantom):
    """The phantom and the same phantom cut in half through the LA (x) and above its floor (z)."""
    zz, _, xx = np.nonzero(phantom.la.array)
    sl = (slice(int(zz.min()) + 4, None), slice(0, None), slice(0, int(xx.min() + xx.max()) // 2))
    cut = type(phantom)(*(_crop(v, sl) for v in (phantom.image, phantom.la, phantom.wall, phantom.scar)))
    assert cut.la.array[:, :, -1].any() and cut.la.array[0].any()  # the LA touches the border
    return {"whole": phantom, "cut": cut}


@pytest.mark.parametrize("which", ["whole", "cut"])
def test_evaluation_surface_and_labels_equal_the_whole_image_computation(phantom_cases, which) -> None:
    """Blurring only a box around the LA, and sampling by flat indices, change nothing (bit for bit)."""
    ph = phantom_cases[which]
    points, normals = evaluation_surface(ph.la)
    ref_points, ref_normals = _reference_surface(ph.la)
    np.testing.assert_array_equal(points, ref_points)
    np.testing.assert_array_equal(normals, ref_normals)
    cls = classify_along_normals(ph.scar, ph.wall, points, normals)
    np.testing.assert_array_equal(cls, _reference_classify(ph.scar, ph.wall, points, normals))
    assert set(np.unique(cls)) == {-1, 0, 1}


@pytest.mark.parametrize("which", ["whole", "cut"])
def test_scar_and_la_metrics_equal_straightforward_computations(phantom_cases, which) -> None:
    from LAScarSegLib.core.distance import inner_boundary, wall_band

    ph = phantom_cases[which]
    pred_la = ph.la.with_array(np.roll(ndimage.binary_erosion(ph.la.array, iterations=1), 3, axis=2).astype(np.uint8))
    pred_wall = wall_band(pred_la, 3.0)
    pred_scar = ph.scar.with_array((np.roll(ph.scar.array, 4, axis=1) & pred_wall.array).astype(np.uint8))
    m = scar_surface_metrics(pred_scar, ph.scar, ph.wall, ph.la, pred_wall=pred_wall)
    points, normals = _reference_surface(ph.la)
    ref = _reference_classify(ph.scar, ph.wall, points, normals)
    valid = ref >= 0
    pred = _reference_classify(pred_scar, pred_wall, points[valid], normals[valid])
    gt, pr = ref[valid] == 1, pred == 1
    tp, fp, fn = int(np.sum(gt & pr)), int(np.sum(~gt & pr)), int(np.sum(gt & ~pr))
    n = int(valid.sum())
    assert 0 < tp < n and fp > 0 and fn > 0
    assert (m["n_points"], m["n_excluded"]) == (n, len(ref) - n)
    assert m["accuracy"] == (n - fp - fn) / n and m["dice_scar"] == 2 * tp / (2 * tp + fp + fn)

    # LA surface distances from exact Euclidean distance transforms of the whole image (SciPy; the
    # cut phantom only, where the LA touches the border, to keep the test cheap)
    la = la_metrics(pred_la, ph.la)
    if which != "cut":
        return
    a, b = pred_la.array.astype(bool), ph.la.array.astype(bool)
    sa, sb = inner_boundary(a), inner_boundary(b)
    for spacing, keys in ((ph.la.spacing_zyx, ("asd_mm", "hd_mm", "hd95_mm")),
                          ((1.0, 1.0, 1.0), ("asd_vox", None, "hd95_vox"))):
        d_ab = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa].astype(np.float32)
        d_ba = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb].astype(np.float32)
        both = np.concatenate([d_ab, d_ba]).astype(np.float64)
        expected = (both.mean(), both.max(), max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))
        for k, e in zip(keys, expected):
            if k is not None:
                assert la[k] == pytest.approx(e, rel=1e-6, abs=0), (k, la[k], e)
