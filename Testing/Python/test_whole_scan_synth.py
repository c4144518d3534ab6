"""The two whole-chest generators: the domain-randomised training scans (`synth.thorax`) and the
hold-out scans kept for testing (`synth.holdout`): their truth is consistent, they are what their
seed says, and the training scans load as a data folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from LAScarSegLib.core.datasets import open_dataset
from LAScarSegLib.synth.holdout import make_holdout_chest
from LAScarSegLib.synth.thorax import LABELS, MAX_VOXELS, make_thorax, write_thorax_cases


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_a_thorax_scan_is_its_seeds_and_its_la_is_the_label_maps() -> None:
    a, b = make_thorax(3), make_thorax(3)
    assert _digest(a.image.array, a.labels.array) == _digest(b.image.array, b.labels.array)
    assert _digest(make_thorax(4).image.array) != _digest(a.image.array)
    np.testing.assert_array_equal(a.la.array, (a.labels.array == LABELS["la"]).astype(np.uint8))
    assert a.la.geometry == a.image.geometry == a.labels.geometry
    assert np.prod(a.image.geometry.size) <= MAX_VOXELS * 1.01 and np.isfinite(a.image.array).all()
    assert 30.0 <= a.info["la_volume_ml"] <= 250.0
    present = set(np.unique(a.labels.array).tolist())
    assert {LABELS[k] for k in ("la", "lv_blood", "rv_blood", "ra_blood", "aorta", "lung", "body")} <= present


def test_thorax_scans_load_as_a_data_folder(tmp_path: Path) -> None:
    write_thorax_cases([5], tmp_path, max_voxels=1_000_000)
    ds = open_dataset(tmp_path)
    case = ds.load(ds.ids()[0])
    assert ds.ids() == ["thorax00005"] and case.la.array.any() and case.image.geometry.same_grid(case.la.geometry)


def test_a_hold_out_chest_has_consistent_truth() -> None:
    h = make_holdout_chest(1)
    la, wall, scar = (v.array.astype(bool) for v in (h.la, h.wall, h.scar))
    assert la.any() and wall.any() and not (wall & la).any() and not (scar & ~wall).any()
    assert 30.0 <= h.info["la_volume_ml"] <= 200.0 and 3 <= h.info["n_veins"] <= 5
    assert 0.0 <= h.info["burden_pct"] <= 60.0 and np.isfinite(h.image.array).all()
    assert h.image.geometry == h.la.geometry
