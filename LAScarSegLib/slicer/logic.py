"""The Slicer logic of LAScarSeg (CONTRACTS section 7): the pipeline's results as MRML nodes.

`LAScarSegLogic`: `process` (blocking: the pipeline runs in the background worker process, as from
the module panel, with progress and a cancel that stops it), `addResultToScene` (a finished
`PipelineResult` as nodes, all or nothing) and `requantify` (an edited LA read out again, no
network run). Outputs of one input are found again through a node reference from each output to
the input (the user's own nodes are never modified, not even by a reference), so a second run
replaces them. Its import path is `LAScarSegLib.logic`.

Imports `slicer` (MRML) and `vtk`, never torch, qt or ctk: it runs in Slicer's own process, in
`Slicer --no-main-window --python-script` and in plain Python with the `slicer-core` wheel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import slicer
import vtk

from ..app.worker_client import Worker, WorkerRequest
from ..core.errors import InputError
from ..core.image import Volume, label_onto_image_grid
from ..core.progress import ProgressFn
from ..infer.masks import LASeed
from ..model.registry import check_imported_model
from ..quantify.readout import NETWORK_METHOD, PipelineResult, check_method, requantify
from ..quantify.report import report_rows
from ..synth.phantom import make_phantom
from .mrml import (add_model, node_to_volume, oriented_image, remove_with_display, segment_names, segments_to_volume,
                   subject_hierarchy, volume_to_node, world_to_local)

# ------------------------------------------------------------------------------ what the logic adds
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


@dataclass
class LAScarSegResult:
    """The nodes one run put into the scene, and the report (the report.json dict)."""

    segmentation: Any  # vtkMRMLSegmentationNode: "Left atrium" and "Scar"
    surfaceModel: Any  # vtkMRMLModelNode "LA surface": point arrays ScarProbability and Scar
    metricsTable: Any  # vtkMRMLTableNode: Metric, Value, Unit
    report: dict[str, Any]
    pipelineResult: PipelineResult | None = None  # for requantify
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
                bandMm: Sequence[float] = (-1.0, 3.0), keepLargest: bool = True, laSeed=None,
                progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                baselines: Sequence[str] | None = None, method: str = NETWORK_METHOD,
                python: str | None = None) -> LAScarSegResult:
        """Segment and quantify `inputVolume`, blocking, and add the results to its scene.

        The pipeline runs in the background worker process (`app.worker_client`), as from the module
        panel: Slicer's own process never runs the network. `method`: "mtl-sesa" (the network's
        scar) or a baseline of `quantify.baselines.method_names()`, whose scar the result shows (on
        the network's LA). `baselines`: more baselines reported beside it. `cancel` set: the worker
        is stopped and `Cancelled` raised within 2 s. On cancel or any failure the scene is as it
        was: nodes are only added once the pipeline has finished, and `addResultToScene` removes
        what it added if it fails. `python`: the worker's interpreter (default: PythonSlicer).
        """
        worker = self.startRun(inputVolume, laLabel, scarLabel, model=model, device=device, bandMm=bandMm,
                               keepLargest=keepLargest, laSeed=laSeed, method=method, baselines=baselines,
                               python=python)
        result = worker.wait(cancel=cancel, on_message=None if progress is None else
                             (lambda m: progress(m.fraction, m.text) if m.kind == "progress" else None))
        return self.addResultToScene(inputVolume, result, bandMm=bandMm)

    def startRun(self, inputVolume, laLabel=None, scarLabel=None, *, model: str | None = None, device: str = "auto",
                 bandMm: Sequence[float] = (-1.0, 3.0), keepLargest: bool = True, laSeed=None,
                 method: str = NETWORK_METHOD, baselines: Sequence[str] | None = None,
                 python: str | None = None) -> Worker:
        """Check the inputs and start the pipeline in the background worker; returns the running
        `Worker` (the module panel polls it, `process` waits for it). Bad inputs, an unknown method
        and an imported model whose SHA-256 changed are refused before anything starts."""
        image = self.inputImage(inputVolume)
        # the point is in world coordinates; the input's voxels are read on its own grid (under its transform)
        seed = None if laSeed is None else LASeed(ras=world_to_local(inputVolume, tuple(laSeed)))
        check_method(method)
        if model:
            check_imported_model(model)
        request = WorkerRequest(image, self.labelVolume(laLabel, inputVolume, LA_SEGMENT),
                                self.labelVolume(scarLabel, inputVolume, SCAR_SEGMENT), model=model, device=device,
                                band_mm=(float(bandMm[0]), float(bandMm[1])), keep_largest=keepLargest,
                                la_seed=seed, method=method, baselines=None if baselines is None else list(baselines))
        return Worker(request, python=python).start()

    def requantify(self, inputVolume, laSegmentation, result: LAScarSegResult) -> LAScarSegResult:
        """Re-project and re-quantify after the user edited the LA segment (no network run).

        `laSegmentation`'s "Left atrium" segment (its only segment, if it has one) is the
        new LA; the outputs of `inputVolume` are replaced. When `laSegmentation` is the output
        segmentation of `inputVolume` (the one the user edits in Segment Editor), it stays the same
        node with the same segments, so Segment Editor keeps it selected: only its Scar segment is
        rewritten. A user's own segmentation given here is only read.
        """
        la = self.labelVolume(laSegmentation, inputVolume, LA_SEGMENT)
        if la is None:
            raise InputError("no LA segmentation given to re-quantify")
        warning = None
        if result.pipelineResult is not None:  # edited on another geometry (Segment Editor's oversampling)
            la, warning = label_onto_image_grid(la, result.pipelineResult.image.geometry, "edited LA segment")
        new = requantify(result.pipelineResult, la, result.bandMm)
        if warning:
            new.report.warnings.append(warning)
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

    def addResultToScene(self, inputVolume, pipelineResult: PipelineResult, *,
                         bandMm: Sequence[float] = (-1.0, 3.0), keepSegmentation=None) -> LAScarSegResult:
        """Put a `PipelineResult` of `inputVolume` into its scene, replacing that input's outputs.

        The result shows the scar of the method the pipeline ran for (`segment(..., method=...)`).
        `keepSegmentation`: if it is this input's output segmentation, it is kept and only its
        Scar segment is rewritten (its LA segment is the result's LA already: `requantify`).
        All or nothing: if anything fails, every node added here is removed again and the earlier
        outputs stay; they are removed only after the new ones are complete, and a kept
        segmentation is changed last.
        """
        if inputVolume is None or inputVolume.GetScene() is None:
            raise InputError("the input volume is not in a scene")
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
            report = pipelineResult.report.to_json()
            table = self._addMetricsTable(scene, report, f"{base} LA scar metrics")
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
                remove_with_display(scene, scene.GetNodeByID(node_id))
            raise
        for node in old.values():
            if node is not kept:
                remove_with_display(scene, node)
        return LAScarSegResult(segmentation, model, table, report, pipelineResult,
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


PHANTOM_NAME = "LAScarSegPhantom"


def load_phantom(scene=None, seed: int = 0) -> dict[str, Any]:
    """The synthetic LGE phantom as nodes: the image, and its LA and scar truth as labelmaps.

    What the module registers as sample data (category "Cardiac"): generated here from `seed`
    (the same seed gives the same voxels), so nothing is downloaded.
    """
    scene = scene if scene is not None else slicer.mrmlScene
    ph = make_phantom(seed)
    image = volume_to_node(ph.image, PHANTOM_NAME, scene=scene)
    la = volume_to_node(ph.la, f"{PHANTOM_NAME} LA truth", labelmap=True, scene=scene)
    scar = volume_to_node(ph.scar, f"{PHANTOM_NAME} scar truth", labelmap=True, scene=scene)
    return {"image": image, "la": la, "scar": scar, "phantom": ph}


