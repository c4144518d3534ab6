"""The segment-and-quantify job: one pipeline for the CLI, the Slicer logic and the tests.

image -> model (sliding window over the whole field of view) -> LA mask (largest component) ->
scar mask (wall band where p_scar > p_normal) -> LA surface mesh -> projection of the scar onto
the surface -> burden, stages, warnings -> metrics against manual labels when given ->
`report.json` and the files of CONTRACTS section 5, written all or nothing.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import Cancelled, InputError
from .export import INTENDED_USE
from .image import Volume, label_onto_image_grid, read_image, read_label, write_volume
from .outputs import atomic_output_dir, write_json

ProgressFn = Callable[[float, str], None]

#: How much of the progress bar each stage takes (inference dominates).
_STAGES = {"load": (0.0, 0.05), "inference": (0.05, 0.80), "postprocess": (0.80, 0.84), "surface": (0.84, 0.88),
           "projection": (0.88, 0.92), "metrics": (0.92, 0.97), "write": (0.97, 1.0)}


@dataclass
class PipelineResult:
    image: Volume
    la: Volume
    wall: Volume
    scar: Volume
    scar_probability: Volume
    mesh: Any  # vtkPolyData in LPS mm with ScarProbability and Scar point arrays
    report: dict[str, Any]
    labels: dict[str, Volume] = field(default_factory=dict)  # manual labels on the image grid
    # Kept so that the Slicer logic can re-quantify an edited LA without running the network again:
    prediction: Any = None  # predict.Prediction (probabilities on the image grid)
    card: dict[str, Any] = field(default_factory=dict)  # the model card (wall band, name, version)
    # baselines.BaselineResult per method run (report["baselines"] holds their numbers), kept so
    # that `with_baseline_scar` can show a baseline's scar instead of the network's:
    baselines: dict[str, Any] = field(default_factory=dict)


class _Stages:
    """Times the stages, forwards progress, and checks the cancel event between and within them."""

    def __init__(self, progress: ProgressFn | None, cancel: threading.Event | None):
        self.progress, self.cancel = progress, cancel
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._done = 0.0  # the bar never runs back (the baselines re-enter the metrics stage)

    def _report(self, fraction: float, text: str) -> None:
        if self.progress:
            self._done = max(self._done, fraction)
            self.progress(self._done, text)

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled by the user")

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.check()
        lo, hi = _STAGES[name]
        self._report(lo, name)
        t = time.perf_counter()
        out = fn()
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 3)
        self._report(hi, name)
        return out

    def sub_progress(self, name: str) -> ProgressFn:
        lo, hi = _STAGES[name]
        return lambda f, msg: self._report(lo + (hi - lo) * f, f"{name}: {msg}")

    def total(self) -> float:
        return round(time.perf_counter() - self._t0, 3)


def _binary_label(label: Volume, what: str) -> Volume:
    from .datasets import binary_from_single_value

    return binary_from_single_value(label, what)


def _as_volume(x: str | os.PathLike | Volume, reader: Callable) -> Volume:
    return x if isinstance(x, Volume) else reader(x)


def segment(image: str | os.PathLike | Volume, *, la_label: str | os.PathLike | Volume | None = None,
            scar_label: str | os.PathLike | Volume | None = None, model: str | None = None, loaded=None,
            device: str = "auto", band_mm: Sequence[float] = (-1.0, 3.0), keep_largest: bool = True,
            baselines: Sequence[str] | None = None, baselines_on: str = "predicted",
            progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> PipelineResult:
    """Run the whole job in memory (nothing is written; see `write_outputs`).

    `baselines`: also run these classical baselines ([]: all), on the predicted LA and its surface,
    or with `baselines_on="manual"` on the manual LA label and its own surface (as the paper's
    LAM+Otsu / LAM+MGMM), which then cannot be shown in place of the network's scar.
    `loaded` reuses a model already loaded with `predict.load_for_inference` (batch jobs).
    Labels may be files or Volumes; on another grid they are resampled with a warning.
    """
    from .datasets import scar_and_wall_from_values
    from .predict import la_mask, load_for_inference, predict_localised, require_heads, scar_mask
    from .projection import la_surface_mesh, project_on_mesh, surface_burden_pct
    from .quantify import decaaf_stage, geometry_warnings, la_volume_ml, utah_stage, wall_burden_pct

    if baselines_on not in ("predicted", "manual"):
        raise InputError(f"baselines_on must be 'predicted' or 'manual', got {baselines_on!r}")
    band = (float(band_mm[0]), float(band_mm[1]))
    if not band[0] < band[1]:
        raise InputError(f"projection band must be (start, end) with start < end, got {band}")
    st = _Stages(progress, cancel)
    warnings: list[str] = []
    labels: dict[str, Volume] = {}

    def load():
        img = _as_volume(image, read_image)
        if isinstance(image, Volume):
            from .image import check_image_values

            check_image_values(img)
        for name, src in (("la", la_label), ("scar", scar_label)):
            if src is None:
                continue
            st.check()
            lab = _as_volume(src, read_label)
            lab, warn = label_onto_image_grid(lab, img.geometry, f"{name.upper()} label" if name == "la" else "scar label")
            if warn:
                warnings.append(warn)
            if name == "la":
                labels["la"] = _binary_label(lab, "LA")
            else:
                labels["scar"], wall = scar_and_wall_from_values(lab)
                if wall is not None:
                    labels["wall"] = wall
        st.check()
        mdl = loaded or load_for_inference(model, device)
        require_heads(mdl, {"la", "scar"})
        return img, mdl

    img, mdl = st.run("load", load)
    card = mdl.card
    wall_mm = float(card["wall_band_mm"])
    pred = st.run("inference", lambda: predict_localised(mdl, img, keep_largest=keep_largest,
                                                         progress=st.sub_progress("inference"), cancel=cancel))
    warnings += pred.warnings

    def post():
        la, removed = la_mask(pred.la, keep_largest)
        scar, wall = scar_mask(pred, la, wall_mm)
        prob = pred.p_scar.with_array(np.where(wall.array.astype(bool), pred.p_scar.array, 0).astype(np.float32))
        return la, removed, scar, wall, prob

    la, removed, scar, wall, scar_prob = st.run("postprocess", post)
    mesh = st.run("surface", lambda: la_surface_mesh(la))
    mesh = st.run("projection", lambda: project_on_mesh(mesh, scar, scar_prob, band_mm=band))
    la_ml = la_volume_ml(la)
    burden = surface_burden_pct(mesh, "Scar")
    warnings += geometry_warnings(img, la_ml, removed)

    report: dict[str, Any] = {
        "schema_version": 1,
        "input": {"path": img.source, "size": list(img.geometry.size), "spacing_mm": list(img.geometry.spacing),
                  "origin_mm": list(img.geometry.origin), "direction": list(img.geometry.direction)},
        "model": {"name": card["name"], "version": card["version"], "sha256": mdl.sha256},
        "device": pred.device,
        "intended_use": card.get("intended_use", INTENDED_USE),
        "warnings": warnings,
        "la": {"volume_ml": round(la_ml, 2), "components_removed": removed},
        "scar": {"burden_surface_pct": round(burden, 2), "burden_wall_pct": round(wall_burden_pct(scar, wall), 2),
                 "utah_stage": utah_stage(burden), "decaaf_stage": decaaf_stage(burden)},
    }

    def measure():
        out, notes = measure_against_labels(la, scar, wall, labels, wall_mm)
        warnings.extend(notes)
        return out

    metrics = st.run("metrics", measure)
    if metrics:
        report["metrics"] = metrics
    found: dict[str, Any] = {}
    if baselines is not None:  # [] asks for all of them (`--baselines` with no name)
        if baselines_on == "manual" and "la" not in labels:
            raise InputError("baselines on the manual LA need a manual LA label")
        on = (labels["la"], None) if baselines_on == "manual" else (la, mesh)  # None: run_baselines makes the mesh
        report["baselines"], found = st.run("metrics", lambda: _baselines(img, on[0], on[1], labels, baselines,
                                                                           wall_mm, band, baselines_on, st.check))
        if baselines_on == "manual":
            warnings.append("the baselines ran on the manual LA label and its own surface, not on the predicted LA")
    report["timings_s"] = dict(st.timings)
    return PipelineResult(img, la, wall, scar, scar_prob, mesh, report, labels, pred, dict(card), found)


#: `measure_against_labels` works in the box around the masks grown by this much: the scar
#: protocol looks 10 mm along normals from a surface blurred with sigma 4 mm (support 16 mm), so
#: the numbers are those of the whole grid, at a fraction of the time on a whole field of view.
METRICS_MARGIN_MM = 25.0


def measure_against_labels(la: Volume, scar: Volume, wall: Volume, labels: dict[str, Volume], wall_mm: float,
                           margin_mm: float | None = METRICS_MARGIN_MM) -> tuple[dict[str, Any], list[str]]:
    """report["metrics"] (LA metrics with a manual LA, scar protocol with a manual scar) and warnings.

    All volumes on one grid; computed in the box around the predicted and manual masks grown by
    `margin_mm` (None: on the whole grid).
    """
    from .distance import wall_band
    from .image import box_around, crop
    from .metrics import la_metrics, scar_surface_metrics

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
        out["scar"] = {k: m[k] for k in ("accuracy", "dice_scar", "dice_normal", "gdice")}
    return out, notes


def _baselines(img: Volume, la: Volume, mesh, labels: dict[str, Volume], methods: Sequence[str], wall_mm: float,
               band: tuple[float, float], on: str = "predicted",
               check: Callable[[], None] = lambda: None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(report["baselines"] entries, {method: BaselineResult}) of the baselines on `la` and `mesh`
    (`on`: which LA that is, "predicted" or "manual", recorded in each entry)."""
    from .baselines import baseline_surface_metrics, run_baselines

    results = run_baselines(img, la, methods=list(methods) or None, wall_band_mm=wall_mm, band_mm=band, mesh=mesh)
    out = {}
    for name, r in results.items():
        check()  # scoring takes about 1 s per method: the cancel event is looked at between them
        r.info["la"] = on  # which LA it ran on (report.json's baseline entries have fixed keys)
        entry: dict[str, Any] = {"burden_surface_pct": round(float(r.burden_surface_pct), 2)}
        if "scar" in labels:
            entry["metrics"] = baseline_surface_metrics(r, labels["scar"], labels.get("wall"), labels.get("la", la),
                                                         wall_band_mm=wall_mm)
        out[name] = entry
    return out, results


