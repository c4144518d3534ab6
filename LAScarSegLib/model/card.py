"""The model card: what a LAScarSeg model file says about itself (CONTRACTS section 3).

The card travels inside the TorchScript file as the extra file ``model_card.json`` and is
authoritative: the pipeline takes spacing, patch size, normalisation and wall band from it.
`read_card` reads it straight from the file's zip archive, without torch, so the Slicer
application's process can list and import models before PyTorch is installed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from ..core.errors import ModelError
from ..core.image import NORMALISATIONS

CARD_FILE = "model_card.json"
CARD_FORMAT_VERSION = 1

INTENDED_USE = (
    "Research use only; not for clinical decisions. The scar output has been validated on synthetic "
    "scar only (phantoms and scar painted into real LGE images), not on real scar."
)
OUTPUT_WORDS = {
    "la": "la: [B, 1, Z, Y, X] logits of the left-atrium cavity (sigmoid gives the probability)",
    "scar": "scar: [B, 2, Z, Y, X] logits of (p_normal, p_scar), the distance probability maps of normal "
            "wall and scar (Eq. 4); scar is read out where p_scar > p_normal inside the wall band",
}




def check_card(card: Any, where: str) -> dict:
    """The card as a dict of the format version this LAScarSeg reads; a `ModelError` otherwise."""
    if not isinstance(card, dict):
        raise ModelError(f"{where}: {CARD_FILE} must hold a JSON object, got {type(card).__name__}")
    version = card.get("format_version")
    if version != CARD_FORMAT_VERSION:
        raise ModelError(
            f"{where}: {CARD_FILE} has format_version {version!r}; this LAScarSeg reads format_version "
            f"{CARD_FORMAT_VERSION}"
        )
    return card


def parse_card(raw: bytes | str, where: str) -> dict:
    """The card from the raw text of ``model_card.json``, checked (`check_card`)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelError(f"{where}: {CARD_FILE} is not UTF-8 text") from exc
    if not raw.strip():
        raise ModelError(f"{where}: TorchScript file has no {CARD_FILE}; it is not a LAScarSeg model file")
    try:
        card = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{where}: {CARD_FILE} is not valid JSON ({exc})") from exc
    return check_card(card, where)


def read_card(path: str | os.PathLike) -> dict:
    """The card of a model file, read from its zip archive without loading the network (no torch).

    A TorchScript file is a zip archive with the network's code and data under one top folder and
    the extra files under ``<top>/extra/``. Whether the network itself loads is checked when it is
    loaded (`loading.load_model`); this refuses files that are not such an archive or lack a card.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            card_names = [n for n in names if n.count("/") == 2 and n.split("/")[1:] == ["extra", CARD_FILE]]
            if not any(n.endswith("/data.pkl") for n in names):
                raise ModelError(f"{path}: not a LAScarSeg TorchScript model file (no TorchScript archive inside)")
            if not card_names:
                raise ModelError(f"{path}: TorchScript file has no {CARD_FILE}; it is not a LAScarSeg model file")
            raw = archive.read(card_names[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{path}: not a LAScarSeg TorchScript model file ({exc})") from exc
    return parse_card(raw, str(path))


def check_inference_card(card: dict[str, Any], where: str) -> None:
    """The card values inference takes (the card is authoritative), present and sane; a
    `ModelError` naming each one that is not."""

    def triple(v: Any, integer: bool) -> bool:
        return (isinstance(v, (list, tuple)) and len(v) == 3
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0
                        and (not integer or float(x).is_integer()) for x in v))

    checks = {
        "spacing_mm": lambda v: triple(v, False),
        "patch_size": lambda v: triple(v, True),
        "divisor": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "normalisation": lambda v: v in NORMALISATIONS,
        "wall_band_mm": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
        "name": lambda v: isinstance(v, str) and bool(v),
        "version": lambda v: isinstance(v, str) and bool(v),
    }
    bad = [f"{k} (missing)" if k not in card else f"{k} = {card[k]!r}" for k, ok in checks.items()
           if k not in card or not ok(card[k])]
    if bad:
        raise ModelError(f"{where}: the model card lacks or has unusable values the pipeline needs: {', '.join(bad)}")


def card_heads(card: dict[str, Any]) -> set[str]:
    """The model's outputs: the card's architecture, else the names its `outputs` words give
    ("la: ...", "scar: ...", or a dict keyed by output)."""
    heads = card.get("architecture", {}).get("heads")
    if heads:
        return set(heads)
    outputs = card.get("outputs", ())
    names = outputs.keys() if isinstance(outputs, dict) else (str(w).split(":", 1)[0] for w in outputs)
    return {n.strip() for n in names} & {"la", "scar"}


def make_card(*, name: str, version: str, variant: str, config: dict[str, Any], model_config: dict[str, Any],
              training_data: list[dict[str, Any]], validation: dict[str, Any],
              torch_version: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card of a model trained with `config` (the trainer's values) and built with `model_config`."""
    levels = int(model_config["levels"])
    return {
        "format_version": 1,
        "name": name,
        "version": version,
        "variant": variant,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "torch_version": torch_version.split("+")[0],
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
