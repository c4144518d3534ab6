"""The segment-and-quantify job: one pipeline for the CLI, batch, the worker and the tests.

load the image, labels and model -> the network over the whole field of view, with fine passes
where the LA is in doubt (`infer.localise`) -> the LA mask -> `quantify.readout.read_out` (scar,
surface, projection, burdens, stages, metrics, baselines, the method shown, the report) ->
the files of CONTRACTS section 5, written all or nothing (`write_outputs`).

Stages are timed by `core.progress.Stages`; `on_stage(name, wall_s, cpu_s)` hears each stage and
each named step inside one (how `lascarseg bench pipeline` times a run).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from vtkmodules.vtkCommonCore import vtkStringArray
from vtkmodules.vtkCommonDataModel import vtkFieldData, vtkPolyData
from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

from ..core.datasets import binary_from_single_value, scar_and_wall_from_values
from ..core.errors import Cancelled, InputError
from ..core.image import Volume, check_image_values, label_onto_image_grid, read_image, read_label, write_volume
from ..core.outputs import OutputTarget, atomic_output_dir, check_output_dir, write_json
from ..core.progress import ProgressFn, StageHook, Stages
from ..infer.localise import predict_localised
from ..infer.masks import LASeed, la_mask
from ..model.loading import REGISTERED, LoadedModel, load_for_inference, load_localiser, require_heads
from ..quantify.readout import NETWORK_METHOD, PipelineResult, check_method, read_out
from ..quantify.report import ModelInfo
from ..quantify.snapshot import render_snapshot

#: How much of the progress bar each stage takes (inference dominates).
STAGE_SHARES = {"load": (0.0, 0.05), "inference": (0.05, 0.80), "postprocess": (0.80, 0.84),
                "surface": (0.84, 0.88), "projection": (0.88, 0.92), "metrics": (0.92, 0.97), "write": (0.97, 1.0)}


def _as_volume(x: str | os.PathLike | Volume, reader: Callable) -> Volume:
    return x if isinstance(x, Volume) else reader(x)


def load_inputs(image: str | os.PathLike | Volume, la_label: str | os.PathLike | Volume | None,
                scar_label: str | os.PathLike | Volume | None, st: Stages) -> tuple[Volume, dict[str, Volume], list[str]]:
    """The image, the manual labels on its grid ({"la", "scar", "wall"}) and the warnings of putting
    them there (a label on another grid is resampled; CONTRACTS section 2)."""
    img = st.step("read image", lambda: _as_volume(image, read_image))
    if isinstance(image, Volume):
        check_image_values(img)
    labels: dict[str, Volume] = {}
    warnings: list[str] = list(img.notes)
    for name, src in (("la", la_label), ("scar", scar_label)):
        if src is None:
            continue
        st.check()
        lab = st.step("read labels", lambda src=src: _as_volume(src, read_label))
        warnings.extend(lab.notes)
        lab, warn = label_onto_image_grid(lab, img.geometry, "LA label" if name == "la" else "scar label")
        if warn:
            warnings.append(warn)
        if name == "la":
            labels["la"] = binary_from_single_value(lab, "LA")
            if not labels["la"].array.any():  # Dice 0 and no distances would look like a failed segmentation
                raise InputError(f"{lab.source or 'LA label'}: the LA label is empty (no LA voxel); pass the case's "
                                 "LA label, or none")
        else:
            labels["scar"], wall = scar_and_wall_from_values(lab)
            if wall is not None:
                labels["wall"] = wall
    return img, labels, warnings


def segment(image: str | os.PathLike | Volume, *, la_label: str | os.PathLike | Volume | None = None,
            scar_label: str | os.PathLike | Volume | None = None, model: str | None = None,
            loaded: LoadedModel | None = None, localiser: str | LoadedModel | None = REGISTERED, device: str = "auto",
            band_mm: Sequence[float] = (-1.0, 3.0),
            keep_largest: bool = True, la_seed: LASeed | None = None, method: str = NETWORK_METHOD,
            baselines: Sequence[str] | None = None,
            baselines_on: str = "predicted", progress: ProgressFn | None = None,
            cancel: threading.Event | None = None, on_stage: StageHook | None = None) -> PipelineResult:
    """Run the whole job in memory (nothing is written; see `write_outputs`).

    `method`: whose scar the result shows, the network's ("mtl-sesa") or a baseline's on the
    network's LA (`quantify.baselines.method_names()`). `baselines`: also run these classical
    baselines ([]: all), on the predicted LA and its surface, or with `baselines_on="manual"` on the
    manual LA label and its own surface (as the paper's LAM+Otsu / LAM+MGMM).
    `la_seed`: a point inside the LA (`infer.masks.LASeed`, RAS mm or voxel index): the network runs
    around it and the LA kept is the structure at it; a point outside the image or on no LA-like
    structure is an `InputError`. Without it the LA is found automatically (`infer.localise`).
    `localiser`: the coarse whole-scan network that finds the LA's box first (`model.loading.load_localiser`:
    the registry's by default, a name or path, None for none), or one already loaded.
    `loaded` reuses a model already loaded with `model.loading.load_for_inference` (batch jobs).
    Labels may be files or Volumes; on another grid they are resampled with a warning.
    """
    check_method(method, baselines_on)
    st = Stages(STAGE_SHARES, progress, cancel, on_stage)

    def load() -> tuple[Volume, dict[str, Volume], list[str], LoadedModel, LoadedModel | None]:
        # the models first: a bad model file is said before a large image is read
        mdl = loaded or st.step("load model (TorchScript, frozen)", lambda: load_for_inference(model, device))
        require_heads(mdl, {"la", "scar"})
        if la_seed is not None or isinstance(localiser, LoadedModel) or localiser is None:
            loc = None if la_seed is not None else localiser  # with a point there is nothing to localise
        else:
            loc = st.step("load model (TorchScript, frozen)", lambda: load_localiser(localiser, device))
        st.check()
        img, labels, warnings = load_inputs(image, la_label, scar_label, st)
        return img, labels, warnings, mdl, loc

    img, labels, warnings, mdl, loc = st.run("load", load)
    pred = st.run("inference", lambda: predict_localised(mdl, img, keep_largest=keep_largest, seed=la_seed,
                                                         localiser=loc, progress=st.sub_progress("inference"),
                                                         cancel=cancel, steps=st))
    la, removed = st.run("postprocess", lambda: st.step("LA mask (largest component)",
                                                        lambda: la_mask(pred.la, keep_largest, pred.seed)))
    return read_out(img, pred, la, card=mdl.card, model=ModelInfo(mdl.card["name"], mdl.card["version"], mdl.sha256),
                    labels=labels, band_mm=band_mm, method=method, baselines=baselines, baselines_on=baselines_on,
                    components_removed=removed, warnings=[*warnings, *pred.warnings], stages=st)


# --------------------------------------------------------------------------------------- outputs
def write_surface(mesh: vtkPolyData, path: Path) -> None:
    """Write the mesh as Slicer writes models: LPS coordinates, field data SPACE = "LPS".

    Binary VTK XML with LZ4 compression (VTK's XML readers, Slicer's included, read it; it writes
    several times faster than the default zlib).
    """
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


def write_outputs(result: PipelineResult, out: str | os.PathLike | OutputTarget, *, overwrite: bool = False,
                  progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                  on_stage: StageHook | None = None) -> Path:
    """Write CONTRACTS section 5's files into `out` (a path, or the target `check_output_dir` gave
    before the job), all or nothing; report.json last, with the write time and the total in its
    timings."""
    st = Stages({"write": (0.0, 1.0)}, None, cancel, on_stage)
    t0 = time.perf_counter()
    report = result.report
    with atomic_output_dir(out, overwrite) as stage:
        def write_files() -> None:
            st.step("masks (NIfTI)", lambda: [write_volume(v, stage / name) for v, name in (
                (result.la, "la_mask.nii.gz"), (result.scar_probability, "scar_probability.nii.gz"),
                (result.scar, "scar_mask.nii.gz"))])
            st.step("surface (.vtp)", lambda: write_surface(result.mesh, stage / "la_surface.vtp"))
            st.check()
            st.step("snapshot", lambda: render_snapshot(result.mesh, report.to_json(), stage / "snapshot.png"))

        st.run("write", write_files)
        report.timings_s["write"] = round(time.perf_counter() - t0, 3)
        report.set_total_time()
        write_json(report.to_json(), stage / "report.json")
    if progress:
        progress(1.0, "done")
    return out.path if isinstance(out, OutputTarget) else Path(out)


def run_segment(image: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                on_stage: StageHook | None = None, **kwargs: Any) -> PipelineResult:
    """`lascarseg segment`: check the output folder first (before the image or the model is read),
    run the job, write the outputs; they replace only what the check saw at `out`."""
    inputs = [image, *(kwargs.get(k) for k in ("la_label", "scar_label", "model"))]
    target = check_output_dir(out, overwrite, [p for p in inputs if isinstance(p, (str, os.PathLike))])
    result = segment(image, on_stage=on_stage, **kwargs)
    if kwargs.get("cancel") is not None and kwargs["cancel"].is_set():
        raise Cancelled("cancelled by the user")
    write_outputs(result, target, on_stage=on_stage)
    return result