# ------------------------------------------------------------------- a baseline's scar as the result
#: The network's name where methods are named (report["baselines"], `with_baseline_scar`).
NETWORK_METHOD = "mtl-sesa"
_SCAR_METRIC_KEYS = ("accuracy", "dice_scar", "dice_normal", "gdice", "surface")


def is_network(method: str | None) -> bool:
    """Whether `method` names the network (None, "mtl-sesa", the module's "MTL-SESA")."""
    return method is None or str(method).strip().lower() == NETWORK_METHOD


def shown_method(result: PipelineResult) -> str:
    """The method whose scar `result` shows: a baseline's name after `with_baseline_scar`, else the network."""
    return str(result.report.get("scar", {}).get("method", NETWORK_METHOD))


def with_baselines(result: PipelineResult, methods: Sequence[str],
                   band_mm: Sequence[float] = (-1.0, 3.0)) -> PipelineResult:
    """A copy of `result` with the named baselines also run on its LA and surface (no network run).

    As `segment(..., baselines=methods)` would have: report["baselines"] entries (with metrics when
    a manual scar label was given) and the BaselineResults, merged with those already there.
    `band_mm` must be the band the result was projected with.
    """
    import copy
    import dataclasses

    band = (float(band_mm[0]), float(band_mm[1]))
    entries, found = _baselines(result.image, result.la, result.mesh, result.labels, methods,
                                float(result.card["wall_band_mm"]), band)
    report = copy.deepcopy(result.report)
    report["baselines"] = {**report.get("baselines", {}), **entries}
    return dataclasses.replace(result, report=report, baselines={**result.baselines, **found})


