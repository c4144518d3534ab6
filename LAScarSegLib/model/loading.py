"""Loading a model for inference: the file by registry name or path (SHA-256 checked), the card
checked for what inference takes, the network frozen on the chosen device."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import DamagedInstall, InputError, ModelError
from .card import card_heads, check_inference_card
from .network import freeze_for_inference, load_scripted
from .registry import REGISTRY, registered_localiser, resolve_model, sha256_of


@dataclass
class LoadedModel:
    module: Any  # a frozen TorchScript module, its weights on `device`
    card: dict[str, Any]
    sha256: str
    device: str
    source: Any = None  # the unfrozen module on the CPU, to freeze again for another device

    @property
    def heads(self) -> set[str]:
        return card_heads(self.card)

    def move_to(self, device: str) -> None:
        """Freeze again on `device`: a frozen module's weights are constants that .to() does not move."""
        if self.source is None:
            raise ModelError("this model was loaded without its unfrozen source; load it again for another device")
        self.module = freeze_for_inference(self.source, device=device)
        self.device = device


def pick_device(requested: str = "auto") -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but no CUDA device is available; use 'auto' or 'cpu'")
    if requested not in ("cpu", "cuda"):
        raise InputError(f"unknown device {requested!r}; use auto, cuda or cpu")
    return requested


def load_model(name_or_path: str | os.PathLike | None = None, registry: str | os.PathLike = REGISTRY,
               map_location: Any = "cpu"):
    """Load a model by registry name (checking its SHA-256) or by path: (module, card, sha256)."""
    path, expected = resolve_model(name_or_path, registry)
    reinstall = "; reinstall LAScarSeg (or import the model again) to repair it"
    if not path.is_file():
        if expected is not None:
            raise DamagedInstall(f"{path}: the registered model file is missing{reinstall}")
        raise ModelError(f"{path}: model file does not exist")
    digest = sha256_of(path)
    if expected is not None and digest != expected:
        raise DamagedInstall(f"{path}: SHA-256 {digest[:12]}... does not match the registry's {expected[:12]}...; "
                             f"the file is corrupt or was replaced{reinstall}")
    module, card = load_scripted(path, map_location=map_location)
    return module, card, digest


def load_for_inference(model: str | None = None, device: str = "auto") -> LoadedModel:
    """Load a registered model (by name; default: the registry's default) or a .pt path, frozen."""
    dev = pick_device(device)
    module, card, sha = load_model(model, map_location="cpu")
    check_inference_card(card, str(model or "the registered default model"))
    return LoadedModel(freeze_for_inference(module, device=dev), card, sha, dev, source=module)


def require_heads(loaded: LoadedModel, needed: set[str]) -> None:
    missing = sorted(needed - loaded.heads)
    if missing:
        raise ModelError(f"model {loaded.card.get('name')} lacks the output(s) {missing} this job needs")


#: `load_localiser`'s default: the localiser the registry names, if any.
REGISTERED = "registered"


def load_localiser(localiser: str | None = REGISTERED, device: str = "auto") -> LoadedModel | None:
    """The coarse whole-scan LA network: the registry's (`REGISTERED`, None when it names none), a
    registered name or a .pt path; None or "none" for none (the fine network then looks over the
    whole field of view itself)."""
    if localiser is None or str(localiser).lower() == "none":
        return None
    name = registered_localiser() if localiser == REGISTERED else localiser
    if name is None:
        return None
    loaded = load_for_inference(name, device)
    require_heads(loaded, {"la"})
    return loaded
