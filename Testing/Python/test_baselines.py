"""Conventional scar baselines (LAScarSegLib.baselines, METHOD-NOTES section 4).

Blood-pool statistics and the Otsu / EM building blocks are checked on synthetic values with known
answers; the methods end to end on phantoms: seed 11 has scar at about 1.56x the blood pool
(SNR fixed at 15), once with 25 % burden and once with none.
"""

from __future__ import annotations

import numpy as np
import pytest

from LAScarSegLib.quantify.baselines import BaselineResult, blood_pool_mask, blood_pool_stats, baseline_surface_metrics, fit_gmm_1d, gmm_scar_threshold, method_names, multi_otsu_thresholds, otsu_threshold, run_baselines, zero_level
from LAScarSegLib.core.distance import wall_band
from LAScarSegLib.core.errors import InputError
from LAScarSegLib.core.image import Geometry, Volume
from LAScarSegLib.synth.phantom import make_phantom
from LAScarSegLib.quantify.projection import la_surface_mesh, mesh_points_normals

SEED, SNR = 11, 15.0
SURFACE_METHODS = ("iir-0.97", "iir-1.20", "iir-1.61", "mean+2.3sd", "mean+3.3sd")
SCAR_KEYS = ("accuracy", "dice_scar", "dice_normal", "gdice")


@pytest.fixture(scope="module")
def scarred():
    ph = make_phantom(SEED, burden=25, snr=SNR)
    mesh = la_surface_mesh(ph.la)
    results = run_baselines(ph.image, ph.la, mesh=mesh)
    metrics = {name: baseline_surface_metrics(r, ph.scar, ph.wall, ph.la) for name, r in results.items()}
    return ph, mesh, results, metrics


def _voxel_dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * np.count_nonzero(a & b) / (a.sum() + b.sum())


# ---------------------------------------------------------------------------- blood pool
def _sphere(geo: Geometry, radius: float) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) for n in geo.shape), indexing="ij")
    c = (np.asarray(geo.size) - 1) / 2.0
    sx, sy, sz = geo.spacing
    return np.sqrt(((x - c[0]) * sx) ** 2 + ((y - c[1]) * sy) ** 2 + ((z - c[2]) * sz) ** 2)


def test_blood_pool_stats_exclude_the_rim_by_millimetres():
    geo = Geometry((40, 40, 20), (0.8, 0.8, 1.6), (10.0, -5.0, 3.0))
    r, R = _sphere(geo, 12.0), 12.0
    la = r <= R
    z, y, x = np.indices(geo.shape)
    image = np.where((x + y + z) % 2 == 0, 90.0, 110.0).astype(np.float32)
    image[la & (r > R - 2.2)] = 1e4  # the rim: partial volume and wall, must not reach the blood pool
    image[~la] = -50.0
    la_v = Volume(la.astype(np.uint8), geo)
    bp = blood_pool_stats(Volume(image, geo), la_v)
    assert bp.eroded
    assert abs(bp.mean - 100.0) < 1.5 and abs(bp.sd - 10.0) < 0.5
    deep, _ = blood_pool_mask(la_v)
    # eroded by about 3 mm in every direction: a 3-voxel erosion would cut 4.8 mm along z (1.6 mm voxels)
    assert r[deep].max() < R - 2.4
    assert deep[r < R - 3.8].all()


