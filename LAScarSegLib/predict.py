"""Run a LAScarSeg model on an image: probabilities on the input grid, then the LA and scar masks.

The model card is authoritative (CONTRACTS section 3): spacing, window, divisor, normalisation and
wall band all come from it. Device "auto" takes CUDA when present and falls back to the CPU,
also when CUDA runs out of memory, and says so in the warnings.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from .distance import wall_band
from .errors import InputError, ModelError, NoLAFound
from .image import Volume, box_around, crop, grid_for_spacing, normalise, resample
from .inference import MAX_WINDOW_VOXELS, inference_window, sliding_window

ProgressFn = Callable[[float, str], None]


@dataclass
class LoadedModel:
    module: Any  # a frozen TorchScript module, its weights on `device`
    card: dict[str, Any]
    sha256: str
    device: str
    source: Any = None  # the unfrozen module on the CPU, to freeze again for another device

    @property
    def heads(self) -> set[str]:
        """The model's outputs: the card's architecture, else the names its `outputs` words give
        (CONTRACTS section 3: "la: ...", "scar: ...", or a dict keyed by output)."""
        heads = self.card.get("architecture", {}).get("heads")
        if heads:
            return set(heads)
        outputs = self.card.get("outputs", ())
        names = outputs.keys() if isinstance(outputs, dict) else (str(w).split(":", 1)[0] for w in outputs)
        return {n.strip() for n in names} & {"la", "scar"}

    def move_to(self, device: str) -> None:
        """Freeze again on `device`: a frozen module's weights are constants that .to() does not move."""
        from .network import freeze_for_inference

        if self.source is None:
            raise ModelError("this model was loaded without its unfrozen source; load it again for another device")
        self.module = freeze_for_inference(self.source, device=device)
        self.device = device


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but no CUDA device is available; use 'auto' or 'cpu'")
    if requested not in ("cpu", "cuda"):
        raise InputError(f"unknown device {requested!r}; use auto, cuda or cpu")
    return requested


def load_for_inference(model: str | None = None, device: str = "auto") -> LoadedModel:
    """Load a registered model (by name; default: the registry's default) or a .pt path, frozen."""
    from .export import load_model
    from .network import freeze_for_inference

    dev = pick_device(device)
    module, card, sha = load_model(model, map_location="cpu")
    check_inference_card(card, str(model or "the registered default model"))
    return LoadedModel(freeze_for_inference(module, device=dev), card, sha, dev, source=module)


def check_inference_card(card: dict[str, Any], where: str) -> None:
    """The card values inference takes (CONTRACTS section 3: the card is authoritative), present and
    sane; a `ModelError` naming each one that is not."""
    from .image import NORMALISATIONS

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


def require_heads(loaded: LoadedModel, needed: set[str]) -> None:
    missing = sorted(needed - loaded.heads)
    if missing:
        raise ModelError(f"model {loaded.card.get('name')} lacks the output(s) {missing} this job needs")


@dataclass
class Prediction:
    """Probabilities on the input grid (float32 0..1), each a Volume with the image's geometry."""

    la: Volume | None = None
    p_normal: Volume | None = None
    p_scar: Volume | None = None
    device: str = "cpu"
    warnings: list[str] = field(default_factory=list)


