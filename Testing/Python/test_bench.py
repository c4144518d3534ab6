"""`lascarseg bench`: every bench function runs on tiny inputs and returns well-formed numbers.

No timing thresholds here (the machine may be shared): the tests check that the numbers exist, add
up, come from the right places (the child process, the model file) and that the peers agree with
ours where they are installed, or are skipped with a reason where they are not.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from LAScarSegLib.app import bench
from LAScarSegLib.app.cli import build_parser, main
from LAScarSegLib.model.registry import REGISTRY, register
from LAScarSegLib.train.export import export_checkpoint
from LAScarSegLib.model.network import ModelConfig, build_model
from LAScarSegLib.synth.phantom import make_phantom

#: A trained model for the end-to-end bench: the registered default, or a .pt named here.
TRAINED = os.environ.get("LASCARSEG_TEST_MODEL")
TINY_CASE = bench.PipelineCase("tiny", "96x96x48 phantom at 1.25 mm", {"size": (96, 96, 48), "spacing": (1.25, 1.25, 1.25),
                                                                       "la_volume_ml": 40.0}, target_s=1e6, target_gb=1e3)
HAVE_MONAI = importlib.util.find_spec("monai") is not None
HAVE_MEDPY = importlib.util.find_spec("medpy") is not None


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these are plumbing tests, and OpenMP spin-waits waste a shared machine's CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def need_trained_model() -> str | None:
    if TRAINED is None and not REGISTRY.is_file():
        pytest.skip(f"no trained model: {REGISTRY} does not exist and LASCARSEG_TEST_MODEL is not set")
    return TRAINED


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained exported model (3 levels, 4 channels), registered in its own models.json."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    mcfg = ModelConfig(levels=3, base_channels=4)
    ckpt = {"model": build_model(mcfg).state_dict(), "model_config": mcfg.as_dict(), "variant": "mtl-sesa",
            "iteration": 0, "config": {"spacing_mm": [1.25, 1.25, 1.25], "patch_size": [32, 32, 32], "wall_band_mm": 3.0}}
    torch.save(ckpt, folder / "ckpt.pt")
    path = export_checkpoint(folder / "ckpt.pt", folder / "tiny.pt", name="tiny", version="0.0.1")
    register(path, folder / "models.json")
    return path


@pytest.fixture(scope="module")
def tiny_result() -> dict:
    """One end-to-end bench case in its own process, one thread, with labels (so metrics run)."""
    (result,) = bench.bench_pipeline([TINY_CASE], model=need_trained_model(), device="cpu", threads=1, seed=3)
    return result


def test_pipeline_bench_reports_every_stage(tiny_result: dict) -> None:
    r = tiny_result
    t = r["timings_s"]
    assert {"load", "inference", "postprocess", "surface", "projection", "metrics", "write", "total"} <= set(t)
    assert all(v >= 0 for v in t.values()) and t["inference"] > 0 and t["write"] > 0
    assert t["total"] == pytest.approx(sum(v for k, v in t.items() if k != "total"), abs=0.01)
    assert set(r["stage_cpu_s"]) == set(t) - {"total"} and r["cpu_s"] > 0  # CPU seconds beside every stage
    assert set(r["sub_cpu_s"]) == set(r["sub_s"])
    # every sub-step the bench wraps was reached, so a renamed pipeline call cannot go unnoticed
    assert set(r["sub_s"]) == {label for label, _stage in bench.SUB_STEPS}
    assert r["sub_s"]["sliding-window network"] <= t["inference"] + 1e-3
    assert r["sub_s"]["snapshot"] <= t["write"] + 1e-3
    assert r["sub_calls"]["resample to model grid and back"] >= 4  # the image in, three probabilities out
    assert t["total"] <= r["wall_s"] + 0.01 <= r["process_s"] + 0.01
    assert r["metrics_projection_s"] == pytest.approx(t["metrics"] + t["projection"], abs=1e-3)
    assert 0 < r["rss_after_imports_bytes"] <= r["peak_rss_bytes"] < 64 * 1024 ** 3
    assert r["outputs"] == sorted(["la_mask.nii.gz", "scar_probability.nii.gz", "scar_mask.nii.gz", "la_surface.vtp",
                                   "report.json", "snapshot.png", ".lascarseg.json"])
    assert r["size"] == [96, 96, 48] and r["la_dice"] is not None and len(r["model"]["sha256"]) == 64


def test_threads_option_bounds_the_child(tiny_result: dict) -> None:
    """`--threads 1` reaches torch in the process that runs the job."""
    assert tiny_result["threads"] == 1


def test_pipeline_table_puts_targets_beside_numbers(tiny_result: dict) -> None:
    text = bench.format_pipeline(tiny_result)
    for row in ("load", "inference", "postprocess", "surface", "projection", "quantify", "metrics", "write",
                "snapshot", "load to report", "wall s", "cpu s", "peak resident memory (GB)", "metrics + projection"):
        assert row in text
    assert text.count("target <= ") == 3 and "not seen" not in text
    targets = tiny_result["targets"]
    for value, target in ((tiny_result["wall_s"], targets["wall_s"]),
                          (tiny_result["peak_rss_bytes"] / 1024 ** 3, targets["peak_rss_gb"]),
                          (tiny_result["metrics_projection_s"], targets["metrics_projection_s"])):
        assert bench._verdict(value, target) in text  # the verdict follows the number, whatever the machine
    assert bench._verdict(2.0, 1.0).endswith("MISSED") and bench._verdict(1.0, 1.0).endswith("ok")
    assert bench._verdict(5.0, None) == ""
    assert tiny_result["model"]["sha256"] in text and "sha256" in text
    if TRAINED is None:
        assert "matches models.json" in text


def test_registry_check(tiny_model: Path, tmp_path: Path) -> None:
    from LAScarSegLib.model.registry import sha256_of

    reg = tiny_model.parent / "models.json"
    assert bench.registry_check(sha256_of(tiny_model), "tiny", reg).startswith("matches models.json (tiny 0.0.1)")
    assert bench.registry_check("0" * 64, "tiny", reg).startswith("DOES NOT MATCH")
    assert bench.registry_check("0" * 64, "other", reg).startswith("not in models.json")
    assert bench.registry_check("0" * 64, "tiny", tmp_path / "none.json").startswith("not checked")


def pointwise(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """A model whose output depends on each voxel only, so any window layout must give the same result."""
    return {"la": 3 * x - 1, "scar": torch.cat([x, -x], 1)}


def test_monai_sliding_window_peer_agrees_or_is_skipped() -> None:
    img = np.random.default_rng(0).normal(size=(40, 56, 48)).astype(np.float32)
    r = bench.peer_sliding_window(pointwise, img, (16, 32, 32), divisor=8, return_probs=True)
    if not HAVE_MONAI:
        assert "monai" in r["skipped"] and "pip install" in r["skipped"] and "ours_s" not in r
        return
    assert r["ours_s"] > 0 and r["peer_s"] > 0 and r["peer_over_ours"] > 0
    assert set(r["agreement"]) == {"la", "scar"}
    assert r["agreement"]["la"]["max_abs_diff"] < 1e-4 and r["agreement"]["la"]["mask_dice"] == 1.0
    np.testing.assert_allclose(r["probabilities"]["la"][0], 1 / (1 + np.exp(-(3 * img - 1))), atol=1e-5)
    assert "monai" in bench.format_peer({**r, "case": "random"})


def test_monai_peer_on_a_real_model(tiny_model: Path) -> None:
    """The exported TorchScript model runs under MONAI's inferer too; a U-Net differs only near window borders."""
    from LAScarSegLib.model.loading import load_for_inference

    loaded = load_for_inference(str(tiny_model), "cpu")
    z, y, x = np.indices((32, 48, 48))
    img = (((z - 16) ** 2 + (y - 24) ** 2 + (x - 20) ** 2) < 120).astype(np.float32) * 2 - 1
    r = bench.peer_sliding_window(loaded.module, img, (16, 32, 32), divisor=4)
    if not HAVE_MONAI:
        assert "skipped" in r
        return
    for key in ("la", "scar"):
        assert 0 <= r["agreement"][key]["mean_abs_diff"] < 0.01 and r["agreement"][key]["max_abs_diff"] < 0.2