def with_baseline_scar(result: PipelineResult, method: str) -> PipelineResult:
    """`result` showing baseline `method`'s scar instead of the network's; `result` is not modified.

    What a user who chose a baseline sees must be that baseline, not the network (the LA stays the
    network's: baselines need an LA). Needs `result.baselines[method]` (`segment(...,
    baselines=[method])` or `with_baselines`). In the returned copy:
    - mesh: the `Scar` point array is the baseline's `point_scar`; `ScarProbability` stays the
      network's (a threshold has no probability; CONTRACTS section 5 needs both arrays);
    - scar: the baseline's voxel scar (`scar_mask`: for surface methods, IIR and mean + k SD,
      decided per mesh point, the wall-band voxels whose nearest mesh point is scar);
    - scar_probability, la, wall: the network's;
    - report["scar"]: "method" and the baseline's burden, wall burden and stages; the network's
      numbers move to report["baselines"]["mtl-sesa"] (with its scar metrics, if any);
      report["metrics"]["scar"]: the baseline's metrics from report["baselines"][method].
    """
    import copy
    import dataclasses

    from .projection import surface_burden_pct, with_point_arrays
    from .quantify import decaaf_stage, utah_stage, wall_burden_pct

    if not is_network(shown_method(result)):
        raise InputError(f"this result already shows the baseline {shown_method(result)!r}, not the network")
    r = result.baselines.get(method)
    if r is None or method not in result.report.get("baselines", {}):
        raise InputError(f"the baseline {method!r} was not run for this result (computed: "
                         f"{', '.join(result.baselines) or 'none'}): run it with baselines=[{method!r}]")
    if r.info.get("la") == "manual":
        raise InputError(f"the baseline {method!r} ran on the manual LA; only a baseline on the predicted LA can be "
                         "shown on its surface")
    mesh = with_point_arrays(result.mesh, {"Scar": np.asarray(r.point_scar).astype(np.uint8)})
    scar = r.scar_mask
    burden = surface_burden_pct(mesh, "Scar")

    report = copy.deepcopy(result.report)
    network = dict(report["scar"])
    if "scar" in report.get("metrics", {}):
        network["metrics"] = report["metrics"]["scar"]
    report["baselines"] = {NETWORK_METHOD: network, **report["baselines"]}
    report["scar"] = {"method": method, "burden_surface_pct": round(burden, 2),
                      "burden_wall_pct": round(wall_burden_pct(scar, result.wall), 2),
                      "utah_stage": utah_stage(burden), "decaaf_stage": decaaf_stage(burden)}
    scored = report["baselines"][method].get("metrics")
    if "scar" in report.get("metrics", {}) and scored is not None:
        report["metrics"]["scar"] = {k: scored[k] for k in _SCAR_METRIC_KEYS if k in scored}
    return dataclasses.replace(result, scar=scar, mesh=mesh, report=report, baselines=dict(result.baselines))


