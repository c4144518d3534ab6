"""The MTL-SESA losses, Eqs. (2)-(6) of Li et al. (MICCAI 2020), and the binary baselines.

Torch is imported inside the functions (CONTRACTS section 1). Every term takes torch tensors:

- network outputs (`LAScarSegLib.network`): ``"la"`` ``[B, 1, Z, Y, X]`` and ``"scar"``
  ``[B, 2, Z, Y, X]`` LOGITS (channel 0 normal wall, channel 1 scar);
- a batch dict (made by the trainer's data pipeline, `LAScarSegLib.training_data`), every map on
  the network's grid, float32:

  ============== =================== =====================================================
  key            shape               meaning
  ============== =================== =====================================================
  ``la``         ``[B, 1, Z, Y, X]`` ground-truth LA, 0/1
  ``phi``        ``[B, 1, Z, Y, X]`` signed distance to the LA surface in mm raised to beta,
                                     Eq. (1) (`distance.signed_distance`); +inf where the
                                     case has no LA (those voxels are ignored)
  ``p_target``   ``[B, 2, Z, Y, X]`` (p_normal, p_scar) = exp(-d mm) to normal wall / scar,
                                     Eq. (4) (`distance.distance_probability_maps`)
  ``wall``       ``[B, 1, Z, Y, X]`` LA wall, scar included, 0/1
  ``scar``       ``[B, 1, Z, Y, X]`` scar, 0/1 (a subset of the wall)
  ``m1``         ``[B, 1, Z, Y, X]`` ground-truth LA boundary shell, 0/1
                                     (`distance.boundary_mask` of ``la``); computed from
                                     ``la`` here when absent
  ``spacing_zyx`` scalar, ``(z, y, x)`` or ``[B, 3]``: voxel spacing in mm (for M2)
  ============== =================== =====================================================

Terms (names as in `LAScarSegLib.variants`), each a mean so that a batch of two gives the mean of
two batches of one:

- ``bce_la``: Eq. (2), binary cross-entropy of the LA logits, mean over voxels;
- ``se_la``: Eq. (3), mean of (sigmoid - 0.5) * phi over voxels; non-finite phi has weight 0,
  so a patch or case without LA contributes nothing instead of inf/NaN;
- ``bce_scar``: BCE of the two scar channels against (normal wall, scar) binary masks;
- ``dice_scar``: 1 - soft Dice of the scar channel per sample (smooth 1, so empty scar is fine);
- ``dice_la``: 1 - soft Dice of the LA per sample; not a term of the paper: active only when
  `LossWeights.dice_la` > 0 (the CPU recipe's class-balancing addition, see `train_config`);
- ``se_scar``: Eq. (4), mean squared error of sigmoid(scar logits) against ``p_target``;
- ``sa_m1`` / ``sa_m2``: Eq. (5), (M * (dp_hat - dp))^2 with dp = p_normal - p_scar, averaged
  over the voxels of M in each sample (0 for an empty M), then over the batch. M1 is the
  boundary shell of the ground-truth LA, M2 that of the predicted LA (sigmoid > 0.5, detached),
  both by `distance.boundary_mask` (|phi| <= thickness / 2, in mm; the faces of a patch are
  not boundary, see `boundary_masks`). Unlike the reference code, M
  selects voxels (its 0.45 < p < 0.5 test on exp(-d) never could, giving 0/0), and the mask
  ``[B, 1, ...]`` multiplies a ``[B, 1, ...]`` difference (not ``[B, ...]``, which broadcast to
  ``[B, B, ...]`` and mixed samples).

`total_loss` combines the variant's terms as in Eq. (6) with `LossWeights`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import InputError, ModelError
from ..model.variants import TERM_HEADS, Variant, get_variant

#: Default thickness (mm) of the LA boundary shell M1/M2: |phi| <= 2 mm, i.e. the LA edge (the
#: surface voxels and 2 mm inside) and the first 2 mm outside, where the 1-3 mm atrial wall lies;
#: at least one voxel each side of the surface even with 1.25-2 mm slices. Matches the default
#: `boundary_mm` of `LAScarSegLib.training_data.prepare_case`.
DEFAULT_BOUNDARY_MM = 4.0

DICE_SMOOTH = 1.0


@dataclass(frozen=True)
class LossWeights:
    """The balancing weights of Eq. (6) and their schedule (paper section 3.2).

    lambda_la and lambda_m2 are multiplied by `growth` every `growth_every` iterations; the
    multiplier is capped at `growth_cap` (None: unbounded, as in the paper).
    """

    lambda_la: float = 0.01
    lambda_scar: float = 10.0
    lambda_m1: float = 0.01
    lambda_m2: float = 0.001
    growth: float = 1.1
    growth_every: int = 200
    growth_cap: Optional[float] = None
    boundary_thickness_mm: float = DEFAULT_BOUNDARY_MM
    dice_la: float = 0.0  # weight of an extra LA soft-Dice term (0: the paper's Eq. 6 exactly)

    def __post_init__(self) -> None:
        for name in ("lambda_la", "lambda_scar", "lambda_m1", "lambda_m2", "dice_la"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
        if not (math.isfinite(self.growth) and self.growth > 0):
            raise InputError(f"growth must be a positive number, got {self.growth!r}")
        if not isinstance(self.growth_every, int) or self.growth_every < 1:
            raise InputError(f"growth_every must be an integer >= 1, got {self.growth_every!r}")
        if self.growth_cap is not None and not (self.growth_cap > 0):
            raise InputError(f"growth_cap must be positive or None, got {self.growth_cap!r}")
        if not (math.isfinite(self.boundary_thickness_mm) and self.boundary_thickness_mm > 0):
            raise InputError(f"boundary_thickness_mm must be positive, got {self.boundary_thickness_mm!r}")

    def multiplier(self, iteration: int) -> float:
        """growth ** (iteration // growth_every), capped at growth_cap."""
        if iteration < 0:
            raise InputError(f"iteration must be >= 0, got {iteration}")
        k = int(iteration) // self.growth_every
        log_f = k * math.log(self.growth)
        if self.growth_cap is not None:
            log_f = min(log_f, math.log(self.growth_cap))
        return math.exp(min(log_f, 700.0))  # no OverflowError after absurdly many iterations

    def at(self, iteration: int) -> dict[str, float]:
        """The effective lambdas at `iteration` (lambda_la and lambda_m2 grown)."""
        f = self.multiplier(iteration)
        return {
            "lambda_la": self.lambda_la * f,
            "lambda_scar": float(self.lambda_scar),
            "lambda_m1": float(self.lambda_m1),
            "lambda_m2": self.lambda_m2 * f,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------ helpers
def _check_shape(name: str, tensor, shape: Sequence[int]) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise InputError(f"{name} has shape {list(tensor.shape)}, expected {list(shape)}")


def _spacings(spacing_zyx: Any, batch: int) -> list[tuple[float, float, float]]:
    """One (z, y, x) spacing per sample from a scalar, a 3-sequence or a [B, 3] array/tensor."""
    if hasattr(spacing_zyx, "detach"):
        spacing_zyx = spacing_zyx.detach().cpu().numpy()
    arr = np.asarray(spacing_zyx, dtype=float)
    if arr.ndim == 0:
        arr = np.full(3, float(arr))
    if arr.shape == (3,):
        arr = np.broadcast_to(arr, (batch, 3))
    if arr.shape != (batch, 3) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InputError(
            f"spacing_zyx must be a positive number, (z, y, x) or one (z, y, x) per sample "
            f"(batch {batch}), got {np.asarray(spacing_zyx).tolist()}"
        )
    return [tuple(float(v) for v in row) for row in arr]


def _ball_offsets(spacing_zyx: tuple[float, float, float], radius_mm: float):
    """A 0/1 kernel of the voxel offsets within `radius_mm` (Euclidean, mm) of the centre."""
    half = [int(math.floor(radius_mm / s + 1e-9)) for s in spacing_zyx]
    axes = [torch.arange(-h, h + 1, dtype=torch.float64) * s for h, s in zip(half, spacing_zyx)]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    # the same float32 rounding as the distance map the numpy definition thresholds
    dist = torch.sqrt(zz**2 + yy**2 + xx**2).float()
    return (dist <= radius_mm).float(), half


def boundary_masks(la, spacing_zyx: Any, thickness_mm: float = DEFAULT_BOUNDARY_MM):
    """`distance.boundary_mask` of each sample of a 0/1 LA tensor ``[B, 1, Z, Y, X]`` (a patch).

    The shell |phi| <= thickness / 2 is the set of voxels within thickness / 2 of the LA's
    6-connected inner boundary S, i.e. S dilated by a ball: computed with two convolutions on the
    tensor's own device, so M1 and M2 cost no host round trip on a GPU (the NumPy/EDT path made
    the paper recipe CPU-bound). A test checks it equals `distance.boundary_mask` voxel for voxel.
    The faces of a patch are not LA boundary: each sample is padded by edge replication by more
    than thickness / 2 before the shell is computed and cropped back, so an LA that leaves the
    patch has no shell along the cut (on a whole volume whose LA does not touch the border this
    is exactly `distance.boundary_mask`). Returns float32 0/1 of the same shape on `la`'s device.
    """

    if la.dim() != 5 or la.shape[1] != 1:
        raise InputError(f"LA mask must be [B, 1, Z, Y, X], got shape {list(la.shape)}")
    if not (thickness_mm > 0):
        raise InputError(f"boundary thickness must be positive, got {thickness_mm} mm")
    masks = (la.detach() > 0.5).float()
    out = torch.zeros_like(masks)
    cross = torch.zeros(1, 1, 3, 3, 3, device=la.device)
    cross[0, 0, 1, 1, :] = cross[0, 0, 1, :, 1] = cross[0, 0, :, 1, 1] = 1.0
    with torch.no_grad():
        for b, sp in enumerate(_spacings(spacing_zyx, la.shape[0])):
            m = masks[b : b + 1]
            if not bool(m.any()):
                continue
            ball, half = _ball_offsets(sp, thickness_mm / 2.0)
            pad = [h + 2 for h in half]
            padded = F.pad(m, (pad[2], pad[2], pad[1], pad[1], pad[0], pad[0]), mode="replicate")
            # S: mask voxels with a 6-neighbour outside (zero border, as ndimage's border_value=0)
            interior = F.conv3d(padded, cross, padding=1) > 6.5
            surface = padded * (~interior).float()
            shell = F.conv3d(surface, ball.to(la.device)[None, None], padding=tuple(half)) > 0.5
            z, y, x = m.shape[2:]
            out[b, 0] = shell[0, 0, pad[0] : pad[0] + z, pad[1] : pad[1] + y, pad[2] : pad[2] + x].float()
    return out


def m2_mask(la_logits, spacing_zyx: Any, thickness_mm: float = DEFAULT_BOUNDARY_MM):
    """M2: the boundary shell of the predicted LA (sigmoid(logits) > 0.5, detached), ``[B, 1, ...]``."""
    with torch.no_grad():
        pred = (torch.sigmoid(la_logits.detach().float()) > 0.5).float()
    return boundary_masks(pred, spacing_zyx, thickness_mm)


# ---------------------------------------------------------------------------------- the terms
def bce_la(la_logits, la):
    """Eq. (2): binary cross-entropy of the LA logits against the 0/1 LA, mean over voxels."""
    _check_shape("batch['la']", la, la_logits.shape)
    return F.binary_cross_entropy_with_logits(la_logits, la.to(la_logits.dtype))


def se_la(la_logits, phi):
    """Eq. (3): mean over voxels of (sigmoid - 0.5) * phi; non-finite phi voxels weigh 0."""
    _check_shape("batch['phi']", phi, la_logits.shape)
    phi = phi.to(la_logits.dtype)
    phi = torch.where(torch.isfinite(phi), phi, torch.zeros_like(phi))
    return ((torch.sigmoid(la_logits) - 0.5) * phi).mean()


def bce_scar(scar_logits, wall, scar):
    """BCE of the two scar channels against (normal wall = wall and not scar, scar)."""
    B, _, *spatial = scar_logits.shape
    _check_shape("batch['wall']", wall, (B, 1, *spatial))
    _check_shape("batch['scar']", scar, (B, 1, *spatial))
    s = (scar > 0.5).to(scar_logits.dtype)
    normal = ((wall > 0.5) & ~(scar > 0.5)).to(scar_logits.dtype)
    return F.binary_cross_entropy_with_logits(scar_logits, torch.cat([normal, s], dim=1))


def _soft_dice_loss(prob, target, smooth: float) -> Any:
    p, g = prob.flatten(1), target.to(prob.dtype).flatten(1)
    dice = (2 * (p * g).sum(1) + smooth) / (p.sum(1) + g.sum(1) + smooth)
    return (1 - dice).mean()


def dice_la(la_logits, la, smooth: float = DICE_SMOOTH):
    """1 - soft Dice of the LA, per sample (a patch without LA scores 1 when nothing is predicted)."""
    _check_shape("batch['la']", la, la_logits.shape)
    return _soft_dice_loss(torch.sigmoid(la_logits), la, smooth)


def dice_scar(scar_logits, scar, smooth: float = DICE_SMOOTH):
    """1 - soft Dice of the scar channel, per sample (smooth term: empty scar is fine), batch mean."""
    B, _, *spatial = scar_logits.shape
    _check_shape("batch['scar']", scar, (B, 1, *spatial))
    return _soft_dice_loss(torch.sigmoid(scar_logits[:, 1:2]), scar, smooth)


def se_scar(scar_logits, p_target):
    """Eq. (4): mean squared error of sigmoid(scar logits) against (p_normal, p_scar)."""
    _check_shape("batch['p_target']", p_target, scar_logits.shape)
    return ((torch.sigmoid(scar_logits) - p_target.to(scar_logits.dtype)) ** 2).mean()


def sa(scar_logits, p_target, mask):
    """Eq. (5): (M * (dp_hat - dp))^2 averaged over the voxels of M per sample (0 if M is empty),
    then over the batch; dp = p_normal - p_scar."""

    B, _, *spatial = scar_logits.shape
    _check_shape("batch['p_target']", p_target, scar_logits.shape)
    _check_shape("attention mask", mask, (B, 1, *spatial))
    p = torch.sigmoid(scar_logits)
    t = p_target.to(p.dtype)
    m = mask.to(p.dtype)
    diff = (p[:, 0:1] - p[:, 1:2]) - (t[:, 0:1] - t[:, 1:2])  # [B, 1, ...]: no cross-sample broadcast
    num = ((m * diff) ** 2).flatten(1).sum(1)
    den = m.flatten(1).sum(1)
    per_sample = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))
    return per_sample.mean()