def test_medpy_hausdorff_peer_agrees_or_is_skipped() -> None:
    la = make_phantom(5, size=(64, 64, 40), spacing=(1.5, 1.5, 2.0), la_volume_ml=30.0).la
    moved = la.with_array(np.roll(la.array, (1, 3, -2), axis=(0, 1, 2)))
    r = bench.peer_hausdorff(moved, la)
    if not HAVE_MEDPY:
        assert "medpy" in r["skipped"]
        return
    agree = r["agreement"]
    assert agree["hd_mm"]["abs_diff"] < 1e-3 and agree["hd_mm"]["ours"] >= 4.5  # the shift is at least 3 x 1.5 mm
    assert agree["hd95_mm"]["abs_diff"] <= 2.0  # pooled vs max of directed percentiles: within a voxel
    assert r["ours_s"] > 0 and r["peer_s"] > 0
    empty = la.with_array(np.zeros_like(la.array))
    assert "empty" in bench.peer_hausdorff(empty, la)["skipped"]


def test_bench_peers_runs_both(tiny_model: Path) -> None:
    case = bench.PipelineCase("tiny", "tiny", {"size": (48, 48, 32), "spacing": (1.25, 1.25, 1.25), "la_volume_ml": 20.0})
    out = bench.bench_peers(case, model=str(tiny_model), device="cpu", seed=2)
    assert [r["case"] for r in out] == ["tiny"] * 3
    assert out[0]["peer"].startswith("monai") and out[1]["peer"].startswith("ours, one pass")
    assert out[2]["peer"].startswith("medpy")
    assert set(out[1]["agreement"]) == {"la", "scar"} and out[1]["agreement"]["la"]["mean_abs_diff"] < 0.05
    for r in out:
        assert ("skipped" in r) != ("ours_s" in r) and "probabilities" not in r and "windows" not in r
        assert bench.format_peer(r).strip()


