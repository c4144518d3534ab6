"""Checks of LAScarSegLogic's outputs, shared by pytest (test_logic.py) and the module's self-test.

Plain functions that raise AssertionError with a message: the Slicer self-test (LAScarSegTest in
LAScarSeg.py) calls the same ones inside Slicer, so both run one definition of "right". They ship
with the library for that reason; `LAScarSegLib.logic` (which imports slicer) is imported inside
the functions, so importing this module needs neither slicer nor torch.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np



def node_ids(scene) -> list[str]:
    nodes = scene.GetNodes()
    return [nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())]


def flat_leaves(report: Mapping[str, Any]) -> dict[str, Any]:
    """Every leaf of the report's la, scar and metrics by dotted path (written independently of report_rows)."""
    out: dict[str, Any] = {}
    stack = [(k, report[k]) for k in ("la", "scar", "metrics") if k in report]
    while stack:
        path, value = stack.pop()
        if isinstance(value, Mapping):
            stack += [(f"{path}.{k}", v) for k, v in value.items()]
        else:
            out[path] = value
    return out


def check_segmentation(result) -> None:
    from .logic import LA_COLOR, LA_SEGMENT, SCAR_COLOR, SCAR_SEGMENT

    node = result.segmentation
    seg = node.GetSegmentation()
    names = [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]
    assert names == [LA_SEGMENT, SCAR_SEGMENT], names
    # the LA in the colour and codes of Slicer's DICOM master list; scar tissue (no colour there) in scar red
    np.testing.assert_allclose(LA_COLOR, np.array([203, 108, 81]) / 255)
    for name, colour, codes in ((LA_SEGMENT, LA_COLOR, ("SCT^123037004^Anatomical Structure", "SCT^82471001^Left atrium")),
                                (SCAR_SEGMENT, SCAR_COLOR, ("SCT^85756007^Tissue", "SCT^12402003^Scar tissue",
                                                            "SCT^82471001^Left atrium"))):
        segment = seg.GetSegment(seg.GetSegmentIdBySegmentName(name))
        np.testing.assert_allclose(segment.GetColor(), colour, atol=1e-6)
        assert all(code in segment.GetTerminology() for code in codes), (name, segment.GetTerminology())
    assert seg.ContainsRepresentation("Closed surface"), "no closed surface for the 3D view"
    display = node.GetDisplayNode()
    assert display.GetVisibility3D() and display.GetPreferredDisplayRepresentationName3D() == "Closed surface"


def check_surface_model(result) -> None:
    from vtk.util.numpy_support import vtk_to_numpy

    from .logic import LA_SEGMENT, NORMAL_WALL_COLOR, SCAR_COLOR, SURFACE_NAME

    model = result.surfaceModel
    assert model.GetName() == SURFACE_NAME
    poly = model.GetPolyData()
    assert poly.GetNumberOfPoints() > 1000
    point_data = poly.GetPointData()
    prob, scar = point_data.GetArray("ScarProbability"), point_data.GetArray("Scar")
    assert prob is not None and scar is not None, "ScarProbability and Scar point arrays are needed"
    p, s = vtk_to_numpy(prob), vtk_to_numpy(scar)
    assert p.min() >= 0 and p.max() <= 1 and set(np.unique(s)) <= {0, 1}
    display = model.GetDisplayNode()
    assert display.GetActiveScalarName() == "Scar" and display.GetScalarVisibility()
    assert display.GetScalarRangeFlag() == display.UseManualScalarRange
    assert tuple(display.GetScalarRange()) == (0.0, 1.0)
    table = display.GetColorNode()
    assert table.GetNumberOfColors() == 2 and table.GetColorName(0) == "Normal wall" and table.GetColorName(1) == "Scar"
    np.testing.assert_allclose(table.GetLookupTable().GetTableValue(0)[:3], NORMAL_WALL_COLOR, atol=1 / 255)  # 8-bit table
    np.testing.assert_allclose(table.GetLookupTable().GetTableValue(1)[:3], SCAR_COLOR, atol=1 / 255)
    legends = [model.GetNthDisplayNode(i) for i in range(model.GetNumberOfDisplayNodes())
               if model.GetNthDisplayNode(i).IsA("vtkMRMLColorLegendDisplayNode")]
    assert len(legends) == 1 and legends[0].GetVisibility(), "the surface needs a visible colour legend"
    # The surface lies on the LA segment (both in RAS): the same bounds within a few mm.
    import vtk

    seg = result.segmentation
    surface = vtk.vtkPolyData()
    seg.GetClosedSurfaceRepresentation(seg.GetSegmentation().GetSegmentIdBySegmentName(LA_SEGMENT), surface)
    model_bounds, segment_bounds = np.asarray(poly.GetBounds()), np.asarray(surface.GetBounds())
    assert np.abs(model_bounds - segment_bounds).max() < 4.0, (model_bounds, segment_bounds)