def test_blood_pool_falls_back_to_the_whole_thin_la():
    geo = Geometry((20, 20, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    la = np.zeros(geo.shape, np.uint8)
    la[4:6, 5:15, 5:15] = 1  # a 2 mm slab: nothing is 3 mm deep
    image = np.arange(la.size, dtype=np.float32).reshape(geo.shape)
    bp = blood_pool_stats(Volume(image, geo), Volume(la, geo))
    assert not bp.eroded
    assert bp.n_voxels == int(la.sum())
    assert bp.mean == pytest.approx(float(image[la == 1].mean()))


# ----------------------------------------------------------------------- Otsu and EM
def test_otsu_thresholds_separate_clusters():
    rng = np.random.default_rng(0)
    dark, bright = rng.normal(10, 1, 3000), rng.normal(30, 2, 1000)
    t = otsu_threshold(np.concatenate([dark, bright]))
    assert dark.max() <= t < bright.min()  # any cut in the gap is optimal; it must lie in the gap
    a, b, c = rng.normal(0, 1, 2000), rng.normal(10, 1, 2000), rng.normal(20, 1, 2000)
    t1, t2 = multi_otsu_thresholds(np.concatenate([c, a, b]), 3)
    assert a.max() <= t1 < b.min() and b.max() <= t2 < c.min()
    # overlapping classes of equal size and spread: the cut is half way between the means
    assert abs(otsu_threshold(np.concatenate([rng.normal(0, 3, 5000), rng.normal(10, 3, 5000)])) - 5.0) < 0.5


def test_gmm_recovers_a_known_mixture_deterministically():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(100, 15, 6000), rng.normal(250, 20, 10000), rng.normal(420, 40, 4000)])
    rng.shuffle(x)
    fit = fit_gmm_1d(x)
    again = fit_gmm_1d(x)
    assert fit.converged and fit.n_iter < 300
    for a, b in ((fit.means, again.means), (fit.sds, again.sds), (fit.weights, again.weights)):
        np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(fit.means) > 0)  # ordered: the last component is scar
    np.testing.assert_allclose(fit.means, [100, 250, 420], rtol=0.05)
    np.testing.assert_allclose(fit.weights, [0.3, 0.5, 0.2], atol=0.03)
    np.testing.assert_allclose(fit.sds, [15, 20, 40], rtol=0.15)
    post = fit.posteriors(np.array([-1e6, 0.0, 250.0, 1e6]))  # far tails: log-sum-exp, no 0/0
    assert np.all(np.isfinite(post)) and np.allclose(post.sum(axis=1), 1.0)
    thr = gmm_scar_threshold(fit, float(x.max()))
    assert 250.0 < thr < 420.0
    assert fit.posteriors(np.array([thr + 1.0]))[0, -1] > 0.5 > fit.posteriors(np.array([thr - 1.0]))[0, -1]
    # the same data rescaled (a z-scored image): the same split
    z_fit = fit_gmm_1d((x - x.mean()) / x.std())
    np.testing.assert_allclose(z_fit.means * x.std() + x.mean(), fit.means, rtol=1e-6)


# ------------------------------------------------------------------------ the methods
def test_every_method_runs_with_consistent_outputs(scarred):
    ph, mesh, results, metrics = scarred
    points, _ = mesh_points_normals(mesh)
    assert list(results) == method_names()
    band = wall_band(ph.la).array.astype(bool)
    for name, r in results.items():
        assert isinstance(r, BaselineResult) and r.method == name
        assert r.point_scar.dtype == np.uint8 and r.point_scar.shape == (len(points),)
        assert 0.0 <= r.burden_surface_pct <= 100.0
        assert set(SCAR_KEYS) <= set(metrics[name]) and all(0.0 <= metrics[name][k] <= 1.0 for k in SCAR_KEYS)
        scar = r.scar_mask.array.astype(bool)
        assert scar.any() and not (scar & ~band).any()  # inside the wall band only, for every method
        if name in SURFACE_METHODS:
            # the per-point decision as voxels: each wall voxel takes its nearest point's decision
            idx = np.argwhere(band)[::997]
            phys = ph.image.geometry.index_to_physical(idx[:, ::-1])
            nearest = np.argmin(((phys[:, None, :] - points[None, ::1, :]) ** 2).sum(-1), axis=1)
            np.testing.assert_array_equal(scar[tuple(idx.T)], r.point_scar[nearest].astype(bool))
        else:
            np.testing.assert_array_equal(scar, band & (ph.image.array > r.threshold))
    info = results["iir-1.20"].info
    bp, z0 = info["blood_pool_mean"], info["zero_level"]
    assert z0 == pytest.approx(zero_level(ph.image))
    assert results["iir-1.20"].threshold == pytest.approx(z0 + 1.20 * (bp - z0))
    assert results["mean+3.3sd"].threshold == pytest.approx(bp + 3.3 * info["blood_pool_sd"])
    assert abs(bp - ph.info["blood_pool_mean"]) < 0.01 * bp  # the phantom's own blood-pool definition


