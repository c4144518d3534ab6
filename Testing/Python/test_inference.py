"""Sliding-window inference: coverage, blending, agreement with a single pass, cancellation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from LAScarSegLib.core.errors import Cancelled
from LAScarSegLib.infer.windows import gaussian_importance, sliding_window, window_starts


def test_window_starts_cover_the_axis() -> None:
    for size, window, overlap in [(100, 32, 0.5), (33, 32, 0.25), (32, 32, 0.5), (20, 32, 0.5), (257, 64, 0.5)]:
        starts = window_starts(size, window, overlap)
        covered = np.zeros(max(size, window), bool)
        for s in starts:
            covered[s : s + window] = True
        assert covered[:size].all()
        assert starts[0] == 0 and (size <= window or starts[-1] == size - window)


def test_gaussian_importance_peaks_in_the_centre() -> None:
    w = gaussian_importance((8, 16, 16))
    assert w.shape == (8, 16, 16) and w.min() > 0 and w.max() == pytest.approx(1.0)
    assert w[4, 8, 8] > w[0, 0, 0]


def pointwise(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"la": 3 * x - 1, "scar": torch.cat([x, -x], 1)}


def test_windowed_equals_single_pass_for_a_pointwise_model() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(37, 50, 45)).astype(np.float32)
    single = sliding_window(pointwise, img, (48, 64, 64), divisor=8)
    windowed = sliding_window(pointwise, img, (16, 16, 16), divisor=8, overlap=0.5)
    assert single["la"].shape == (1, 37, 50, 45) and single["scar"].shape == (2, 37, 50, 45)
    np.testing.assert_allclose(windowed["la"], single["la"], atol=1e-5)
    np.testing.assert_allclose(single["la"][0], 1 / (1 + np.exp(-(3 * img - 1))), atol=1e-5)


def test_windowed_and_single_pass_agree_for_the_bundled_model() -> None:
    """The bundled model on a phantom at its grid (80x104x104): one pass, and 48x64x64 windows (the
    training patch size) at half overlap, find the same LA (largest component), and find it.

    The raw probabilities differ more than window seams would explain: the model sees more context
    in one pass and marks more of the neighbouring pools (Dice to the truth before the largest
    component 0.87 against 0.92), which the largest component removes.
    """
    from LAScarSegLib.core.image import grid_for_spacing, normalise, resample
    from LAScarSegLib.synth.phantom import make_phantom
    from LAScarSegLib.infer.masks import la_mask
    from LAScarSegLib.model.loading import load_for_inference

    loaded = load_for_inference(None, "cpu")
    card = loaded.card
    ph = make_phantom(5)
    grid = grid_for_spacing(ph.image.geometry, card["spacing_mm"])
    img = normalise(resample(ph.image, grid, interpolation="linear"), card["normalisation"])
    truth = resample(ph.la, grid, interpolation="nearest").array > 0
    divisor = int(card["divisor"])
    single = sliding_window(loaded.module, img.array, img.array.shape, divisor=divisor)["la"][0]
    windowed = sliding_window(loaded.module, img.array, (48, 64, 64), divisor=divisor, overlap=0.5)["la"][0]
    la_single = la_mask(img.with_array(single))[0].array > 0
    la_windowed = la_mask(img.with_array(windowed))[0].array > 0

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        return 2 * float((a & b).sum()) / float(a.sum() + b.sum())

    assert dice(la_single, truth) > 0.93 and dice(la_windowed, truth) > 0.93
    assert dice(la_single, la_windowed) > 0.98
    assert np.abs(single - windowed)[truth].mean() < 0.03


def test_cancel_stops_between_windows() -> None:
    cancel = threading.Event()
    calls = []

    def predict(x):
        calls.append(1)
        if len(calls) == 2:
            cancel.set()
        return pointwise(x)

    with pytest.raises(Cancelled):
        sliding_window(predict, np.zeros((32, 64, 64), np.float32) + np.arange(64, dtype=np.float32),
                       (16, 16, 16), divisor=8, cancel=cancel)
    assert len(calls) == 2


def test_cancel_stops_a_window_that_is_still_running() -> None:
    """One slow window (a first TorchScript call on a CPU can take seconds): the cancel event set
    meanwhile ends the run at once; the caller does not wait for the window."""
    import time

    cancel = threading.Event()

    def slow(x):
        time.sleep(5.0)
        return pointwise(x)

    threading.Timer(0.3, cancel.set).start()
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        sliding_window(slow, np.zeros((16, 16, 16), np.float32), (16, 16, 16), divisor=8, cancel=cancel)
    assert time.perf_counter() - t0 < 1.0
    # an error inside the window still reaches the caller, with the cancel event in place

    def broken(x):
        raise ValueError("window failed")

    with pytest.raises(ValueError, match="window failed"):
        sliding_window(broken, np.zeros((16, 16, 16), np.float32), (16, 16, 16), divisor=8, cancel=threading.Event())


def test_progress_reaches_one() -> None:
    seen = []
    sliding_window(pointwise, np.random.rand(20, 20, 20).astype(np.float32), (16, 16, 16), divisor=8,
                   progress=lambda f, m: seen.append(f))
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)


def test_inference_window_is_the_largest_within_the_budget() -> None:
    from LAScarSegLib.infer.windows import inference_window

    # a 1.25 mm LA-centred crop fits one window: one pass, padded to the divisor
    assert inference_window((80, 104, 104), 8, 1_000_000, (48, 64, 64)) == (80, 104, 104)
    assert inference_window((77, 101, 99), 8, 1_000_000, (48, 64, 64)) == (80, 104, 104)
    # a full field of view is tiled: within the budget, divisible, never below the training patch
    win = inference_window((88, 320, 320), 8, 1_000_000, (48, 64, 64))
    assert np.prod(win) <= 1_000_000 and all(w % 8 == 0 for w in win)
    assert all(w >= p for w, p in zip(win, (48, 64, 64))) and win[0] == 88  # the short axis stays whole
    # a budget below the patch gives the patch (the network's training size), not something smaller
    assert inference_window((88, 320, 320), 8, 1000, (48, 64, 64)) == (48, 64, 64)
