"""Finding the LA in a field of view that also shows other blood pools: the doubt rules on the first
pass, and fine passes around the preferred candidates."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from ..core.errors import InputError
from ..core.image import Volume, box_around, crop
from ..core.progress import ProgressFn, Stages, part
from ..model.loading import LoadedModel
from .masks import PLACE_A_POINT, LASeed, Localisation, Prediction, component_at, largest_component
from .predict import predict

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
#: With a point inside the LA, the network runs in a box this far around it (mm): any LA with its
#: veins fits in it when the point is inside.
SEED_BOX_MM = 75.0
#: Under this confidence an automatic localisation is doubtful (`localisation_confidence`).
DOUBTFUL_BELOW = 0.5


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


def _components(prob: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, list[int]] | None:
    """The LA candidates of a probability map: (labels, mL, certainty, through the slab, the kept
    (largest) one, the others of CANDIDATE_MIN_ML or more not through the slab, most certain first);
    certainty is the share of a component's voxels over CONFIDENT_P. None when there is none."""
    labels, n = ndimage.label(prob.array > 0.5, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return None
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    ml = counts * prob.geometry.voxel_volume_mm3 / 1000.0
    # bincount: ndimage.mean took 1.5 s on 640x640x88
    certain = np.bincount(labels.ravel(), weights=(prob.array > CONFIDENT_P).ravel(), minlength=n + 1)[1:] / counts
    through = _through_slab(labels, n)
    kept = int(ml.argmax())
    others = sorted((i for i in range(n) if i != kept and ml[i] >= CANDIDATE_MIN_ML and not through[i]),
                    key=lambda i: -certain[i])
    return labels, ml, certain, through, kept, others


def _doubt(prob: Volume) -> _Doubt | None:
    """The largest component is in doubt when it runs through the whole slab, or when another
    candidate (not through the slab) is clearly more certain; the most certain such candidate is
    preferred. None when there is no doubt."""
    found = _components(prob)
    if found is None:
        return None
    labels, ml, certain, through, kept, candidates = found
    best = candidates[0] if candidates else None
    if through[kept] or (best is not None and certain[best] >= certain[kept] + CERTAINTY_MARGIN):
        return _Doubt(labels, ml, certain, through, kept, candidates, best)
    return None


def predict_localised(loaded: LoadedModel, image: Volume, *, keep_largest: bool = True, seed: LASeed | None = None,
                      localiser: LoadedModel | None = None, progress: ProgressFn | None = None,
                      cancel: threading.Event | None = None, steps: Stages | None = None) -> Prediction:
    """Find the LA and segment it: what the pipeline and `evaluate` run.

    With a `seed` (a point inside the LA) the network runs in a box around it and the LA kept is the
    structure at the point (`masks.la_mask`). Without, `predict` runs over the whole field of view,
    then, while the largest LA candidate is in doubt and only one component will be kept, a fine pass
    around the preferred candidate (at most MAX_FINE_PASSES), whose warnings say so. The result's
    `localisation` says how sure it is; a doubtful one carries a warning saying what to do.
    Progress: the first pass to 0.8 of the way, fine passes the rest."""
    if seed is not None:
        return _seeded(loaded, image, seed, progress=progress, cancel=cancel, steps=steps)
    box, rival = (None, 0.0) if localiser is None or not keep_largest else \
        _coarse_box(localiser, image, progress, cancel, steps)
    if box is not None:  # the coarse network found the LA: the fine one runs in its box
        fine = predict(loaded, crop(image, box), progress=part(progress, 0.2, 1.0), cancel=cancel, steps=steps)
        pred = _pasted(image, box, fine, list(fine.warnings))
    else:
        pred = predict(loaded, image, progress=part(progress, 0.0, 0.8), cancel=cancel, steps=steps)
    if not keep_largest:
        return pred
    d = None
    for k in range(MAX_FINE_PASSES + 1):
        d = _doubt(pred.la)
        if d is None or d.best is None or k == MAX_FINE_PASSES:
            break
        step = 0.2 / MAX_FINE_PASSES
        round_progress = part(progress, 0.8 + k * step, 0.8 + (k + 1) * step)
        if d.through[d.kept]:
            pred = _verified_pass(loaded, image, pred, d, progress=round_progress, cancel=cancel, steps=steps)
        else:
            pred = _fine_pass(loaded, image, pred, d, progress=round_progress, cancel=cancel, steps=steps)[0]
    if d is not None:
        pred.warnings.append(_doubt_text(d))
    # a lone component through the slab is an image cropped to the LA's slices, not a doubt about which is the LA
    pred.localisation = localisation_confidence(pred.la, in_doubt=d is not None and d.best is not None,
                                                coarse_rival=rival)
    if pred.localisation.doubtful:
        pred.warnings.append(f"the LA found automatically is doubtful (localisation confidence "
                             f"{pred.localisation.confidence:.2f}): check it, or {PLACE_A_POINT}")
    return pred


#: The box the fine network runs in reaches this far beyond the coarse network's LA (mm).
COARSE_MARGIN_MM = 25.0


def _coarse_box(localiser: LoadedModel, image: Volume, progress: ProgressFn | None, cancel: threading.Event | None,
                steps: Stages | None) -> tuple[tuple[slice, slice, slice] | None, float]:
    """Where the coarse whole-scan network puts the LA: the box COARSE_MARGIN_MM around its most
    confident candidate (mL over CONFIDENT_P), or None when it finds none of CANDIDATE_MIN_ML; and
    the runner-up's confident mL as a share of the winner's (0: no rival, 1: as confident)."""
    coarse = predict(localiser, image, progress=part(progress, 0.0, 0.2), cancel=cancel, steps=steps)
    if coarse.la is None:
        return None, 0.0
    labels, n = ndimage.label(coarse.la.array > 0.5, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return None, 0.0
    voxel_ml = image.geometry.voxel_volume_mm3 / 1000.0
    ml = np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_ml
    confident = np.bincount(labels.ravel(), weights=(coarse.la.array > CONFIDENT_P).ravel(), minlength=n + 1)[1:]
    score = np.where(ml >= CANDIDATE_MIN_ML, confident, -1.0)
    order = np.argsort(-score)
    best = int(order[0])
    if ml[best] < CANDIDATE_MIN_ML:
        return None, 0.0
    rival = float(max(score[order[1]], 0.0) / max(score[best], 1e-9)) if n > 1 else 0.0
    margin = [int(np.ceil(COARSE_MARGIN_MM / s)) for s in image.geometry.spacing_zyx]
    return box_around(labels == best + 1, margin), rival


def localisation_confidence(prob: Volume | None, in_doubt: bool = False, coarse_rival: float = 0.0) -> Localisation:
    """How sure the automatic localisation is, from the final LA probabilities: the certainty of the
    kept (largest) component (its share of voxels over CONFIDENT_P), lowered up to half when another
    candidate is nearly as certain, halved when it runs through the whole slab while another
    candidate exists (alone, it is an image cropped to the LA's slices) and when its volume is
    implausible (under 20 or over 400 mL). With a coarse localiser, its runner-up (`coarse_rival`: its
    confident volume as a share of the winner's) lowers it up to half too. Doubtful under
    DOUBTFUL_BELOW, when another candidate is within CERTAINTY_MARGIN of the kept one's certainty,
    when the coarse runner-up has over half the winner's confident volume, or while `in_doubt`."""
    found = None if prob is None else _components(prob)
    if found is None:
        return Localisation("automatic", 0.0, True)
    _labels, ml, certain, through, kept, others = found
    rivals = [certain[i] for i in others]
    rival = max(rivals, default=0.0)
    confidence = float(certain[kept]) * (0.5 + 0.5 * float(np.clip((certain[kept] - rival) / CERTAINTY_MARGIN, 0, 1)))
    if through[kept] and rivals:
        confidence *= 0.5
    if not 20.0 <= ml[kept] <= 400.0:
        confidence *= 0.5
    confidence *= 1.0 - 0.5 * float(np.clip(coarse_rival, 0.0, 1.0))
    close_rival = rival >= certain[kept] - CERTAINTY_MARGIN or coarse_rival > 0.5  # another about as sure
    return Localisation("automatic", confidence, bool(in_doubt or close_rival or confidence < DOUBTFUL_BELOW))


def _seeded(loaded: LoadedModel, image: Volume, seed: LASeed, *, progress: ProgressFn | None,
            cancel: threading.Event | None, steps: Stages | None) -> Prediction:
    """The network in a box SEED_BOX_MM around the point inside the LA; elsewhere probability 0."""
    point = seed.lps(image.geometry)  # an InputError for a point outside the image
    centre = image.geometry.physical_to_index(point[None, :])[0][::-1]  # z, y, x
    reach = [SEED_BOX_MM / s for s in image.geometry.spacing_zyx]
    box = tuple(slice(max(0, int(np.floor(c - r))), min(n, int(np.ceil(c + r)) + 1))
                for c, r, n in zip(centre, reach, image.array.shape))
    fine = predict(loaded, crop(image, box), progress=progress, cancel=cancel, steps=steps)
    out = _pasted(image, box, fine, list(fine.warnings))
    out.seed = seed
    confidence = 0.0
    if out.la is not None:
        try:  # the component la_mask will keep at the point; none is la_mask's error, raised there
            at, _removed = component_at(out.la.array > 0.5, out.la, seed)
            confidence = float((out.la.array[at] > CONFIDENT_P).mean())
        except InputError:
            pass
    out.localisation = Localisation("seed", confidence, False)
    return out


def _pasted(image: Volume, box: tuple[slice, slice, slice], fine: Prediction, warnings: list[str]) -> Prediction:
    """A prediction made in `box` of `image`, on the whole image grid (0 outside the box)."""
    def whole(part: Volume | None) -> Volume | None:
        if part is None:
            return None
        arr = np.zeros(image.array.shape, np.float32)
        arr[box] = part.array
        return image.with_array(arr)

    return Prediction(la=whole(fine.la), p_normal=whole(fine.p_normal), p_scar=whole(fine.p_scar),
                      device=fine.device, warnings=warnings)


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
                   progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                   steps: Stages | None = None) -> Prediction:
    """A fine pass around each of the VERIFY_CANDIDATES most certain candidates; the one whose
    largest LA component holds the most voxels over CONFIDENT_P (mL) is kept, and says so."""
    ranked = d.candidates[:VERIFY_CANDIDATES]
    tries = []
    for j, i in enumerate(ranked):
        sub = None if progress is None else (lambda f, text, j=j: progress((j + f) / len(ranked), text))
        tries.append(_fine_pass(loaded, image, pred, replace(d, best=i), progress=sub, cancel=cancel, steps=steps))
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
               cancel: threading.Event | None = None, steps: Stages | None = None) -> tuple[Prediction, float]:
    """The fine pass around candidate `d.best`, and the mL over CONFIDENT_P of the largest LA
    component it finds (in its box: labelling the whole grid costs 0.6 s on a whole chest)."""
    margin = [int(np.ceil(margin_mm / s)) for s in image.geometry.spacing_zyx]
    box = box_around(d.labels == d.best + 1, margin)
    fine = predict(loaded, crop(image, box), progress=progress, cancel=cancel, steps=steps)
    confident_ml = 0.0
    if fine.la is not None:
        largest, n = largest_component(fine.la.array > 0.5)
        if n:
            confident = int((fine.la.array[largest] > CONFIDENT_P).sum())
            confident_ml = confident * image.geometry.voxel_volume_mm3 / 1000.0

    why = "ran through the whole slab" if d.through[d.kept] else "was less certain than another"
    note = (f"coarse localisation: the largest LA candidate ({d.ml[d.kept]:.0f} mL) {why}, so the LA was "
            f"segmented again in a box {margin_mm:.0f} mm around another candidate ({d.ml[d.best]:.0f} mL)")
    return _pasted(image, box, fine, [*pred.warnings, *fine.warnings, note]), confident_ml