# --------------------------------------------------------------------------------------- outputs
def write_surface(mesh, path: Path) -> None:
    """Write the mesh as Slicer writes models: LPS coordinates, field data SPACE = "LPS".

    Binary VTK XML with LZ4 compression (VTK's XML readers, Slicer's included, read it; it writes
    several times faster than the default zlib). Only the VTK modules needed are imported, not the
    whole `vtk` package.
    """
    from vtkmodules.vtkCommonCore import vtkStringArray
    from vtkmodules.vtkCommonDataModel import vtkFieldData, vtkPolyData
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    out = vtkPolyData()
    out.ShallowCopy(mesh)  # points, cells and point data shared: nothing is copied
    field = vtkFieldData()  # field data of its own, so SPACE is not added to the caller's mesh
    field.DeepCopy(mesh.GetFieldData())
    out.SetFieldData(field)
    space = vtkStringArray()
    space.SetName("SPACE")
    space.InsertNextValue("LPS")
    out.GetFieldData().AddArray(space)
    w = vtkXMLPolyDataWriter()
    w.SetFileName(str(path))
    w.SetInputData(out)
    w.SetDataModeToBinary()
    w.SetCompressorTypeToLZ4()
    if not w.Write():
        raise OSError(f"{path}: could not write the surface")


def write_outputs(result: PipelineResult, out: str | os.PathLike, *, overwrite: bool = False,
                  progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> Path:
    """Write CONTRACTS section 5's files into `out`, all or nothing."""
    from .snapshot import render_snapshot

    t0 = time.perf_counter()
    with atomic_output_dir(out, overwrite) as stage:
        write_volume(result.la, stage / "la_mask.nii.gz")
        write_volume(result.scar_probability, stage / "scar_probability.nii.gz")
        write_volume(result.scar, stage / "scar_mask.nii.gz")
        write_surface(result.mesh, stage / "la_surface.vtp")
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled by the user")
        render_snapshot(result.mesh, result.report, stage / "snapshot.png")
        result.report["timings_s"]["write"] = round(time.perf_counter() - t0, 3)
        result.report["timings_s"]["total"] = round(sum(v for k, v in result.report["timings_s"].items()
                                                        if k != "total"), 3)
        write_json(result.report, stage / "report.json")
    if progress:
        progress(1.0, "done")
    return Path(out)


def run_segment(image: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                **kwargs: Any) -> PipelineResult:
    """`lascarseg segment`: check the output folder first, run the job, write the outputs."""
    from .outputs import check_output_dir

    check_output_dir(out, overwrite)
    result = segment(image, **kwargs)
    write_outputs(result, out, overwrite=overwrite)
    return result
