"""Training checkpoints: saved atomically, loaded safely (``weights_only=True``: nothing arbitrary
is unpickled), with the numpy generator's state so that a resumed run draws what it would have."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..core.errors import InputError
from ..core.outputs import atomic_file
from ..model.card import CARD_FILE
from ..model.network import load_scripted

Log = Callable[[str], None]


def atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    st = rng.bit_generator.state
    return {"bit_generator": st["bit_generator"], "state": str(st["state"]["state"]),
            "inc": str(st["state"]["inc"]), "has_uint32": int(st["has_uint32"]), "uinteger": int(st["uinteger"])}


def set_rng_state(rng: np.random.Generator, d: dict[str, Any]) -> None:
    rng.bit_generator.state = {"bit_generator": d["bit_generator"],
                               "state": {"state": int(d["state"]), "inc": int(d["inc"])},
                               "has_uint32": d["has_uint32"], "uinteger": d["uinteger"]}


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only: nothing arbitrary is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: not a LAScarSeg checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise InputError(f"{path}: not a LAScarSeg checkpoint (no model/config entries)")
    return ckpt


def initial_weights(path: str | os.PathLike) -> dict[str, Any]:
    """Weights to fine-tune from: a training checkpoint or an exported TorchScript model."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith(f"extra/{CARD_FILE}") for n in names):
            module, _card = load_scripted(path)
            return {k: v.detach().clone() for k, v in module.state_dict().items()}
    return load_checkpoint(path)["model"]


def load_matching(model, state: dict[str, Any], log: Log) -> None:
    """Copy every tensor whose name and shape match; say what was left out (e.g. a missing head)."""
    own = model.state_dict()
    taken = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not taken:
        raise InputError("the initial weights share no tensor with this network (different architecture?)")
    own.update(taken)
    model.load_state_dict(own)
    skipped = sorted(set(own) - set(taken))
    log(f"initialised {len(taken)} tensors from the given weights; {len(skipped)} kept fresh"
        + (f" (e.g. {skipped[:3]})" if skipped else ""))
