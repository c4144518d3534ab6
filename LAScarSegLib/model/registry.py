"""The model registries (CONTRACTS section 4): which model files exist, and their SHA-256.

`Resources/Models/models.json` lists the shipped models; the user's imported models are copied into
`LAScarSeg/models` under the platform's user data folder, whose `models.json` has the same format.
Torch-free: a card is read from the model file's archive, so the Slicer application's process can
list and import models before PyTorch is installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ..core.errors import InputError, ModelError
from ..core.outputs import write_json
from .card import read_card


def _models_dir() -> Path:
    """`Resources/Models` beside the library (repository, Slicer extension), else the copy that a
    wheel installs as the package `LAScarSegLib.bundled_models`."""
    beside = Path(__file__).resolve().parents[2] / "Resources" / "Models"
    if (beside / "models.json").is_file():
        return beside
    installed = Path(__file__).resolve().parents[1] / "bundled_models"
    return installed if (installed / "models.json").is_file() else beside


MODELS_DIR = _models_dir()
REGISTRY = MODELS_DIR / "models.json"


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    model_file, registry = Path(model_file), Path(registry)
    try:
        rel = model_file.resolve().relative_to(registry.resolve().parent)
    except ValueError:
        raise InputError(f"{model_file}: a registered model must lie in {registry.parent}") from None
    card = read_card(model_file)
    entry = {"name": card["name"], "version": card["version"], "file": rel.as_posix(),
             "sha256": sha256_of(model_file), "size_bytes": model_file.stat().st_size, "card": card}
    reg = read_registry(registry) if registry.exists() else {"default": card["name"], "models": []}
    reg["models"] = [m for m in reg["models"] if m["name"] != card["name"]] + [entry]
    if default:
        reg["default"] = card["name"]
    write_json(reg, registry)
    return entry


def registered_localiser(registry: str | os.PathLike = REGISTRY) -> str | None:
    """The name of the registry's LA localiser (a coarse whole-scan network, its card's "role"
    "localiser"), or None when the registry names none (its optional "localiser" key)."""
    try:
        return read_registry(registry).get("localiser")
    except ModelError:
        return None


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


# ------------------------------------------------------------------------------- imported models
def user_models_dir() -> Path:
    """`LAScarSeg/models` under the platform's user data folder (CONTRACTS section 4): models a
    user imports go here, never into the extension's folder (which may be read-only)."""
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "LAScarSeg" / "models"


def import_model(path, folder=None) -> dict[str, Any]:
    """Copy a model file into the user models folder and record it with its SHA-256 in that
    folder's models.json (the bundled registry's format). Refuses a file that is not a
    LAScarSeg model. Returns the registry entry."""
    src = Path(path)
    if not src.is_file():
        raise InputError(f"{src}: model file does not exist")
    folder = Path(folder) if folder is not None else user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / src.name
    if src.resolve() != dest.resolve():
        shutil.copy2(src, dest)
    try:
        return register(dest, folder / "models.json", default=False)
    except Exception as exc:
        dest.unlink(missing_ok=True)
        raise ModelError(f"{src}: not a LAScarSeg model ({exc})") from None


def available_models(folder=None) -> list[tuple[str, str | None]]:
    """(label, model argument for `process`) for the bundled default and every imported model.

    An imported model is given by its path after its SHA-256 was checked against the user
    registry here, so a replaced or corrupt file is refused before a run starts.
    """
    out: list[tuple[str, str | None]] = []
    try:
        reg = read_registry()
        default = next((m for m in reg["models"] if m["name"] == reg["default"]), None)
        out.append((f"Bundled: {default['name']} {default['version']}" if default else "Bundled (default)", None))
    except Exception:  # no registry: the run will say so clearly
        out.append(("Bundled (not installed)", None))
    registry = Path(folder if folder is not None else user_models_dir()) / "models.json"
    if registry.is_file():
        try:
            imported = read_registry(registry)["models"]
        except Exception as exc:  # a damaged user registry must not take the module panel down with it
            logging.getLogger(__name__).warning("imported models not listed: %s is unreadable (%s)", registry, exc)
            imported = []
        for m in imported:
            out.append((f"Imported: {m['name']} {m['version']}", str(registry.parent / m["file"])))
    return out


def check_imported_model(path, folder=None) -> None:
    """Refuse an imported model whose SHA-256 differs from the one recorded when it was imported."""
    path = Path(path)
    registry = Path(folder if folder is not None else user_models_dir()) / "models.json"
    if not registry.is_file() or path.parent.resolve() != registry.parent.resolve():
        return
    for m in read_registry(registry)["models"]:
        if (registry.parent / m["file"]).resolve() == path.resolve():
            if sha256_of(path) != m["sha256"]:
                raise ModelError(f"{path}: SHA-256 differs from the one recorded at import; the file is corrupt "
                                 "or was replaced: import it again")
            return
