"""From the network's probabilities and an LA mask to the result and its report: one path.

`read_out` is the only function that builds a report (CONTRACTS section 5). `app.pipeline.segment`
calls it after the network, `requantify` after the user edited the LA (the network is not run
again), `app.evaluate` on phantoms and real cases, and the Slicer logic through both. Its steps:

scar mask (wall band where p_scar > p_normal) -> LA surface mesh -> projection of the scar onto it
-> volume, burdens, stages, warnings -> metrics against manual labels -> classical baselines ->
the method shown (the network's scar, or a baseline's on the network's LA).

Torch-free: the Slicer application's process re-quantifies with it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..core.distance import wall_band
from ..core.errors import InputError
from ..core.image import Volume, box_around, crop
from ..core.progress import Stages
from ..infer.masks import Prediction, scar_mask
from ..model.card import INTENDED_USE
from .baselines import BaselineResult, baseline_surface_metrics, method_names, run_baselines
from .metrics import la_metrics, scar_surface_metrics
from .projection import PRODUCT_BAND_MM, la_surface_mesh, project_on_mesh, surface_burden_pct, with_point_arrays
from .report import SCAR_METRIC_KEYS, LAReadout, ModelInfo, Report, ScarReadout, input_info
from .stages import decaaf_stage, geometry_warnings, la_volume_ml, utah_stage, wall_burden_pct

#: The network's name wherever methods are named (report["baselines"], the Slicer method choice).
NETWORK_METHOD = "mtl-sesa"
#: Shares of the progress bar when `read_out` runs on its own (the pipeline passes its own `Stages`).
READOUT_SHARES = {"postprocess": (0.0, 0.1), "surface": (0.1, 0.3), "projection": (0.3, 0.5), "metrics": (0.5, 1.0)}
#: `measure_against_labels` works in the box around the masks grown by this much: the scar
#: protocol looks 10 mm along normals from a surface blurred with sigma 4 mm (support 16 mm), so
#: the numbers are those of the whole grid, at a fraction of the time on a whole field of view.
METRICS_MARGIN_MM = 25.0
REQUANTIFIED_NOTE = "re-quantified on an edited LA segment (the network was not run again)"


@dataclass
class PipelineResult:
    """One run: the image, the masks on its grid, the LA surface, the report, and what re-quantifying
    needs (the network's probabilities and its card)."""

    image: Volume
    la: Volume
    wall: Volume
    scar: Volume
    scar_probability: Volume
    mesh: Any  # vtkPolyData in LPS mm with ScarProbability and Scar point arrays
    report: Report
    labels: dict[str, Volume] = field(default_factory=dict)  # manual labels on the image grid
    prediction: Prediction | None = None  # probabilities on the image grid, for re-quantifying
    card: dict[str, Any] = field(default_factory=dict)  # the model card (wall band, name, version)
    # BaselineResult per method run (report.baselines holds their numbers)
    baselines: dict[str, BaselineResult] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- methods
def is_network(method: str | None) -> bool:
    """Whether `method` names the network (None, "mtl-sesa", the module's "MTL-SESA")."""
    return method is None or str(method).strip().lower() == NETWORK_METHOD


def shown_method(result: PipelineResult) -> str:
    """The method whose scar `result` shows: a baseline's name, else the network."""
    return result.report.scar.method or NETWORK_METHOD


def check_method(method: str | None, baselines_on: str = "predicted") -> None:
    """Refuse an unknown method, or a baseline shown on the manual LA, before anything runs."""
    if is_network(method):
        return
    if method not in method_names():
        raise InputError(f"unknown method {method!r}; known: {NETWORK_METHOD}, {', '.join(method_names())}")
    if baselines_on == "manual":
        raise InputError(f"the baseline {method!r} would run on the manual LA; only a baseline on the predicted LA "
                         "can be shown on its surface")


def baselines_to_run(method: str | None, baselines: Sequence[str] | None) -> list[str] | None:
    """The baselines to run: those asked for ([]: all, None: none) and the method shown if a baseline."""
    if is_network(method):
        return None if baselines is None else list(baselines)
    asked = method_names() if baselines is not None and not list(baselines) else list(baselines or [])
    return list(dict.fromkeys([*asked, str(method)]))


# ------------------------------------------------------------------------------ the one path
def read_out(image: Volume, prediction: Prediction, la: Volume, *, card: dict[str, Any], model: ModelInfo,
             labels: dict[str, Volume] | None = None, band_mm: Sequence[float] = PRODUCT_BAND_MM,
             method: str | None = NETWORK_METHOD, baselines: Sequence[str] | None = None,
             baselines_on: str = "predicted", components_removed: int = 0, warnings: Sequence[str] = (),
             stages: Stages | None = None) -> PipelineResult:
    """The result and report of an LA mask on `image` with the network's `prediction`.

    `labels` (manual la, scar, wall on the image grid) add metrics; `baselines` runs those classical
    methods ([]: all) on the LA and its surface, or with `baselines_on="manual"` on the manual LA;
    `method` chooses whose scar the result shows (a baseline's needs the predicted LA).
    `warnings` come first in the report (the network's), then those of this read-out.
    """
    labels = dict(labels or {})
    check_method(method, baselines_on)
    if baselines_on not in ("predicted", "manual"):
        raise InputError(f"baselines_on must be 'predicted' or 'manual', got {baselines_on!r}")
    band = _band(band_mm)
    st = stages if stages is not None else Stages(READOUT_SHARES)
    wall_mm = float(card["wall_band_mm"])
    scar, wall, prob = st.run("postprocess", lambda: st.step("scar mask (wall band)",
                                                             lambda: scar_readout(prediction, la, wall_mm)))
    mesh = st.run("surface", lambda: la_surface_mesh(la))
    mesh = st.run("projection", lambda: project_on_mesh(mesh, scar, prob, band_mm=band))
    la_ml, burden, notes = st.step("quantify", lambda: _burdens_and_warnings(image, la, scar, wall, mesh,
                                                                            components_removed))
    report = Report(input=input_info(image), model=model, device=prediction.device,
                    intended_use=card.get("intended_use", INTENDED_USE), warnings=[*warnings, *notes],
                    la=LAReadout(round(la_ml, 2), int(components_removed), prediction.localisation),
                    scar=ScarReadout(round(burden, 2), round(wall_burden_pct(scar, wall), 2), utah_stage(burden),
                                     decaaf_stage(burden)))
    report.metrics, metric_notes = st.run("metrics", lambda: measure_against_labels(la, scar, wall, labels, wall_mm))
    report.warnings += metric_notes
    found: dict[str, BaselineResult] = {}
    runs = baselines_to_run(method, baselines)
    if runs is not None:
        if baselines_on == "manual" and "la" not in labels:
            raise InputError("baselines on the manual LA need a manual LA label")
        on_la, on_mesh = (labels["la"], None) if baselines_on == "manual" else (la, mesh)  # None: made there
        report.baselines, found = st.run("metrics", lambda: baseline_entries(
            image, on_la, on_mesh, labels, runs, wall_mm, band, baselines_on, st.check))
        if baselines_on == "manual":
            report.warnings.append("the baselines ran on the manual LA label and its own surface, not on the "
                                   "predicted LA")
    report.warnings = list(dict.fromkeys(report.warnings))
    report.timings_s = dict(st.timings)
    result = PipelineResult(image, la, wall, scar, prob, mesh, report, labels, prediction, dict(card), found)
    return result if is_network(method) else with_baseline_scar(result, str(method))


def requantify(result: PipelineResult, la: Volume, band_mm: Sequence[float] = PRODUCT_BAND_MM) -> PipelineResult:
    """`result` read out again on another LA mask (an edited LA segment), with the same network
    probabilities: no network run. The method shown stays the one `result` shows."""
    pred = result.prediction
    if pred is None or pred.p_scar is None or not result.card:
        raise InputError("this result holds no network probabilities: run the segmentation again to re-quantify")
    if not la.geometry.same_grid(result.image.geometry):
        raise InputError(f"the edited LA is not on the image grid ({la.geometry.describe()})")
    la = la.with_array((la.array != 0).astype(np.uint8))
    if not la.array.any():
        raise InputError("the edited LA is empty: nothing to quantify")
    old = result.report
    stale = set(geometry_warnings(result.image, old.la.volume_ml, old.la.components_removed))
    new = read_out(result.image, pred, la, card=result.card, model=old.model, labels=result.labels, band_mm=band_mm,
                   method=shown_method(result), warnings=[w for w in old.warnings if w not in stale])
    new.report.warnings.append(REQUANTIFIED_NOTE)
    new.report.timings_s = {**old.timings_s, **new.report.timings_s}
    return new


# ---------------------------------------------------------------------------------- its steps
def _band(band_mm: Sequence[float]) -> tuple[float, float]:
    band = (float(band_mm[0]), float(band_mm[1]))
    if not band[0] < band[1]:
        raise InputError(f"projection band must be (start, end) with start < end, got {band}")
    return band


def scar_readout(prediction: Prediction, la: Volume, wall_mm: float) -> tuple[Volume, Volume, Volume]:
    """(scar mask, wall band, p_scar inside the wall band and 0 elsewhere) of an LA."""
    scar, wall = scar_mask(prediction, la, wall_mm)
    prob = prediction.p_scar.with_array(np.where(wall.array.astype(bool), prediction.p_scar.array, 0)
                                        .astype(np.float32))
    return scar, wall, prob


def _burdens_and_warnings(image: Volume, la: Volume, scar: Volume, wall: Volume, mesh: Any,
                          components_removed: int) -> tuple[float, float, list[str]]:
    la_ml = la_volume_ml(la)
    return la_ml, surface_burden_pct(mesh, "Scar"), geometry_warnings(image, la_ml, components_removed)


def scar_burdens(la: Volume, scar: Volume, wall: Volume, band_mm: Sequence[float] = PRODUCT_BAND_MM) -> dict[str, float]:
    """report.scar's two burdens of any LA and scar mask (a truth, say), measured as `read_out`
    measures the prediction: % of the LA's surface whose band meets scar, % of `wall` that is scar."""
    scar_as_prob = scar.with_array((scar.array != 0).astype(np.float32))  # the Scar array needs no probability
    mesh = project_on_mesh(la_surface_mesh(la), scar, scar_as_prob, band_mm=_band(band_mm))
    return {"burden_surface_pct": round(surface_burden_pct(mesh), 2),
            "burden_wall_pct": round(wall_burden_pct(scar, wall), 2)}


def measure_against_labels(la: Volume, scar: Volume, wall: Volume, labels: dict[str, Volume], wall_mm: float,
                           margin_mm: float | None = METRICS_MARGIN_MM) -> tuple[dict[str, Any], list[str]]:
    """report.metrics (LA metrics with a manual LA, scar protocol with a manual scar) and warnings.

    All volumes on one grid; computed in the box around the predicted and manual masks grown by
    `margin_mm` (None: on the whole grid).
    """
    if margin_mm is not None:
        union = la.array != 0
        for v in labels.values():
            union = union | (v.array != 0)
        box = box_around(union, [int(np.ceil(margin_mm / sp)) for sp in la.geometry.spacing_zyx])
        la, scar, wall = crop(la, box), crop(scar, box), crop(wall, box)
        labels = {k: crop(v, box) for k, v in labels.items()}
    out: dict[str, Any] = {}
    notes: list[str] = []
    if "la" in labels:
        out["la"] = la_metrics(la, labels["la"])
    if "scar" in labels:
        ref_la = labels.get("la")
        if ref_la is None:
            ref_la = la
            notes.append("no manual LA label: the scar metrics use the predicted LA's surface")
        ref_wall = labels["wall"] if "wall" in labels else wall_band(ref_la, wall_mm)
        m = scar_surface_metrics(scar, labels["scar"], ref_wall, ref_la, pred_wall=wall)
        out["scar"] = {k: m[k] for k in SCAR_METRIC_KEYS}
    return out, notes


def baseline_entries(img: Volume, la: Volume, mesh: Any, labels: dict[str, Volume], methods: Sequence[str],
                     wall_mm: float, band: tuple[float, float], on: str = "predicted",
                     check: Callable[[], None] = lambda: None) -> tuple[dict[str, Any], dict[str, BaselineResult]]:
    """(report.baselines entries, {method: BaselineResult}) of the baselines on `la` and `mesh`
    (`on`: which LA that is, "predicted" or "manual", recorded in each result's info)."""
    results = run_baselines(img, la, methods=list(methods) or None, wall_band_mm=wall_mm, band_mm=band, mesh=mesh)
    out = {}
    for name, r in results.items():
        check()  # scoring takes about 1 s per method: the cancel event is looked at between them
        r.info["la"] = on
        entry: dict[str, Any] = {"burden_surface_pct": round(float(r.burden_surface_pct), 2)}
        if "scar" in labels:
            entry["metrics"] = baseline_surface_metrics(r, labels["scar"], labels.get("wall"), labels.get("la", la),
                                                         wall_band_mm=wall_mm)
        out[name] = entry
    return out, results


def with_baseline_scar(result: PipelineResult, method: str) -> PipelineResult:
    """`result` showing baseline `method`'s scar instead of the network's; `result` is not modified.

    The last step of `read_out` when a baseline is the method (the LA stays the network's:
    baselines need an LA). Needs `result.baselines[method]`. In the returned copy:
    - mesh: the `Scar` point array is the baseline's `point_scar`; `ScarProbability` stays the
      network's (a threshold has no probability; CONTRACTS section 5 needs both arrays);
    - scar: the baseline's voxel scar (`scar_mask`: for surface methods, IIR and mean + k SD,
      decided per mesh point, the wall-band voxels whose nearest mesh point is scar);
    - scar_probability, la, wall: the network's;
    - report.scar: the method and the baseline's burden, wall burden and stages; the network's
      numbers move to report.baselines["mtl-sesa"] (with its scar metrics, if any);
      report.metrics["scar"]: the baseline's metrics from report.baselines[method].
    """
    if not is_network(shown_method(result)):
        raise InputError(f"this result already shows the baseline {shown_method(result)!r}, not the network")
    r = result.baselines.get(method)
    if r is None or method not in (result.report.baselines or {}):
        raise InputError(f"the baseline {method!r} was not run for this result (computed: "
                         f"{', '.join(result.baselines) or 'none'}): run it with baselines=[{method!r}]")
    if r.info.get("la") == "manual":
        raise InputError(f"the baseline {method!r} ran on the manual LA; only a baseline on the predicted LA can be "
                         "shown on its surface")
    mesh = with_point_arrays(result.mesh, {"Scar": np.asarray(r.point_scar).astype(np.uint8)})
    scar = r.scar_mask
    burden = surface_burden_pct(mesh, "Scar")
    report = copy.deepcopy(result.report)
    network = report.scar.to_json()
    if "scar" in report.metrics:
        network["metrics"] = report.metrics["scar"]
    report.baselines = {NETWORK_METHOD: network, **report.baselines}
    report.scar = ScarReadout(round(burden, 2), round(wall_burden_pct(scar, result.wall), 2), utah_stage(burden),
                              decaaf_stage(burden), method=method)
    scored = report.baselines[method].get("metrics")
    if "scar" in report.metrics and scored is not None:
        report.metrics["scar"] = {k: scored[k] for k in (*SCAR_METRIC_KEYS, "surface") if k in scored}
    return dataclasses.replace(result, scar=scar, mesh=mesh, report=report, baselines=dict(result.baselines))