def test_forward_bench_on_a_tiny_input() -> None:
    """(`bench_train_step` is left out: it prepares full-size phantoms, too slow for a unit test.)"""
    f = bench.bench_forward(levels=2, shape_zyx=(16, 32, 32), repeats=2, device="cpu")
    assert f["shape_zyx"] == [16, 32, 32] and 0 < f["min_s"] <= f["median_s"] and f["repeats"] == 2
    assert f["model"] == "fresh 2-level" and f["threads"] == 1


def test_peak_memory_is_the_childs_own() -> None:
    """ru_maxrss survives exec, so a child of a big parent would report the parent's peak; VmHWM does not.

    The child imports the bench (torch and the library: a few hundred MB of its own), so its peak is
    measured once from a small parent and once from a parent holding 1 GB more: the two agree."""
    import subprocess
    import sys

    if not Path("/proc/self/status").is_file():
        pytest.skip("no /proc: the bench falls back to ru_maxrss here")
    code = "from LAScarSegLib.app.bench import _peak_rss_bytes; print(_peak_rss_bytes())"

    def child_peak() -> int:
        return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)

    alone = child_peak()
    ballast = np.ones(1024 ** 3 // 8)  # 1 GB resident in this (parent) process
    child = child_peak()
    assert 0 < alone < ballast.nbytes and abs(child - alone) < 200 * 1024 ** 2 < ballast.nbytes


def test_cli_parses_pipeline_and_keeps_the_old_benches(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = build_parser().parse_args(["bench", "pipeline", "--cases", "la-centred", "--no-peers", "--threads", "2"])
    assert args.what == ["pipeline"] and args.cases == ["la-centred"] and args.no_peers and args.threads == 2
    assert not build_parser().parse_args(["bench"]).what  # run() reads nothing as "forward"
    assert build_parser().parse_args(["bench", "forward", "train-step"]).what == ["forward", "train-step"]
    assert main(["bench", "pipeline", "--cases", "nowhere"]) == 2
    assert main(["bench", "sideways"]) == 2 and "unknown bench sideways" in capsys.readouterr().err
    out = tmp_path / "f.json"
    assert main(["bench", "forward", "--levels", "2", "--shape", "16", "32", "32", "--repeats", "1", "--device", "cpu",
                 "--json", str(out)]) == 0
    assert "forward 1x1x16x32x32" in capsys.readouterr().out
    assert json.loads(out.read_text())["forward 1x1x16x32x32"]["repeats"] == 1


def test_pipeline_bench_failure_names_the_case(tmp_path: Path) -> None:
    """A job that fails in the child is reported with the case's name and the child's error, never as numbers."""
    case = bench.PipelineCase("nomodel", "a job whose model file is missing",
                              {"size": (48, 48, 32), "spacing": (1.25, 1.25, 1.25), "la_volume_ml": 20.0})
    with pytest.raises(RuntimeError, match="(?s)bench case nomodel: the pipeline failed.*missing.pt"):
        bench.bench_pipeline([case], model=str(tmp_path / "missing.pt"), device="cpu", threads=1, labels=False)


def test_absent_peer_is_skipped_with_the_reason() -> None:
    module, why = bench._installed("lascarseg_no_such_peer")
    assert module is None and "lascarseg_no_such_peer is not installed" in why and "pip install -e '.[bench]'" in why
    assert bench.format_peer({"peer": "x", "skipped": why}).strip().startswith("x: skipped: ")
