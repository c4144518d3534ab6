"""Export a trained checkpoint as the TorchScript model file with its card (CONTRACTS section 3),
and describe the training run the card comes from."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..core.errors import InputError
from ..model.card import make_card
from ..model.network import ModelConfig, build_model, save_scripted, script_model
from ..synth.seeds import FULL_FOV_PHANTOM_SEED0, TRAIN_PHANTOM_SEED0, VAL_PHANTOM_SEED0
from .checkpoints import load_checkpoint


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, name: str, version: str,
                      training_data: list[dict[str, Any]] | None = None,
                      validation: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Script the checkpoint's network and save it with its card.

    The file keeps the weights as parameters (not frozen), so `train --init-from` can fine-tune from
    it; the pipeline freezes it after loading (BatchNorm folded, `network.freeze_for_inference`).
    """
    ckpt = load_checkpoint(checkpoint)
    mcfg = ModelConfig.from_dict(ckpt["model_config"])
    model = build_model(mcfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    scripted = script_model(model)
    card = make_card(name=name, version=version, variant=ckpt["variant"], config=ckpt["config"],
                     model_config=mcfg.as_dict(), training_data=training_data or [],
                     validation=validation or {}, torch_version=torch.__version__,
                     extra={"trained_iterations": int(ckpt["iteration"]), **(extra or {})})
    return save_scripted(scripted, out, card)


# --------------------------------------------------------------------------- card from a run
def describe_run(run_dir: str | os.PathLike, checkpoint_iteration: int | None = None) -> dict[str, Any]:
    """The card's `training_data` and `training` sections, read from a training run's folder.

    Derived from the files the trainer wrote (config.json, split.json, summary.json, metrics.csv),
    so the card states what the run really used, never what someone remembers it used.
    """
    run = Path(run_dir)
    try:
        config = json.loads((run / "config.json").read_text())
        split = json.loads((run / "split.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{run}: not a training run folder (config.json and split.json needed): {exc}") from exc
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    if checkpoint_iteration is not None:  # the values the exported weights were trained with
        for stage in reversed(config.get("stages", [])):
            if stage["from_iteration"] >= checkpoint_iteration:
                config.update({k: ch["before"] for k, ch in stage["changed"].items()})
    training_data: list[dict[str, Any]] = []
    for i, src in enumerate(config.get("data", [])):
        n_train = sum(1 for v in split["train"] if v.split(":", 1)[0] == str(i))
        n_val = sum(1 for v in split["val"] if v.split(":", 1)[0] == str(i))
        painted = bool(src.get("paint_scar"))
        training_data.append({
            "source": f"{src.get('layout', 'auto')} data at {Path(src['root']).name}/",
            "cases": n_train,
            "validation_cases": n_val,
            "labels": ["la", "scar (synthetic)"] if painted else ["la", "scar"],
            "provenance": ("manual LA labels; synthetic scar painted into the wall band of the real image "
                           "(labelled synthetic); the same images unpainted train the LA terms "
                           f"(unpainted_fraction {config.get('unpainted_fraction')})") if painted
            else "manual labels as the data set provides them",
        })
    if split.get("train_phantoms"):
        training_data.append({
            "source": "synthetic LGE phantoms (LAScarSegLib.synth.phantom)",
            "cases": len(split["train_phantoms"]),
            "validation_cases": len(split.get("val_phantoms", [])),
            "labels": ["la", "wall", "scar"],
            "provenance": f"synthetic images with exact truth; training seeds from {TRAIN_PHANTOM_SEED0}, "
                          f"validation seeds from {VAL_PHANTOM_SEED0}",
        })
    if split.get("train_full_fov_phantoms"):
        training_data.append({
            "source": "synthetic full-field-of-view LGE phantoms (LAScarSegLib.synth.phantom, full_fov=True)",
            "cases": len(split["train_full_fov_phantoms"]),
            "validation_cases": 0,
            "labels": ["la", "wall", "scar"],
            "provenance": f"synthetic 640x640x88 chests with the LA off centre and exact truth; seeds from "
                          f"{FULL_FOV_PHANTOM_SEED0}; {config.get('full_fov_weight')} of the patches, "
                          f"{config.get('full_fov_la_focus')} of them on the LA boundary",
        })
    rates: list[float] = []
    if (run / "metrics.csv").is_file():
        with (run / "metrics.csv").open() as fh:
            rates = [float(r["it_per_s"]) for r in csv.DictReader(fh) if r["kind"] == "train" and r.get("it_per_s")]
    training = {
        "recipe": config.get("recipe"), "variant": config.get("variant"),
        "checkpoint_iteration": checkpoint_iteration,
        "iterations_run": summary.get("iterations"), "elapsed_min": round(summary.get("elapsed_s", 0) / 60, 1),
        "stopped_by_time_limit": summary.get("stopped_by_time_limit"), "device": summary.get("device"),
        "processes": summary.get("world_size"), "threads": config.get("threads"),
        "median_it_per_s": round(sorted(rates)[len(rates) // 2], 3) if rates else None,
        "departures_from_paper": {k: v["value"] for k, v in config.get("departures_from_paper", {}).items()},
        "validation_case_ids": split["val"],
        "config_stages": config.get("stages", []),
    }
    return {"training_data": training_data, "training": training}
