"""`lascarseg segment` on bad input: exit code 2, a message that says what is wrong, nothing written.

Covers what test_pipeline.py does not: non-3D, non-finite and constant images, a corrupt, a foreign
and a single-decoder model file, the error messages, inputs byte-identical afterwards, an image in
which no LA is found (said so, no empty mesh), and `--threads` reaching the libraries. None of
these needs a trained model: the models here are exported on the spot with known behaviour.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LAScarSegLib.app.cli import main
from LAScarSegLib.train.export import export_checkpoint
from LAScarSegLib.core.image import Geometry, Volume, write_volume
from LAScarSegLib.model.network import ModelConfig, build_model
from LAScarSegLib.synth.phantom import make_phantom


def _export(folder: Path, name: str, heads: tuple[str, ...] = ("la", "scar"), la_bias: float | None = None) -> Path:
    """An untrained exported model; `la_bias` fixes the LA logit everywhere (e.g. -20: never an LA)."""
    torch.manual_seed(0)
    mcfg = ModelConfig(levels=3, base_channels=4, heads=heads)
    model = build_model(mcfg)
    if la_bias is not None:
        out = model.decoders["la"].out
        with torch.no_grad():
            out.weight.zero_()
            out.bias.fill_(la_bias)
    ckpt = {"model": model.state_dict(), "model_config": mcfg.as_dict(), "variant": "mtl-sesa", "iteration": 0,
            "config": {"spacing_mm": [1.25, 1.25, 1.25], "patch_size": [32, 32, 32], "wall_band_mm": 3.0}}
    torch.save(ckpt, folder / f"{name}.ckpt")
    path = export_checkpoint(folder / f"{name}.ckpt", folder / f"{name}.pt", name=name, version="0.0.1")
    (folder / f"{name}.ckpt").unlink()
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    ph = make_phantom(11, size=(48, 48, 32), spacing=(1.25, 1.25, 1.25), la_volume_ml=20.0)
    files = {"image": write_volume(ph.image, folder / "image.nii.gz"), "la": write_volume(ph.la, folder / "la.nii.gz")}
    geom = ph.image.geometry
    flat = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(48, 48)).astype(np.float32))
    sitk.WriteImage(flat, str(folder / "slice2d.nii.gz"))
    files["2d"] = folder / "slice2d.nii.gz"
    nan = ph.image.array.copy()
    nan[10, 20, 30], nan[0, 0, 0] = np.nan, np.inf
    # NRRD: ITK's NIfTI reader turns NaN and inf into 0 (niftilib), so a NIfTI cannot carry them to us
    files["nan"] = write_volume(Volume(nan, geom), folder / "nan.nrrd")
    files["constant"] = write_volume(Volume(np.full(geom.shape, 7.0, np.float32), geom), folder / "constant.nii.gz")
    packed = files["image"].read_bytes()
    (folder / "cut.nii.gz").write_bytes(packed[: len(packed) * 2 // 3])  # a copy that stopped short
    files["truncated"] = folder / "cut.nii.gz"
    files["empty_la"] = write_volume(Volume(np.zeros(geom.shape, np.uint8), geom), folder / "empty_la.nii.gz")
    far = Geometry(geom.size, geom.spacing, (900.0, 0.0, 0.0))
    files["far_la"] = write_volume(Volume(ph.la.array, far), folder / "far_la.nii.gz")
    (folder / "corrupt.pt").write_bytes(np.random.default_rng(1).bytes(4000))
    files["corrupt"] = folder / "corrupt.pt"
    foreign = torch.jit.script(torch.nn.Conv3d(1, 1, 1))
    torch.jit.save(foreign, str(folder / "foreign.pt"))
    files["foreign"] = folder / "foreign.pt"
    files["tiny"] = _export(folder, "tiny")
    files["la_only"] = _export(folder, "la_only", heads=("la",))
    files["never"] = _export(folder, "never", la_bias=-20.0)
    return files


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


Args = Callable[[dict[str, Path]], list[str]]
BAD = {
    "2d image": (lambda f: [str(f["2d"]), "--model", str(f["tiny"])], r"is 2D .* a 3D volume is needed"),
    "non-finite image": (lambda f: [str(f["nan"]), "--model", str(f["tiny"])], r"2 non-finite voxel\(s\) \(NaN or inf\)"),
    "constant image": (lambda f: [str(f["constant"]), "--model", str(f["tiny"])], r"image is constant .* nothing to segment"),
    "truncated image": (lambda f: [str(f["truncated"]), "--model", str(f["tiny"])],
                        r"cut\.nii\.gz: image file is truncated: it holds \d+% of the voxels"),
    "empty LA label": (lambda f: [str(f["image"]), "--la-label", str(f["empty_la"]), "--model", str(f["tiny"])],
                       r"empty_la\.nii\.gz: the LA label is empty"),
    "label off the image": (lambda f: [str(f["image"]), "--la-label", str(f["far_la"]), "--model", str(f["tiny"])],
                            r"does not overlap the image"),
    "corrupt model": (lambda f: [str(f["image"]), "--model", str(f["corrupt"])], r"not a LAScarSeg TorchScript model file"),
    "foreign model": (lambda f: [str(f["image"]), "--model", str(f["foreign"])], r"has no model_card.json"),
    "single-decoder model": (lambda f: [str(f["image"]), "--model", str(f["la_only"])], r"lacks the output\(s\) \['scar'\]"),
    "no LA found": (lambda f: [str(f["image"]), "--model", str(f["never"])], r"no left atrium found"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_and_writes_nothing(case: str, inputs: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    build, message = BAD[case]
    before = _digests(inputs["image"].parent)
    out = tmp_path / "out"
    assert main(["segment", *build(inputs), "--out", str(out), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lascarseg segment: error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no output, no staging folder
    assert _digests(inputs["image"].parent) == before  # inputs byte-identical


def test_no_la_writes_no_empty_mesh(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Through the library too: the job stops with the reason instead of producing an empty surface."""
    from LAScarSegLib.core.errors import InputError
    from LAScarSegLib.app.pipeline import run_segment

    with pytest.raises(InputError, match="no left atrium found"):
        run_segment(inputs["image"], tmp_path / "out", model=str(inputs["never"]), device="cpu")
    assert list(tmp_path.rglob("*.vtp")) == [] and list(tmp_path.iterdir()) == []