def term_weights(variant: Variant | str, weights: LossWeights, iteration: int) -> dict[str, float]:
    """The weight of each of the variant's terms at `iteration` (Eq. 6; 1 for BCE and Dice).

    ``dice_la`` joins any variant with an LA head when `weights.dice_la` > 0.
    """
    variant = get_variant(variant)
    lam = weights.at(iteration)
    all_w = {
        "bce_la": 1.0,
        "se_la": lam["lambda_la"],
        "bce_scar": 1.0,
        "dice_scar": 1.0,
        "se_scar": lam["lambda_scar"],
        "sa_m1": lam["lambda_m1"],
        "sa_m2": lam["lambda_m2"],
    }
    out = {t: all_w[t] for t in variant.terms}
    if weights.dice_la > 0 and "la" in variant.heads:
        out["dice_la"] = float(weights.dice_la)
    return out


_TERM_KEYS = {
    "bce_la": ("la",),
    "se_la": ("phi",),
    "dice_la": ("la",),
    "bce_scar": ("wall", "scar"),
    "dice_scar": ("scar",),
    "se_scar": ("p_target",),
    "sa_m1": ("p_target",),  # plus m1, or la and spacing_zyx to compute it
    "sa_m2": ("p_target", "spacing_zyx"),
}


def total_loss(outputs: dict, batch: dict, variant: Variant | str, weights: LossWeights, iteration: int):
    """Eq. (6) for `variant`: sum of its terms times their weights at `iteration`.

    Returns (loss tensor, {term: float value before weighting}) for the active terms (the variant's, plus ``dice_la`` when
    weighted).
    Raises `ModelError` when `outputs` lacks a head the variant needs, `InputError` when the
    batch lacks a map one of its terms needs or shapes disagree.
    """
    variant = get_variant(variant)
    missing_heads = sorted({h for t in variant.terms for h in TERM_HEADS[t]} - set(outputs))
    if missing_heads:
        raise ModelError(
            f"variant {variant.name!r} needs network output(s) {missing_heads}; the model gives {sorted(outputs)}"
        )
    terms = list(term_weights(variant, weights, iteration))
    for term in terms:
        missing = [k for k in _TERM_KEYS[term] if k not in batch]
        if term == "sa_m1" and "m1" not in batch:
            missing += [k for k in ("la", "spacing_zyx") if k not in batch]
        if missing:
            raise InputError(f"loss term {term!r} needs batch key(s) {missing}; batch has {sorted(batch)}")

    wts = term_weights(variant, weights, iteration)
    la_out, scar_out = outputs.get("la"), outputs.get("scar")
    for name, out, ch in (("la", la_out, 1), ("scar", scar_out, 2)):
        if out is not None and (out.dim() != 5 or out.shape[1] != ch):
            raise ModelError(f"network output {name!r} must be [B, {ch}, Z, Y, X], got {list(out.shape)}")
    values = {}
    for term in terms:
        if term == "bce_la":
            v = bce_la(la_out, batch["la"])
        elif term == "dice_la":
            v = dice_la(la_out, batch["la"])
        elif term == "se_la":
            v = se_la(la_out, batch["phi"])
        elif term == "bce_scar":
            v = bce_scar(scar_out, batch["wall"], batch["scar"])
        elif term == "dice_scar":
            v = dice_scar(scar_out, batch["scar"])
        elif term == "se_scar":
            v = se_scar(scar_out, batch["p_target"])
        elif term == "sa_m1":
            m1 = batch.get("m1")
            if m1 is None:
                m1 = boundary_masks(batch["la"], batch["spacing_zyx"], weights.boundary_thickness_mm)
            v = sa(scar_out, batch["p_target"], m1)
        elif term == "sa_m2":
            m2 = m2_mask(la_out, batch["spacing_zyx"], weights.boundary_thickness_mm)
            v = sa(scar_out, batch["p_target"], m2)
        else:  # pragma: no cover - Variant validates its terms
            raise InputError(f"unknown loss term {term!r}")
        values[term] = v
    loss = None
    for term, v in values.items():
        loss = v * wts[term] if loss is None else loss + v * wts[term]
    return loss, {t: float(v.detach()) for t, v in values.items()}


__all__ = [
    "DEFAULT_BOUNDARY_MM",
    "LossWeights",
    "bce_la",
    "bce_scar",
    "boundary_masks",
    "dice_la",
    "dice_scar",
    "m2_mask",
    "sa",
    "se_la",
    "se_scar",
    "term_weights",
    "total_loss",
]