def predict(loaded: LoadedModel, image: Volume, *, progress: ProgressFn | None = None,
            cancel: threading.Event | None = None) -> Prediction:
    """Sliding-window inference over the whole field of view (no label is used to find the LA)."""
    import torch

    card = loaded.card
    grid = grid_for_spacing(image.geometry, card["spacing_mm"])
    img = normalise(resample(image, grid, interpolation="linear"), card["normalisation"])
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
        probs = sliding_window(loaded.module, img.array, window, int(card["divisor"]), device=device,
                               progress=on_gpu, cancel=cancel)
    except torch.cuda.OutOfMemoryError:
        if device == "cpu":
            raise
        torch.cuda.empty_cache()
        warnings.append("CUDA ran out of memory; the model ran on the CPU instead")
        loaded.move_to("cpu")
        device = "cpu"
        window = inference_window(img.array.shape, int(card["divisor"]), MAX_WINDOW_VOXELS[device], patch)
        retry = None if progress is None else (lambda f, text: progress(done[0] + (1.0 - done[0]) * f, text))
        probs = sliding_window(loaded.module, img.array, window, int(card["divisor"]), device="cpu",
                               progress=retry, cancel=cancel)
    out = Prediction(device=device, warnings=warnings)

    def back(arr: np.ndarray) -> Volume:
        v = resample(img.with_array(arr.astype(np.float32)), image.geometry, interpolation="linear")
        return v.with_array(np.clip(v.array, 0.0, 1.0).astype(np.float32))

    if "la" in probs:
        out.la = back(probs["la"][0])
    if "scar" in probs:
        out.p_normal, out.p_scar = back(probs["scar"][0]), back(probs["scar"][1])
    return out


#: `la_mask`: an LA under this volume (mL) is no LA found. A 1 mL sphere is 12 mm across, narrower
#: than a pulmonary-vein ostium and 20 times under the implausible-volume warning's 20 mL; on an
#: image without any atrium (a smooth ramp) the bundled model marks a stray 0.3 mL.
MIN_LA_ML = 1.0


def _largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 26-connected component of a boolean `mask`, and how many components it has."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask, n
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax()), n


def la_mask(prob: Volume, keep_largest: bool = True) -> tuple[Volume, int]:
    """LA mask = probability > 0.5; with `keep_largest` only the largest 26-connected component stays.

    Returns the mask and the number of components removed. A result under MIN_LA_ML is `NoLAFound`.
    """
    mask = prob.array > 0.5
    removed = 0
    if keep_largest and mask.any():
        mask, n = _largest_component(mask)
        removed = n - 1
    if not mask.any():
        raise NoLAFound(f"{prob.source or 'image'}: no left atrium found (no voxel with LA probability > 0.5)")
    ml = float(mask.sum()) * prob.geometry.voxel_volume_mm3 / 1000.0
    if ml < MIN_LA_ML:
        raise NoLAFound(f"{prob.source or 'image'}: no left atrium found (the largest candidate is {ml:.2f} mL, "
                        f"under {MIN_LA_ML:g} mL)")
    return prob.with_array(mask.astype(np.uint8)), removed


#: `component_warning`: candidates are components of at least this volume (mL); their certainty is
#: the share of voxels with LA probability over CONFIDENT_P; a candidate this much more certain than
#: the kept one is preferred. The margin is measured with the bundled model on LA-centred phantoms:
#: where the largest component was the LA, other candidates were at least 0.43 less certain; where
#: it was not (seed 30006), the LA was 0.17 more certain.
CANDIDATE_MIN_ML = 10.0
CONFIDENT_P = 0.9
CERTAINTY_MARGIN = 0.15
#: `_fine_pass`: margin of its box around the candidate (mm).
LOCALISE_MARGIN_MM = 20.0
#: `predict_localised`: fine passes at most. A box around a candidate joined to a neighbouring pool
#: can hold the LA apart from it, more certain, for a second pass to centre on.
MAX_FINE_PASSES = 3
#: When the largest component runs through the slab, the most certain other candidates (up to this
#: many) each get a fine pass, and the one where the model finds the most confident LA wins. On
#: full-field phantoms the coarse certainty alone picked a 47 mL piece (0.71) over the LA (0.63);
#: in their boxes the model found 22 mL against 132 mL over probability 0.9.
VERIFY_CANDIDATES = 3


@dataclass
class _Doubt:
    """Why the kept (largest) component is in doubt, and the candidate preferred to it if any
    (indices into the label arrays)."""

    labels: np.ndarray
    ml: np.ndarray
    certain: np.ndarray
    through: np.ndarray  # component present on the first and the last slice
    kept: int
    candidates: list[int]  # the others of CANDIDATE_MIN_ML or more not through the slab, most certain first
    best: int | None  # the candidate a fine pass centres on; None: the kept one runs through the slab, no other