def test_output_with_results_refused_byte_identical(inputs: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "done"
    out.mkdir()
    (out / "report.json").write_text('{"earlier": "results"}\n')
    (out / "la_mask.nii.gz").write_bytes(b"\x1f\x8b earlier")
    before = _digests(out)
    assert main(["segment", str(inputs["image"]), "--out", str(out), "--model", str(inputs["tiny"])]) == 2
    assert "already holds files; pass --overwrite" in capsys.readouterr().err
    assert _digests(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["done"]


def test_threads_option_reaches_torch_and_itk(inputs: dict[str, Path], tmp_path: Path) -> None:
    """`--threads 1` holds for the whole job: checked in the process that ran it, after inference."""
    code = ("import sys; from LAScarSegLib.app.cli import main; rc = main(sys.argv[1:]); import torch, SimpleITK as s; "
            "print(rc, torch.get_num_threads(), s.ProcessObject.GetGlobalDefaultNumberOfThreads())")
    proc = subprocess.run([sys.executable, "-c", code, "segment", str(inputs["image"]), "--out", str(tmp_path / "o"),
                           "--model", str(inputs["never"]), "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert "no left atrium found" in proc.stderr  # so the network ran before the check
    assert proc.stdout.split() == ["2", "1", "1"]


def test_the_model_is_checked_before_the_image_is_read(inputs: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """A bad model is said first (the image here does not even exist), and its message ends on a word."""
    assert main(["segment", str(tmp_path / "missing.nii.gz"), "--model", str(inputs["corrupt"]),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "corrupt.pt: not a LAScarSeg TorchScript model file" in err and "missing.nii.gz" not in err
    reason = err.rsplit("(", 1)[-1].rstrip(")")
    assert len(reason) <= 340 and (reason.endswith(" ...") or not reason[-1:].isalnum() or len(reason) < 300)


def test_a_damaged_install_is_a_failure_not_bad_usage(inputs: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    """The bundled model altered after installation: exit 1 with how to repair it (exit 2 means the
    command was wrong, and it was not)."""
    import shutil

    from LAScarSegLib.model import loading, registry

    models = shutil.copytree(registry.MODELS_DIR, tmp_path / "Models")
    for pt in models.glob("*.pt"):
        pt.write_bytes(pt.read_bytes()[:-16] + bytes(16))
    monkeypatch.setattr(loading.load_model, "__defaults__", (None, models / "models.json", "cpu"))
    assert main(["segment", str(inputs["image"]), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "does not match the registry" in err and "reinstall LAScarSeg" in err
    assert not (tmp_path / "out").exists()


def test_batch_says_its_failures_on_stderr(inputs: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "cases"
    folder.mkdir()
    (folder / "broken.nrrd").write_bytes(b"not an image at all")
    assert main(["batch", str(folder), "--out", str(tmp_path / "out"), "--model", str(inputs["tiny"])]) == 1
    assert "failed: broken: InputError" in capsys.readouterr().err
