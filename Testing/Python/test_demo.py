"""`lascarseg demo` end to end, and the all-or-nothing output folder it writes through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from LAScarSegLib.app.cli import main
from LAScarSegLib.core.outputs import MARKER, atomic_output_dir


def test_demo_writes_phantom_checks_and_preview(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seed", "2"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([".lascarseg.json", "demo_summary.json", "phantom_image.nii.gz", "phantom_la.nii.gz",
                            "phantom_preview.png", "phantom_scar.nii.gz", "phantom_wall.nii.gz", "segmentation"])
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["all_checks_passed"] and len(summary["core_checks"]) >= 8
    assert summary["phantom"]["seed"] == 2 and "synthetic" in summary["phantom"]["provenance"]
    # the bundled model ran the whole job on the phantom, scored against its truth
    seg = summary["segmentation"]
    assert seg["run"] and seg["report"]["metrics"]["la"]["dice"] > 0.8
    # the truth is measured as the report measures the prediction, so the two sit side by side
    truth, scar = seg["truth"], seg["report"]["scar"]
    # over the model's 3 mm band, wider than the phantom's own wall, the same scar is a smaller share
    assert 0 < truth["burden_wall_pct"] < summary["phantom"]["burden_pct"]
    assert 0 < truth["burden_surface_pct"] < 100 and truth["burden_surface_pct"] != truth["burden_wall_pct"]
    assert abs(scar["burden_surface_pct"] - truth["burden_surface_pct"]) < 15
    assert abs(seg["report"]["la"]["volume_ml"] - truth["la_volume_ml"]) < 0.15 * truth["la_volume_ml"]
    assert (out / "segmentation" / "report.json").is_file() and (out / "segmentation" / "snapshot.png").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    # an output folder that holds results is refused (exit 2) and left as it was
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["demo", "--out", str(out)]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_demo_without_a_usable_model_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registered model file is corrupt (a copy of the registry, its model file truncated): the
    demo still writes the phantom and the core checks, says why it did not segment, and exits 1."""
    import shutil

    from LAScarSegLib.model import loading, registry

    models = shutil.copytree(registry.MODELS_DIR, tmp_path / "Models")
    for pt in models.glob("*.pt"):
        pt.write_bytes(pt.read_bytes()[:1000])
    monkeypatch.setattr(loading.load_model, "__defaults__", (None, models / "models.json", "cpu"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seed", "2"]) == 1
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["all_checks_passed"] and "does not match the registry" in summary["segmentation"]
    assert not (out / "segmentation").exists()


def test_atomic_output_dir_leaves_nothing_after_a_failure(tmp_path: Path) -> None:
    out = tmp_path / "result"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as stage:
            (stage / "half.txt").write_text("partial")
            raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with atomic_output_dir(out) as stage:
        (stage / "old.txt").write_text("keep me")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, overwrite=True) as stage:
            (stage / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "old.txt"]
    with atomic_output_dir(out, overwrite=True) as stage:
        (stage / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]


def test_atomic_files_get_ordinary_permissions(tmp_path: Path) -> None:
    """Temporary files are 0600; what is renamed into place is as readable as a plain open() makes it."""
    import os

    from LAScarSegLib.core.outputs import write_json

    umask = os.umask(0o022)
    try:
        path = write_json({"a": 1}, tmp_path / "x.json")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644 and json.loads(path.read_text()) == {"a": 1}
