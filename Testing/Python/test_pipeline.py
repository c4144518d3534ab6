"""The segment-and-quantify job with the bundled model on phantoms: outputs, report, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LAScarSegLib.app.cli import main
from LAScarSegLib.core.errors import Cancelled
from LAScarSegLib.core.image import Geometry, Volume, read_image, write_volume
from LAScarSegLib.synth.phantom import make_phantom
from LAScarSegLib.app.pipeline import segment

REPORT_KEYS = {"schema_version", "input", "model", "device", "intended_use", "warnings", "la", "scar", "metrics",
               "timings_s"}  # CONTRACTS section 5: exactly these (metrics with labels; baselines when asked)
TIMING_KEYS = {"load", "inference", "postprocess", "surface", "projection", "metrics", "write", "total"}


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("phantom")
    ph = make_phantom(30_007)
    files = {}
    for name in ("image", "la", "wall", "scar"):
        files[name] = write_volume(getattr(ph, name), folder / f"{name}.nii.gz")
    return files


@pytest.fixture(scope="module")
def segmented(phantom_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "case"
    args = ["segment", str(phantom_files["image"]), "--out", str(out), "--la-label", str(phantom_files["la"]),
            "--scar-label", str(phantom_files["scar"]), "--threads", "2", "--baselines"]  # bare: all of them
    assert main(args) == 0
    return out


def test_evaluation_scores_the_burdens_that_report_json_gives(segmented: Path) -> None:
    """`lascarseg evaluate` scores the product's own burdens (those of report.json for the same
    phantom) against the truth measured the same way."""
    from LAScarSegLib.app.evaluate import evaluate_phantoms, phantom_true_burdens
    from LAScarSegLib.model.loading import load_for_inference

    loaded = load_for_inference(None, "cpu")
    row = evaluate_phantoms(loaded, [30_007], lambda _: None)["cases"][0]
    report = json.loads((segmented / "report.json").read_text())
    truth = phantom_true_burdens(make_phantom(30_007), float(loaded.card["wall_band_mm"]))
    for kind in ("surface", "wall"):
        assert row[f"burden_{kind}_pct"] == pytest.approx(report["scar"][f"burden_{kind}_pct"], abs=0.01)
        assert row[f"true_burden_{kind}_pct"] == truth[f"burden_{kind}_pct"]
        assert row[f"burden_{kind}_error"] == pytest.approx(row[f"burden_{kind}_pct"] - truth[f"burden_{kind}_pct"],
                                                            abs=0.011)
    assert 0 < truth["burden_wall_pct"] < truth["burden_surface_pct"] < 100  # a 3 mm band holds more than the scar
    assert row["utah_stage"] == report["scar"]["utah_stage"]
    assert row["utah_stage_agrees"] == float(row["utah_stage"] == row["true_utah_stage"])


def test_outputs_and_report(segmented: Path, phantom_files: dict[str, Path]) -> None:
    assert sorted(p.name for p in segmented.iterdir()) == sorted(
        ["la_mask.nii.gz", "scar_probability.nii.gz", "scar_mask.nii.gz", "la_surface.vtp", "report.json", "snapshot.png",
         ".lascarseg.json"])
    report = json.loads((segmented / "report.json").read_text())
    assert set(report) == REPORT_KEYS | {"baselines"} and set(report["timings_s"]) == TIMING_KEYS
    from LAScarSegLib.quantify.baselines import method_names

    assert list(report["baselines"]) == method_names()  # `--baselines` with no name runs all seven
    assert all(0 <= b["burden_surface_pct"] <= 100 and "dice_scar" in b["metrics"] for b in report["baselines"].values())
    assert set(report["metrics"]["la"]) == {"dice", "jaccard", "asd_mm", "hd_mm", "hd95_mm", "asd_vox", "hd95_vox"}
    assert set(report["metrics"]["scar"]) == {"accuracy", "dice_scar", "dice_normal", "gdice"}
    assert report["metrics"]["la"]["dice"] > 0.8  # the bundled model finds the phantom's LA
    assert 0 <= report["scar"]["burden_surface_pct"] <= 100 and report["scar"]["utah_stage"] in ("I", "II", "III", "IV")
    assert any("ostia" in w for w in report["warnings"]) and "Research use only" in report["intended_use"]
    image = read_image(phantom_files["image"])
    assert report["input"]["size"] == list(image.geometry.size)
    la = sitk.ReadImage(str(segmented / "la_mask.nii.gz"))
    assert la.GetPixelID() == sitk.sitkUInt8 and la.GetSize() == image.geometry.size
    scar = sitk.GetArrayFromImage(sitk.ReadImage(str(segmented / "scar_mask.nii.gz")))
    la_arr = sitk.GetArrayFromImage(la)
    assert set(np.unique(la_arr)) <= {0, 1} and not (scar.astype(bool) & la_arr.astype(bool)).any()
    prob = sitk.GetArrayFromImage(sitk.ReadImage(str(segmented / "scar_probability.nii.gz")))
    assert prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1


def test_surface_loads_in_place_in_slicer(segmented: Path, mrml_scene) -> None:
    """Slicer's own model storage node reads the surface in RAS, over the LPS image."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(segmented / "la_surface.vtp"))
    reader.Update()
    poly = reader.GetOutput()
    assert poly.GetFieldData().GetAbstractArray("SPACE").GetValue(0) == "LPS"
    scar_prob = poly.GetPointData().GetArray("ScarProbability")
    scar = poly.GetPointData().GetArray("Scar")
    assert scar_prob.GetDataType() == vtk.VTK_FLOAT and scar.GetDataType() == vtk.VTK_UNSIGNED_CHAR
    lps = vtk_to_numpy(poly.GetPoints().GetData())
    node = mrml_scene.AddNewNodeByClass("vtkMRMLModelNode")
    storage = mrml_scene.AddNewNodeByClass("vtkMRMLModelStorageNode")
    storage.SetFileName(str(segmented / "la_surface.vtp"))
    assert storage.ReadData(node)
    ras = vtk_to_numpy(node.GetPolyData().GetPoints().GetData())
    np.testing.assert_allclose(ras, lps * np.array([-1, -1, 1]), atol=1e-3)


