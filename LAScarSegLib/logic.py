"""The Slicer logic of LAScarSeg (CONTRACTS section 7): the pipeline's results as MRML nodes.

The only library module that imports `slicer` (MRML) and `vtk` at module level; it never imports
qt or ctk, so it runs in Slicer's Python console, in `Slicer --no-main-window --python-script`
and in plain Python with Kitware's `slicer-core` wheel (how the tests drive it). It adds no
algorithm: every number comes from `pipeline`, `predict`, `projection` and `quantify`.

Three parts:

* Conversions between the library's `Volume` (LPS, z-y-x array + geometry) and volume,
  labelmap and segmentation nodes (RAS), and helpers that add segmentation, model and table
  nodes. The test harness (Testing/Python/slicer_harness.py) imports these, so there is one way
  to do each thing.
* `requantified`: a `PipelineResult` re-quantified on an edited LA without the network.
* `LAScarSegLogic`: `process`, `addResultToScene`, `requantify`. Outputs of one input are
  found again through a node reference from each output to the input (the user's own nodes are
  never modified, not even by a reference), so a second run replaces them.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .errors import Cancelled, InputError
from .image import Geometry, Volume

ProgressFn = Callable[[float, str], None]

# ==================================================================== Volume <-> MRML volume node

#: diag(-1, -1, 1): LPS (files, SimpleITK, LAScarSegLib) <-> RAS (Slicer). Its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def ijk_to_ras_matrix(geometry: Geometry) -> np.ndarray:
    """4x4 IJK -> RAS matrix of a grid given in LPS: [F D S | F o] with F = diag(-1, -1, 1).

    D is the direction matrix (columns are the i, j, k axis directions), S = diag(spacing),
    o the origin (centre of voxel 0, 0, 0).
    """
    m = np.eye(4)
    m[:3, :3] = LPS_TO_RAS @ geometry.direction_matrix @ np.diag(geometry.spacing)
    m[:3, 3] = LPS_TO_RAS @ np.asarray(geometry.origin, dtype=float)
    return m


def geometry_from_ijk_to_ras(matrix: np.ndarray, size: Sequence[int]) -> Geometry:
    """The LPS `Geometry` of a grid of `size` (x, y, z) voxels placed by a 4x4 IJK -> RAS matrix."""
    m = np.asarray(matrix, dtype=float)
    axes_ras = m[:3, :3]
    spacing = np.linalg.norm(axes_ras, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(m)):
        raise ValueError(f"IJK to RAS matrix is degenerate: {m.tolist()}")
    direction_lps = LPS_TO_RAS @ (axes_ras / spacing)
    origin_lps = LPS_TO_RAS @ m[:3, 3]
    return Geometry(
        size=tuple(int(s) for s in size),
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(o) for o in origin_lps),
        direction=tuple(float(d) for d in direction_lps.ravel()),
    )


def _vtk_matrix(array: np.ndarray):
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _numpy_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _voxels_for_vtk(array: np.ndarray, labelmap: bool) -> np.ndarray:
    """The voxel array in a type Slicer displays: no bool, no 64-bit integers, integer labels."""
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif labelmap and np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("a labelmap needs whole-number voxel values")
        arr = arr.astype(np.int32)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.dtype.itemsize == 8 and np.issubdtype(arr.dtype, np.integer):
        # Slicer does not display "long long" volumes (slicer.util refuses them too).
        info = np.iinfo(np.int32)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ValueError(f"voxel values {arr.min()}..{arr.max()} do not fit a 32-bit volume")
        arr = arr.astype(np.int32)
    return np.ascontiguousarray(arr)


def volume_to_node(
    volume: Volume,
    name: str = "",
    *,
    labelmap: bool = False,
    node=None,
    scene=None,
    color_node=None,
):
    """Put a `Volume` (LPS, z-y-x array) into a scalar or labelmap volume node (RAS).

    Creates a `vtkMRMLScalarVolumeNode` (or `vtkMRMLLabelMapVolumeNode` with `labelmap=True`) in
    `scene` (default `slicer.mrmlScene`), or updates `node` in place. Voxels are deep-copied;
    spacing, origin and an oblique direction are carried by the node's IJK -> RAS matrix (the
    node's vtkImageData keeps origin 0 and spacing 1, as everywhere in Slicer). Display nodes are
    created when missing; `color_node` (a colour node or its ID) is set on the display node, which
    for a labelmap names the segments that the Segmentations logic imports from it.
    """
    if node is None:
        scene = scene if scene is not None else slicer.mrmlScene
        class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = scene.AddNewNodeByClass(class_name, name or "volume")
    else:
        labelmap = labelmap or node.IsA("vtkMRMLLabelMapVolumeNode")

    arr = _voxels_for_vtk(volume.array, labelmap)
    image = vtk.vtkImageData()
    image.SetDimensions(*volume.geometry.size)  # x, y, z; the z-y-x array ravels in VTK's order
    scalars = numpy_support.numpy_to_vtk(arr.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)

    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras_matrix(volume.geometry)))
    node.SetAndObserveImageData(image)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    if color_node is not None and node.GetDisplayNode() is not None:
        color_id = color_node if isinstance(color_node, str) else color_node.GetID()
        node.GetDisplayNode().SetAndObserveColorNodeID(color_id)
    return node


def node_to_volume(node) -> Volume:
    """A `Volume` (LPS, z-y-x array, copied) from a scalar or labelmap volume node.

    The grid is the node's own (local) one: a parent transform is not applied, as when Slicer
    saves a volume that was not hardened. An image extent that does not start at 0 moves the
    origin accordingly.
    """
    image = node.GetImageData() if node is not None else None
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"volume node {node.GetName() if node else None!r} has no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(
            f"volume node {node.GetName()!r} has {image.GetNumberOfScalarComponents()} components "
            "per voxel; a scalar volume is needed"
        )
    x0, x1, y0, y1, z0, z1 = image.GetExtent()
    size = (x1 - x0 + 1, y1 - y0 + 1, z1 - z0 + 1)
    arr = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    arr = np.array(arr.reshape(size[2], size[1], size[0]), copy=True)

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    m = _numpy_matrix(matrix)
    if (x0, y0, z0) != (0, 0, 0):
        m[:3, 3] = (m @ np.array([x0, y0, z0, 1.0]))[:3]
    return Volume(arr, geometry_from_ijk_to_ras(m, size), source=node.GetName() or node.GetID() or "")


def add_label_color_table(
    names: Mapping[int, str],
    colors: Mapping[int, Sequence[float]] | None = None,
    *,
    name: str = "LAScarSeg labels",
    scene=None,
):
    """A colour table node naming label values (0 is background), for labelmaps and segment import."""
    scene = scene if scene is not None else slicer.mrmlScene
    palette = [(0.85, 0.33, 0.33), (1.0, 0.85, 0.2), (0.3, 0.55, 0.9), (0.45, 0.8, 0.45), (0.7, 0.45, 0.85)]
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetTypeToUser()
    table.SetNumberOfColors(max(names) + 1 if names else 1)
    table.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
    for value in range(1, table.GetNumberOfColors()):
        if value in names:
            rgb = (colors or {}).get(value, palette[(value - 1) % len(palette)])
            table.SetColor(value, names[value], float(rgb[0]), float(rgb[1]), float(rgb[2]), 1.0)
        else:
            table.SetColor(value, "", 0.0, 0.0, 0.0, 0.0)
    return table


def labelmap_to_segmentation(labelmap_node, segmentation_node=None, *, logic=None, closed_surface=True):
    """Import every label of a labelmap node as a segment (named from its colour node).

    `logic` defaults to `slicer.modules.segmentations.logic()`. The segmentation's reference
    geometry is the labelmap's grid. With `closed_surface` the closed-surface representation
    (what the 3D view shows) is created too.
    """
    logic = logic if logic is not None else slicer.modules.segmentations.logic()
    scene = labelmap_node.GetScene()
    if segmentation_node is None:
        name = f"{labelmap_node.GetName()} segmentation"
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation_node.CreateDefaultDisplayNodes()
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(labelmap_node)
    if not logic.ImportLabelmapToSegmentationNode(labelmap_node, segmentation_node):
        raise RuntimeError(f"importing labelmap {labelmap_node.GetName()!r} into a segmentation failed")
    if closed_surface and not segmentation_node.CreateClosedSurfaceRepresentation():
        raise RuntimeError(f"closed-surface representation of {segmentation_node.GetName()!r} failed")
    return segmentation_node


def segment_names(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def add_model(
    polydata,
    name: str = "model",
    *,
    scene=None,
    active_scalar: str | None = None,
    color_node=None,
    scalar_range: tuple[float, float] | None = None,
    point_data: bool = True,
):
    """A model node showing `polydata`, optionally coloured by a scalar array through `color_node`."""
    scene = scene if scene is not None else slicer.mrmlScene
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", name)
    model.SetAndObservePolyData(polydata)
    model.CreateDefaultDisplayNodes()
    display = model.GetDisplayNode()
    if active_scalar is not None:
        location = vtk.vtkAssignAttribute.POINT_DATA if point_data else vtk.vtkAssignAttribute.CELL_DATA
        display.SetActiveScalar(active_scalar, location)
        if color_node is not None:
            display.SetAndObserveColorNodeID(color_node if isinstance(color_node, str) else color_node.GetID())
        if scalar_range is not None:
            display.SetScalarRangeFlag(slicer.vtkMRMLDisplayNode.UseManualScalarRange)
            display.SetScalarRange(float(scalar_range[0]), float(scalar_range[1]))
        display.SetScalarVisibility(True)
    return model


def oriented_image(volume: Volume):
    """A `vtkOrientedImageData` (what segments store) holding `volume` as uint8, placed in RAS."""
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*volume.geometry.size)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(volume.array, dtype=np.uint8).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    image.SetImageToWorldMatrix(_vtk_matrix(ijk_to_ras_matrix(volume.geometry)))
    return image


def segments_to_volume(segmentation_node, segment_ids: Sequence[str], reference_node=None) -> Volume:
    """The union of segments as a 0/1 `Volume` on the grid of `reference_node`, or, with None, on
    the segmentation's own reference geometry (the grid it was drawn on), in full.

    Goes through a temporary labelmap node (as `slicer.util.arrayFromSegmentBinaryLabelmap`
    does) that is removed again with its display and colour nodes, so the scene keeps its nodes.
    A segmentation without a binary labelmap (a closed surface as source) is read from a temporary
    copy: exporting would add that representation to the user's node.
    """
    scene = segmentation_node.GetScene()
    ids = vtk.vtkStringArray()
    for segment_id in segment_ids:
        ids.InsertNextValue(segment_id)
    source = segmentation_node
    if not segmentation_node.GetSegmentation().ContainsRepresentation(
            slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()):
        source = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "__LAScarSeg_temp_segmentation__")
        source.GetSegmentation().DeepCopy(segmentation_node.GetSegmentation())
    temp = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__LAScarSeg_temp__")
    try:
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if reference_node is None:
            done = logic.ExportSegmentsToLabelmapNode(source, ids, temp, None,
                                                      slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        else:
            done = logic.ExportSegmentsToLabelmapNode(source, ids, temp, reference_node)
        if not done:
            raise InputError(f"segmentation {segmentation_node.GetName()!r}: exporting its segments failed")
        volume = node_to_volume(temp)
    finally:
        display = temp.GetDisplayNode()
        colour = display.GetColorNode() if display is not None else None
        if colour is not None and colour.GetScene() is scene and not colour.GetSingletonTag():
            scene.RemoveNode(colour)
        _remove_with_display(scene, temp)
        if source is not segmentation_node:
            _remove_with_display(scene, source)
    arr = (volume.array != 0).astype(np.uint8)
    return Volume(arr, volume.geometry, segmentation_node.GetName() or "segmentation")


def _remove_with_display(scene, node) -> None:
    """Remove a node with its display and storage nodes and its subject hierarchy item.

    Slicer's application removes the item and the display nodes through its subject hierarchy
    logic; plain MRML (slicer-core, `--no-main-window` scripts) does not, so this does it itself.
    """
    if node is None or not scene.IsNodePresent(node):
        return
    extra = []
    if node.IsA("vtkMRMLDisplayableNode"):
        extra += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        extra += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    for other in [node] + extra:
        if other is None or not scene.IsNodePresent(other):
            continue
        sh = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")
        item = sh.GetItemByDataNode(other) if sh is not None else 0
        if item:
            sh.RemoveItem(item, False, False)  # the item only; the node goes next
        scene.RemoveNode(other)


# ========================================================================== what the logic adds
LA_SEGMENT, SCAR_SEGMENT = "Left atrium", "Scar"
SURFACE_NAME = "LA surface"
#: Normal wall blue-grey, scar red: the two ends of the surface's and the snapshot's colour scale
#: (snapshot.py); blue-grey vs red also reads for red-green colour blindness (different lightness).
NORMAL_WALL_COLOR = (0.55, 0.62, 0.75)
SCAR_COLOR = (0.85, 0.1, 0.05)
#: The left atrium's recommended display colour in Slicer's DICOM master list (203, 108, 81): the
#: colour Slicer itself gives a segment of that terminology. Scar tissue has no recommended colour
#: there, so the Scar segment takes the scale's scar red.
LA_COLOR = (203 / 255, 108 / 255, 81 / 255)
#: DICOM / SNOMED CT codes in Slicer's terminology entry format (context~category~type~modifier~
#: anatomic context~region~region modifier), as Slicer's DICOM master list files them: Left atrium
#: SCT 82471001 under Anatomical Structure (SCT 123037004; SlicerTotalSegmentator uses the same
#: entry); Scar tissue SCT 12402003 under Tissue (SCT 85756007), in the region Left atrium.
LA_TERMINOLOGY = ("Segmentation category and type - DICOM master list"
                  "~SCT^123037004^Anatomical Structure~SCT^82471001^Left atrium~^^"
                  "~Anatomic codes - DICOM master list~^^~^^")
SCAR_TERMINOLOGY = ("Segmentation category and type - DICOM master list"
                    "~SCT^85756007^Tissue~SCT^12402003^Scar tissue~^^"
                    "~Anatomic codes - DICOM master list~SCT^82471001^Left atrium~^^")

OUTPUT_ATTRIBUTE = "LAScarSeg.Output"  # value: "segmentation", "surface" or "table"
INPUT_REFERENCE = "LAScarSegInput"  # output node -> the input volume it was made from
COLOR_ATTRIBUTE = "LAScarSeg.ColorTable"

UNITS = (("_ml", "mL"), ("_pct", "%"), ("_mm", "mm"), ("_vox", "voxels"), ("_s", "s"))


def report_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(Metric, Value, Unit) for every leaf of the report's `la`, `scar` and `metrics`.

    Metric is the dotted path (`la.volume_ml`, `metrics.la.dice`); the unit comes from the key's
    suffix, as report.json names its units; Value is `str(value)`, which round-trips floats.
    """
    rows: list[tuple[str, str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, sub in value.items():
                walk(f"{prefix}.{key}", sub)
            return
        unit = next((u for suffix, u in UNITS if prefix.endswith(suffix)), "")
        rows.append((prefix, "" if value is None else str(value), unit))

    for section in ("la", "scar", "metrics"):
        if section in report:
            walk(section, report[section])
    return rows


def results_html(report: Mapping[str, Any]) -> str:
    """The results area of the module: burden (and which method gave it), stages, LA volume,
    metrics, the other methods' burdens, warnings, intended use."""
    from html import escape

    from .pipeline import NETWORK_METHOD

    scar, la = report["scar"], report["la"]
    method = scar.get("method", NETWORK_METHOD)
    source = "MTL-SESA" if method == NETWORK_METHOD else f"baseline {method} on MTL-SESA's LA"
    lines = [f"<b>Scar burden ({escape(source, quote=False)}): {scar['burden_surface_pct']:.1f} % of the LA "
             f"surface</b> ({scar['burden_wall_pct']:.1f} % of the wall volume)",
             f"Utah stage {escape(str(scar['utah_stage']))}, DECAAF stage {scar['decaaf_stage']}",
             f"LA volume {la['volume_ml']:.1f} mL"]
    for part, values in report.get("metrics", {}).items():
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        lines.append(f"Metrics ({escape(part)}{', ' + escape(method) if part == 'scar' else ''}): {escape(shown)}")
    for name, entry in report.get("baselines", {}).items():
        if name == method:
            continue  # it is the headline
        label = "MTL-SESA (network)" if name == NETWORK_METHOD else f"Baseline {escape(name)}"
        lines.append(f"{label}: scar burden {entry['burden_surface_pct']:.1f} % of the LA surface")
    lines += [f"<span style='color:#a05a00'>Note: {escape(w)}</span>" for w in report.get("warnings", [])]
    lines.append(f"<i>{escape(str(report.get('intended_use', '')))}</i>")
    return "<br>".join(lines)


def status_text(report: Mapping[str, Any]) -> str:
    """The module's one-line status after a run: done, and the first warning when there are any
    (a CUDA fallback, a resampled label, an implausible volume), so none goes unnoticed."""
    warnings = list(report.get("warnings", []))
    if not warnings:
        return "Done. Edit the 'Left atrium' segment and press Re-quantify to update the scar map."
    more = f" (+{len(warnings) - 1} more under Results)" if len(warnings) > 1 else ""
    return f"Done, with {len(warnings)} note{'s' if len(warnings) > 1 else ''}: {warnings[0]}{more}"


# ============================================================================== re-quantification
def requantified(result, la: Volume, band_mm: Sequence[float] = (-1.0, 3.0)):
    """`result` re-quantified on another LA mask (an edited LA segment): no network run.

    The network's probabilities (`result.prediction`) stay; the wall band, the scar (wall band
    where p_scar > p_normal), the surface, the projection, burden, stages, volume, warnings and the
    metrics against manual labels are recomputed with the same functions the pipeline uses.
    When `result` shows a baseline's scar (`pipeline.with_baseline_scar`), that baseline is run
    again on the edited LA and shown, so an edit never swaps the method the user chose.
    """
    from .distance import wall_band
    from .metrics import la_metrics, scar_surface_metrics
    from .pipeline import PipelineResult, is_network, shown_method, with_baseline_scar, with_baselines
    from .predict import scar_mask
    from .projection import la_surface_mesh, project_on_mesh, surface_burden_pct
    from .quantify import decaaf_stage, geometry_warnings, la_volume_ml, utah_stage, wall_burden_pct

    pred = result.prediction
    if pred is None or pred.p_scar is None or not result.card:
        raise InputError("this result holds no network probabilities: run the segmentation again to re-quantify")
    if not la.geometry.same_grid(result.image.geometry):
        raise InputError(f"the edited LA is not on the image grid ({la.geometry.describe()})")
    la = la.with_array((la.array != 0).astype(np.uint8))
    if not la.array.any():
        raise InputError(f"the '{LA_SEGMENT}' segment is empty: nothing to quantify")
    wall_mm = float(result.card["wall_band_mm"])
    band = (float(band_mm[0]), float(band_mm[1]))
    scar, wall = scar_mask(pred, la, wall_mm)
    prob = pred.p_scar.with_array(np.where(wall.array.astype(bool), pred.p_scar.array, 0).astype(np.float32))
    mesh = project_on_mesh(la_surface_mesh(la), scar, prob, band_mm=band)
    la_ml = la_volume_ml(la)
    burden = surface_burden_pct(mesh, "Scar")

    report = copy.deepcopy(result.report)
    old = report["la"]
    stale = set(geometry_warnings(result.image, old["volume_ml"], old["components_removed"]))
    report["warnings"] = [w for w in report["warnings"] if w not in stale]
    report["warnings"] += geometry_warnings(result.image, la_ml, 0)
    report["warnings"].append("re-quantified on an edited LA segment (the network was not run again)")
    report["la"] = {"volume_ml": round(la_ml, 2), "components_removed": 0}
    report["scar"] = {"burden_surface_pct": round(burden, 2), "burden_wall_pct": round(wall_burden_pct(scar, wall), 2),
                      "utah_stage": utah_stage(burden), "decaaf_stage": decaaf_stage(burden)}
    labels = result.labels
    if "la" in labels:
        report.setdefault("metrics", {})["la"] = la_metrics(la, labels["la"])
    if "scar" in labels:
        ref_la = labels.get("la", la)
        ref_wall = labels["wall"] if "wall" in labels else wall_band(ref_la, wall_mm)
        m = scar_surface_metrics(scar, labels["scar"], ref_wall, ref_la, pred_wall=wall)
        report.setdefault("metrics", {})["scar"] = {k: m[k] for k in ("accuracy", "dice_scar", "dice_normal", "gdice")}
    report.pop("baselines", None)  # they were computed on the network's LA
    new = PipelineResult(result.image, la, wall, scar, prob, mesh, report, labels, pred, result.card)
    method = shown_method(result)
    if is_network(method):
        return new
    return with_baseline_scar(with_baselines(new, [method], band), method)


# ================================================================================ models, phantom
def user_models_dir() -> Path:
    """`LAScarSeg/models` under the platform's user data folder (CONTRACTS section 4): models a
    user imports go here, never into the extension's folder (which may be read-only)."""
    import os
    import sys

    if sys.platform.startswith("win"):
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "LAScarSeg" / "models"


def import_model(path, folder=None) -> dict[str, Any]:
    """Copy a model file into the user models folder and record it with its SHA-256 in that
    folder's models.json (the bundled registry's format). Refuses a file that is not a
    LAScarSeg model. Returns the registry entry."""
    import shutil
    from .errors import ModelError
    from .export import register

    src = Path(path)
    if not src.is_file():
        raise InputError(f"{src}: model file does not exist")
    folder = Path(folder) if folder is not None else user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / src.name
    if src.resolve() != dest.resolve():
        shutil.copy2(src, dest)
    try:
        return register(dest, folder / "models.json", default=False)
    except Exception as exc:
        dest.unlink(missing_ok=True)
        raise ModelError(f"{src}: not a LAScarSeg model ({exc})") from None


def available_models(folder=None) -> list[tuple[str, str | None]]:
    """(label, model argument for `process`) for the bundled default and every imported model.

    An imported model is given by its path after its SHA-256 was checked against the user
    registry here, so a replaced or corrupt file is refused before a run starts.
    """
    from .export import read_registry

    out: list[tuple[str, str | None]] = []
    try:
        reg = read_registry()
        default = next((m for m in reg["models"] if m["name"] == reg["default"]), None)
        out.append((f"Bundled: {default['name']} {default['version']}" if default else "Bundled (default)", None))
    except Exception:  # no registry: the run will say so clearly
        out.append(("Bundled (not installed)", None))
    registry = Path(folder if folder is not None else user_models_dir()) / "models.json"
    if registry.is_file():
        try:
            imported = read_registry(registry)["models"]
        except Exception as exc:  # a damaged user registry must not take the module panel down with it
            logging.getLogger(__name__).warning("imported models not listed: %s is unreadable (%s)", registry, exc)
            imported = []
        for m in imported:
            out.append((f"Imported: {m['name']} {m['version']}", str(registry.parent / m["file"])))
    return out


def check_imported_model(path, folder=None) -> None:
    """Refuse an imported model whose SHA-256 differs from the one recorded when it was imported."""
    from .errors import ModelError
    from .export import read_registry, sha256_of

    path = Path(path)
    registry = Path(folder if folder is not None else user_models_dir()) / "models.json"
    if not registry.is_file() or path.parent.resolve() != registry.parent.resolve():
        return
    for m in read_registry(registry)["models"]:
        if (registry.parent / m["file"]).resolve() == path.resolve():
            if sha256_of(path) != m["sha256"]:
                raise ModelError(f"{path}: SHA-256 differs from the one recorded at import; the file is corrupt "
                                 "or was replaced: import it again")
            return


PHANTOM_NAME = "LAScarSegPhantom"


def load_phantom(scene=None, seed: int = 0) -> dict[str, Any]:
    """The synthetic LGE phantom as nodes: the image, and its LA and scar truth as labelmaps.

    What the module registers as sample data (category "Cardiac"): generated here from `seed`
    (the same seed gives the same voxels), so nothing is downloaded.
    """
    from .phantom import make_phantom

    scene = scene if scene is not None else slicer.mrmlScene
    ph = make_phantom(seed)
    image = volume_to_node(ph.image, PHANTOM_NAME, scene=scene)
    la = volume_to_node(ph.la, f"{PHANTOM_NAME} LA truth", labelmap=True, scene=scene)
    scar = volume_to_node(ph.scar, f"{PHANTOM_NAME} scar truth", labelmap=True, scene=scene)
    return {"image": image, "la": la, "scar": scar, "phantom": ph}


# ========================================================================================= logic
@dataclass
class LAScarSegResult:
    """The nodes one run put into the scene, and the report (the report.json dict)."""

    segmentation: Any  # vtkMRMLSegmentationNode: "Left atrium" and "Scar"
    surfaceModel: Any  # vtkMRMLModelNode "LA surface": point arrays ScarProbability and Scar
    metricsTable: Any  # vtkMRMLTableNode: Metric, Value, Unit
    report: dict[str, Any]
    pipelineResult: Any = None  # pipeline.PipelineResult, for requantify
    bandMm: tuple[float, float] = (-1.0, 3.0)


class LAScarSegLogic:
    """Runs the pipeline on volume nodes and puts its results into the scene (CONTRACTS section 7).

    Plain Python: the Slicer module's Logic subclasses it together with
    ScriptedLoadableModuleLogic. Every method works on the scene of the nodes it is given.
    """

    # ------------------------------------------------------------------------------ inputs
    @staticmethod
    def inputImage(inputVolume) -> Volume:
        """The input volume node as a `Volume`, or an `InputError` a user can act on."""
        if inputVolume is None:
            raise InputError("no input volume selected: choose the LGE MRI volume")
        if not inputVolume.IsA("vtkMRMLScalarVolumeNode") or inputVolume.IsA("vtkMRMLLabelMapVolumeNode"):
            raise InputError(f"{inputVolume.GetName()!r} is not a scalar volume: choose the LGE MRI volume")
        try:
            image = node_to_volume(inputVolume)
        except ValueError as exc:  # no voxels, or RGB / vector voxels
            raise InputError(f"{inputVolume.GetName()!r}: {exc}") from None
        if min(image.geometry.size) < 2:
            raise InputError(f"{inputVolume.GetName()!r} is not a 3D volume (size {image.geometry.size}): "
                             "a 3D LGE MRI is needed")
        return image

    @staticmethod
    def labelVolume(labelNode, inputVolume, preferredSegment: str | None = None) -> Volume | None:
        """A labelmap node as it is, or a segmentation node's segment `preferredSegment` (its only
        segment when it has one; several and none of that name is an error) as 0/1 on the grid it was drawn on (its reference
        geometry; the input's grid when it has none). The pipeline resamples a label on another grid
        onto the image grid and says so in the report's warnings (CONTRACTS section 2)."""
        if labelNode is None:
            return None
        if labelNode.GetTransformNodeID() != inputVolume.GetTransformNodeID():
            raise InputError(f"{labelNode.GetName()!r} and {inputVolume.GetName()!r} are under different transforms: "
                             "harden the transforms (Data module) so that both are in one space")
        if labelNode.IsA("vtkMRMLSegmentationNode"):
            segmentation = labelNode.GetSegmentation()
            ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
            if not ids:
                raise InputError(f"segmentation {labelNode.GetName()!r} has no segments")
            preferred = segmentation.GetSegmentIdBySegmentName(preferredSegment) if preferredSegment else ""
            if not preferred and len(ids) > 1:  # joining them all could count the scar as LA
                raise InputError(f"segmentation {labelNode.GetName()!r} has no segment named {preferredSegment!r} "
                                 f"and several others ({', '.join(segment_names(labelNode))}): name the one to "
                                 f"use {preferredSegment!r}")
            chosen = [preferred] if preferred else ids
            geometry = segmentation.GetConversionParameter(
                slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
            return segments_to_volume(labelNode, chosen, None if geometry else inputVolume)
        if labelNode.IsA("vtkMRMLVolumeNode"):
            try:
                return node_to_volume(labelNode)
            except ValueError as exc:
                raise InputError(f"label {labelNode.GetName()!r}: {exc}") from None
        raise InputError(f"{labelNode.GetName()!r} is neither a labelmap nor a segmentation")

    # ----------------------------------------------------------------------------- process
    def process(self, inputVolume, laLabel=None, scarLabel=None, *, device: str = "auto", model: str | None = None,
                bandMm: Sequence[float] = (-1.0, 3.0), keepLargest: bool = True, progress: ProgressFn | None = None,
                cancel: threading.Event | None = None, baselines: Sequence[str] | None = None,
                method: str = "mtl-sesa") -> LAScarSegResult:
        """Segment and quantify `inputVolume`, blocking, and add the results to its scene.

        `method`: "mtl-sesa" (the network's scar) or a baseline of `baselines.method_names()`,
        which then runs too and whose scar the scene shows (on the network's LA; see
        `pipeline.with_baseline_scar`). `baselines`: more baselines reported beside it.
        On cancel (`Cancelled`) or any failure the scene is as it was: nodes are only added once
        the pipeline has finished, and `addResultToScene` removes what it added if it fails.
        """
        from .pipeline import segment

        runs = self.baselinesToRun(method, baselines)
        image = self.inputImage(inputVolume)
        la = self.labelVolume(laLabel, inputVolume, LA_SEGMENT)
        scar = self.labelVolume(scarLabel, inputVolume, SCAR_SEGMENT)
        result = segment(image, la_label=la, scar_label=scar, model=model, device=device, band_mm=bandMm,
                         keep_largest=keepLargest, baselines=runs, progress=progress, cancel=cancel)
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled by the user")
        return self.addResultToScene(inputVolume, result, bandMm=bandMm, method=method)

    @staticmethod
    def baselinesToRun(method: str | None, baselines: Sequence[str] | None = None) -> list[str] | None:
        """The baselines the pipeline must run for `method` (shown) and `baselines` (reported);
        an unknown method is refused before the network runs."""
        from .baselines import method_names
        from .pipeline import is_network

        runs = list(baselines or [])
        if not is_network(method):
            if method not in method_names():
                raise InputError(f"unknown method {method!r}; known: mtl-sesa, {', '.join(method_names())}")
            runs.append(str(method))
        return list(dict.fromkeys(runs)) or None

    def requantify(self, inputVolume, laSegmentation, result: LAScarSegResult) -> LAScarSegResult:
        """Re-project and re-quantify after the user edited the LA segment (no network run).

        `laSegmentation`'s "Left atrium" segment (its only segment, if it has one) is the
        new LA; the outputs of `inputVolume` are replaced. When `laSegmentation` is the output
        segmentation of `inputVolume` (the one the user edits in Segment Editor), it stays the same
        node with the same segments, so Segment Editor keeps it selected: only its Scar segment is
        rewritten. A user's own segmentation given here is only read.
        """
        from .image import label_onto_image_grid

        la = self.labelVolume(laSegmentation, inputVolume, LA_SEGMENT)
        if la is None:
            raise InputError("no LA segmentation given to re-quantify")
        warning = None
        if result.pipelineResult is not None:  # edited on another geometry (Segment Editor's oversampling)
            la, warning = label_onto_image_grid(la, result.pipelineResult.image.geometry, "edited LA segment")
        new = requantified(result.pipelineResult, la, result.bandMm)
        if warning:
            new.report["warnings"].append(warning)
        return self.addResultToScene(inputVolume, new, bandMm=result.bandMm, keepSegmentation=laSegmentation)

    # -------------------------------------------------------------------------------- scene
    @staticmethod
    def findOutputs(inputVolume) -> dict[str, Any]:
        """The output nodes made earlier from `inputVolume`: {"segmentation"|"surface"|"table": node}."""
        scene = inputVolume.GetScene()
        found: dict[str, Any] = {}
        nodes = scene.GetNodes()
        for i in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(i)
            role = node.GetAttribute(OUTPUT_ATTRIBUTE)
            if role and node.GetNodeReferenceID(INPUT_REFERENCE) == inputVolume.GetID():
                found[role] = node
        return found

    def addResultToScene(self, inputVolume, pipelineResult, *, bandMm: Sequence[float] = (-1.0, 3.0),
                         method: str | None = None, keepSegmentation=None) -> LAScarSegResult:
        """Put a `PipelineResult` of `inputVolume` into its scene, replacing that input's outputs.

        `method`: a baseline's name shows that baseline's scar (`pipeline.with_baseline_scar`; the
        result must hold it); None or "mtl-sesa" shows the result as it is.
        `keepSegmentation`: if it is this input's output segmentation, it is kept and only its
        Scar segment is rewritten (its LA segment is the result's LA already: `requantify`).
        All or nothing: if anything fails, every node added here is removed again and the earlier
        outputs stay; they are removed only after the new ones are complete, and a kept
        segmentation is changed last.
        """
        from .pipeline import is_network, with_baseline_scar

        if inputVolume is None or inputVolume.GetScene() is None:
            raise InputError("the input volume is not in a scene")
        if not is_network(method):
            pipelineResult = with_baseline_scar(pipelineResult, method)
        image = node_to_volume(inputVolume)
        if not image.geometry.same_grid(pipelineResult.image.geometry):
            raise InputError(f"the result was computed on another grid ({pipelineResult.image.geometry.describe()}) "
                             f"than {inputVolume.GetName()!r} ({image.geometry.describe()})")
        scene = inputVolume.GetScene()
        old = self.findOutputs(inputVolume)
        mine = keepSegmentation is not None and old.get("segmentation") is keepSegmentation
        kept = keepSegmentation if mine else None
        before = _node_ids(scene)
        try:
            base = inputVolume.GetName() or "volume"
            segmentation = kept or self._addSegmentation(scene, inputVolume, pipelineResult, f"{base} LA and scar")
            model = self._addSurfaceModel(scene, pipelineResult.mesh)
            table = self._addMetricsTable(scene, pipelineResult.report, f"{base} LA scar metrics")
            for role, node in (("segmentation", segmentation), ("surface", model), ("table", table)):
                node.SetAttribute(OUTPUT_ATTRIBUTE, role)
                node.SetNodeReferenceID(INPUT_REFERENCE, inputVolume.GetID())
            for node in (segmentation, model):  # computed in the input's own space: follow its transform
                node.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
            _place_beside(inputVolume, (segmentation, model, table))
            if kept is not None:
                self._setScarSegment(kept, pipelineResult.scar)
        except BaseException:
            for node_id in reversed([i for i in _node_ids(scene) if i not in before]):
                _remove_with_display(scene, scene.GetNodeByID(node_id))
            raise
        for node in old.values():
            if node is not kept:
                _remove_with_display(scene, node)
        return LAScarSegResult(segmentation, model, table, pipelineResult.report, pipelineResult,
                               (float(bandMm[0]), float(bandMm[1])))

    @staticmethod
    def _addSegmentation(scene, inputVolume, result, name: str):
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
        for segment_name, mask, color, terminology in ((LA_SEGMENT, result.la, LA_COLOR, LA_TERMINOLOGY),
                                                       (SCAR_SEGMENT, result.scar, SCAR_COLOR, SCAR_TERMINOLOGY)):
            _add_segment(node, mask, segment_name, color, terminology)
        if not node.CreateClosedSurfaceRepresentation():
            raise RuntimeError("creating the closed surfaces of the segmentation failed")
        display = node.GetDisplayNode()
        display.SetPreferredDisplayRepresentationName3D("Closed surface")
        display.SetVisibility3D(True)
        # The LA segment and the LA surface model coincide: keep the segment faint in 3D so the
        # scar map on the model shows; in the slice views it is drawn as usual.
        display.SetSegmentOpacity3D(node.GetSegmentation().GetSegmentIdBySegmentName(LA_SEGMENT), 0.2)
        return node

    @staticmethod
    def _setScarSegment(node, scar: Volume) -> None:
        """Rewrite the Scar segment of an output segmentation in place (same segment ID, so
        Segment Editor's selection stays); add it if the user deleted it."""
        scar_id = node.GetSegmentation().GetSegmentIdBySegmentName(SCAR_SEGMENT)
        if not scar_id:
            _add_segment(node, scar, SCAR_SEGMENT, SCAR_COLOR, SCAR_TERMINOLOGY)
        else:
            logic = slicer.vtkSlicerSegmentationsModuleLogic
            if not logic.SetBinaryLabelmapToSegment(oriented_image(scar), node, scar_id, logic.MODE_REPLACE):
                raise RuntimeError(f"rewriting the segment {SCAR_SEGMENT!r} failed")
        # an edit drops the derived surfaces; Slicer's 3D view would make them again, plain MRML does not
        if not node.CreateClosedSurfaceRepresentation():
            raise RuntimeError("creating the closed surfaces of the segmentation failed")

    @staticmethod
    def _scarColorTable(scene):
        """The two-colour table "normal wall / scar" (one per scene, shared by the surfaces)."""
        nodes = scene.GetNodesByClass("vtkMRMLColorTableNode")
        for i in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(i)
            if node.GetAttribute(COLOR_ATTRIBUTE) == "Scar":
                return node
        table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "LAScarSeg normal wall - scar")
        table.SetTypeToUser()
        table.SetNumberOfColors(2)
        table.SetColor(0, "Normal wall", *NORMAL_WALL_COLOR, 1.0)
        table.SetColor(1, "Scar", *SCAR_COLOR, 1.0)
        table.SetAttribute(COLOR_ATTRIBUTE, "Scar")
        return table

    def _addSurfaceModel(self, scene, mesh_lps):
        """The LA surface in RAS (Slicer's model coordinates), coloured by Scar with a legend."""
        flip = vtk.vtkTransform()
        flip.Scale(-1.0, -1.0, 1.0)  # LPS -> RAS: a rotation by 180 degrees about z (normals follow)
        transform = vtk.vtkTransformPolyDataFilter()
        transform.SetTransform(flip)
        transform.SetInputData(mesh_lps)
        transform.Update()
        polydata = vtk.vtkPolyData()
        polydata.DeepCopy(transform.GetOutput())
        for name in ("ScarProbability", "Scar"):
            if polydata.GetPointData().GetArray(name) is None:
                raise InputError(f"the LA surface has no point array {name!r}")
        table = self._scarColorTable(scene)
        model = add_model(polydata, SURFACE_NAME, scene=scene, active_scalar="Scar", color_node=table,
                          scalar_range=(0.0, 1.0))
        display = model.GetDisplayNode()
        display.SetVisibility2D(True)
        legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(model)
        if legend is not None:
            legend.SetTitleText("LA wall")
            legend.SetUseColorNamesForLabels(True)
            legend.SetVisibility(True)
        return model

    @staticmethod
    def _addMetricsTable(scene, report: Mapping[str, Any], name: str):
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
        columns = [vtk.vtkStringArray() for _ in range(3)]
        for column, title in zip(columns, ("Metric", "Value", "Unit")):
            column.SetName(title)
        for row in report_rows(report):
            for column, value in zip(columns, row):
                column.InsertNextValue(value)
        for column in columns:
            node.AddColumn(column)
        node.SetLocked(True)  # a record of the run; the user edits the segmentation, not this
        return node


def _add_segment(node, mask: Volume, name: str, color, terminology: str) -> None:
    segment_id = node.AddSegmentFromBinaryLabelmapRepresentation(oriented_image(mask), name, color)
    if not segment_id:
        raise RuntimeError(f"adding the segment {name!r} failed")
    segment = node.GetSegmentation().GetSegment(segment_id)
    segment.SetTerminology(terminology)
    # Our names and colours are chosen, not auto-generated: Slicer may otherwise replace an
    # auto-generated name with the terminology's when the user touches the terminology, and
    # Re-quantify finds the segments by name.
    segment.SetNameAutoGenerated(False)
    segment.SetColorAutoGenerated(False)


def _node_ids(scene) -> list[str]:
    nodes = scene.GetNodes()
    return [nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())]


def subject_hierarchy(scene):
    """The scene's subject hierarchy node, made if the scene has none (as after `scene.Clear()`
    outside the application, whose subject hierarchy logic would make it again)."""
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def _place_beside(inputVolume, nodes: Iterable[Any]) -> None:
    """Put `nodes` in the subject hierarchy under the input volume's parent (its study)."""
    sh = subject_hierarchy(inputVolume.GetScene())
    if sh is None:  # Slicer returns none while it cannot resolve several hierarchy nodes (batch import)
        return
    parent = sh.GetItemParent(sh.GetItemByDataNode(inputVolume)) if sh.GetItemByDataNode(inputVolume) else 0
    parent = parent or sh.GetSceneItemID()
    for node in nodes:
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, parent)
        else:
            sh.CreateItem(parent, node)