def test_iir_finds_scar_and_burden_falls_with_the_threshold(scarred):
    ph, _, results, metrics = scarred
    assert 1.4 < ph.info["scar_ratio_mean"] < 1.7
    assert metrics["iir-1.20"]["dice_scar"] > 0.65
    assert metrics["iir-1.20"]["gdice"] > 0.7
    burdens = [results[m].burden_surface_pct for m in ("iir-0.97", "iir-1.20", "iir-1.61")]
    assert burdens[0] > burdens[1] > burdens[2]
    assert results["mean+2.3sd"].burden_surface_pct > results["mean+3.3sd"].burden_surface_pct
    # a point is scar exactly when its IIR is over the threshold
    r = results["iir-1.61"]
    np.testing.assert_array_equal(r.point_scar.astype(bool), r.point_values > 1.61)


def test_otsu_and_gmm_overlap_the_true_scar(scarred):
    ph, _, results, metrics = scarred
    for name in ("otsu", "gmm"):
        assert _voxel_dice(results[name].scar_mask.array, ph.scar.array) > 0.6
        assert metrics[name]["dice_scar"] > 0.6 and metrics[name]["surface"] == "evaluation"
    gmm = results["gmm"].info["gmm"]
    assert np.all(np.diff(gmm["means"]) > 0) and gmm["converged"]
    assert all(m["surface"] == "evaluation" for m in metrics.values())  # one protocol for every method


def test_no_scar_gives_low_burden_for_strict_thresholds():
    ph = make_phantom(SEED, burden=0, snr=SNR)
    results = run_baselines(ph.image, ph.la, methods=["iir-1.61", "mean+3.3sd", "iir-0.97"])
    assert list(results) == ["iir-1.61", "mean+3.3sd", "iir-0.97"]
    assert results["iir-1.61"].burden_surface_pct < 2.0
    assert results["mean+3.3sd"].burden_surface_pct < 8.0
    assert results["iir-0.97"].burden_surface_pct > results["iir-1.61"].burden_surface_pct


def test_z_scored_image_gives_the_same_ratios(scarred):
    ph, mesh, results, _ = scarred
    arr = ph.image.array.astype(np.float64)
    z = ph.image.with_array(((arr - arr.mean()) / arr.std()).astype(np.float32))
    assert z.array.min() < 0 and float(np.median(z.array)) < 0  # the plain ratio would be meaningless
    zr = run_baselines(z, ph.la, methods=["iir-1.20", "otsu"], mesh=mesh)
    iir_raw, iir_z = results["iir-1.20"].point_values, zr["iir-1.20"].point_values
    assert 1.0 < float(np.median(iir_z)) < 1.6
    np.testing.assert_allclose(iir_z, iir_raw, rtol=1e-3, atol=1e-3)
    assert np.mean(zr["iir-1.20"].point_scar == results["iir-1.20"].point_scar) > 0.999
    assert _voxel_dice(zr["otsu"].scar_mask.array, results["otsu"].scar_mask.array) > 0.99


def test_bad_requests_raise_input_errors(scarred):
    ph, mesh, _, _ = scarred
    with pytest.raises(InputError, match=r"unknown baseline method.*'iir-high'.*known: iir-0.97, iir-1.20.*gmm"):
        run_baselines(ph.image, ph.la, methods=["iir-high", "otsu"], mesh=mesh)
    # another threshold by name (as the command line passes it), the same as configured
    out = run_baselines(ph.image, ph.la, methods=["iir-1.3", "mean+2.8sd"], mesh=mesh)
    assert list(out) == ["iir-1.30", "mean+2.8sd"]
    configured = run_baselines(ph.image, ph.la, methods=["iir-1.30"], iir_thresholds=(1.3,), mesh=mesh)
    np.testing.assert_array_equal(out["iir-1.30"].point_scar, configured["iir-1.30"].point_scar)
    assert out["mean+2.8sd"].info["sd_k"] == 2.8
    assert out["mean+2.8sd"].point_scar.sum() >= run_baselines(ph.image, ph.la, methods=["mean+3.3sd"],
                                                               mesh=mesh)["mean+3.3sd"].point_scar.sum()
    with pytest.raises(InputError, match="must be positive"):
        run_baselines(ph.image, ph.la, iir_thresholds=(0.0,), mesh=mesh)
    with pytest.raises(InputError, match="0/1 mask"):
        run_baselines(ph.image, ph.la.with_array(ph.la.array * 255), methods=["otsu"], mesh=mesh)
    with pytest.raises(InputError, match="not above the zero-signal level"):
        run_baselines(ph.image, ph.la, methods=["iir-1.20"], mesh=mesh, zero_level_value=1e9)