def check_table(result) -> None:
    from .logic import report_rows

    table = result.metricsTable
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == ["Metric", "Value", "Unit"]
    rows = [tuple(table.GetCellText(r, c) for c in range(3)) for r in range(table.GetNumberOfRows())]
    leaves = flat_leaves(result.report)
    assert sorted(r[0] for r in rows) == sorted(leaves), (rows, leaves)
    for metric, value, unit in rows:
        expected = leaves[metric]
        if isinstance(expected, float):
            assert float(value) == expected, (metric, value, expected)
        else:
            assert value == ("" if expected is None else str(expected)), (metric, value, expected)
    assert rows == report_rows(result.report)
    units = {m: u for m, _, u in rows}
    assert units["la.volume_ml"] == "mL" and units["scar.burden_surface_pct"] == "%"


def check_outputs(result, inputVolume) -> None:
    """Everything one run puts into the scene, and that it belongs to `inputVolume`."""
    from .logic import INPUT_REFERENCE, OUTPUT_ATTRIBUTE, LAScarSegLogic

    check_segmentation(result)
    check_surface_model(result)
    check_table(result)
    found = LAScarSegLogic.findOutputs(inputVolume)
    assert found == {"segmentation": result.segmentation, "surface": result.surfaceModel,
                     "table": result.metricsTable}, found
    for node in found.values():
        assert node.GetAttribute(OUTPUT_ATTRIBUTE) and node.GetNodeReferenceID(INPUT_REFERENCE) == inputVolume.GetID()


# ================================================================== the phantom case (pytest + self-test)
def run_phantom_case(logic, scene, *, seed: int = 0, model: str | None = None) -> dict[str, Any]:
    """One `process` run on a phantom as a user would set it up, for the checks below.

    The image sits under a patient / study in the subject hierarchy; the manual LA is a labelmap
    on a coarser grid (so it must be resampled, with a warning); the manual scar is a
    segmentation node. Records the user's nodes' state and the progress fractions.
    """
    import time

    from .image import Geometry, resample
    from .logic import labelmap_to_segmentation, volume_to_node
    from .phantom import make_phantom

    ph = make_phantom(seed)
    g = ph.image.geometry
    image = volume_to_node(ph.image, "lge", scene=scene)
    coarse = Geometry(size=tuple(s // 2 for s in g.size), spacing=tuple(2 * s for s in g.spacing), origin=g.origin,
                      direction=g.direction)
    la_label = volume_to_node(resample(ph.la, coarse, interpolation="nearest"), "manual LA", labelmap=True,
                              scene=scene)
    scar_labelmap = volume_to_node(ph.scar, "manual scar", labelmap=True, scene=scene)
    scar_seg = labelmap_to_segmentation(scar_labelmap, closed_surface=False)
    shn = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode")
    study = shn.CreateStudyItem(shn.CreateSubjectItem(shn.GetSceneItemID(), "patient"), "study")
    item = shn.GetItemByDataNode(image)  # the application makes items itself; plain MRML does not
    if item:
        shn.SetItemParent(item, study)
    else:
        shn.CreateItem(study, image)
    user = {n.GetID(): (n.GetMTime(), n.GetNumberOfNodeReferenceRoles()) for n in (image, la_label, scar_seg)}
    before = set(node_ids(scene))
    fractions: list[float] = []
    t0 = time.perf_counter()
    result = logic.process(image, la_label, scar_seg, model=model, progress=lambda f, m: fractions.append(f))
    return dict(result=result, image=image, la_label=la_label, scar_seg=scar_seg, before=before, user=user,
                fractions=fractions, seconds=time.perf_counter() - t0, shn=shn, study=study, scene=scene,
                phantom=ph)


def check_phantom_case(case: dict[str, Any]) -> None:
    """Every output node, its place in the hierarchy, the progress, the labels' use, and that the
    user's nodes were left alone."""
    import slicer

    result, image, scene = case["result"], case["image"], case["scene"]
    check_outputs(result, image)
    added = set(node_ids(scene)) - case["before"]
    classes = sorted(scene.GetNodeByID(i).GetClassName() for i in added if scene.GetNodeByID(i) is not None)
    for cls in ("vtkMRMLSegmentationNode", "vtkMRMLModelNode", "vtkMRMLTableNode"):
        assert classes.count(cls) == 1, classes
    shn, study = case["shn"], case["study"]
    for node in (result.segmentation, result.surfaceModel, result.metricsTable):
        assert shn.GetItemParent(shn.GetItemByDataNode(node)) == study, f"{node.GetName()} is not under the study"
    fractions = case["fractions"]
    assert len(fractions) > 10 and fractions == sorted(fractions) and fractions[-1] >= 0.97, fractions[-5:]

    report = result.report
    assert set(report["metrics"]) == {"la", "scar"}
    assert report["metrics"]["la"]["dice"] > 0.5, "the model did not find the phantom's LA"
    assert any("LA label" in w and "resampled" in w for w in report["warnings"]), report["warnings"]
    # The scar segmentation was exported on the input's grid: the pipeline saw the phantom's scar.
    assert result.pipelineResult.labels["scar"].array.sum() == case["phantom"].scar.array.sum()
    for node in (image, case["la_label"], case["scar_seg"]):
        assert (node.GetMTime(), node.GetNumberOfNodeReferenceRoles()) == case["user"][node.GetID()], \
            f"{node.GetName()} was modified"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(image), case["phantom"].image.array)