def test_existing_output_refused_and_inputs_untouched(segmented: Path, phantom_files: dict[str, Path]) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in segmented.iterdir()}
    inputs = {p: p.stat().st_mtime_ns for p in phantom_files.values()}
    assert main(["segment", str(phantom_files["image"]), "--out", str(segmented)]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in segmented.iterdir()} == before
    assert {p: p.stat().st_mtime_ns for p in phantom_files.values()} == inputs
    assert sorted(p.name for p in phantom_files["image"].parent.iterdir()) == sorted(
        ["image.nii.gz", "la.nii.gz", "wall.nii.gz", "scar.nii.gz"])


def test_bad_inputs_exit_2_without_output(tmp_path: Path, phantom_files: dict[str, Path]) -> None:
    ramp = np.broadcast_to(np.linspace(0, 1, 32, dtype=np.float32), (48, 40, 32)).copy()  # no structure at all
    blank = write_volume(Volume(ramp, Geometry((32, 40, 48), (1.25, 1.25, 1.25), (0, 0, 0))), tmp_path / "blank.nii.gz")
    assert main(["segment", str(blank), "--out", str(tmp_path / "o1")]) == 2  # no LA found
    far = make_phantom(3).la
    far_label = Volume(far.array, Geometry(far.geometry.size, far.geometry.spacing, (900.0, 0, 0)))
    far_file = write_volume(far_label, tmp_path / "far.nii.gz")
    assert main(["segment", str(phantom_files["image"]), "--la-label", str(far_file), "--out", str(tmp_path / "o2")]) == 2
    assert main(["segment", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "o3")]) == 2
    assert main(["segment", str(phantom_files["image"]), "--model", str(tmp_path / "blank.nii.gz.pt"),
                 "--out", str(tmp_path / "o4")]) == 2
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("after_s", [0.2, 1.0, 2.0])
def test_cancel_from_another_thread_stops_within_2_s(phantom_files: dict[str, Path], after_s: float) -> None:
    """The cancel event set by a timer, as a GUI thread would, at moments that fall in different
    stages (reading and resampling, the network's one window, after it): the run ends within 2 s."""
    cancel = threading.Event()
    set_at: list[float] = []

    def fire() -> None:
        set_at.append(time.perf_counter())
        cancel.set()

    timer = threading.Timer(after_s, fire)
    timer.start()
    try:
        with pytest.raises(Cancelled):
            segment(phantom_files["image"], la_label=phantom_files["la"], scar_label=phantom_files["scar"],
                    cancel=cancel, baselines=[])
    finally:
        timer.cancel()
    assert set_at and time.perf_counter() - set_at[0] < 2.0


