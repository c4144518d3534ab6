"""The library's volumes and meshes as MRML nodes, and back (what the Slicer logic and the test
harness share, so there is one way to do each thing).

Conversions between `Volume` (LPS, z-y-x array + geometry) and volume, labelmap and segmentation
nodes (RAS); helpers that add colour tables, segmentations and models; reading segments back as a
`Volume`; removing a node with everything Slicer's application would remove with it. Imports
`slicer` (MRML) and `vtk`, never qt or ctk: it runs in Slicer and with the `slicer-core` wheel.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..core.errors import InputError
from ..core.image import Geometry, Volume

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


def vtk_matrix(array: np.ndarray):
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

    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras_matrix(volume.geometry)))
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
    image.SetImageToWorldMatrix(vtk_matrix(ijk_to_ras_matrix(volume.geometry)))
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
        remove_with_display(scene, temp)
        if source is not segmentation_node:
            remove_with_display(scene, source)
    arr = (volume.array != 0).astype(np.uint8)
    return Volume(arr, volume.geometry, segmentation_node.GetName() or "segmentation")


def remove_with_display(scene, node) -> None:
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



def subject_hierarchy(scene):
    """The scene's subject hierarchy node, made if the scene has none (as after `scene.Clear()`
    outside the application, whose subject hierarchy logic would make it again)."""
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def first_point_ras(markups_node) -> tuple[float, float, float] | None:
    """The first control point of a markups node in world RAS millimetres (None: no node or no point)."""
    if markups_node is None or markups_node.GetNumberOfControlPoints() == 0:
        return None
    ras = [0.0, 0.0, 0.0]
    markups_node.GetNthControlPointPositionWorld(0, ras)
    return (float(ras[0]), float(ras[1]), float(ras[2]))


def world_to_local(node, ras: tuple[float, float, float]) -> tuple[float, float, float]:
    """A world RAS point in the local frame of `node` (the frame its voxels are in: a volume under a
    transform is read on its own grid, so a point given in world coordinates must follow)."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return tuple(float(v) for v in ras)
    transform = vtk.vtkGeneralTransform()
    parent.GetTransformFromWorld(transform)
    return tuple(float(v) for v in transform.TransformPoint([float(v) for v in ras]))
