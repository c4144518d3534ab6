"""Sliding-window inference over a whole field of view, with Gaussian blending of overlapping windows.

The network never sees a label at inference: it scans the whole image, so a full field of view
with the LA off centre works the same as an LA-centred crop. Windows are as large as a voxel budget
allows (`inference_window`; each size divisible by the model's divisor); their overlap is blended
with a Gaussian importance map so window borders leave no seams. A volume no larger than one
window runs in a single pass.
"""

from __future__ import annotations

import itertools
import math
import threading
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.errors import Cancelled

ProgressFn = Callable[[float, str], None]


def round_up(n: int, divisor: int) -> int:
    return int(math.ceil(n / divisor) * divisor)


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets covering [0, size) with windows of `window`, overlapping by about `overlap`."""
    if size <= window:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    n = int(math.ceil((size - window) / step)) + 1
    return sorted({int(round(i * (size - window) / (n - 1))) for i in range(n)})


#: Voxels per inference window (model grid). On 2 CPU cores a 4-level base-16 network takes about
#: 2 s per million voxels, so a window stays cancellable within about 2 s and a 1.25 mm LA-centred
#: crop (80x104x104) runs in one pass; on a GPU the whole field of view fits in one window.
MAX_WINDOW_VOXELS = {"cpu": 1_000_000, "cuda": 32_000_000}
#: Overlap of inference windows: 0.25 (MONAI's default) halves the work against 0.5 on a full field
#: of view; the Gaussian blend keeps the seams invisible.
DEFAULT_OVERLAP = 0.25


def inference_window(shape_zyx: Sequence[int], divisor: int, max_voxels: int,
                     min_window_zyx: Sequence[int] = (0, 0, 0)) -> tuple[int, int, int]:
    """The largest window (each size a multiple of `divisor`) within `max_voxels`.

    Fewer, larger windows cost less than many training-size patches (each window pays for its
    overlap and its borders): the whole volume when it fits, else the longest axis is shortened
    first, never below `min_window_zyx` (the training patch) rounded up to the divisor.
    """
    full = [round_up(int(n), divisor) for n in shape_zyx]
    floor = [min(round_up(max(int(m), divisor), divisor), f) for m, f in zip(min_window_zyx, full)]
    win = list(full)
    while math.prod(win) > max_voxels:
        shrinkable = [a for a in range(3) if win[a] - divisor >= floor[a]]
        if not shrinkable:
            break
        a = max(shrinkable, key=lambda k: win[k])
        win[a] -= divisor
    return (win[0], win[1], win[2])


def gaussian_importance(window_zyx: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """A separable Gaussian peaking at the window centre (never exactly 0, so every voxel counts)."""
    w = np.ones(window_zyx, np.float32)
    for axis, n in enumerate(window_zyx):
        x = np.arange(n) - (n - 1) / 2
        g = np.exp(-0.5 * (x / max(n * sigma_scale, 1e-3)) ** 2).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = n
        w = w * g.reshape(shape)
    w /= w.max()
    return np.maximum(w, 1e-3).astype(np.float32)


#: How often a running window looks at the cancel event (s).
CANCEL_POLL_S = 0.05


def _forward(predict: Callable, x, cancel: threading.Event | None):
    """`predict(x)`, stoppable: with a cancel event the forward pass runs in a helper thread (torch
    releases the GIL while it computes) and `Cancelled` is raised as soon as the event is set. One
    window can take seconds on a CPU, the first call of a TorchScript module longer; the abandoned
    pass finishes in the background and its result is dropped."""

    if cancel is None:
        return predict(x)
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            with torch.inference_mode():  # grad modes are per thread
                box["out"] = predict(x)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    # not a daemon: the interpreter waits for an abandoned pass at exit (killing it there aborts torch)
    worker = threading.Thread(target=run, name="lascarseg-window")
    worker.start()
    while worker.is_alive():
        worker.join(CANCEL_POLL_S)
        if cancel.is_set() and worker.is_alive():
            raise Cancelled("inference cancelled")
    if "error" in box:
        raise box["error"]
    return box["out"]


def sliding_window(
    predict: Callable,
    image: np.ndarray,
    window_zyx: Sequence[int],
    divisor: int,
    *,
    overlap: float = DEFAULT_OVERLAP,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, np.ndarray]:
    """Probabilities (sigmoid of the logits) of every output of `predict` over `image` (z, y, x).

    `predict(x)` takes a float32 tensor [1, 1, z, y, x] and returns a dict of logits. The volume is
    padded (with its minimum) up to a window in each axis and to a multiple of `divisor`; the
    padding is cut off again. `cancel` is checked between windows and while one runs (`_forward`).
    """

    if image.ndim != 3:
        raise ValueError(f"image must be 3D (z, y, x), got shape {image.shape}")
    window = [round_up(int(w), divisor) for w in window_zyx]
    padded_shape = [max(round_up(n, divisor), w) for n, w in zip(image.shape, window)]
    window = [min(w, p) for w, p in zip(window, padded_shape)]
    pad = [(0, p - n) for p, n in zip(padded_shape, image.shape)]
    vol = np.pad(image.astype(np.float32, copy=False), pad, mode="constant", constant_values=float(image.min()))
    starts = list(itertools.product(*(window_starts(p, w, overlap) for p, w in zip(padded_shape, window))))
    importance = gaussian_importance(window) if len(starts) > 1 else np.ones(window, np.float32)
    imp_t = torch.from_numpy(importance).to(device)
    sums: dict[str, torch.Tensor] = {}
    weight = torch.zeros(padded_shape, dtype=torch.float32, device=device)
    src = torch.from_numpy(vol)
    with torch.inference_mode():
        for i, (z0, y0, x0) in enumerate(starts):
            if cancel is not None and cancel.is_set():
                raise Cancelled("inference cancelled")
            sl = (slice(z0, z0 + window[0]), slice(y0, y0 + window[1]), slice(x0, x0 + window[2]))
            x = src[sl].to(device)[None, None]
            out = _forward(predict, x, cancel)
            for key, logits in out.items():
                prob = torch.sigmoid(logits[0].float())
                if key not in sums:
                    sums[key] = torch.zeros((prob.shape[0], *padded_shape), dtype=torch.float32, device=device)
                sums[key][(slice(None), *sl)] += prob * imp_t
            weight[sl] += imp_t
            if progress is not None:
                progress((i + 1) / len(starts), f"window {i + 1}/{len(starts)}")
    crop = tuple(slice(0, n) for n in image.shape)
    return {k: (v / weight)[(slice(None), *crop)].cpu().numpy() for k, v in sums.items()}
