"""The trainer end to end on tiny phantom runs: outputs, resume, fine-tuning, export, distributed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from LAScarSegLib.core.errors import InputError, ModelError
from LAScarSegLib.train.train_config import make_config
from LAScarSegLib.synth.seeds import FULL_FOV_PHANTOM_SEED0
from LAScarSegLib.train.checkpoints import initial_weights, load_checkpoint
from LAScarSegLib.train.cases import load_training_cases, make_split
from LAScarSegLib.train.trainer import train

HERE = Path(__file__).resolve().parent
TINY = ["data=[]", "phantoms=2", "val_phantoms=1", "val_cases=0", "patch_size=[32,32,32]", "levels=3",
        "base_channels=4", "batch_size=2", "threads=2", "log_every=2", "time_limit_min=null",
        "full_fov_phantoms=0"]


def tiny(**kw) -> list[str]:
    return TINY + [f"{k}={json.dumps(v)}" for k, v in kw.items()]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = make_config("cpu-default", overrides=tiny(iterations=4, val_every=2, checkpoint_every=2))
    summary = train(cfg, out, log=lambda m: None)
    assert summary["iterations"] == 4
    return out


def test_run_folder_holds_checkpoints_metrics_and_curves(first_run: Path) -> None:
    for name in ("config.json", "split.json", "last.pt", "best.pt", "metrics.csv", "curves.png", "summary.json"):
        assert (first_run / name).is_file(), name
    rows = list(csv.DictReader((first_run / "metrics.csv").open()))
    train_rows = [r for r in rows if r["kind"] == "train"]
    val_rows = [r for r in rows if r["kind"] == "val"]
    assert [int(r["iteration"]) for r in train_rows] == [2, 4]
    assert all(float(r["it_per_s"]) > 0 for r in train_rows)
    assert [int(r["iteration"]) for r in val_rows] == [2, 4] and 0 <= float(val_rows[-1]["val_la_dice"]) <= 1
    ckpt = load_checkpoint(first_run / "last.pt")  # weights_only=True inside
    assert ckpt["iteration"] == 4 and ckpt["variant"] == "mtl-sesa"
    split = json.loads((first_run / "split.json").read_text())
    assert not set(split["train_phantoms"]) & set(split["val_phantoms"])
    config = json.loads((first_run / "config.json").read_text())
    assert "optimizer" in config["departures_from_paper"]


def test_resume_continues_and_existing_run_is_refused(first_run: Path, tmp_path: Path) -> None:
    cfg = make_config("cpu-default", overrides=tiny(iterations=6, val_every=100, checkpoint_every=2))
    with pytest.raises(InputError, match="holds a run already"):
        train(cfg, first_run, log=lambda m: None)
    run = tmp_path / "copy"
    run.mkdir()
    for name in ("last.pt", "metrics.csv"):
        (run / name).write_bytes((first_run / name).read_bytes())
    logs: list[str] = []
    (run / "config.json").write_text((first_run / "config.json").read_text())
    summary = train(cfg, run, resume=True, log=logs.append)
    assert summary["iterations"] == 6 and any("resumed" in m and "iteration 4" in m for m in logs)
    stages = json.loads((run / "config.json").read_text())["stages"]  # what changed at the resume is kept
    assert stages[0]["from_iteration"] == 0 and stages[-1]["from_iteration"] == 4
    assert stages[-1]["changed"]["iterations"] == {"before": 4, "after": 6}
    assert load_checkpoint(run / "last.pt")["iteration"] == 6
    with pytest.raises(InputError, match="nothing to resume"):
        train(cfg, tmp_path / "empty", resume=True, log=lambda m: None)


def test_fine_tune_from_an_exported_model(first_run: Path, tmp_path: Path) -> None:
    from LAScarSegLib.train.export import export_checkpoint
    from LAScarSegLib.model.network import load_scripted

    model_file = export_checkpoint(first_run / "best.pt", tmp_path / "m.pt", name="tiny", version="0")
    _module, card = load_scripted(model_file)
    assert card["variant"] == "mtl-sesa" and card["divisor"] == 4 and card["spacing_mm"] == [1.25] * 3
    weights = initial_weights(model_file)
    ckpt_weights = load_checkpoint(first_run / "best.pt")["model"]
    assert set(weights) == set(ckpt_weights)
    assert all(torch.equal(weights[k], ckpt_weights[k]) for k in ckpt_weights)
    cfg = make_config("cpu-default", overrides=tiny(iterations=1, val_every=100))
    logs: list[str] = []
    train(cfg, tmp_path / "ft", init_from=model_file, log=logs.append)
    assert any("initialised" in m for m in logs)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(100))
    with pytest.raises((InputError, ModelError), match="junk.pt"):
        initial_weights(junk)


def test_export_cli_writes_the_card_from_the_run_and_its_evaluation(first_run: Path, tmp_path: Path) -> None:
    """export reads what the run used (split, config, rates) and the evaluation it is given."""
    from LAScarSegLib.app.cli import main
    from LAScarSegLib.model.network import load_scripted

    plain = tmp_path / "plain.pt"
    assert main(["export", str(first_run / "best.pt"), "--out", str(plain)]) == 0
    ev = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(plain), "--phantoms", "1", "--full-fov-phantoms", "1", "--out", str(ev)]) == 0
    model = tmp_path / "models" / "m.pt"
    model.parent.mkdir()
    assert main(["export", str(first_run / "best.pt"), "--out", str(model), "--evaluation", str(ev),
                 "--markdown", "--register"]) == 0
    _module, card = load_scripted(model)
    evaluation = json.loads(ev.read_text())
    assert card["validation"] == evaluation and evaluation["phantoms"]["seeds"] == [30000]
    assert evaluation["full_fov_phantoms"]["seeds"] == [50000]
    assert "full-field-of-view" in evaluation["full_fov_phantoms"]["source"]
    phantom_src = [d for d in card["training_data"] if "phantom" in d["source"]]
    assert phantom_src and phantom_src[0]["cases"] == 2 and phantom_src[0]["validation_cases"] == 1
    training = card["training"]
    assert training["recipe"] == "cpu-default" and training["checkpoint_iteration"] == card["trained_iterations"]
    assert training["median_it_per_s"] > 0 and "optimizer" in training["departures_from_paper"]
    md = model.with_suffix(".md").read_text()
    assert "fresh synthetic phantoms" in md.lower() and "fresh full-field-of-view phantoms" in md.lower()
    assert "| la_dice |" in md and "Reproduce: `lascarseg evaluate" not in md
    assert 0.0 <= evaluation["phantoms"]["summary"]["la_dice"]["mean"] <= 1.0  # a miss counts as Dice 0
    registry = json.loads((model.parent / "models.json").read_text())
    assert registry["default"] == card["name"] and registry["models"][0]["card"] == card


def test_lascarseg_train_cli_reports_bad_config(tmp_path: Path) -> None:
    from LAScarSegLib.app.cli import main

    assert main(["train", "--out", str(tmp_path / "r"), "learning_rate=1"]) == 2
    assert main(["train", "--out", str(tmp_path / "r"), "--variant", "nope"]) == 2
    assert main(["train", "--out", str(tmp_path / "r"), "data=[{\"root\": \"" + str(tmp_path) + "\"}]"]) == 2
    assert main(["train", "--out", str(tmp_path / "r"), "--print-config"]) == 0


def _write_scar_free_lascarqs(root: Path, seeds: tuple[int, ...]) -> Path:
    """LAScarQS 2022 cases whose manual scar label is empty (a patient without scar)."""
    import numpy as np

    from LAScarSegLib.core.image import write_volume
    from LAScarSegLib.synth.phantom import make_phantom

    for seed in seeds:
        ph = make_phantom(seed, burden=0.0)
        case = root / f"p{seed}"
        write_volume(ph.image, case / "enhanced.nii.gz")
        write_volume(ph.la, case / "atriumSegImgMO.nii.gz")
        write_volume(ph.la.with_array(np.zeros_like(ph.la.array)), case / "scarSegImgM.nii.gz")
    return root


def test_scar_free_cases_train_without_nan_and_a_bad_case_is_named(tmp_path: Path) -> None:
    import math

    from LAScarSegLib.core.image import Geometry, Volume, read_label, write_volume

    root = _write_scar_free_lascarqs(tmp_path / "qs", (41, 42))
    data = [{"root": str(root), "layout": "lascarqs2022", "paint_scar": False}]
    cfg = make_config("cpu-default", overrides=tiny(iterations=3, val_every=100, checkpoint_every=100, phantoms=0,
                                                    val_phantoms=0, unpainted_fraction=0.0, data=data))
    summary = train(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["iterations"] == 3
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    losses = [float(r["loss"]) for r in rows if r["kind"] == "train"]
    assert losses and all(math.isfinite(v) for v in losses)
    assert not [r for r in rows if r["kind"] == "val"]  # no validation case: no made-up score
    assert load_checkpoint(tmp_path / "run" / "best.pt")["iteration"] == 3  # best is the latest
    weights = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert all(torch.isfinite(w.float()).all() for w in weights.values())
    # one case whose LA label sits on another grid: the error names that case's file and both grids
    bad = root / "p42" / "atriumSegImgMO.nii.gz"
    la = read_label(bad)
    g = la.geometry
    write_volume(Volume(la.array, Geometry(g.size, tuple(s * 1.1 for s in g.spacing), g.origin, g.direction)), bad)
    with pytest.raises(InputError, match=r"p42.*atriumSegImgMO.*grid differs"):
        train(cfg, tmp_path / "run2", log=lambda m: None)


@pytest.mark.slow
def test_distributed_training_two_cpu_processes(tmp_path: Path) -> None:
    """torchrun with gloo: 3 steps on different shards; weights change and agree, BatchNorm too."""
    from LAScarSegLib.model.network import ModelConfig, build_model

    torch.manual_seed(123)
    init = build_model(ModelConfig(levels=3, base_channels=4)).state_dict()
    init_file = tmp_path / "init.pt"
    torch.save({"model": init, "config": {}}, init_file)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           str(HERE / "ddp_worker.py"), str(out), str(init_file),
           *tiny(iterations=3, val_every=100, checkpoint_every=100, phantoms=4, threads=1)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s0, s1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert s0["world_size"] == s1["world_size"] == 2 and s0["iterations"] == s1["iterations"] == 3
    assert s0["train_case_ids"] and s1["train_case_ids"] and not set(s0["train_case_ids"]) & set(s1["train_case_ids"])
    w0, w1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    params = [k for k in init if "running" not in k and "num_batches" not in k]
    buffers = [k for k in init if "running" in k]
    assert buffers
    assert any(not torch.equal(w0[k], init[k]) for k in params), "parameters did not change"
    assert any(not torch.equal(w0[k], init[k]) for k in buffers), "BatchNorm statistics did not change"
    for k in init:
        assert torch.allclose(w0[k].float(), w1[k].float(), atol=1e-6), f"{k} differs between ranks"


def test_full_field_of_view_phantoms_get_their_share_and_their_own_la_focus() -> None:
    cfg = make_config("cpu-default", overrides=tiny(phantoms=1, full_fov_phantoms=1, phantom_weight=0.3,
                                                     full_fov_weight=0.2, full_fov_la_focus=0.25))
    datasets, split = make_split(cfg)
    assert split.train_full_fov == [FULL_FOV_PHANTOM_SEED0]
    assert split.as_dict()["train_full_fov_phantoms"] == [FULL_FOV_PHANTOM_SEED0]
    cases, weights, _ = load_training_cases(cfg, datasets, split.train_refs, split.train_phantoms, lambda m: None,
                                            split.train_full_fov)
    small, full = cases
    assert full.id == f"phantom-{FULL_FOV_PHANTOM_SEED0}" and full.la_focus == 0.25 and small.la_focus is None
    # a whole chest on the 1.25 mm grid: far wider than the LA-centred phantom
    assert full.shape[1] > 2 * small.shape[1] and full.shape[2] > 2 * small.shape[2]
    # no real case: the two phantom groups share the patches in the configured ratio
    assert weights[1] / weights[0] == pytest.approx(0.2 / 0.3)