def _through_slab(labels: np.ndarray, n: int) -> np.ndarray:
    """Which of the n components are present on both the first and the last slice.

    The LA is a closed chamber: in the 80 la2018 scans the manual LA reaches both end slices in
    none (one end in 8). What runs through the whole slab is a vessel or a ventricle cut by a
    whole-chest field of view, so it is no LA candidate however large or certain it is.
    """
    through = np.zeros(n, bool)
    common = np.intersect1d(labels[0], labels[-1])
    through[common[common > 0] - 1] = True
    return through


def _doubt(prob: Volume) -> _Doubt | None:
    """The largest component is in doubt when it runs through the whole slab, or when another
    candidate (not through the slab) is clearly more certain; the most certain such candidate is
    preferred. None when there is no doubt."""
    labels, n = ndimage.label(prob.array > 0.5, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return None
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    ml = counts * prob.geometry.voxel_volume_mm3 / 1000.0
    # share of each component's voxels over CONFIDENT_P (bincount: ndimage.mean took 1.5 s on 640x640x88)
    certain = np.bincount(labels.ravel(), weights=(prob.array > CONFIDENT_P).ravel(), minlength=n + 1)[1:] / counts
    through = _through_slab(labels, n)
    kept = int(ml.argmax())
    candidates = sorted((i for i in range(n) if i != kept and ml[i] >= CANDIDATE_MIN_ML and not through[i]),
                        key=lambda i: -certain[i])
    best = candidates[0] if candidates else None
    if through[kept] or (best is not None and certain[best] >= certain[kept] + CERTAINTY_MARGIN):
        return _Doubt(labels, ml, certain, through, kept, candidates, best)
    return None


def predict_localised(loaded: LoadedModel, image: Volume, *, keep_largest: bool = True,
                      progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> Prediction:
    """`predict` over the whole field of view, then, while the largest LA candidate is in doubt and only
    one component will be kept, a fine pass around the preferred candidate (at most MAX_FINE_PASSES),
    whose warnings say so; `component_warning`'s warning when the doubt remains. What the pipeline
    and `evaluate` run. Progress: the first pass to 0.8 of the way, fine passes the rest."""
    def part(lo: float, hi: float) -> ProgressFn | None:
        return None if progress is None else (lambda f, text: progress(lo + (hi - lo) * f, text))

    pred = predict(loaded, image, progress=part(0.0, 0.8), cancel=cancel)
    if not keep_largest:
        return pred
    for k in range(MAX_FINE_PASSES + 1):
        d = _doubt(pred.la)
        if d is None:
            return pred
        if d.best is None or k == MAX_FINE_PASSES:
            break
        step = 0.2 / MAX_FINE_PASSES
        round_progress = part(0.8 + k * step, 0.8 + (k + 1) * step)
        if d.through[d.kept]:
            pred = _verified_pass(loaded, image, pred, d, progress=round_progress, cancel=cancel)
        else:
            pred = _fine_pass(loaded, image, pred, d, progress=round_progress, cancel=cancel)[0]
    pred.warnings.append(_doubt_text(d))
    return pred


def component_warning(prob: Volume, keep_largest: bool = True) -> str | None:
    """A warning when the kept (largest) LA component runs through the whole slab, or is clearly less
    certain than another one (`_doubt`).

    On whole-chest images the model also marks other blood pools, which can be larger than the LA
    and, measured on full-field-of-view phantoms, as certain as it; but those pools ran through the
    whole slab there, and the LA never did. The largest component stays the result (CONTRACTS
    section 5); this says when to check it.
    """
    d = _doubt(prob) if keep_largest else None
    return None if d is None else _doubt_text(d)


def _doubt_text(d: _Doubt) -> str:
    kept = (f"the kept LA component ({d.ml[d.kept]:.0f} mL, {d.certain[d.kept]:.0%} of it with LA probability over "
            f"{CONFIDENT_P})")
    if d.through[d.kept] and d.best is None:  # most often an image cropped in z to the LA's own slices
        return (f"{kept} runs through the whole slab and there is no other candidate: expected when the image "
                "is cropped to the LA's own slices; otherwise check that it is the LA")
    if not d.through[d.kept]:
        why = f"is less certain than another of {d.ml[d.best]:.0f} mL ({d.certain[d.best]:.0%})"
    else:
        why = "runs through the whole slab, which the LA does not"
    return (f"{kept} {why}: the image may show other blood pools (a whole field of view); check the LA, "
            "or crop the image around it")


def _verified_pass(loaded: LoadedModel, image: Volume, pred: Prediction, d: _Doubt, *,
                   progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> Prediction:
    """A fine pass around each of the VERIFY_CANDIDATES most certain candidates; the one whose
    largest LA component holds the most voxels over CONFIDENT_P (mL) is kept, and says so."""
    ranked = d.candidates[:VERIFY_CANDIDATES]
    tries = []
    for j, i in enumerate(ranked):
        sub = None if progress is None else (lambda f, text, j=j: progress((j + f) / len(ranked), text))
        tries.append(_fine_pass(loaded, image, pred, replace(d, best=i), progress=sub, cancel=cancel))
    best = max(range(len(tries)), key=lambda j: tries[j][1])
    chosen = tries[best][0]
    if len(tries) > 1:
        chosen.warnings.append(
            f"coarse localisation: {len(tries)} candidates checked ({', '.join(f'{d.ml[i]:.0f}' for i in ranked)} mL); "
            f"in its box the model found the most confident LA around the {d.ml[ranked[best]]:.0f} mL one "
            f"({', '.join(f'{t[1]:.0f}' for t in tries)} mL over probability {CONFIDENT_P})")
    return chosen


def _fine_pass(loaded: LoadedModel, image: Volume, pred: Prediction, d: _Doubt, *,
               margin_mm: float = LOCALISE_MARGIN_MM, progress: ProgressFn | None = None,
               cancel: threading.Event | None = None) -> tuple[Prediction, float]:
    """The fine pass around candidate `d.best`, and the mL over CONFIDENT_P of the largest LA
    component it finds (in its box: labelling the whole grid costs 0.6 s on a whole chest)."""
    margin = [int(np.ceil(margin_mm / s)) for s in image.geometry.spacing_zyx]
    box = box_around(d.labels == d.best + 1, margin)
    fine = predict(loaded, crop(image, box), progress=progress, cancel=cancel)
    confident_ml = 0.0
    if fine.la is not None:
        largest, n = _largest_component(fine.la.array > 0.5)
        if n:
            confident = int((fine.la.array[largest] > CONFIDENT_P).sum())
            confident_ml = confident * image.geometry.voxel_volume_mm3 / 1000.0

    def whole(part: Volume | None) -> Volume | None:
        if part is None:
            return None
        arr = np.zeros(image.array.shape, np.float32)
        arr[box] = part.array
        return image.with_array(arr)

    why = "ran through the whole slab" if d.through[d.kept] else "was less certain than another"
    note = (f"coarse localisation: the largest LA candidate ({d.ml[d.kept]:.0f} mL) {why}, so the LA was "
            f"segmented again in a box {margin_mm:.0f} mm around another candidate ({d.ml[d.best]:.0f} mL)")
    return Prediction(la=whole(fine.la), p_normal=whole(fine.p_normal), p_scar=whole(fine.p_scar),
                      device=fine.device, warnings=[*pred.warnings, *fine.warnings, note]), confident_ml


def scar_mask(pred: Prediction, la: Volume, wall_band_mm: float) -> tuple[Volume, Volume]:
    """Scar = wall band of the predicted LA where p_scar > p_normal; returns (scar, wall band)."""
    if pred.p_scar is None or pred.p_normal is None:
        raise ModelError("the model has no scar output")
    band = wall_band(la, wall_band_mm)
    scar = band.array.astype(bool) & (pred.p_scar.array > pred.p_normal.array)
    return la.with_array(scar.astype(np.uint8)), band
