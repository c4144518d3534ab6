"""The real-MRML harness: scene and module logics, LPS <-> RAS volume conversion, offscreen 3D rendering.

Runs on the `slicer-core` wheel in plain Python (fixtures in conftest.py, helpers in
slicer_harness.py); skipped with the reason where that wheel is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import slicer_harness as sh
from LAScarSegLib.core.image import Geometry, Volume

if not sh.HAVE_SLICER_CORE:
    pytest.skip(sh.SLICER_CORE_MISSING, allow_module_level=True)

import slicer  # noqa: E402
import vtk  # noqa: E402

FLIP = np.array([-1.0, -1.0, 1.0])  # LPS <-> RAS, written out independently of the harness


def rotation(axis, angle_rad: float) -> np.ndarray:
    """Rodrigues: rotation matrix about `axis`."""
    k = np.asarray(axis, dtype=float)
    k = k / np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * kx + (1 - np.cos(angle_rad)) * kx @ kx


def oblique_geometry(size=(18, 14, 10), spacing=(0.7, 0.9, 2.5), origin=(-31.5, 12.25, 104.0), flip_k=False):
    d = rotation((0.3, -0.5, 0.8), 0.6)
    if flip_k:  # a left-handed grid (det -1), as some DICOM series give
        d[:, 2] *= -1
    return Geometry(size=size, spacing=spacing, origin=origin, direction=tuple(d.ravel()))


def ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


# ------------------------------------------------------------------------------------- harness
def test_application_logic_has_the_core_module_logics(mrml) -> None:
    app = mrml.app_logic
    assert app.GetModuleLogic("Colors").GetClassName() == "vtkSlicerColorLogic"
    assert app.GetModuleLogic("Volumes").GetClassName() == "vtkSlicerVolumesLogic"
    assert app.GetModuleLogic("Segmentations").GetClassName() == "vtkSlicerSegmentationsModuleLogic"
    assert app.GetColorLogic() is mrml.colors_logic
    for name in ("Colors", "Volumes", "Segmentations"):
        logic = app.GetModuleLogic(name)
        assert logic.GetMRMLScene() is mrml.scene
        assert logic.GetMRMLApplicationLogic() is app
    assert slicer.mrmlScene is mrml.scene
    assert slicer.modules.segmentations.logic() is mrml.segmentations_logic
    assert slicer.modules.volumes.logic() is mrml.volumes_logic
    assert not hasattr(slicer, "app")  # not faked: only the real application has one
    # The Colors logic filled the scene with Slicer's default colour tables.
    assert mrml.scene.GetFirstNodeByName("Grey") is not None
    assert mrml.scene.GetNodeByID("vtkMRMLColorTableNodeLabels") is not None


@pytest.mark.parametrize("run", ["first", "second"])
def test_each_test_gets_a_cleared_scene(mrml_scene, run) -> None:
    """Whichever runs second would find the other's node if the scene leaked between tests."""
    assert mrml_scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0
    assert mrml_scene.GetFirstNodeByName("probe") is None
    mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "probe")
    assert slicer.util.getNode("probe").GetName() == "probe"


# ----------------------------------------------------------------------------- volumes (LPS/RAS)
def test_volume_loaded_by_the_volumes_logic_is_placed_in_ras(mrml, tmp_path) -> None:
    geometry = oblique_geometry()
    rng = np.random.default_rng(0)
    array = rng.normal(100, 20, geometry.shape).astype(np.float32)
    image = geometry.apply_to(sitk.GetImageFromArray(array))
    path = tmp_path / "lge.nii.gz"
    sitk.WriteImage(image, str(path))

    node = mrml.volumes_logic.AddArchetypeVolume(str(path), "lge")
    assert node is not None and node.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert node.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeGrey"  # from the Colors logic
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)  # (z, y, x) both sides
    np.testing.assert_allclose(node.GetSpacing(), geometry.spacing, atol=1e-5)
    np.testing.assert_allclose(node.GetOrigin(), FLIP * np.asarray(geometry.origin), atol=1e-4)

    # Voxel centres: Slicer's IJK -> RAS against SimpleITK's index -> LPS, flipped.
    m = ijk_to_ras(node)
    for ijk in [(0, 0, 0), (17, 0, 0), (0, 13, 0), (0, 0, 9), (5, 7, 3), (17, 13, 9)]:
        lps = np.asarray(image.TransformIndexToPhysicalPoint(ijk))
        ras = (m @ np.array([*ijk, 1.0]))[:3]
        np.testing.assert_allclose(ras, FLIP * lps, atol=1e-4)

    # The harness conversion agrees with Slicer's reader both ways.
    volume = Volume.from_sitk(image)
    np.testing.assert_allclose(sh.ijk_to_ras_matrix(volume.geometry), m, atol=1e-5)
    back = sh.node_to_volume(node)
    assert back.geometry.same_grid(volume.geometry)
    np.testing.assert_array_equal(back.array, array)
    assert back.source == "lge"
    made = sh.volume_to_node(volume, "made")
    np.testing.assert_allclose(ijk_to_ras(made), m, atol=1e-5)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(made), array)


