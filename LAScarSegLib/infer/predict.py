"""Run a LAScarSeg model on an image: its probabilities on the input grid.

The model card is authoritative (CONTRACTS section 3): spacing, window, divisor, normalisation and
wall band all come from it. Device "auto" takes CUDA when present and falls back to the CPU,
also when CUDA runs out of memory, and says so in the warnings.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from ..core.image import Volume, grid_for_spacing, normalise, resample
from ..core.progress import ProgressFn, Stages
from ..model.loading import LoadedModel
from .masks import Prediction
from .windows import MAX_WINDOW_VOXELS, inference_window, sliding_window

#: The named steps `predict` reports to the caller's stages.
RESAMPLE_STEP, NETWORK_STEP = "resample to model grid and back", "sliding-window network"


def predict(loaded: LoadedModel, image: Volume, *, progress: ProgressFn | None = None,
            cancel: threading.Event | None = None, steps: Stages | None = None) -> Prediction:
    """Sliding-window inference over the whole field of view (no label is used to find the LA).

    A crop (a box around the LA) is normalised over itself, as the network's training crops were.
    `steps`: the caller's stages, which time the resampling and the network as named steps."""
    step = steps.step if steps is not None else (lambda _label, fn: fn())
    card = loaded.card
    grid = grid_for_spacing(image.geometry, card["spacing_mm"])
    img = step(RESAMPLE_STEP, lambda: normalise(resample(image, grid, interpolation="linear"), card["normalisation"]))
    patch = tuple(int(p) for p in reversed(card["patch_size"]))
    warnings: list[str] = []
    device = loaded.device
    window = inference_window(img.array.shape, int(card["divisor"]), MAX_WINDOW_VOXELS[device], patch)
    done = [0.0]  # how far the CUDA pass got: a CPU retry goes on from there, the bar never runs back

    def on_gpu(fraction: float, text: str) -> None:
        done[0] = fraction
        if progress is not None:
            progress(fraction, text)

    try:
        probs = step(NETWORK_STEP, lambda: sliding_window(loaded.module, img.array, window, int(card["divisor"]),
                                                          device=device, progress=on_gpu, cancel=cancel))
    except torch.cuda.OutOfMemoryError:
        if device == "cpu":
            raise
        torch.cuda.empty_cache()
        warnings.append("CUDA ran out of memory; the model ran on the CPU instead")
        loaded.move_to("cpu")
        device = "cpu"
        window = inference_window(img.array.shape, int(card["divisor"]), MAX_WINDOW_VOXELS[device], patch)
        retry = None if progress is None else (lambda f, text: progress(done[0] + (1.0 - done[0]) * f, text))
        probs = step(NETWORK_STEP, lambda: sliding_window(loaded.module, img.array, window, int(card["divisor"]),
                                                          device="cpu", progress=retry, cancel=cancel))
    out = Prediction(device=device, warnings=warnings)

    def back(arr: np.ndarray) -> Volume:
        v = step(RESAMPLE_STEP, lambda: resample(img.with_array(arr.astype(np.float32)), image.geometry, interpolation="linear"))
        return v.with_array(np.clip(v.array, 0.0, 1.0).astype(np.float32))

    if "la" in probs:
        out.la = back(probs["la"][0])
    if "scar" in probs:
        out.p_normal, out.p_scar = back(probs["scar"][0]), back(probs["scar"][1])
    return out
