"""Every data reader on a tiny example written to disk, plus the real la2018 folder when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from LAScarSegLib.core.datasets import Challenge2018Dataset, La2018Dataset, LAScarQS2022Dataset, detect_layout, open_dataset, split_by_case
from LAScarSegLib.core.errors import InputError
from LAScarSegLib.core.image import Geometry, Volume, write_volume

LA2018 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "la2018"
GEOM = Geometry((24, 20, 12), (0.625, 0.625, 1.25), (1.0, -2.0, 3.0))


def _image(seed: int) -> Volume:
    return Volume(np.random.default_rng(seed).normal(100, 20, GEOM.shape).astype(np.float32), GEOM)


def _blob(value: int) -> np.ndarray:
    arr = np.zeros(GEOM.shape, np.uint16)
    arr[3:9, 5:15, 6:18] = value
    return arr


def _wall_labels() -> np.ndarray:
    arr = np.zeros(GEOM.shape, np.uint16)
    arr[2, 4:16, 5:19] = 421
    arr[2, 4:16, 5:9] = 422
    return arr


def write_la2018(root: Path, n: int = 2, label_value: int = 1) -> Path:
    for i in range(n):
        write_volume(_image(i), root / "train" / f"CASE{i}_lgemri.nii.gz")
        write_volume(Volume(_blob(label_value).astype(np.uint8), GEOM), root / "train" / f"CASE{i}_laendo.nii.gz")
    return root


def write_lascarqs(root: Path) -> Path:
    write_volume(_image(0), root / "p1" / "enhanced.nii.gz")
    write_volume(Volume(_blob(420), GEOM), root / "p1" / "atriumSegImgMO.nii.gz")
    write_volume(Volume(_wall_labels(), GEOM), root / "p1" / "scarSegImgM.nii.gz")
    write_volume(_image(1), root / "p2" / "enhanced.nii.gz")
    write_volume(Volume(_blob(1).astype(np.uint8), GEOM), root / "p2" / "atriumSegImgMO.nii.gz")
    scar = np.zeros(GEOM.shape, np.uint8)
    write_volume(Volume(scar, GEOM), root / "p2" / "scarSegImgM.nii.gz")  # a scar-free case
    return root


def write_challenge2018(root: Path) -> Path:
    write_volume(_image(0), root / "A1" / "lgemri.nrrd")
    write_volume(Volume(_blob(255).astype(np.uint8), GEOM), root / "A1" / "laendo.nrrd")
    write_volume(_image(1), root / "B2" / "lgemri.nrrd")  # an unlabelled case
    return root


def test_la2018_reader(tmp_path: Path) -> None:
    ds = open_dataset(write_la2018(tmp_path / "la"))
    assert isinstance(ds, La2018Dataset) and ds.ids() == ["CASE0", "CASE1"]
    case = ds.load("CASE1")
    assert case.labels == {"la"} and case.provenance == {"la": "manual"}
    assert case.la.array.dtype == np.uint8 and set(np.unique(case.la.array)) == {0, 1}
    assert case.la.array.sum() == _blob(1).astype(bool).sum()
    assert case.image.geometry.same_grid(GEOM)


def test_lascarqs_reader_with_wall_labels_and_scar_free_case(tmp_path: Path) -> None:
    ds = open_dataset(write_lascarqs(tmp_path / "qs"))
    assert isinstance(ds, LAScarQS2022Dataset) and ds.ids() == ["p1", "p2"]
    assert ds.ref("p1").labels == {"la", "scar"}
    p1 = ds.load("p1")
    assert p1.labels == {"la", "wall", "scar"}
    assert p1.wall.array.sum() == (_wall_labels() > 0).sum()
    assert p1.scar.array.sum() == (_wall_labels() == 422).sum()
    assert (p1.scar.array <= p1.wall.array).all()
    p2 = ds.load("p2")
    assert p2.labels == {"la", "scar"} and p2.scar.array.sum() == 0


def test_challenge2018_reader(tmp_path: Path) -> None:
    ds = open_dataset(write_challenge2018(tmp_path / "ch"))
    assert isinstance(ds, Challenge2018Dataset) and ds.ids() == ["A1", "B2"]
    a1 = ds.load("A1")
    assert a1.labels == {"la"} and a1.la.array.max() == 1
    assert ds.load("B2").labels == frozenset()


def test_unexpected_label_values_are_named(tmp_path: Path) -> None:
    root = write_la2018(tmp_path / "la", n=1, label_value=255)
    with pytest.raises(InputError, match=r"CASE0_laendo\.nii\.gz.*unexpected LA label values \[0, 255\]"):
        open_dataset(root).load("CASE0")
    ch = write_challenge2018(tmp_path / "ch")
    write_volume(Volume(_blob(1).astype(np.uint8), GEOM), ch / "A1" / "laendo.nrrd")
    with pytest.raises(InputError, match=r"laendo\.nrrd.*\[0, 1\].*expected 0 and \[255\]"):
        open_dataset(ch).load("A1")
    qs = write_lascarqs(tmp_path / "qs")
    two = _blob(1)
    two[4, 6, 7] = 2
    write_volume(Volume(two, GEOM), qs / "p1" / "atriumSegImgMO.nii.gz")
    with pytest.raises(InputError, match=r"atriumSegImgMO.*\[0, 1, 2\]"):
        open_dataset(qs).load("p1")


def test_mismatched_grid_and_empty_label_are_refused(tmp_path: Path) -> None:
    root = write_la2018(tmp_path / "la", n=2)
    other = Geometry(GEOM.size, (0.7, 0.7, 1.25), GEOM.origin)
    write_volume(Volume(_blob(1).astype(np.uint8), other), root / "train" / "CASE0_laendo.nii.gz")
    with pytest.raises(InputError, match=r"CASE0_laendo.*grid differs.*0\.7.*image.*0\.625"):
        open_dataset(root).load("CASE0")
    write_volume(Volume(np.zeros(GEOM.shape, np.uint8), GEOM), root / "train" / "CASE1_laendo.nii.gz")
    with pytest.raises(InputError, match=r"CASE1_laendo.*empty"):
        open_dataset(root).load("CASE1")


def test_folder_without_cases(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.txt").write_text("hello")
    with pytest.raises(InputError, match="no readable case"):
        detect_layout(tmp_path / "nothing")
    with pytest.raises(InputError, match=r"no readable la2018 case"):
        La2018Dataset(tmp_path / "nothing")
    with pytest.raises(InputError, match="does not exist"):
        open_dataset(tmp_path / "missing")
    with pytest.raises(InputError, match="unknown data layout"):
        open_dataset(tmp_path / "nothing", layout="utah")


def test_split_by_case_is_deterministic_and_disjoint() -> None:
    ids = [f"c{i:02d}" for i in range(20)]
    tr, va = split_by_case(ids, 4, seed=7)
    assert len(va) == 4 and not set(tr) & set(va) and sorted(tr + va) == ids
    assert split_by_case(reversed(ids), 4, seed=7) == (tr, va)
    assert split_by_case(ids, 4, seed=8) != (tr, va)


@pytest.mark.real_data
def test_real_la2018_folder() -> None:
    if not LA2018.is_dir():
        pytest.skip(f"real data not present at {LA2018}")
    ds = open_dataset(LA2018)
    assert ds.layout == "la2018" and len(ds) == 80
    case = ds.load(ds.ids()[0])
    assert case.image.geometry.spacing == pytest.approx((0.625, 0.625, 1.25))
    volume_ml = case.la.array.sum() * case.la.geometry.voxel_volume_mm3 / 1000
    assert 30 < volume_ml < 250
