"""The synthetic LGE phantom and synthetic scar painted into real images.

Every property the issue bounds is measured here from the arrays themselves (labels, distances,
intensities), not read back from the phantom's own `info`. Timing is printed by
`benchmark_make_phantom` (run this file as a script), never asserted.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from LAScarSegLib.core.distance import distance_to, wall_band
from LAScarSegLib.core.errors import InputError
from LAScarSegLib.core.image import Geometry, Volume, read_image, read_label
from LAScarSegLib.synth.phantom import FULL_FOV_SIZE, PHANTOM_PROVENANCE, UTAH_SIZE, UTAH_SPACING, Phantom, make_phantom
from LAScarSegLib.synth.scar import PAINT_PROVENANCE, paint_synthetic_scar
from LAScarSegLib.app.cli import main

LA2018 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "la2018"
SEEDS = (0, 1, 2, 3, 4, 5)


@lru_cache(maxsize=None)
def phantom(seed: int, **kwargs) -> Phantom:
    """Phantoms are shared between tests (each takes about a second)."""
    return make_phantom(seed, **kwargs)


def masks(p: Phantom) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(v.array.astype(bool) for v in (p.la, p.wall, p.scar))


def blood_pool(la: np.ndarray, spacing_zyx) -> np.ndarray:
    """The LA eroded by 3 mm (METHOD-NOTES section 4)."""
    return la & (distance_to(~np.pad(la, 1), spacing_zyx)[1:-1, 1:-1, 1:-1] > 3.0)


def centre_mm(g: Geometry) -> np.ndarray:
    return g.index_to_physical((np.asarray(g.size, float)[None, :] - 1.0) / 2.0)[0]


def centroid_mm(mask: np.ndarray, g: Geometry) -> np.ndarray:
    return g.index_to_physical(np.argwhere(mask)[:, ::-1].mean(axis=0)[None, :])[0]


def touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
                or mask[:, :, 0].any() or mask[:, :, -1].any())


# --------------------------------------------------------------------------------- the phantom
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_labels_are_consistent(seed: int) -> None:
    p = phantom(seed)
    la, wall, scar = masks(p)
    for v in (p.la, p.wall, p.scar):
        assert v.array.dtype == np.uint8 and set(np.unique(v.array)) <= {0, 1}
    assert la.any() and wall.any()
    assert not (scar & ~wall).any(), "scar must lie inside the wall"
    assert not (wall & la).any(), "the wall is outside the LA cavity"
    d = distance_to(la, p.la.geometry.spacing_zyx)
    assert d[wall].max() <= 3.5, "the wall is a shell of at most 3 mm (plus half a voxel)"
    assert not touches_border(la), "the LA lies fully inside the default grid"


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_wall_surrounds_the_la_except_at_the_openings(seed: int) -> None:
    p = phantom(seed)
    la, wall, _ = masks(p)
    g = p.la.geometry
    shell = ndimage.binary_dilation(la) & ~la  # the 6-neighbours of the LA outside it
    open_idx = np.argwhere(shell & ~wall)
    assert (shell & wall).sum() / shell.sum() > 0.8
    pts = g.index_to_physical(open_idx[:, ::-1].astype(float))
    openings = [("mitral", np.array(p.info["mitral"]["centre_mm"]), p.info["mitral"]["radius_mm"])]
    openings += [(v["name"], np.array(v["end_centre_mm"]), v["radius_mm"]) for v in p.info["veins"]]
    excess = np.stack([np.linalg.norm(pts - c, axis=1) - r for _, c, r in openings])  # mm beyond each opening
    assert excess.min(axis=0).max() <= 2.0, "every gap in the wall is at the mitral opening or a vein end"
    for k, (name, _, _) in enumerate(openings):  # and each opening is really open
        assert (excess[k] <= 1.0).sum() >= 10, f"no opening in the wall at {name}"


def test_volume_and_four_posterior_veins_over_seeds() -> None:
    for seed in SEEDS:
        p = phantom(seed)
        la, _, _ = masks(p)
        g = p.la.geometry
        vol_ml = la.sum() * g.voxel_volume_mm3 / 1000.0
        assert 50.0 <= vol_ml <= 200.0, (seed, vol_ml)
        assert p.info["la_volume_ml"] == pytest.approx(vol_ml, abs=0.01)
        assert p.info["n_veins"] == 4
        centroid = centroid_mm(la, g)
        veins = p.info["veins"]
        ends = np.array([v["end_centre_mm"] for v in veins])
        # each vein's labelled end reaches LA voxels, and the four ends are distinct
        idx = np.round(g.physical_to_index(ends)).astype(int)
        for (x, y, z), v in zip(idx, veins):
            near = la[max(z - 2, 0):z + 3, max(y - 3, 0):y + 4, max(x - 3, 0):x + 4]
            assert near.any(), f"seed {seed}: {v['name']} does not reach its end"
        dists = np.linalg.norm(ends[:, None] - ends[None], axis=2)
        assert dists[np.triu_indices(4, 1)].min() > 10.0
        for v, end in zip(veins, ends):
            assert v["direction"][1] > 0.2, f"{v['name']} should leave posteriorly (LPS +y)"
            side = 1.0 if v["name"].startswith("L") else -1.0  # left veins at +x (LPS)
            assert side * (end[0] - centroid[0]) > 10.0, (seed, v["name"])
        # volumes and poses are random
    vols = [phantom(s).info["la_volume_ml"] for s in SEEDS]
    assert max(vols) - min(vols) > 20.0


def test_wall_thickness_and_burden_over_seeds() -> None:
    burdens = []
    for seed in SEEDS:
        p = phantom(seed)
        _, wall, scar = masks(p)
        assert 1.0 <= p.info["wall_thickness_mm"] <= 3.0
        lo, hi = p.info["wall_thickness_range_mm"]
        assert 1.0 <= lo <= hi <= 3.0
        burden = 100.0 * scar.sum() / wall.sum()
        assert 0.0 <= burden <= 40.0 + 1e-6
        assert p.info["burden_pct"] == pytest.approx(burden, abs=1e-3)
        burdens.append(burden)
    assert max(burdens) - min(burdens) > 5.0, "the burden is drawn, not fixed"


def thin_and_thick() -> tuple[Phantom, Phantom]:
    """One case with a 1 mm wall and no scar, and with a 3 mm wall and 25 % scar."""
    return (phantom(7, wall_thickness_mm=1.0, vary_thickness=False, burden=0.0),
            phantom(7, wall_thickness_mm=3.0, vary_thickness=False, burden=25.0))


def test_thin_and_thick_walls_differ_in_thickness() -> None:
    """The wall label really is about as thick as asked: compare 1 mm and 3 mm walls of one case."""
    thin, thick = thin_and_thick()
    for p, lo, hi in ((thin, 0.6, 1.5), (thick, 2.4, 3.5)):
        la, wall, _ = masks(p)
        d = distance_to(la, p.la.geometry.spacing_zyx)
        assert lo <= d[wall].max() <= hi
    assert np.array_equal(thin.la.array, thick.la.array), "only the wall changes"
    assert masks(thick)[1].sum() > 2.0 * masks(thin)[1].sum()


def test_forced_burden_and_zero_burden() -> None:
    zero, forced = thin_and_thick()
    _, wall, scar = masks(zero)
    assert wall.any() and not scar.any()
    assert zero.info["burden_pct"] == 0.0
    _, wall, scar = masks(forced)
    assert 100.0 * scar.sum() / wall.sum() == pytest.approx(25.0, abs=0.05)
    # large confluent patches and small discrete ones
    lab, n = ndimage.label(scar, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(lab.ravel())[1:]
    assert n >= 5 and sizes.max() > 0.1 * scar.sum() and (sizes < 50).sum() >= 1
    with pytest.raises(InputError, match="percentage"):
        make_phantom(2, burden=140)


def test_deterministic_by_seed_and_different_across_seeds() -> None:
    a, b, c = phantom(0), make_phantom(0), phantom(1)
    for name in ("image", "la", "wall", "scar"):
        assert np.array_equal(getattr(a, name).array, getattr(b, name).array), name
        assert not np.array_equal(getattr(a, name).array, getattr(c, name).array), name
    assert a.info["la_volume_ml"] == b.info["la_volume_ml"] != c.info["la_volume_ml"]


def test_intensity_ratios_to_the_blood_pool() -> None:
    for seed in SEEDS[:3]:
        p = phantom(seed)
        la, wall, scar = masks(p)
        img = p.image.array
        assert img.dtype == np.float32 and np.isfinite(img).all() and img.min() >= 0.0  # Rician magnitude
        bp = img[blood_pool(la, p.la.geometry.spacing_zyx)].mean()
        normal = np.median(img[wall & ~scar]) / bp
        assert 0.7 <= normal <= 1.15, (seed, normal)
        if scar.sum() > 100:
            ratio = np.median(img[scar]) / bp
            assert 1.2 <= ratio <= 2.0, (seed, ratio)
            assert ratio > normal + 0.2
        # background is darker than blood, and not all of it is dark: bright confounders exist
        outside = ~ndimage.binary_dilation(la | wall, iterations=3)
        assert np.median(img[outside]) < 0.6 * bp
        assert (img[outside] > 0.9 * bp).sum() > 20_000, "LV / aortic blood and other bright tissue off the LA"


def test_measured_blood_pool_snr_in_range() -> None:
    for seed in SEEDS:
        p = phantom(seed)
        la, _, _ = masks(p)
        vals = p.image.array[blood_pool(la, p.la.geometry.spacing_zyx)]
        snr = vals.mean() / vals.std()
        assert 5.5 <= snr <= 20.5, (seed, snr)
        assert 6.0 <= p.info["snr"] <= 20.0
        assert 0.85 <= snr / p.info["snr"] <= 1.1, (seed, snr, p.info["snr"])
    # a forced SNR sets the noise: same case, SNR 6 instead of the drawn one
    drawn, noisy = phantom(1), make_phantom(1, snr=6.0)
    assert np.array_equal(drawn.la.array, noisy.la.array)
    sd = [x.image.array[blood_pool(masks(x)[0], x.la.geometry.spacing_zyx)].std() for x in (noisy, drawn)]
    assert sd[0] / sd[1] == pytest.approx(drawn.info["snr"] / 6.0, rel=0.15)


def test_default_grid_and_provenance() -> None:
    p = phantom(0)
    g = p.image.geometry
    assert g.size == UTAH_SIZE and g.spacing == UTAH_SPACING
    for v in (p.la, p.wall, p.scar):
        assert v.geometry == g
    assert np.linalg.norm(centroid_mm(masks(p)[0], g) - centre_mm(g)) < 20.0, "LA roughly central"
    assert PHANTOM_PROVENANCE in p.info["provenance"] and p.info["seed"] == 0


def test_full_fov_puts_the_la_off_centre_and_inside() -> None:
    p = make_phantom(3, full_fov=True)
    g = p.image.geometry
    assert g.size == FULL_FOV_SIZE and g.spacing == UTAH_SPACING
    la, wall, scar = masks(p)
    assert not touches_border(la)
    assert np.linalg.norm(centroid_mm(la, g) - centre_mm(g)) > 20.0
    assert 50.0 <= la.sum() * g.voxel_volume_mm3 / 1000.0 <= 200.0
    assert not (scar & ~wall).any() and not (wall & la).any()


def test_geometry_is_carried_and_the_anatomy_lives_in_millimetres() -> None:
    c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    origin = (-80.0, 35.5, -210.0)
    oblique = make_phantom(4, origin=origin, direction=direction)
    plain = phantom(4)
    for v in (oblique.image, oblique.la, oblique.wall, oblique.scar):
        assert v.geometry.origin == origin
        assert np.allclose(v.geometry.direction, direction)
        assert v.geometry.spacing == UTAH_SPACING
    # the same patient on a rotated grid: same volume, same place relative to the grid centre
    ml = [x.la.array.sum() * x.la.geometry.voxel_volume_mm3 / 1000.0 for x in (oblique, plain)]
    assert ml[0] == pytest.approx(ml[1], rel=0.02)
    off = [centroid_mm(masks(x)[0], x.la.geometry) - centre_mm(x.la.geometry) for x in (oblique, plain)]
    assert np.allclose(off[0], off[1], atol=1.0)
    with pytest.raises(InputError, match="orthonormal"):
        make_phantom(0, direction=(1, 0, 0, 0, 2, 0, 0, 0, 1))


def test_command_line_write_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def phantom_cli(args: list[str]) -> int:  # `lascarseg phantom ...`
        return main(["phantom", *args])

    out_dir = tmp_path / "p3"
    assert phantom_cli(["write", "--seed", "3", "--out", str(out_dir), "--burden", "12"]) == 0
    vols = {name: (read_image if name == "image" else read_label)(out_dir / f"{name}.nii.gz")
            for name in ("image", "la", "wall", "scar")}
    g = vols["image"].geometry
    assert g.size == UTAH_SIZE and np.allclose(g.spacing, UTAH_SPACING)
    assert all(v.geometry.same_grid(g) for v in vols.values())
    info = json.loads((out_dir / "info.json").read_text())
    la, wall, scar = (vols[k].array.astype(bool) for k in ("la", "wall", "scar"))
    assert la.sum() * g.voxel_volume_mm3 / 1000.0 == pytest.approx(info["la_volume_ml"], abs=0.01)
    assert 100.0 * scar.sum() / wall.sum() == pytest.approx(12.0, abs=0.05)
    assert info["seed"] == 3 and PHANTOM_PROVENANCE in info["provenance"]
    # the written image is the phantom of that seed: same LA as the in-memory one with another burden
    assert np.array_equal(vols["la"].array, phantom(3).la.array)

    assert phantom_cli(["stats", "--seeds", "0", "--json", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    for word in ("LA mL", "wall mm", "veins", "burden %", "SNR", "seconds", "min", "mean", "max"):
        assert word in out
    info = phantom(0).info
    assert f"{info['la_volume_ml']:.1f}" in out
    rows = json.loads((tmp_path / "rows.json").read_text())  # phantom_stats' rows
    assert [r["seed"] for r in rows] == [0] and rows[0]["n_veins"] == 4 and rows[0]["seconds"] > 0
    assert rows[0]["la_volume_ml"] == info["la_volume_ml"] and rows[0]["burden_pct"] == info["burden_pct"]
    assert phantom_cli(["stats", "--seeds", "x"]) == 2
    assert phantom_cli(["nonsense"]) == 2


# ------------------------------------------------------------------------------ painted scar
PAINT_GEOM = Geometry((72, 64, 40), (0.625, 0.7, 1.25), (12.0, -30.0, 5.0))


def small_case() -> tuple[Volume, Volume]:
    """A z-scored-like image (negative background) with a spherical 'LA' of blood."""
    z, y, x = np.indices(PAINT_GEOM.shape, dtype=float)
    sz, sy, sx = PAINT_GEOM.spacing_zyx
    r = np.sqrt(((z - 20) * sz) ** 2 + ((y - 32) * sy) ** 2 + ((x - 36) * sx) ** 2)
    la = (r <= 14.0).astype(np.uint8)
    rng = np.random.default_rng(5)
    img = np.where(r <= 14.0, 1.5, -0.4) + rng.normal(0, 0.2, PAINT_GEOM.shape)
    img[:, :4] = -0.7  # some air: the zero-signal level
    return Volume(img.astype(np.float32), PAINT_GEOM, "small.nii.gz"), Volume(la, PAINT_GEOM, "small_la.nii.gz")


def test_paint_leaves_input_untouched_and_scar_only_in_the_wall_band() -> None:
    image, la = small_case()
    img_before, la_before = image.array.copy(), la.array.copy()
    painted = paint_synthetic_scar(image, la, seed=1, burden=30.0)
    assert np.array_equal(image.array, img_before) and np.array_equal(la.array, la_before)
    assert painted.image.array is not image.array and painted.image.geometry == image.geometry
    band = wall_band(la, 3.0).array.astype(bool)
    wall, scar = painted.wall.array.astype(bool), painted.scar.array.astype(bool)
    assert np.array_equal(wall, band)
    assert scar.any() and not (scar & ~band).any()
    assert 100.0 * scar.sum() / band.sum() == pytest.approx(30.0, abs=0.05)
    changed = painted.image.array != image.array
    assert not (changed & ~scar).any(), "only scar voxels change"
    # enhancement above the zero-signal level: (scar - z0) / (blood pool - z0) in 1.2-2.0
    z0 = painted.info["zero_level"]
    bp = image.array[blood_pool(la.array.astype(bool), image.spacing_zyx)].mean()
    ratio = (np.median(painted.image.array[scar]) - z0) / (bp - z0)
    assert 1.2 <= ratio <= 2.0
    assert PAINT_PROVENANCE in painted.info["provenance"]
    # deterministic, different seeds differ, burden 0 paints nothing
    again = paint_synthetic_scar(image, la, seed=1, burden=30.0)
    assert np.array_equal(again.scar.array, painted.scar.array)
    assert not np.array_equal(paint_synthetic_scar(image, la, seed=2, burden=30.0).scar.array, painted.scar.array)
    none = paint_synthetic_scar(image, la, seed=1, burden=0.0)
    assert not none.scar.array.any() and np.array_equal(none.image.array, image.array)


def test_paint_refuses_bad_input() -> None:
    image, la = small_case()
    other = Geometry(PAINT_GEOM.size, (1.0, 1.0, 1.0), PAINT_GEOM.origin)
    with pytest.raises(InputError, match="grid"):
        paint_synthetic_scar(image, Volume(la.array, other), seed=0)
    with pytest.raises(InputError, match="0/1"):
        paint_synthetic_scar(image, la.with_array(la.array * 255), seed=0)
    with pytest.raises(InputError, match="empty"):
        paint_synthetic_scar(image, la.with_array(np.zeros_like(la.array)), seed=0)


@pytest.mark.real_data
def test_paint_on_a_real_la2018_case() -> None:
    if not (LA2018 / "train").is_dir():
        pytest.skip(f"real LGE data not found at {LA2018} (the shared la2018 folder is absent)")
    case = sorted((LA2018 / "train").glob("*_lgemri.nii.gz"))[0]
    image = read_image(case)
    la = read_label(case.with_name(case.name.replace("_lgemri", "_laendo")))
    before = image.array.copy()
    painted = paint_synthetic_scar(image, la, seed=4, burden=20.0)
    assert np.array_equal(image.array, before)
    wall, scar = painted.wall.array.astype(bool), painted.scar.array.astype(bool)
    assert np.array_equal(wall, wall_band(la, 3.0).array.astype(bool))
    assert not (scar & ~wall).any()
    assert 100.0 * scar.sum() / wall.sum() == pytest.approx(20.0, abs=0.05)
    z0 = painted.info["zero_level"]
    assert z0 < 0.0, "la2018 images are z-scored: air lies below zero"
    bp = image.array[blood_pool(la.array.astype(bool), image.spacing_zyx)].mean()
    ratio = (np.median(painted.image.array[scar]) - z0) / (bp - z0)
    assert 1.2 <= ratio <= 2.0
    assert painted.scar.geometry == image.geometry


# -------------------------------------------------------------------------------- benchmark
def benchmark_make_phantom(seeds=range(5)) -> None:
    """Print generation times (the issue's target: a 208x208x80 case in under 2 s)."""
    make_phantom(100)  # warm-up
    for full_fov in (False, True):
        times = []
        for seed in seeds:
            t = time.perf_counter()
            make_phantom(seed, full_fov=full_fov)
            times.append(time.perf_counter() - t)
        grid = "640x640x88" if full_fov else "208x208x80"
        print(f"make_phantom {grid}: min {min(times):.2f} s, mean {np.mean(times):.2f} s, max {max(times):.2f} s")


if __name__ == "__main__":
    benchmark_make_phantom()