@pytest.mark.parametrize("flip_k", [False, True], ids=["right-handed", "left-handed"])
def test_volume_node_round_trip_keeps_oblique_geometry(mrml, flip_k) -> None:
    geometry = oblique_geometry(flip_k=flip_k)
    rng = np.random.default_rng(1)
    image = Volume(rng.normal(0, 1, geometry.shape).astype(np.float32), geometry, "image")
    label = Volume((rng.random(geometry.shape) > 0.7).astype(np.int64) * 2, geometry, "label")

    image_node = sh.volume_to_node(image, "image")
    label_node = sh.volume_to_node(label, "label", labelmap=True)
    assert image_node.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert label_node.GetClassName() == "vtkMRMLLabelMapVolumeNode"
    assert label_node.GetImageData().GetScalarType() == vtk.VTK_INT  # no "long long" volumes in Slicer

    # RAS of voxel (i, j, k) is the flipped LPS of the same voxel.
    ijk = np.array([[0, 0, 0], [3, 5, 7], [17, 13, 9]], dtype=float)
    ras = (ijk_to_ras(image_node) @ np.c_[ijk, np.ones(3)].T).T[:, :3]
    np.testing.assert_allclose(ras, FLIP * geometry.index_to_physical(ijk), atol=1e-9)
    np.testing.assert_allclose(image_node.GetOrigin(), FLIP * np.asarray(geometry.origin), atol=1e-9)

    for node, original in [(image_node, image), (label_node, label)]:
        back = sh.node_to_volume(node)
        assert back.geometry.size == geometry.size
        np.testing.assert_allclose(back.geometry.spacing, geometry.spacing, atol=1e-12)
        np.testing.assert_allclose(back.geometry.origin, geometry.origin, atol=1e-9)
        np.testing.assert_allclose(back.geometry.direction, geometry.direction, atol=1e-12)
        np.testing.assert_array_equal(back.array, original.array)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), original.array)

    # Updating a node in place replaces voxels and geometry.
    other = Volume(np.ones((4, 5, 6), np.int16), Geometry((6, 5, 4), (1.0, 1.0, 1.0), (1.0, 2.0, 3.0)))
    assert sh.volume_to_node(other, node=label_node) is label_node
    again = sh.node_to_volume(label_node)
    assert again.geometry.same_grid(other.geometry)
    np.testing.assert_array_equal(again.array, other.array)


# --------------------------------------------------------------------------------- segmentations
def test_labelmap_imports_into_a_segmentation_with_names_and_surfaces(mrml, tmp_path) -> None:
    geometry = oblique_geometry(size=(30, 26, 12), spacing=(1.0, 1.0, 2.0))
    labels = np.zeros(geometry.shape, np.uint8)
    labels[2:10, 5:20, 6:24] = 1  # "LA": a block, (z, y, x)
    labels[4:7, 8:12, 9:13] = 2  # "scar": a smaller block inside it
    table = sh.add_label_color_table({1: "LA", 2: "scar"})
    label_node = sh.volume_to_node(Volume(labels, geometry, "labels"), "labels", labelmap=True, color_node=table)

    segmentation = sh.labelmap_to_segmentation(label_node)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2
    assert sh.segment_names(segmentation) == ["LA", "scar"]
    la = segmentation.GetSegmentation().GetSegment(segmentation.GetSegmentation().GetSegmentIdBySegmentName("LA"))
    np.testing.assert_allclose(la.GetColor(), table.GetLookupTable().GetTableValue(1)[:3], atol=1e-6)
    assert segmentation.GetSegmentation().ContainsRepresentation("Closed surface")

    seg = segmentation.GetSegmentation()
    for value, name in [(1, "LA"), (2, "scar")]:
        segment_id = seg.GetSegmentIdBySegmentName(name)
        # Voxels back through slicer.util (which calls slicer.modules.segmentations.logic()).
        exported = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, label_node)
        np.testing.assert_array_equal(exported > 0, labels == value)
        # The closed surface sits where the voxels are, in RAS.
        surface = vtk.vtkPolyData()
        segmentation.GetClosedSurfaceRepresentation(segment_id, surface)
        assert surface.GetNumberOfPoints() > 50
        voxels_zyx = np.argwhere(labels == value)
        centre_ras = FLIP * geometry.index_to_physical(voxels_zyx[:, ::-1]).mean(axis=0)
        points = vtk.util.numpy_support.vtk_to_numpy(surface.GetPoints().GetData())
        bounds_centre = (points.min(axis=0) + points.max(axis=0)) / 2
        np.testing.assert_allclose(bounds_centre, centre_ras, atol=2.5)

    # Slicer's 3D segmentation displayable manager shows it: the LA colour fills part of the view.
    png = sh.render_scene_to_png(mrml.scene, tmp_path / "segmentation.png", size=(200, 160), app_logic=mrml.app_logic)
    rgb = sh.read_png(png).astype(int)
    reddish = (rgb[..., 0] > 60) & (rgb[..., 0] > 1.5 * rgb[..., 2])  # LA (0.85, 0.33, 0.33), shaded
    assert reddish.mean() > 0.05
    # ...and nothing once the segmentation is hidden (the image is the segmentation, not noise).
    segmentation.GetDisplayNode().SetVisibility(False)
    rgb = sh.read_png(sh.render_scene_to_png(mrml.scene, tmp_path / "hidden.png", size=(200, 160))).astype(int)
    assert rgb.max() == 0


