"""Image I/O, checks and geometry-preserving resampling."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LAScarSegLib.core.errors import InputError
from LAScarSegLib.core.image import Geometry, Volume, crop, grid_for_spacing, label_onto_image_grid, read_image, read_label, resample, resample_mask, to_model_grid, write_volume, zscore


def oblique_geometry(size=(40, 36, 24), spacing=(0.7, 0.8, 1.5), origin=(-31.5, 12.25, 104.0)) -> Geometry:
    """A rotated grid (about an oblique axis) with a non-zero origin."""
    axis = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    ang = math.radians(23.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + math.sin(ang) * k + (1 - math.cos(ang)) * k @ k
    return Geometry(size, spacing, origin, tuple(rot.ravel()))


def ellipsoid_mask(geom: Geometry, radii_mm=(9.0, 7.0, 8.0)) -> Volume:
    """An ellipsoid centred in the volume, defined in physical space (so it follows the geometry)."""
    z, y, x = np.indices(geom.shape)
    ijk = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1).astype(float)
    pts = geom.index_to_physical(ijk)
    centre = geom.index_to_physical(np.array([[(s - 1) / 2 for s in geom.size]]))[0]
    local = (pts - centre) @ geom.direction_matrix  # ellipsoid axes along the grid axes
    r = np.sum((local / np.asarray(radii_mm)) ** 2, axis=1).reshape(geom.shape)
    return Volume((r <= 1.0).astype(np.uint8), geom)


def smooth_image(geom: Geometry, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(geom.shape, dtype=np.float32)
    arr = 100 + 20 * np.sin(x / 5) + 10 * np.cos(y / 4) + 5 * z / geom.shape[0] + rng.normal(0, 1, geom.shape)
    return Volume(arr.astype(np.float32), geom)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_read_write_roundtrip_keeps_geometry(tmp_path: Path, ext: str) -> None:
    geom = oblique_geometry()
    vol = smooth_image(geom)
    path = write_volume(vol, tmp_path / f"img{ext}")
    back = read_image(path)
    assert back.array.dtype == np.float32
    np.testing.assert_allclose(back.array, vol.array, rtol=1e-6)
    assert back.geometry.same_grid(geom)
    assert back.source == str(path)
    assert [p.name for p in tmp_path.iterdir()] == [f"img{ext}"]  # no temporary left behind


def write_dicom_series(vol: Volume, folder: Path) -> None:
    """Write an int16 DICOM series slice by slice with the tags a reader needs for geometry."""
    folder.mkdir()
    img = sitk.Cast(vol.to_sitk(), sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = img.GetDirection()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.424242"
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "MR",
            "0020|000e": series_uid,
            "0020|000d": series_uid + ".1",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|0032": "\\".join(map(str, pos)),
            "0020|0037": "\\".join(map(str, (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7]))),
            "0020|0013": str(k + 1),
            "0028|0030": f"{img.GetSpacing()[1]}\\{img.GetSpacing()[0]}",
            "0018|0050": str(img.GetSpacing()[2]),
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


def test_read_dicom_series(tmp_path: Path) -> None:
    geom = Geometry((32, 30, 12), (0.7, 0.7, 2.0), (-10.0, 20.0, 30.0))
    vol = smooth_image(geom)
    write_dicom_series(vol.with_array(np.round(vol.array)), tmp_path / "series")
    back = read_image(tmp_path / "series")
    assert back.geometry.size == geom.size
    np.testing.assert_allclose(back.geometry.spacing, geom.spacing, atol=1e-4)
    np.testing.assert_allclose(back.geometry.origin, geom.origin, atol=1e-4)
    np.testing.assert_allclose(back.array, np.round(vol.array), atol=0.5)


def test_model_grid_roundtrip_keeps_geometry_and_volume() -> None:
    geom = oblique_geometry(size=(72, 64, 40), spacing=(0.625, 0.625, 1.25))
    label = ellipsoid_mask(geom, (12.0, 9.0, 10.0))
    model = grid_for_spacing(geom, (1.0, 1.0, 1.0))
    assert model.origin == geom.origin and model.direction == geom.direction
    assert model.size == (45, 40, 50)
    on_model = resample_mask(label, model)
    back = resample_mask(on_model, geom)
    assert back.geometry == geom  # exactly the input grid
    v0, v1, v2 = (m.array.sum() * m.geometry.voxel_volume_mm3 for m in (label, on_model, back))
    assert abs(v1 - v0) / v0 < 0.02
    assert abs(v2 - v0) / v0 < 0.02
    dice = 2 * np.sum(back.array & label.array) / (back.array.sum() + label.array.sum())
    assert dice > 0.97


def test_image_resample_roundtrip_is_close() -> None:
    geom = oblique_geometry(size=(60, 50, 30), spacing=(0.625, 0.625, 1.25))
    img = smooth_image(geom)
    back = resample(to_model_grid(img, (1.0, 1.0, 1.0)), geom)
    inner = (slice(3, -3),) * 3
    err = np.abs(back.array[inner] - img.array[inner])
    assert np.median(err) < 2.0  # the smooth part survives; only the unit noise is blurred


def test_zscore_is_over_the_whole_volume() -> None:
    geom = Geometry((20, 10, 5), (1, 1, 1), (0, 0, 0))
    arr = np.arange(1000, dtype=np.float32).reshape(geom.shape)
    z = zscore(Volume(arr, geom)).array
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-5
    # a per-column z-score would make every column zero-mean; the volume z-score does not
    assert abs(float(z[:, :, 0].mean())) > 0.01
    with pytest.raises(InputError, match="zero spread"):
        zscore(Volume(np.ones(geom.shape, np.float32), geom))


def test_label_onto_image_grid() -> None:
    geom = Geometry((40, 40, 20), (1.0, 1.0, 2.0), (0, 0, 0))
    label = ellipsoid_mask(geom)
    same, warn = label_onto_image_grid(label, geom)
    assert same is label and warn is None
    other = Geometry((40, 40, 40), (1.0, 1.0, 1.0), (0.5, 0.0, 0.0))
    moved, warn = label_onto_image_grid(label, other)
    assert moved.geometry == other and warn and "resampled" in warn
    assert moved.array.sum() > 0
    far = Geometry((40, 40, 20), (1.0, 1.0, 2.0), (500.0, 0, 0))
    with pytest.raises(InputError, match="does not overlap"):
        label_onto_image_grid(Volume(label.array, far, "far.nii.gz"), geom)


# ----------------------------------------------------------------------------------- bad input
def _write_raw(path: Path, arr: np.ndarray, spacing=None) -> Path:
    img = sitk.GetImageFromArray(arr, isVector=False)
    if spacing:
        img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def test_bad_inputs_name_the_file_and_problem(tmp_path: Path) -> None:
    two_d = _write_raw(tmp_path / "flat.nii.gz", np.ones((10, 10), np.float32))
    with pytest.raises(InputError, match=r"flat\.nii\.gz.*2D"):
        read_image(two_d)
    four_d = tmp_path / "cine.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(np.random.rand(4, 5, 6).astype(np.float32))] * 3), str(four_d))
    with pytest.raises(InputError, match=r"cine\.nii\.gz.*4D"):
        read_image(four_d)
    nan = np.random.rand(6, 7, 8).astype(np.float32)
    nan[2, 3, 4] = np.nan
    with pytest.raises(InputError, match=r"nan\.nrrd.*non-finite.*x=4, y=3, z=2"):
        read_image(_write_raw(tmp_path / "nan.nrrd", nan))
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.nii\.gz.*empty"):
        read_image(empty)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(InputError, match=r"junk\.nii\.gz.*cannot read"):
        read_image(junk)
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "missing.nrrd")
    rgb = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(4, 5, 6, 3).astype(np.float32), isVector=True), str(rgb))
    with pytest.raises(InputError, match=r"rgb\.nrrd.*3 components"):
        read_image(rgb)
    const = _write_raw(tmp_path / "const.mha", np.full((4, 5, 6), 7, np.float32))
    with pytest.raises(InputError, match=r"const\.mha.*constant"):
        read_image(const)
    frac = _write_raw(tmp_path / "frac.nii.gz", np.full((4, 5, 6), 0.5, np.float32))
    with pytest.raises(InputError, match=r"frac\.nii\.gz.*non-integer"):
        read_label(frac)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert before == sorted(["flat.nii.gz", "cine.nii.gz", "nan.nrrd", "empty.nii.gz", "junk.nii.gz", "rgb.nrrd", "const.mha", "frac.nii.gz"])


def test_phantom_la_with_thin_veins_survives_the_model_grid_roundtrip() -> None:
    """The LA with its vein stubs: 0.625x0.625x1.25 -> 1.25 mm -> back keeps its volume within 2 %."""
    from LAScarSegLib.synth.phantom import make_phantom

    la = make_phantom(1).la
    back = resample_mask(resample_mask(la, grid_for_spacing(la.geometry, (1.25, 1.25, 1.25))), la.geometry)
    v0, v2 = int(la.array.sum()), int(back.array.sum())
    assert abs(v2 - v0) / v0 < 0.02
    assert 2 * int((back.array & la.array).sum()) / (v0 + v2) > 0.98


def test_crop_keeps_each_voxel_where_it_was_with_open_and_negative_ends() -> None:
    """A voxel of the crop lies at the same physical point as that voxel of the whole volume,
    whichever way the box is written; steps and empty boxes are refused."""
    geom = oblique_geometry()
    vol = Volume(np.arange(np.prod(geom.shape), dtype=np.float32).reshape(geom.shape), geom)
    for box in ((slice(3, 20), slice(None), slice(5, None)), (slice(None, -4), slice(2, -2), slice(None))):
        part = crop(vol, box)
        z0, y0, x0 = (s.indices(n)[0] for s, n in zip(box, geom.shape))
        assert np.all(np.isfinite(part.geometry.origin))
        np.testing.assert_array_equal(part.array, vol.array[box])
        corner = np.array([[2, 1, 3]], float)  # (x, y, z) inside the crop
        np.testing.assert_allclose(part.geometry.index_to_physical(corner),
                                   geom.index_to_physical(corner + [[x0, y0, z0]]), atol=1e-9)
    for bad in ((slice(0, 10, 2), slice(None), slice(None)), (slice(5, 5), slice(None), slice(None))):
        with pytest.raises(InputError, match="crop box"):
            crop(vol, bad)
