"""Training targets and patches: a case on the model grid with every map the losses read.

A case is resampled once onto the model grid (spacing from the config), z-scored over the volume,
and its targets are computed on the WHOLE volume before any crop, so that distances are true
distances to the structure even when a patch does not contain it:

- ``phi``: signed distance to the LA surface, Eq. (1), mm, raised to beta;
- ``p_target``: (p_normal, p_scar) = exp(-d) to normal wall and to scar, Eq. (4);
- ``m1``: the ground-truth LA boundary shell for the SA loss, Eq. (5);
- ``wall``: the wall label when the case has one, else the wall band of CONTRACTS section 2.

Patches keep the LA in view: a configurable fraction is centred on LA boundary voxels.
Augmentation (flips, small rotations, intensity, bias field, noise) runs on the batch in torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.datasets import Case
from ..core.distance import boundary_mask, distance_probability_maps, signed_distance, wall_band
from ..core.errors import InputError
from ..core.image import grid_for_spacing, resample, resample_mask, zscore

#: Arrays of a prepared case, in the order they are stacked into a patch (image first).
CHANNELS = ("image", "la", "phi", "p_normal", "p_scar", "wall", "scar", "m1")


@dataclass
class TrainingCase:
    """A case on the model grid: the z-scored image and every training target, (z, y, x) arrays."""
    id: str
    arrays: dict[str, np.ndarray]
    spacing_zyx: tuple[float, float, float]
    has_scar: bool
    provenance: dict[str, str] = field(default_factory=dict)
    boundary_index: np.ndarray | None = None  # flat indices of LA boundary voxels, for sampling
    la_focus: float | None = None  # this case's share of LA-centred patches (None: the run's)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.arrays["image"].shape  # type: ignore[return-value]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())


def prepare_case(
    case: Case,
    spacing_xyz: Sequence[float],
    *,
    beta: float = 1.0,
    wall_band_mm: float = 3.0,
    boundary_mm: float = 4.0,
) -> TrainingCase:
    """Resample a loaded case onto the model grid and compute its targets (see module docstring)."""
    if case.la is None:
        raise InputError(f"case {case.id}: training needs an LA label")
    grid = grid_for_spacing(case.image.geometry, spacing_xyz)
    image = zscore(resample(case.image, grid, interpolation="linear"))
    la = resample_mask(case.la, grid)
    if not la.array.any():
        raise InputError(f"case {case.id}: the LA vanishes on the model grid {list(spacing_xyz)} mm")
    wall = resample_mask(case.wall, grid) if case.wall is not None else wall_band(la, wall_band_mm)
    if case.scar is not None:
        scar = resample_mask(case.scar, grid)
        scar = scar.with_array(scar.array & wall.array)  # scar lives in the wall by definition
    else:
        scar = la.with_array(np.zeros(la.array.shape, np.uint8))
    p_normal, p_scar = distance_probability_maps(wall, scar)
    phi = signed_distance(la, beta=beta)
    m1 = boundary_mask(la, boundary_mm)
    arrays = {
        "image": image.array.astype(np.float32),
        "la": la.array.astype(np.uint8),
        "phi": phi.array.astype(np.float32),
        "p_normal": p_normal.array,
        "p_scar": p_scar.array,
        "wall": wall.array.astype(np.uint8),
        "scar": scar.array.astype(np.uint8),
        "m1": m1.array.astype(np.uint8),
    }
    return TrainingCase(
        id=case.id,
        arrays=arrays,
        spacing_zyx=grid.spacing_zyx,
        has_scar=case.scar is not None,
        provenance=dict(case.provenance),
        boundary_index=np.flatnonzero(m1.array),
    )


def _pad_value(name: str, arr: np.ndarray) -> float | None:
    """Constant used to pad a channel past the volume edge (None: repeat the edge)."""
    if name == "image":
        return float(arr.min())
    if name in ("phi", "p_normal", "p_scar"):
        return None  # distances continue smoothly beyond the edge
    return 0.0


def crop(tc: TrainingCase, centre_zyx: Sequence[int], patch_zyx: Sequence[int]) -> np.ndarray:
    """The patch of every channel around `centre_zyx`, padded past the edges: (C, z, y, x) float32."""
    out = np.empty((len(CHANNELS), *patch_zyx), np.float32)
    starts = [int(c) - p // 2 for c, p in zip(centre_zyx, patch_zyx)]
    for ci, name in enumerate(CHANNELS):
        arr = tc.arrays[name]
        lo = [max(0, s) for s in starts]
        hi = [min(n, s + p) for s, p, n in zip(starts, patch_zyx, arr.shape)]
        piece = arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        pads = [(l - s, (s + p) - h) for s, l, h, p in zip(starts, lo, hi, patch_zyx)]
        if any(a or b for a, b in pads):
            value = _pad_value(name, arr)
            if value is None:
                piece = np.pad(piece, pads, mode="edge")
            else:
                piece = np.pad(piece, pads, mode="constant", constant_values=value)
        out[ci] = piece
    return out


def sample_centre(tc: TrainingCase, patch_zyx: Sequence[int], rng: np.random.Generator, la_focus: float) -> tuple[int, int, int]:
    """A patch centre: on the LA boundary with probability `la_focus` (the case's own when it has
    one), else anywhere in the volume.

    Off-boundary centres are drawn so the patch stays inside the volume where it can.
    """
    shape = tc.shape
    la_focus = tc.la_focus if tc.la_focus is not None else la_focus
    if tc.boundary_index is not None and tc.boundary_index.size and rng.random() < la_focus:
        flat = tc.boundary_index[rng.integers(tc.boundary_index.size)]
        return tuple(int(v) for v in np.unravel_index(flat, shape))  # type: ignore[return-value]
    centre = []
    for n, p in zip(shape, patch_zyx):
        lo, hi = p // 2, n - (p - p // 2)
        centre.append(int(rng.integers(lo, hi + 1)) if hi >= lo else n // 2)
    return tuple(centre)  # type: ignore[return-value]


def sample_batch(
    cases: Sequence[TrainingCase],
    weights: Sequence[float] | None,
    batch_size: int,
    patch_zyx: Sequence[int],
    rng: np.random.Generator,
    la_focus: float,
) -> np.ndarray:
    """Draw `batch_size` patches (cases chosen by weight): (B, C, z, y, x) float32."""
    if not cases:
        raise InputError("no training case to sample from")
    p = None
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        p = w / w.sum()
    picks = rng.choice(len(cases), size=batch_size, p=p)
    return np.stack([crop(cases[i], sample_centre(cases[i], patch_zyx, rng, la_focus), patch_zyx) for i in picks])


# ---------------------------------------------------------------------------- torch side (lazy)
@dataclass(frozen=True)
class Augmentation:
    """Batch augmentation applied in torch; every probability 0 switches that part off."""
    flip_p: float = 0.5  # per axis
    rotate_p: float = 0.3
    rotate_deg: float = 15.0  # about the slice (z) axis, where LGE acquisitions vary most
    intensity_p: float = 0.8
    scale: float = 0.1  # x (1 +- scale)
    shift: float = 0.1  # + N(0, shift) in z-score units
    bias_p: float = 0.3
    bias_strength: float = 0.3  # max log-amplitude of a smooth multiplicative field
    noise_p: float = 0.2
    noise_std: float = 0.1


def augment(batch, aug: Augmentation, gen, spacing_zyx=(1.0, 1.0, 1.0)):
    """Augment a stacked (B, C, z, y, x) batch (a copy); geometric changes touch every channel alike.

    `gen` is a CPU torch.Generator (determinism by seed). Rotations are rigid in millimetres: the
    normalised grid is scaled by the patch's physical extent, so anisotropic patches do not shear.
    Binary channels are re-thresholded after a rotation; distance channels are interpolated
    (a rigid rotation preserves distances, so interpolating them stays a distance map).
    """


    B = batch.shape[0]
    out = batch.clone()
    dev = out.device

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device="cpu").to(dev)

    for b in range(B):
        for axis in (2, 3, 4):
            if float(torch.rand(1, generator=gen)) < aug.flip_p:  # a host scalar: no device sync
                out[b] = out[b].flip(axis - 1)
    if aug.rotate_p > 0:
        rot = rand(B) < aug.rotate_p
        if rot.any():
            ang = (rand(B) * 2 - 1) * math.radians(aug.rotate_deg)
            theta = torch.zeros(B, 3, 4, device=dev)
            c, s = torch.cos(ang), torch.sin(ang)
            ex = out.shape[4] * float(spacing_zyx[2])  # physical extent along x
            ey = out.shape[3] * float(spacing_zyx[1])
            theta[:, 0, 0], theta[:, 0, 1] = c, -s * ey / ex  # rotation in the x-y plane, in mm
            theta[:, 1, 0], theta[:, 1, 1] = s * ex / ey, c
            theta[:, 2, 2] = 1.0
            theta[~rot] = torch.eye(3, 4, device=dev)
            grid = F.affine_grid(theta, list(out.shape), align_corners=False)
            # padding: border keeps image background and distance maps continuous
            rotated = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
            for name in ("la", "wall", "scar", "m1"):
                ci = CHANNELS.index(name)
                rotated[:, ci] = (rotated[:, ci] > 0.5).float()
            out = torch.where(rot.view(B, 1, 1, 1, 1), rotated, out)
    img = out[:, 0]
    if aug.intensity_p > 0:
        on = (rand(B) < aug.intensity_p).float().view(B, 1, 1, 1)
        scale = 1 + (rand(B) * 2 - 1).view(B, 1, 1, 1) * aug.scale
        shift = torch.randn(B, generator=gen).to(dev).view(B, 1, 1, 1) * aug.shift
        img = on * (img * scale + shift) + (1 - on) * img
    if aug.bias_p > 0:
        on = (rand(B) < aug.bias_p).float().view(B, 1, 1, 1)
        zz, yy, xx = torch.meshgrid(
            *[torch.linspace(-1, 1, n, device=dev) for n in img.shape[1:]], indexing="ij"
        )
        coef = (rand(B, 6) * 2 - 1) * aug.bias_strength
        terms = torch.stack([xx, yy, zz, xx * yy, xx * xx - 0.33, yy * yy - 0.33])  # (6, z, y, x)
        field_ = torch.exp(torch.einsum("bk,kzyx->bzyx", coef, terms))
        img = on * img * field_ + (1 - on) * img
    if aug.noise_p > 0:
        on = (rand(B) < aug.noise_p).float().view(B, 1, 1, 1)
        img = img + on * torch.randn(img.shape, generator=gen).to(dev) * aug.noise_std
    out[:, 0] = img
    return out


def batch_to_inputs(batch, spacing_zyx) -> tuple:
    """Split a stacked (B, C, z, y, x) tensor into the network input and the loss batch dict."""
    ch = {name: batch[:, i : i + 1] for i, name in enumerate(CHANNELS)}
    targets = {
        "la": ch["la"],
        "phi": ch["phi"],
        "p_target": batch[:, CHANNELS.index("p_normal") : CHANNELS.index("p_scar") + 1],
        "wall": ch["wall"],
        "scar": ch["scar"],
        "m1": ch["m1"],
        "spacing_zyx": tuple(float(s) for s in spacing_zyx),
    }
    return ch["image"].contiguous(), targets