# ----------------------------------------------------------------------------------- rendering
SPHERE_CENTRE = np.array([20.0, -10.0, 5.0])  # RAS, away from the origin: the camera must follow
RADIUS = 10.0
CUT = 5.0  # scalar "high" (1) where x - centre_x > CUT, i.e. a cap on the patient's right


def sphere_model():
    source = vtk.vtkSphereSource()
    source.SetCenter(*SPHERE_CENTRE)
    source.SetRadius(RADIUS)
    source.SetThetaResolution(96)
    source.SetPhiResolution(96)
    source.Update()
    polydata = source.GetOutput()
    points = vtk.util.numpy_support.vtk_to_numpy(polydata.GetPoints().GetData())
    high = (points[:, 0] - SPHERE_CENTRE[0] > CUT).astype(np.float32)
    scalars = vtk.util.numpy_support.numpy_to_vtk(high, deep=True)
    scalars.SetName("scar")
    polydata.GetPointData().AddArray(scalars)
    # Blue for 0, red for 1: the reverse of VTK's default lookup table (0 red ... 1 blue), so a
    # renderer ignoring the display node's colour node would fail the fraction checks below.
    table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorTableNode", "low-high")
    table.SetTypeToUser()
    table.SetNumberOfColors(2)
    table.SetColor(0, "low", 0.0, 0.0, 1.0, 1.0)
    table.SetColor(1, "high", 1.0, 0.0, 0.0, 1.0)
    return sh.add_model(polydata, "sphere", active_scalar="scar", color_node=table, scalar_range=(0.0, 1.0))


def colour_classes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels shaded from the 'high' colour (red) and from the 'low' colour (blue)."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    high = (r > 12) & (r > 2 * b) & (r > 2 * g)
    low = (b > 12) & (b > 2 * r) & (b > 2 * g)
    return high, low


def cap_fraction_seen_from_front() -> float:
    """Area of the projected cap x > CUT over the disk area (orthographic view along y)."""
    t = CUT / RADIUS
    return (np.arccos(t) - t * np.sqrt(1 - t * t)) / np.pi


def test_model_scalars_render_through_the_model_displayable_manager(mrml, tmp_path) -> None:
    model = sphere_model()
    size = (320, 240)

    front = sh.render_scene_to_png(mrml.scene, tmp_path / "anterior.png", size=size, view_direction="anterior",
                                   app_logic=mrml.app_logic)
    assert front.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rgb = sh.read_png(front)
    assert rgb.shape == (size[1], size[0], 3)
    high, low = colour_classes(rgb)
    sphere = high.sum() + low.sum()
    # The camera found and framed it: ResetCamera fits the bounding box's sphere (radius R * sqrt(3))
    # into the view height, so the disk covers about pi / 3 * 240 / 320 / 4 = 20 % of the picture.
    assert sphere / rgb[..., 0].size == pytest.approx(np.pi / 3 * size[1] / size[0] / 4, rel=0.15)
    # Seen from the front, the red cap covers ~19.6 % of the disk...
    assert high.sum() / sphere == pytest.approx(cap_fraction_seen_from_front(), abs=0.025)
    # ...on the patient's right, which is the viewer's left from the front.
    columns = np.nonzero(high)[1]
    assert columns.max() < np.nonzero(low)[1].mean()

    # From the patient's right the same cap is a central disk of radius sqrt(R^2 - CUT^2): 75 %.
    side = sh.read_png(sh.render_scene_to_png(mrml.scene, tmp_path / "right.png", size=size, view_direction="R"))
    high, low = colour_classes(side)
    assert high.sum() / (high.sum() + low.sum()) == pytest.approx(1 - (CUT / RADIUS) ** 2, abs=0.025)

    # Negative control: without scalar visibility, no pixel has the 'high' colour.
    model.GetDisplayNode().SetScalarVisibility(False)
    plain = sh.read_png(sh.render_scene_to_png(mrml.scene, tmp_path / "plain.png", size=size))
    high, low = colour_classes(plain)
    assert high.sum() == 0 and low.sum() == 0
    assert (plain.sum(axis=2) > 0).sum() == pytest.approx(sphere, rel=0.05)  # same sphere, plain colour


def test_rendering_leaves_the_scene_as_it_was(mrml, tmp_path) -> None:
    sphere_model()
    before = mrml.scene.GetNumberOfNodes()
    sh.render_scene_to_png(mrml.scene, tmp_path / "a.png", size=(64, 48), view_direction=(1, 1, 1))
    assert mrml.scene.GetNumberOfNodes() == before
    assert mrml.scene.GetNodesByClass("vtkMRMLViewNode").GetNumberOfItems() == 0
    with pytest.raises(ValueError, match="unknown view direction"):
        sh.render_scene_to_png(mrml.scene, tmp_path / "b.png", view_direction="sideways")