def test_killed_run_leaves_no_output_folder(tmp_path: Path, phantom_files: dict[str, Path]) -> None:
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "LAScarSegLib.app.cli", "segment", str(phantom_files["image"]),
                             "--out", str(out), "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".killed.partial-*")):
        time.sleep(0.05)
    assert list(tmp_path.glob(".killed.partial-*")), "the run never started writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    # the next run cleans the dead run's staging folder and succeeds
    assert main(["segment", str(phantom_files["image"]), "--out", str(out), "--threads", "2"]) == 0
    assert out.is_dir() and not list(tmp_path.glob(".killed.partial-*"))


def test_batch_finishes_what_it_can(tmp_path: Path, phantom_files: dict[str, Path]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.nii.gz").write_bytes(phantom_files["image"].read_bytes())
    (folder / "broken.nrrd").write_bytes(os.urandom(500))
    out = tmp_path / "out"
    assert main(["batch", str(folder), "--out", str(out), "--threads", "2"]) == 1
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0] == "id,status,error,la_volume_ml,burden_surface_pct,utah_stage,dice,hd95_mm,dice_scar,gdice,seconds"
    status = {r.split(",")[0]: r.split(",")[1] for r in rows[1:]}
    assert status == {"broken": "failed", "good": "done"}
    assert (out / "good" / "report.json").is_file() and not (out / "broken").exists()
    # the summary is written after every case, so a batch killed half-way leaves one for what it finished
    from LAScarSegLib.app.batch import run_batch

    seen: list[int] = []
    run_batch(folder, tmp_path / "again", log=lambda line: seen.append(
        len((tmp_path / "again" / "summary.csv").read_text().splitlines()) - 1))
    assert seen == [1, 2] and not [p for p in (tmp_path / "again").iterdir() if ".partial" in p.name]


def test_full_field_of_view_finds_the_la_by_coarse_localisation_then_a_fine_pass() -> None:
    """A whole chest with the LA off centre (640x640x88). The bundled model also marks other, larger
    blood pools running through the whole slab, so the largest component of the first pass is not
    the LA; of the other candidates the most certain is a 49 mL piece, not the LA, so each of the
    most certain gets a fine pass, and the LA is the one where the model is most confident (LA Dice
    0.00 without the fine passes, and 0.00 with one pass around the most certain). In the canonical
    orientation the LA's box holds a piece of a neighbouring pool too: Dice 0.85 (0.96 before)."""
    ph = make_phantom(50_008, full_fov=True)
    result = segment(ph.image, la_label=ph.la, device="cpu")
    warnings = result.report.warnings
    notes = [w for w in warnings if w.startswith("coarse localisation: the largest")]
    assert len(notes) == 1 and "ran through the whole slab" in notes[0], warnings
    assert any(w.startswith("coarse localisation: 2 candidates checked") for w in warnings), warnings
    assert not [w for w in warnings if w.startswith("the kept LA component")]  # no doubt left
    assert result.report.metrics["la"]["dice"] > 0.8
    # the first pass alone keeps a blood pool: the fine passes are what find the LA
    from LAScarSegLib.infer.localise import component_warning
    from LAScarSegLib.infer.masks import la_mask
    from LAScarSegLib.model.loading import load_for_inference
    from LAScarSegLib.infer.predict import predict

    coarse = predict(load_for_inference(None, "cpu"), ph.image)
    assert component_warning(coarse.la) is not None
    first, _ = la_mask(coarse.la)
    assert (first.array.astype(bool) & ph.la.array.astype(bool)).sum() < 0.05 * ph.la.array.astype(bool).sum()


