"""Export a trained checkpoint as the TorchScript model file with its card (CONTRACTS sections 3, 4).

The card is authoritative: the pipeline takes spacing, patch size, normalisation and wall band
from it. The registry `Resources/Models/models.json` lists shipped models with their SHA-256;
loading checks it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import InputError, ModelError
from .outputs import write_json

MODELS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Models"
REGISTRY = MODELS_DIR / "models.json"
INTENDED_USE = (
    "Research use only; not for clinical decisions. The scar output has been validated on synthetic "
    "scar only (phantoms and scar painted into real LGE images), not on real scar."
)
OUTPUT_WORDS = {
    "la": "la: [B, 1, Z, Y, X] logits of the left-atrium cavity (sigmoid gives the probability)",
    "scar": "scar: [B, 2, Z, Y, X] logits of (p_normal, p_scar), the distance probability maps of normal "
            "wall and scar (Eq. 4); scar is read out where p_scar > p_normal inside the wall band",
}


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_card(*, name: str, version: str, variant: str, config: dict[str, Any], model_config: dict[str, Any],
              training_data: list[dict[str, Any]], validation: dict[str, Any],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch

    levels = int(model_config["levels"])
    return {
        "format_version": 1,
        "name": name,
        "version": version,
        "variant": variant,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "torch_version": torch.__version__.split("+")[0],
        "spacing_mm": [float(s) for s in config["spacing_mm"]],
        "patch_size": [int(p) for p in config["patch_size"]],
        "divisor": 2 ** (levels - 1),
        "normalisation": "zscore-volume",
        "wall_band_mm": float(config["wall_band_mm"]),
        "outputs": [OUTPUT_WORDS[h] for h in model_config["heads"]],
        "architecture": model_config,
        "training_data": training_data,
        "validation": validation,
        "intended_use": INTENDED_USE,
        **(extra or {}),
    }


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, name: str, version: str,
                      training_data: list[dict[str, Any]] | None = None,
                      validation: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Script the checkpoint's network and save it with its card.

    The file keeps the weights as parameters (not frozen), so `train --init-from` can fine-tune from
    it; the pipeline freezes it after loading (BatchNorm folded, `network.freeze_for_inference`).
    """
    from .network import ModelConfig, build_model, save_scripted, script_model
    from .trainer import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    mcfg = ModelConfig.from_dict(ckpt["model_config"])
    model = build_model(mcfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    scripted = script_model(model)
    card = make_card(name=name, version=version, variant=ckpt["variant"], config=ckpt["config"],
                     model_config=mcfg.as_dict(), training_data=training_data or [],
                     validation=validation or {}, extra={"trained_iterations": int(ckpt["iteration"]), **(extra or {})})
    return save_scripted(scripted, out, card)


# --------------------------------------------------------------------------- card from a run
def describe_run(run_dir: str | os.PathLike, checkpoint_iteration: int | None = None) -> dict[str, Any]:
    """The card's `training_data` and `training` sections, read from a training run's folder.

    Derived from the files the trainer wrote (config.json, split.json, summary.json, metrics.csv),
    so the card states what the run really used, never what someone remembers it used.
    """
    import csv

    from .trainer import FULL_FOV_PHANTOM_SEED0, TRAIN_PHANTOM_SEED0, VAL_PHANTOM_SEED0

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
            "source": "synthetic LGE phantoms (LAScarSegLib.phantom)",
            "cases": len(split["train_phantoms"]),
            "validation_cases": len(split.get("val_phantoms", [])),
            "labels": ["la", "wall", "scar"],
            "provenance": f"synthetic images with exact truth; training seeds from {TRAIN_PHANTOM_SEED0}, "
                          f"validation seeds from {VAL_PHANTOM_SEED0}",
        })
    if split.get("train_full_fov_phantoms"):
        training_data.append({
            "source": "synthetic full-field-of-view LGE phantoms (LAScarSegLib.phantom, full_fov=True)",
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


# -------------------------------------------------------------------------------------- registry
def read_registry(path: str | os.PathLike = REGISTRY) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model registry does not exist")
    try:
        reg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: model registry is not valid JSON ({exc})") from exc
    if not isinstance(reg, dict) or "models" not in reg or "default" not in reg:
        raise ModelError(f"{path}: model registry needs 'default' and 'models'")
    return reg


def register(model_file: str | os.PathLike, registry: str | os.PathLike = REGISTRY, *, default: bool = True) -> dict[str, Any]:
    """Add (or replace by name) a model file that lies in the registry's folder."""
    from .network import load_scripted

    model_file, registry = Path(model_file), Path(registry)
    try:
        rel = model_file.resolve().relative_to(registry.resolve().parent)
    except ValueError:
        raise InputError(f"{model_file}: a registered model must lie in {registry.parent}") from None
    _module, card = load_scripted(model_file)
    entry = {"name": card["name"], "version": card["version"], "file": rel.as_posix(),
             "sha256": sha256_of(model_file), "size_bytes": model_file.stat().st_size, "card": card}
    reg = read_registry(registry) if registry.exists() else {"default": card["name"], "models": []}
    reg["models"] = [m for m in reg["models"] if m["name"] != card["name"]] + [entry]
    if default:
        reg["default"] = card["name"]
    write_json(reg, registry)
    return entry


def resolve_model(name_or_path: str | os.PathLike | None = None, registry: str | os.PathLike = REGISTRY) -> tuple[Path, str | None]:
    """A model file and its expected SHA-256: the registry's default, a registered name, or a path."""
    if name_or_path is not None and Path(name_or_path).suffix == ".pt":
        return Path(name_or_path), None
    reg = read_registry(registry)
    name = name_or_path or reg["default"]
    for m in reg["models"]:
        if m["name"] == name:
            return Path(registry).parent / m["file"], m["sha256"]
    raise ModelError(f"{registry}: no model named {name!r}; registered: {[m['name'] for m in reg['models']]}")


def load_model(name_or_path: str | os.PathLike | None = None, registry: str | os.PathLike = REGISTRY,
               map_location: Any = "cpu"):
    """Load a model by registry name (checking its SHA-256) or by path: (module, card, sha256)."""
    from .network import load_scripted

    path, expected = resolve_model(name_or_path, registry)
    if not path.is_file():
        raise ModelError(f"{path}: model file does not exist")
    digest = sha256_of(path)
    if expected is not None and digest != expected:
        raise ModelError(f"{path}: SHA-256 {digest[:12]}... does not match the registry's {expected[:12]}...; "
                         "the file is corrupt or was replaced")
    module, card = load_scripted(path, map_location=map_location)
    return module, card, digest


def _summary_table(summary: dict[str, Any]) -> list[str]:
    rows = ["| metric | mean | SD | min | n |", "|---|---|---|---|---|"]
    rows += [f"| {k} | {v['mean']} | {v['sd']} | {v['min']} | {v['n']} |" for k, v in summary.items()]
    return rows


def card_markdown(card: dict[str, Any]) -> str:
    """A human-readable model card from the embedded JSON card (kept beside the model file)."""
    lines = [f"# {card['name']} {card['version']}", "", f"**Intended use.** {card['intended_use']}", "",
             f"- Variant: `{card['variant']}`; created {card['created']} with torch {card['torch_version']}",
             f"- Input: z-scored over the volume (`{card['normalisation']}`), resampled to "
             f"{card['spacing_mm']} mm (x, y, z); windows {card['patch_size']} voxels, sizes divisible by {card['divisor']}",
             f"- Wall band: {card['wall_band_mm']} mm outside the LA", "", "## Outputs", ""]
    lines += [f"- {o}" for o in card["outputs"]]
    lines += ["", "## Training data", ""]
    for d in card.get("training_data", []):
        val = f" (+{d['validation_cases']} held out for validation)" if d.get("validation_cases") else ""
        lines.append(f"- {d.get('source')}: {d.get('cases')} training cases{val}; labels {d.get('labels')}; "
                     f"{d.get('provenance')}")
    validation = card.get("validation", {})
    lines += ["", "## Validation", ""]
    if validation.get("command"):
        lines += [f"Reproduce: `{validation['command']}`", ""]
    for part, title in (("real", "Real LGE images, manual LA labels, each case at its native resolution"),
                        ("phantoms", "Fresh synthetic phantoms (never seen in training), synthetic scar truth"),
                        ("full_fov_phantoms", "Fresh full-field-of-view phantoms (640x640x88, LA off centre, "
                                              "never seen in training)")):
        if part in validation:
            lines += [f"{title} ({validation[part]['n']} cases):", "", *_summary_table(validation[part]["summary"]), ""]
    rest = {k: v for k, v in validation.items() if k not in ("real", "phantoms", "full_fov_phantoms", "command")}
    if rest:
        lines += ["```", json.dumps(rest, indent=2, default=str), "```"]
    for key, title in (("training", "Training run"), ("speed", "Speed")):
        if key in card:
            lines += ["", f"## {title}", "", "```", json.dumps(card[key], indent=2, default=str), "```"]
    if "trained_iterations" in card:
        lines += ["", f"Weights of iteration {card['trained_iterations']}."]
    return "\n".join(lines) + "\n"
