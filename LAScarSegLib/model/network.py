"""The MTL-SESA network: a 3D U-Net with one shared encoder and one decoder per head (Fig. 1).

`ModelConfig` (plain Python) describes the network; `build_model(config)` builds it. Each level of
the encoder and of each decoder holds two [Conv3d 3x3x3 + norm + ReLU]; MaxPool3d(2) goes down,
ConvTranspose3d(2, stride 2) goes up, the encoder feature of the same level is concatenated (skip
connection) and a 1x1x1 convolution gives the output of each head:

- ``"la"``   ``[B, 1, Z, Y, X]`` logits of the left atrium;
- ``"scar"`` ``[B, 2, Z, Y, X]`` logits of (p_normal, p_scar), independent sigmoids.

`forward(x)` takes float32 ``[B, 1, Z, Y, X]`` with each spatial size divisible by
``config.divisor`` (= 2 ** (levels - 1)) and returns a ``Dict[str, Tensor]`` of logits holding only
the configured heads (CONTRACTS section 3). A single-decoder variant is the same class with one head.
The default two-decoder, 5-level, base-16 model has 7.75 M parameters (reference: about 7.8 M).

The model file (CONTRACTS section 3) is a TorchScript file with the model card embedded as the
extra file ``model_card.json``: `script_model`, `freeze_for_inference`, `save_scripted` and
`load_scripted`.

The `nn.Module` classes (`ConvBlock`, `Encoder`, `UpStage`, `Decoder`, `UNet`) are module-level
classes, so TorchScript resolves the names their methods use (``torch``, ``F``, ``Tensor``,
``List``, ``Dict``) from this module's globals.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import textwrap
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import InputError, ModelError
from ..core.outputs import atomic_file
from .card import CARD_FILE, check_card, parse_card
from .variants import HEADS, Variant, get_variant

NORMS = ("batch", "instance", "group")
HEAD_CHANNELS = {"la": 1, "scar": 2}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the network (plain Python; stored in the model card).

    levels: resolution levels (5 in the paper: 16, 32, 64, 128, 256 channels at base 16).
    base_channels: channels of the first level; they double at each level.
    norm: "batch" (the paper), "instance" or "group" (8 groups, fewer where channels are fewer).
    heads: the decoders, a subset of ("la", "scar"), in output order.
    scar_base_channels: width of the scar decoder's first level (doubling per level like the
        encoder); None gives the encoder's widths. A smaller value makes a lighter scar decoder.
    """

    levels: int = 5
    base_channels: int = 16
    norm: str = "batch"
    heads: tuple[str, ...] = ("la", "scar")
    scar_base_channels: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple(self.heads))
        if not isinstance(self.levels, int) or self.levels < 2:
            raise InputError(f"levels must be an integer >= 2, got {self.levels!r}")
        if not isinstance(self.base_channels, int) or self.base_channels < 1:
            raise InputError(f"base_channels must be a positive integer, got {self.base_channels!r}")
        if self.norm not in NORMS:
            raise InputError(f"unknown norm {self.norm!r}; use one of {NORMS}")
        if not self.heads or len(set(self.heads)) != len(self.heads) or not set(self.heads) <= set(HEADS):
            raise InputError(f"heads must be distinct names from {HEADS}, got {self.heads}")
        if self.scar_base_channels is not None and (
            not isinstance(self.scar_base_channels, int) or self.scar_base_channels < 1
        ):
            raise InputError(f"scar_base_channels must be a positive integer or None, got {self.scar_base_channels!r}")

    @property
    def divisor(self) -> int:
        """Each spatial input size must be a multiple of this (2 ** (levels - 1))."""
        return 2 ** (self.levels - 1)

    @property
    def channels(self) -> tuple[int, ...]:
        """Encoder channels per level."""
        return tuple(self.base_channels * 2**i for i in range(self.levels))

    def decoder_channels(self, head: str) -> tuple[int, ...]:
        base = self.scar_base_channels if (head == "scar" and self.scar_base_channels) else self.base_channels
        return tuple(base * 2**i for i in range(self.levels - 1))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["heads"] = list(self.heads)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "heads" in d:
            d["heads"] = tuple(d["heads"])
        return cls(**d)

    @classmethod
    def for_variant(cls, variant: str | Variant, **overrides: Any) -> "ModelConfig":
        """The config with the decoders that `variant` needs (see `LAScarSegLib.variants`)."""
        return cls(heads=get_variant(variant).heads, **overrides)


