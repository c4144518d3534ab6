"""Fuzzing with Hypothesis: the readers and `lascarseg segment` on generated files.

Every outcome must be a clean result or a clear error: for the readers a checked 3D float32 volume
or an `InputError`; for `segment` exit 0 with every output, or exit 2 with one line on stderr and
nothing written; never a traceback (exit 1), never a changed input. Shapes, spacings, directions,
dtypes, intensity ranges, NaN/Inf, truncated and corrupted files, labels on other grids.

A few examples per test keep the suite fast; `LASCARSEG_FUZZ_EXAMPLES=200 make test` runs more.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from LAScarSegLib.app.cli import main
from LAScarSegLib.core.errors import InputError
from LAScarSegLib.core.image import read_image, read_label
from LAScarSegLib.model.network import ModelConfig, build_model
from LAScarSegLib.train.export import export_checkpoint

EXAMPLES = int(os.environ.get("LASCARSEG_FUZZ_EXAMPLES", "12"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("LASCARSEG_FUZZ_EXAMPLES"),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SEGMENT_FILES = {"la_mask.nii.gz", "scar_probability.nii.gz", "scar_mask.nii.gz", "la_surface.vtp", "report.json",
                 "snapshot.png", ".lascarseg.json"}
DTYPES = {"uint8": sitk.sitkUInt8, "int16": sitk.sitkInt16, "uint16": sitk.sitkUInt16, "float32": sitk.sitkFloat32,
          "float64": sitk.sitkFloat64}


def _rotation(angles: tuple[float, float, float], flips: tuple[bool, bool, bool]) -> tuple[float, ...]:
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return tuple((rx @ ry @ rz @ np.diag([-1.0 if f else 1.0 for f in flips])).ravel())


@st.composite
def images(draw: st.DrawFn) -> dict:
    """An image file's content: shape (some not 3D), grid, dtype, values (some constant or non-finite)."""
    ndim = draw(st.sampled_from([3, 3, 3, 3, 2, 4]))
    shape = tuple(draw(st.integers(1 if ndim != 3 else 1, 28)) for _ in range(ndim))
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    kind = draw(st.sampled_from(["noise", "blob", "constant", "huge", "nonfinite"]))
    arr = rng.normal(100.0, 30.0, shape)
    if kind == "blob" and ndim == 3:
        zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
        arr += 300.0 * ((zz ** 2 + yy ** 2 + xx ** 2) < 0.3)
    elif kind == "constant":
        arr = np.full(shape, draw(st.floats(-5, 5)))
    elif kind == "huge":
        arr.flat[rng.integers(arr.size)] = draw(st.sampled_from([1e30, -1e30, 3e38]))
    elif kind == "nonfinite" and dtype.startswith("float"):
        arr.flat[rng.integers(arr.size)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    info = np.iinfo(dtype) if not dtype.startswith("float") else None
    if info is not None:
        arr = np.clip(np.nan_to_num(arr, posinf=info.max, neginf=info.min), info.min, info.max)
    return {"array": arr.astype(dtype), "ndim": ndim,
            "spacing": tuple(draw(st.floats(0.3, 4.0)) for _ in range(ndim)),
            "origin": tuple(draw(st.floats(-300, 300)) for _ in range(ndim)),
            "direction": _rotation(tuple(draw(st.floats(-3.2, 3.2)) for _ in range(3)),
                                   tuple(draw(st.booleans()) for _ in range(3))) if ndim == 3 else None,
            "suffix": draw(st.sampled_from([".nii.gz", ".nii", ".nrrd", ".mha"])),
            "damage": draw(st.sampled_from([None, None, "truncate", "flip-bytes"])),
            "cut": draw(st.floats(0.05, 0.95))}


def _write(spec: dict, folder: Path, name: str = "image") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(spec["array"], isVector=False)
    img.SetSpacing(spec["spacing"])
    img.SetOrigin(spec["origin"])
    if spec["direction"] is not None:
        img.SetDirection(spec["direction"])
    path = folder / f"{name}{spec['suffix']}"
    sitk.WriteImage(img, str(path))
    raw = path.read_bytes()
    if spec["damage"] == "truncate":
        path.write_bytes(raw[: max(1, int(len(raw) * spec["cut"]))])
    elif spec["damage"] == "flip-bytes":
        damaged = bytearray(raw)
        start = int(len(raw) * spec["cut"])
        damaged[start:start + 64] = bytes(b ^ 0x5A for b in damaged[start:start + 64])
        path.write_bytes(bytes(damaged))
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@FUZZ
@given(spec=images())
def test_readers_return_a_checked_volume_or_a_clear_error(spec: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("read")
    path = _write(spec, folder)
    before = _digest(folder)
    for reader in (read_image, read_label):
        try:
            vol = reader(path)
        except InputError as exc:
            assert str(path) in str(exc) or path.name in str(exc), exc
            continue
        assert vol.array.ndim == 3 and min(vol.array.shape) >= 1
        assert all(s > 0 for s in vol.geometry.spacing)
        if reader is read_image:
            assert vol.array.dtype == np.float32 and np.isfinite(vol.array).all()
            assert spec["damage"] != "truncate" or not spec["suffix"].startswith(".nii")  # NIfTI cut short: refused
    assert _digest(folder) == before


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained model that calls every voxel LA (a bias of +4): `segment` runs to the end."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    mcfg = ModelConfig(levels=2, base_channels=2)
    model = build_model(mcfg)
    with torch.no_grad():
        model.decoders["la"].out.weight.zero_()
        model.decoders["la"].out.bias.fill_(4.0)
    torch.save({"model": model.state_dict(), "model_config": mcfg.as_dict(), "variant": "mtl-sesa", "iteration": 0,
                "config": {"spacing_mm": [2.0, 2.0, 2.0], "patch_size": [16, 16, 16], "wall_band_mm": 3.0}},
               folder / "m.ckpt")
    return export_checkpoint(folder / "m.ckpt", folder / "m.pt", name="fuzz", version="0.0.1")


@FUZZ
@given(spec=images(), label=st.sampled_from([None, "same", "shifted", "other-grid", "far"]))
def test_segment_is_a_result_or_exit_2_with_nothing_written(spec: dict, label: str | None, tiny_model: Path,
                                                           tmp_path_factory: pytest.TempPathFactory,
                                                           capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path_factory.mktemp("seg")
    path = _write(spec, folder / "in")
    args = ["segment", str(path), "--model", str(tiny_model), "--threads", "1", "--out", str(folder / "out")]
    if label is not None and spec["ndim"] == 3:
        shape = spec["array"].shape
        lab = {**spec, "array": np.zeros(shape, np.uint8), "damage": None, "suffix": ".nii.gz"}
        lab["array"][tuple(slice(n // 4, max(n // 4 + 1, 3 * n // 4)) for n in shape)] = 1
        if label == "shifted":
            lab["origin"] = tuple(o + 3.0 for o in spec["origin"])
        elif label == "other-grid":
            lab["spacing"] = tuple(s * 1.5 for s in spec["spacing"])
        elif label == "far":
            lab["origin"] = tuple(o + 5000.0 for o in spec["origin"])
        args += ["--la-label", str(_write(lab, folder / "in", "label"))]
    before = _digest(folder / "in")
    code = main(args)
    err = capsys.readouterr().err
    assert code in (0, 2), err  # 1 would be a failure the user could not have avoided: a bug
    if code == 0:
        assert {p.name for p in (folder / "out").iterdir()} == SEGMENT_FILES
    else:
        assert err.startswith("lascarseg segment: error: ") and err.count("\n") == 1, err
        assert not (folder / "out").exists()
    assert not [p for p in folder.iterdir() if ".partial" in p.name]
    assert _digest(folder / "in") == before
