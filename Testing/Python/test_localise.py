"""Finding the LA: a point inside it given by the user (RAS mm or voxel index), the component kept at
that point, the localisation confidence and its doubt, and what the report and the CLI say."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from LAScarSegLib.app.batch import read_seeds
from LAScarSegLib.app.cli import main
from LAScarSegLib.app.pipeline import segment
from LAScarSegLib.core.errors import InputError, NoLAFound
from LAScarSegLib.core.image import Geometry, Volume, write_volume
from LAScarSegLib.infer.localise import DOUBTFUL_BELOW, localisation_confidence
from LAScarSegLib.infer.masks import LASeed, la_mask
from LAScarSegLib.synth.phantom import make_phantom

GEOM = Geometry((60, 50, 40), (1.0, 1.0, 2.0), (10.0, -20.0, 5.0))


def _prob(*blobs: tuple[tuple[int, int, int], int, float], geometry: Geometry = GEOM) -> Volume:
    """A probability map with cubes: ((z, y, x) corner, side in voxels, probability)."""
    arr = np.zeros(geometry.shape, np.float32)
    for (z, y, x), side, p in blobs:
        arr[z:z + side, y:y + side, x:x + side] = p
    return Volume(arr, geometry, "test")


def _ras_of(geometry: Geometry, zyx: tuple[int, int, int]) -> tuple[float, float, float]:
    lps = geometry.index_to_physical(np.array([zyx[::-1]], float))[0]
    return (-lps[0], -lps[1], lps[2])


# ------------------------------------------------------------------------------------ the seed
def test_a_seed_in_ras_and_as_a_voxel_index_name_the_same_voxel() -> None:
    zyx = (12, 30, 45)
    by_ras = LASeed(ras=_ras_of(GEOM, zyx))
    by_ijk = LASeed(ijk=(45, 30, 12))  # ITK order: i along x, j along y, k along z
    assert by_ras.index_zyx(GEOM) == by_ijk.index_zyx(GEOM) == zyx
    np.testing.assert_allclose(by_ras.lps(GEOM), by_ijk.lps(GEOM))


def test_a_seed_outside_the_image_or_malformed_is_refused() -> None:
    with pytest.raises(InputError, match="lies outside the image"):
        LASeed(ras=(1000.0, 0.0, 0.0)).lps(GEOM)
    with pytest.raises(InputError, match="lies outside the image"):
        LASeed(ijk=(60, 0, 0)).lps(GEOM)  # one past the last voxel along x
    with pytest.raises(InputError, match="not both"):
        LASeed(ras=(0, 0, 0), ijk=(0, 0, 0))
    with pytest.raises(InputError, match="finite"):
        LASeed(ras=(0, float("nan"), 0))


def test_la_mask_keeps_the_component_at_the_seed_not_the_largest() -> None:
    prob = _prob(((2, 2, 2), 16, 0.95), ((20, 30, 40), 8, 0.95))  # a big pool and a smaller LA
    largest, _ = la_mask(prob)
    assert largest.array[5, 5, 5] == 1 and largest.array[22, 32, 42] == 0
    at_seed, removed = la_mask(prob, seed=LASeed(ijk=(42, 32, 22)))
    assert at_seed.array[22, 32, 42] == 1 and at_seed.array[5, 5, 5] == 0 and removed == 1
    # a point just beside the component (within SEED_REACH_MM) still takes it
    beside, _ = la_mask(prob, seed=LASeed(ijk=(48 + 3, 32, 22)))
    np.testing.assert_array_equal(beside.array, at_seed.array)
    with pytest.raises(InputError, match="no LA-like structure at the point"):
        la_mask(prob, seed=LASeed(ijk=(30, 45, 2)))  # far from both


def test_no_la_found_asks_for_a_point_inside_the_la() -> None:
    with pytest.raises(NoLAFound, match="place a point inside the LA"):
        la_mask(_prob())


# ------------------------------------------------------------------------------- confidence
def test_one_certain_component_is_confident_and_a_rival_makes_it_doubtful() -> None:
    alone = localisation_confidence(_prob(((2, 2, 2), 24, 0.97)))  # 27.6 mL
    assert alone.mode == "automatic" and alone.confidence > 0.9 and not alone.doubtful
    rival = localisation_confidence(_prob(((2, 2, 2), 24, 0.97), ((21, 30, 30), 18, 0.97)))  # and 11.7 mL as certain
    assert rival.confidence < alone.confidence and rival.confidence <= 0.5 and rival.doubtful
    unsure = localisation_confidence(_prob(((2, 2, 2), 24, 0.7)))  # nothing over 0.9
    assert unsure.confidence < DOUBTFUL_BELOW and unsure.doubtful
    small = localisation_confidence(_prob(((2, 2, 2), 16, 0.97)))  # 8 mL: an implausible LA volume
    assert small.confidence == pytest.approx(0.5 * alone.confidence)
    assert localisation_confidence(_prob()).doubtful and localisation_confidence(None).confidence == 0.0
    assert localisation_confidence(_prob(((2, 2, 2), 24, 0.97)), in_doubt=True).doubtful


def test_a_lone_component_through_the_slab_is_a_crop_not_a_doubt() -> None:
    wide = Geometry((100, 60, 40), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    through = _prob(((0, 10, 10), 40, 0.97), geometry=wide)  # all 40 slices: an image cropped to the LA's slices
    assert not localisation_confidence(through).doubtful
    with_rival = _prob(((0, 10, 10), 40, 0.97), ((5, 10, 60), 20, 0.97), geometry=wide)  # and a 16 mL candidate
    assert localisation_confidence(with_rival).confidence < 0.5 * localisation_confidence(through).confidence + 1e-6


# ------------------------------------------------------------------------------ the pipeline
@pytest.fixture(scope="module")
def phantom():
    return make_phantom(30_012)


def test_segment_reports_how_the_la_was_found_with_and_without_a_point(phantom) -> None:
    auto = segment(phantom.image, la_label=phantom.la).report.to_json()
    assert auto["la"]["localisation"]["mode"] == "automatic" and not auto["la"]["localisation"]["doubtful"]
    centre = tuple(int(c) for c in np.argwhere(phantom.la.array).mean(axis=0).round())
    seeded = segment(phantom.image, la_label=phantom.la, la_seed=LASeed(ras=_ras_of(phantom.image.geometry, centre)))
    report = seeded.report.to_json()
    assert report["la"]["localisation"]["mode"] == "seed" and 0 < report["la"]["localisation"]["confidence"] <= 1
    assert report["metrics"]["la"]["dice"] > 0.9
    assert seeded.la.array[centre] == 1
    with pytest.raises(InputError, match="lies outside the image"):
        segment(phantom.image, la_seed=LASeed(ijk=(-5, 0, 0)))


def test_cli_seed_options(tmp_path: Path, phantom, capsys: pytest.CaptureFixture) -> None:
    image = write_volume(phantom.image, tmp_path / "lge.nii.gz")
    before = image.read_bytes()
    assert main(["segment", str(image), "--out", str(tmp_path / "out"), "--la-seed", "9999,0,0"]) == 2
    assert "lies outside the image" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["segment", str(image), "--out", str(tmp_path / "o2"), "--la-seed", "1,2"]) == 2  # not three numbers
    assert main(["segment", str(image), "--out", str(tmp_path / "o3"), "--la-seed", "0,0,0", "--la-seed-ijk",
                 "1,2,3"]) == 2  # one or the other
    centre = np.argwhere(phantom.la.array).mean(axis=0).round().astype(int)
    ijk = f"{centre[2]},{centre[1]},{centre[0]}"
    assert main(["segment", str(image), "--out", str(tmp_path / "ok"), "--la-seed-ijk", ijk]) == 0
    report = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert report["la"]["localisation"]["mode"] == "seed"
    assert image.read_bytes() == before


def test_batch_seeds_file_is_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "seeds.csv"
    good.write_text("id,r,a,s\ncase1,1.5,-2,30\ncase2, 0, 0, 0\n")
    seeds = read_seeds(good)
    assert set(seeds) == {"case1", "case2"} and seeds["case1"].ras == (1.5, -2.0, 30.0)
    bad = tmp_path / "bad.csv"
    with bad.open("w", newline="") as fh:
        csv.writer(fh).writerows([["id", "r", "a"], ["case1", "1", "2"]])
    with pytest.raises(InputError, match="missing"):
        read_seeds(bad)
    bad.write_text("id,r,a,s\ncase1,one,2,3\n")
    with pytest.raises(InputError, match="line 2"):
        read_seeds(bad)
    bad.write_text("id,r,a,s\ncase1,1,2,3\ncase1,1,2,3\n")
    with pytest.raises(InputError, match="has a seed already"):
        read_seeds(bad)
    with pytest.raises(InputError, match="cannot be read"):
        read_seeds(tmp_path / "missing.csv")


# ------------------------------------------------------------------- a coarse localiser first
def test_a_coarse_localiser_puts_the_fine_network_in_a_box_around_the_la(phantom) -> None:
    """Any model with an LA output can stand as the coarse network (here the bundled one itself): the
    fine network then runs only in the box around what it found, and still finds the LA."""
    from LAScarSegLib.model.loading import load_for_inference, load_localiser

    assert load_localiser(None) is None and load_localiser("none") is None
    fine = load_for_inference(None, "cpu")
    result = segment(phantom.image, la_label=phantom.la, loaded=fine, localiser=fine)
    report = result.report.to_json()
    assert report["metrics"]["la"]["dice"] > 0.9 and report["la"]["localisation"]["mode"] == "automatic"
    # the fine network's probabilities exist only in the box (it was not run over the whole grid)
    touched = result.prediction.la.array > 0
    faces = [touched[0], touched[-1], touched[:, 0], touched[:, -1], touched[:, :, 0], touched[:, :, -1]]
    assert touched.any() and not all(f.any() for f in faces)


def test_the_registry_may_name_a_localiser(tmp_path: Path) -> None:
    from LAScarSegLib.model.registry import REGISTRY, registered_localiser

    reg = json.loads(REGISTRY.read_text())
    path = tmp_path / "models.json"
    path.write_text(json.dumps(reg))
    assert registered_localiser(path) == reg.get("localiser")
    path.write_text(json.dumps({**reg, "localiser": "lascarseg-localiser"}))
    assert registered_localiser(path) == "lascarseg-localiser"
    assert registered_localiser(tmp_path / "missing.json") is None


def test_json_outputs_take_numpy_scalars(tmp_path: Path) -> None:
    """Evaluation rows hold NumPy booleans and floats (a comparison of array values); they are written."""
    from LAScarSegLib.core.outputs import write_json

    path = write_json({"la_right": np.float64(0.9) >= 0.85, "dice": np.float32(0.5)}, tmp_path / "rows.json")
    assert json.loads(path.read_text()) == {"la_right": True, "dice": 0.5}
