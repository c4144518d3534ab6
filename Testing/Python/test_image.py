"""Image I/O, checks and geometry-preserving resampling."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LAScarSegLib.core.errors import InputError
from LAScarSegLib.core.image import Geometry, Volume, canonical_axes, crop, grid_for_spacing, label_onto_image_grid, read_image, read_label, resample, resample_mask, to_model_grid, write_volume, zscore


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
    axes = canonical_axes(geom.direction_matrix)
    np.testing.assert_allclose(model.direction_matrix, geom.direction_matrix @ axes)
    corners = geom.index_to_physical(np.array([[i, j, k] for i in (0, 71) for j in (0, 63) for k in (0, 39)], float))
    assert np.abs(corners - np.asarray(model.origin)).sum(axis=1).min() < 1e-6  # starts on a corner voxel centre
    assert sorted(model.size) == [40, 45, 50]  # the same extent, axes in the canonical order
    on_model = resample_mask(label, model)
    back = resample_mask(on_model, geom)
    assert back.geometry == geom  # exactly the input grid
    v0, v1, v2 = (m.array.sum() * m.geometry.voxel_volume_mm3 for m in (label, on_model, back))
    assert abs(v1 - v0) / v0 < 0.02
    assert abs(v2 - v0) / v0 < 0.02
    dice = 2 * np.sum(back.array & label.array) / (back.array.sum() + label.array.sum())
    assert dice > 0.97


def test_the_model_grid_does_not_depend_on_the_storage_order() -> None:
    """The same voxels stored with flipped or swapped axes (same anatomy, same physical space) give
    the same canonical grid and the same network input (a hostile test got LA Dice 0.974 between two
    such storages of one image)."""
    geom = oblique_geometry(size=(30, 24, 16), spacing=(0.7, 0.8, 1.5))
    arr = np.random.default_rng(3).normal(size=geom.shape).astype(np.float32)
    d = geom.direction_matrix
    first = geom.index_to_physical(np.array([[29.0, 0.0, 15.0]]))[0]
    stored = [Volume(arr, geom),
              Volume(arr[::-1, :, ::-1].copy(), Geometry(geom.size, geom.spacing, tuple(first),
                                                         tuple((d @ np.diag([-1.0, 1.0, -1.0])).ravel()))),
              Volume(arr.transpose(0, 2, 1).copy(), Geometry((24, 30, 16), (0.8, 0.7, 1.5), geom.origin,
                                                             tuple(d[:, [1, 0, 2]].ravel())))]
    grids = [grid_for_spacing(v.geometry, (1.25, 1.25, 1.25)) for v in stored]
    for g in grids[1:]:
        assert g.size == grids[0].size
        np.testing.assert_allclose(g.origin, grids[0].origin, atol=1e-9)
        np.testing.assert_allclose(g.direction, grids[0].direction, atol=1e-12)
    inputs = [resample(v, g).array for v, g in zip(stored, grids)]
    for x in inputs[1:]:
        np.testing.assert_allclose(x, inputs[0], atol=1e-5)
    # a grid already canonical (RAS storage) keeps its origin and direction
    ras = Geometry((10, 10, 10), (1.0, 1.0, 1.0), (5.0, 6.0, 7.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert grid_for_spacing(ras, (2, 2, 2)).origin == ras.origin and grid_for_spacing(ras, (2, 2, 2)).direction == ras.direction


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
    with pytest.raises(InputError, match=r"junk\.nii\.gz: image file is corrupt"):
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


def _nifti_bytes(tmp_path: Path) -> tuple[bytes, Volume]:
    geom = Geometry((30, 20, 10), (0.625, 0.625, 2.5), (10.0, 20.0, 30.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    vol = Volume(np.random.default_rng(0).gamma(2.0, 50.0, geom.shape).astype(np.float32), geom)
    write_volume(vol, tmp_path / "whole.nii", compress=False)
    return (tmp_path / "whole.nii").read_bytes(), vol


def test_a_truncated_nifti_is_refused_not_filled_with_zeros(tmp_path: Path) -> None:
    """ITK reads a .nii.gz cut short without an error, the missing slices as zeros."""
    import gzip

    raw, _ = _nifti_bytes(tmp_path)
    packed = gzip.compress(raw)
    (tmp_path / "cut.nii.gz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "cut.nii").write_bytes(raw[: len(raw) - 4000])
    for name in ("cut.nii.gz", "cut.nii"):
        with pytest.raises(InputError, match=rf"{re.escape(name)}: image file is truncated: it holds \d+% of the voxels"):
            read_image(tmp_path / name)
    (tmp_path / "whole.nii.gz").write_bytes(packed)
    assert read_image(tmp_path / "whole.nii.gz").array.shape == (10, 20, 30)


def test_a_zero_voxel_size_takes_the_geometry_from_the_sform(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """ITK reads pixdim 0 as 1 mm (and says so only on stderr); the sform holds the real geometry."""
    import struct

    raw, vol = _nifti_bytes(tmp_path)
    zero = bytearray(raw)
    struct.pack_into("<3f", zero, 80, 0.0, 0.0, 0.0)  # pixdim[1..3]
    (tmp_path / "zero.nii").write_bytes(bytes(zero))
    got = read_image(tmp_path / "zero.nii")
    assert got.geometry.same_grid(vol.geometry) and np.array_equal(got.array, vol.array)
    assert len(got.notes) == 1 and "taken from the sform (spacing [0.625, 0.625, 2.5] mm)" in got.notes[0]
    assert "WARNING" not in capfd.readouterr().err  # ITK's own lines are not printed
    struct.pack_into("<h", zero, 254, 0)  # sform_code 0: nothing to take it from
    (tmp_path / "nosform.nii").write_bytes(bytes(zero))
    with pytest.raises(InputError, match=r"nosform\.nii: image has an invalid voxel size .* and no sform"):
        read_image(tmp_path / "nosform.nii")


def test_extreme_voxels_are_clipped_and_said(tmp_path: Path) -> None:
    """Four voxels at 1e30 among 160 000 no longer set the normalisation (the hostile test's message
    was "no left atrium found")."""
    raw, _ = _nifti_bytes(tmp_path)
    geom = Geometry((80, 80, 25), (0.625, 0.625, 2.5), (10.0, 20.0, 30.0))
    vol = Volume(np.random.default_rng(0).gamma(2.0, 50.0, geom.shape).astype(np.float32), geom)
    arr = vol.array.copy()
    arr[2, 3, 4:8] = 1e30
    write_volume(Volume(arr, vol.geometry), tmp_path / "hot.nii.gz")
    hot = read_image(tmp_path / "hot.nii.gz")
    assert len(hot.notes) == 1 and "4 voxel(s) with extreme intensities (up to 1e+30" in hot.notes[0]
    assert read_image(tmp_path / "whole.nii").notes == ()
    z_hot, z_clean = zscore(hot).array, zscore(vol).array
    inside = np.ones(arr.shape, bool)
    inside[2, 3, 4:8] = False
    assert np.abs(z_hot[inside] - z_clean[inside]).max() < 0.05 and z_hot.max() < 20