def test_metrics_in_the_box_equal_the_whole_grid() -> None:
    """The metrics are computed in the box around the masks (a whole field of view took 2.6 s):
    on a phantom padded by 30 mm of background, the numbers are those of the whole grid."""
    from scipy import ndimage

    from LAScarSegLib.core.distance import wall_band
    from LAScarSegLib.quantify.readout import measure_against_labels

    ph = make_phantom(3)
    pad = 48  # voxels each side in x and y (30 mm at 0.625 mm), 24 slices in z

    def padded(v: Volume) -> Volume:
        g = v.geometry
        arr = np.pad(v.array, ((24, 24), (pad, pad), (pad, pad)))
        origin = tuple(o - k * s for o, k, s in zip(g.origin, (pad, pad, 24), g.spacing))
        return Volume(arr, Geometry((arr.shape[2], arr.shape[1], arr.shape[0]), g.spacing, origin, g.direction))

    truth = {k: padded(v) for k, v in (("la", ph.la), ("scar", ph.scar), ("wall", ph.wall))}
    la = truth["la"].with_array(ndimage.binary_dilation(truth["la"].array, iterations=2).astype(np.uint8))
    scar = truth["scar"].with_array(np.roll(truth["scar"].array, 3, axis=2))
    wall = wall_band(la, 3.0)
    boxed, _ = measure_against_labels(la, scar, wall, truth, 3.0)
    whole, _ = measure_against_labels(la, scar, wall, truth, 3.0, margin_mm=None)
    assert boxed["la"]["dice"] < 0.99 and boxed["scar"]["dice_scar"] < 0.99  # imperfect: the numbers say something
    for part in ("la", "scar"):
        for key, value in whole[part].items():
            assert boxed[part][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (part, key)


def test_baselines_on_the_manual_la(phantom_files: dict[str, Path]) -> None:
    """The paper's LAM+Otsu / LAM+MGMM: baselines on the manual LA (its own surface), scored as the
    network is; they are recorded as such and cannot be shown on the predicted LA's surface."""
    from LAScarSegLib.core.errors import InputError
    from LAScarSegLib.quantify.readout import with_baseline_scar

    files = {k: str(v) for k, v in phantom_files.items()}
    result = segment(files["image"], la_label=files["la"], scar_label=files["scar"], baselines=["gmm", "iir-1.20"],
                     baselines_on="manual")
    entries = result.report.baselines
    assert set(entries) == {"gmm", "iir-1.20"} and all(set(e) == {"burden_surface_pct", "metrics"} for e in entries.values())
    assert {r.info["la"] for r in result.baselines.values()} == {"manual"}
    assert any("baselines ran on the manual LA" in w for w in result.report.warnings)
    truth_la = read_image(phantom_files["la"]).array > 0
    band = result.baselines["gmm"].wall_band.array.astype(bool)
    assert not (band & truth_la).any()  # the wall band is the manual LA's (outside it), not the prediction's
    assert entries["gmm"]["metrics"]["dice_scar"] > 0.8  # 0.91 here; 0.64 on the predicted LA
    with pytest.raises(InputError, match="ran on the manual LA"):
        with_baseline_scar(result, "gmm")
    with pytest.raises(InputError, match="need a manual LA label"):
        segment(files["image"], baselines=["gmm"], baselines_on="manual")