def _groups(channels: int, max_groups: int = 8) -> int:
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def _make_norm(kind: str, channels: int) -> nn.Module:
    """The normalisation layer of `kind` ("batch", "instance" or "group") for `channels` channels."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    return nn.GroupNorm(_groups(channels), channels)


class ConvBlock(nn.Module):
    """Two [Conv3d 3x3x3 + norm + ReLU]."""

    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.norm1 = _make_norm(norm, cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.norm2 = _make_norm(norm, cout)

    def forward(self, x: Tensor) -> Tensor:
        # In-place ReLU: no extra full-size tensor (BatchNorm's backward does not need its output).
        x = F.relu(self.norm1(self.conv1(x)), inplace=True)
        return F.relu(self.norm2(self.conv2(x)), inplace=True)


class Encoder(nn.Module):
    """The shared encoder; returns the feature of every level, finest first."""

    def __init__(self, channels: tuple[int, ...], norm: str):
        super().__init__()
        cins = (1,) + tuple(channels[:-1])
        self.blocks = nn.ModuleList([ConvBlock(ci, co, norm) for ci, co in zip(cins, channels)])

    def forward(self, x: Tensor) -> List[Tensor]:
        feats: List[Tensor] = []
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = F.max_pool3d(x, 2)
            x = block(x)
            feats.append(x)
        return feats


class UpStage(nn.Module):
    """ConvTranspose3d(2, stride 2), concatenation with the skip feature, ConvBlock."""

    def __init__(self, cin: int, cskip: int, cout: int, norm: str):
        super().__init__()
        self.up = nn.ConvTranspose3d(cin, cout, 2, stride=2)
        self.block = ConvBlock(cout + cskip, cout, norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class Decoder(nn.Module):
    """One head's decoder: up stages from the deepest level, then a 1x1x1 output conv."""

    def __init__(self, enc_channels: tuple[int, ...], dec_channels: tuple[int, ...], out_channels: int, norm: str):
        super().__init__()
        stages = []
        cin = enc_channels[-1]
        for level in range(len(enc_channels) - 2, -1, -1):
            stages.append(UpStage(cin, enc_channels[level], dec_channels[level], norm))
            cin = dec_channels[level]
        self.stages = nn.ModuleList(stages)
        self.out = nn.Conv3d(cin, out_channels, 1)

    def forward(self, feats: List[Tensor]) -> Tensor:
        n = len(feats)
        x = feats[n - 1]
        for i, stage in enumerate(self.stages):
            x = stage(x, feats[n - 2 - i])
        return self.out(x)


class UNet(nn.Module):
    """Shared encoder, one decoder per head; forward returns a dict of logits per head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.divisor = config.divisor
        self.encoder = Encoder(config.channels, config.norm)
        self.decoders = nn.ModuleDict(
            {
                head: Decoder(config.channels, config.decoder_channels(head), HEAD_CHANNELS[head], config.norm)
                for head in config.heads
            }
        )

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        if x.dim() != 5 or x.size(1) != 1:
            raise ValueError(
                "LAScarSeg network input must be [B, 1, Z, Y, X], got shape {}".format(list(x.shape))
            )
        d = self.divisor
        if x.size(2) % d != 0 or x.size(3) % d != 0 or x.size(4) % d != 0:
            raise ValueError(
                "LAScarSeg network input spatial size (z, y, x) = ({}, {}, {}) is not divisible by {}; "
                "pad or crop each size to a multiple of {}".format(x.size(2), x.size(3), x.size(4), d, d)
            )
        feats = self.encoder(x)
        out: Dict[str, Tensor] = {}
        for name, decoder in self.decoders.items():
            out[name] = decoder(feats)
        return out

    def forward_heads(self, x: Tensor, heads: List[str]) -> Dict[str, Tensor]:
        """Only the named heads' decoders (training: a step whose loss reads only the LA head
        need not run the scar decoder, about half the step's time). Not part of the exported
        TorchScript interface."""
        feats = self.encoder(x)
        return {name: self.decoders[name](feats) for name in heads}


def build_model(config: ModelConfig | None = None) -> UNet:
    """A freshly initialised network (torch.nn.Module, training mode) for `config`."""
    config = config or ModelConfig()
    return UNet(config)


def count_parameters(model, trainable_only: bool = False) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


@contextlib.contextmanager
def _quiet_torchscript():
    """Silence torch's DeprecationWarning for TorchScript (torch >= 2.10 flags torch.jit.*): the
    model file format of CONTRACTS section 3 is TorchScript, so it says nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit\..*deprecated")
        yield


def script_model(model):
    """TorchScript of `model` in eval mode (the model itself is left as it was)."""
    m = copy.deepcopy(model).eval()
    with _quiet_torchscript():
        return torch.jit.script(m)


def freeze_for_inference(model, channels_last: bool = True, device: str = "cpu"):
    """A frozen TorchScript module for inference on `device`: BatchNorm folded into the
    convolutions (torch.jit.freeze) and, with `channels_last`, weights in channels_last_3d layout.

    Frozen weights are constants that a later `.to()` does not move, so the device is chosen here.

    Accepts an nn.Module or a ScriptModule (neither is changed). The outputs equal the model's in
    eval mode up to float rounding (about 1e-7), still as a dict of logits, and the frozen module
    saves and loads like any other. Measured on 2 CPU threads, 1x1x80x208x208, default model:
    eager 12.1 s, scripted 10.6 s, frozen 9.6 s, eager channels_last 6.4 s, frozen channels_last
    5.6 s (medians of 5). Input needs no conversion: with one channel both layouts coincide.
    """
    m = copy.deepcopy(model).eval()
    with _quiet_torchscript(), warnings.catch_warnings():
        # Module._apply on a ScriptModule reads .grad of its (non-leaf) parameters and warns.
        warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
        m = m.to(device)
        if channels_last:
            m = m.to(memory_format=torch.channels_last_3d)
        if not isinstance(m, torch.jit.ScriptModule):
            m = torch.jit.script(m)
        return torch.jit.freeze(m)


def save_scripted(scripted, path: str | os.PathLike, card: dict) -> Path:
    """Write a TorchScript module with `card` as ``model_card.json``, atomically (temp file + rename)."""
    path = Path(path)
    if not isinstance(scripted, torch.jit.ScriptModule):
        raise InputError(f"{path}: save_scripted needs a TorchScript module (use script_model), got {type(scripted).__name__}")
    check_card(card, f"{path} (card to save)")
    try:
        text = json.dumps(card, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: model card is not JSON-serialisable: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, ".tmp") as tmp, _quiet_torchscript():
        torch.jit.save(scripted, tmp, _extra_files={CARD_FILE: text})
    return path


def load_scripted(path: str | os.PathLike, map_location: Any = "cpu"):
    """Load a model file: returns (TorchScript module in eval mode, card dict).

    Raises `ModelError` naming the file for a missing file, a file that is not TorchScript (random
    bytes, a state_dict pickle), and a missing, unparseable or wrong-version ``model_card.json``.
    """

    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: model file does not exist")
    if not path.is_file():
        raise ModelError(f"{path}: model path is not a file")
    extra = {CARD_FILE: ""}
    try:
        with _quiet_torchscript():
            module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    except Exception as exc:  # RuntimeError / ValueError from the zip reader or the unpickler
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a LAScarSeg TorchScript model file (torch.jit.load failed: "
                         f"{textwrap.shorten(first, 300, placeholder=' ...')})") from exc
    card = parse_card(extra.get(CARD_FILE) or b"", str(path))
    module.eval()
    return module, card


__all__ = [
    "ConvBlock",
    "Decoder",
    "Encoder",
    "HEAD_CHANNELS",
    "ModelConfig",
    "NORMS",
    "build_model",
    "count_parameters",
    "freeze_for_inference",
    "load_scripted",
    "save_scripted",
    "script_model",
    "UNet",
    "UpStage",
]
