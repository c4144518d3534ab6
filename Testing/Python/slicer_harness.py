"""Real MRML in plain Python for the LAScarSeg tests (the `slicer-core` wheel, no Slicer application).

The PyPI wheel `slicer-core` (Kitware) ships Slicer's MRML, logic and displayable-manager libraries
as `slicer_core/*.so`; `import slicer` gathers them (and Slicer's own `slicer/util.py`) into one
namespace: `slicer.vtkMRMLScene`, `slicer.vtkSlicerApplicationLogic`, `slicer.vtkSlicerVolumesLogic`,
`slicer.vtkSlicerSegmentationsModuleLogic`, `slicer.vtkSlicerColorLogic`,
`slicer.vtkMRMLModelDisplayableManager`, `slicer.util.getNode`... There is no Qt, no `slicer.app`,
no `slicer.modules` and no `slicer.mrmlScene` until someone sets them: `MRMLHarness` does what
Slicer's core application does at start-up (an application logic with the Colors, Volumes and
Segmentations module logics) and `MRMLHarness.slicer_globals()` sets `slicer.mrmlScene` and a
minimal `slicer.modules` so that the `slicer.util` array and segment helpers work.

Three parts:

* `MRMLHarness`: scene + application logic + module logics (used by the fixtures in conftest.py).
* Volume <-> volume node conversion (`volume_to_node`, `node_to_volume`, `ijk_to_ras_matrix`,
  `geometry_from_ijk_to_ras`): LAScarSegLib works in LPS like SimpleITK and the files, Slicer in
  RAS. They live in `LAScarSegLib.logic` and are re-exported here.
* `render_scene_to_png`: offscreen rendering of the scene's models and segmentations through
  Slicer's own 3D displayable managers (EGL + Mesa llvmpipe, no display needed).
"""

from __future__ import annotations

import os

# Offscreen OpenGL without a display: EGL (Mesa llvmpipe on a machine without GPU). VTK reads this
# when a render window is instantiated, so it must be set before the first vtkRenderWindow();
# setdefault lets a user choose OSMesa instead (VTK_DEFAULT_OPENGL_WINDOW=vtkOSOpenGLRenderWindow,
# which needs libosmesa6).
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import shutil  # noqa: E402
import tempfile  # noqa: E402
import types  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterator, Sequence  # noqa: E402

import numpy as np  # noqa: E402


try:
    import slicer
    import vtk
    from vtk.util import numpy_support

    HAVE_SLICER_CORE = hasattr(slicer, "vtkMRMLScene") and hasattr(slicer, "vtkSlicerApplicationLogic")
except ImportError:  # pragma: no cover - exercised only where slicer-core is absent
    slicer = vtk = numpy_support = None  # type: ignore[assignment]
    HAVE_SLICER_CORE = False

SLICER_CORE_MISSING = (
    "slicer-core (Kitware's PyPI wheel of Slicer's MRML libraries) is not installed, or `import slicer` "
    "found another package: real-MRML tests skipped. Install it with "
    "`pip install 'slicer-core==5.13.31053.0'` (the project's 'test' extra)."
)


def require_slicer_core() -> None:
    if not HAVE_SLICER_CORE:
        raise RuntimeError(SLICER_CORE_MISSING)


# ============================================================================= application harness
#: Module logics registered as Slicer's core application does (module name -> class in `slicer`).
#: "Colors" first: loading a volume through the Volumes logic sets its display colours from it.
CORE_MODULE_LOGICS: tuple[tuple[str, str], ...] = (
    ("Colors", "vtkSlicerColorLogic"),
    ("Volumes", "vtkSlicerVolumesLogic"),
    ("Segmentations", "vtkSlicerSegmentationsModuleLogic"),
)


class _ModuleShim:
    """Stands for `slicer.modules.<name>` of the real application: only `.name` and `.logic()`."""

    def __init__(self, name: str, logic) -> None:
        self.name = name
        self._logic = logic

    def logic(self):
        return self._logic

    def __repr__(self) -> str:
        return f"<slicer.modules.{self.name.lower()} shim: {self._logic.GetClassName()}>"


class MRMLHarness:
    """A scene with an application logic and the Colors, Volumes and Segmentations module logics.

    Recipe (what qSlicerCoreApplication and the module loaders do, without Qt):

    1. `vtkSlicerApplicationLogic` with a home directory holding an empty `share/ColorFiles`
       (otherwise the Colors logic logs an error: the wheel has no Slicer share files), the scene
       and empty slice / view logic collections.
    2. For each module logic: `SetMRMLApplicationLogic` *before* `SetMRMLScene` (the Colors logic
       looks up its default colour files through the application logic when it gets the scene),
       then `app_logic.SetModuleLogic(name, logic)`.
    3. `app_logic.SetColorLogic(colors_logic)`, as the Colors module does.

    The application logic keeps module logics through weak pointers, so this object holds the
    Python references: `app_logic.GetModuleLogic("Volumes")` returns None once they are dropped.
    """

    def __init__(self) -> None:
        require_slicer_core()
        self.home = Path(tempfile.mkdtemp(prefix="lascarseg-mrml-"))
        (self.home / "share" / "ColorFiles").mkdir(parents=True)
        (self.home / "tmp").mkdir()

        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetHomeDirectory(str(self.home))
        self.app_logic.SetShareDirectory("share")  # relative to the home directory
        self.app_logic.SetTemporaryPath(str(self.home / "tmp"))
        self.app_logic.SetMRMLScene(self.scene)
        self.app_logic.SetSliceLogics(vtk.vtkCollection())
        self.app_logic.SetViewLogics(vtk.vtkCollection())

        self.logics: dict[str, object] = {}
        for name, class_name in CORE_MODULE_LOGICS:
            self.register_logic(name, getattr(slicer, class_name)())
        self.app_logic.SetColorLogic(self.logics["Colors"])

    # ------------------------------------------------------------------------------- logics
    def register_logic(self, name: str, logic):
        """Give `logic` the application logic and the scene and register it as module `name`."""
        logic.SetMRMLApplicationLogic(self.app_logic)
        logic.SetMRMLScene(self.scene)
        self.app_logic.SetModuleLogic(name, logic)
        self.logics[name] = logic  # the application logic only holds a weak pointer
        return logic

    def logic(self, name: str):
        return self.logics[name]

    @property
    def volumes_logic(self):
        return self.logics["Volumes"]

    @property
    def segmentations_logic(self):
        return self.logics["Segmentations"]

    @property
    def colors_logic(self):
        return self.logics["Colors"]

    # -------------------------------------------------------------------------------- scene
    def clear(self) -> None:
        """Close the scene as File > Close Scene does: every node but the singletons goes.

        The subject hierarchy node goes too and is added back at once, as Slicer's Subject
        Hierarchy module does after a close, so that a cleared scene is the one a test started with.
        """
        self.scene.Clear(False)
        slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)

    @contextmanager
    def slicer_globals(self) -> Iterator["MRMLHarness"]:
        """Set `slicer.mrmlScene` and a minimal `slicer.modules` for the block, then restore them.

        `slicer.modules.colors/volumes/segmentations.logic()` return the registered logics, which
        is what `slicer.util.arrayFromSegmentBinaryLabelmap` and friends call. `slicer.app` is
        deliberately not faked: code that needs the Qt application must not think it has one.
        """
        missing = object()
        saved = {k: getattr(slicer, k, missing) for k in ("mrmlScene", "modules")}
        slicer.mrmlScene = self.scene
        slicer.modules = types.SimpleNamespace(
            **{name.lower(): _ModuleShim(name, logic) for name, logic in self.logics.items()}
        )
        try:
            yield self
        finally:
            for key, value in saved.items():
                if value is missing:
                    if hasattr(slicer, key):
                        delattr(slicer, key)
                else:
                    setattr(slicer, key, value)

    def close(self) -> None:
        self.scene.Clear(False)
        for name in self.logics:
            self.app_logic.SetModuleLogic(name, None)
        self.logics.clear()  # the logics go with their last reference
        shutil.rmtree(self.home, ignore_errors=True)


# ==================================================================== Volume <-> MRML volume node
# The conversions and node helpers live in LAScarSegLib.logic (the library's one module that may
# import slicer), so that the Slicer logic and the tests do each thing one way. Re-exported here.
if HAVE_SLICER_CORE:
    from LAScarSegLib.slicer.mrml import (  # noqa: E402,F401
        LPS_TO_RAS,
        add_label_color_table,
        add_model,
        geometry_from_ijk_to_ras,
        ijk_to_ras_matrix,
        labelmap_to_segmentation,
        node_to_volume,
        oriented_image,
        segment_names,
        segments_to_volume,
        volume_to_node,
    )


# ====================================================================== offscreen rendering (3D)
#: Where the camera sits, seen from the scene's centre (RAS), and the screen's up direction.
VIEW_DIRECTIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "right": ((1, 0, 0), (0, 0, 1)),
    "left": ((-1, 0, 0), (0, 0, 1)),
    "anterior": ((0, 1, 0), (0, 0, 1)),
    "posterior": ((0, -1, 0), (0, 0, 1)),
    "superior": ((0, 0, 1), (0, 1, 0)),
    "inferior": ((0, 0, -1), (0, 1, 0)),
}
for _full in list(VIEW_DIRECTIONS):
    VIEW_DIRECTIONS[_full[0].upper()] = VIEW_DIRECTIONS[_full]

#: Slicer's 3D displayable managers used for the screenshots (class names, instantiated by factory).
RENDER_DISPLAYABLE_MANAGERS = ("vtkMRMLModelDisplayableManager", "vtkMRMLSegmentationsDisplayableManager3D")


def _camera_axes(view_direction) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(view_direction, str):
        key = view_direction if len(view_direction) == 1 else view_direction.lower()
        if key not in VIEW_DIRECTIONS:
            raise ValueError(
                f"unknown view direction {view_direction!r}; use one of {sorted(VIEW_DIRECTIONS)} or a vector"
            )
        eye, up = VIEW_DIRECTIONS[key]
        return np.asarray(eye, float), np.asarray(up, float)
    eye = np.asarray(view_direction, dtype=float)
    if eye.shape != (3,) or not np.linalg.norm(eye) > 0:
        raise ValueError(f"view direction must be a name or a non-zero RAS vector, got {view_direction!r}")
    eye = eye / np.linalg.norm(eye)
    up = np.array([0.0, 0.0, 1.0]) if abs(eye[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    return eye, up


def render_scene_to_png(
    scene,
    path: str | os.PathLike,
    size: tuple[int, int] = (400, 300),
    view_direction: str | Sequence[float] = "anterior",
    *,
    app_logic=None,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    parallel_projection: bool = True,
    zoom: float = 1.0,
    show_segmentations: bool = True,
) -> Path:
    """Render the scene's models (and segmentations) offscreen through Slicer's displayable managers.

    A temporary `vtkMRMLViewNode` is added to the scene and a `vtkMRMLDisplayableManagerGroup`,
    built from a private `vtkMRMLDisplayableManagerFactory` (the singleton 3D factory is left
    alone), watches it: `vtkMRMLModelDisplayableManager` turns every visible model display node
    into actors with its colour node, active scalar and scalar range exactly as the Slicer 3D view
    does, and `vtkMRMLSegmentationsDisplayableManager3D` shows segmentations' closed surfaces
    (created here when missing, if `show_segmentations`). The render window must have an
    interactor: the displayable managers update its interactor style when they get the view node
    and crash on a null one.

    `view_direction`: a side (`anterior`/`A`, `posterior`, `left`, `right`, `superior`, `inferior`)
    the camera looks from, as the 3D view's axis buttons, or a RAS vector from the scene's centre
    to the camera. Superior is up on screen except for superior/inferior views (anterior up).
    `app_logic`: the application logic given to the displayable managers (optional for models).
    Returns the PNG path; everything created for the render is removed again.
    """
    require_slicer_core()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    eye, up = _camera_axes(view_direction)

    if show_segmentations:
        segmentations = scene.GetNodesByClass("vtkMRMLSegmentationNode")
        for i in range(segmentations.GetNumberOfItems()):
            segmentation = segmentations.GetItemAsObject(i)
            if segmentation.GetDisplayNode() is None:
                segmentation.CreateDefaultDisplayNodes()
            segmentation.CreateClosedSurfaceRepresentation()

    view_node = slicer.vtkMRMLViewNode()
    view_node.SetLayoutName("LAScarSegOffscreen")
    view_node.SetName("LAScarSeg offscreen view")
    scene.AddNode(view_node)

    render_window = vtk.vtkRenderWindow()
    render_window.SetOffScreenRendering(1)
    render_window.SetSize(int(size[0]), int(size[1]))
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(*background)
    render_window.AddRenderer(renderer)
    interactor = vtk.vtkGenericRenderWindowInteractor()  # never started; see the docstring
    interactor.SetRenderWindow(render_window)

    factory = slicer.vtkMRMLDisplayableManagerFactory()
    if app_logic is not None:
        factory.SetMRMLApplicationLogic(app_logic)
    for manager in RENDER_DISPLAYABLE_MANAGERS if show_segmentations else RENDER_DISPLAYABLE_MANAGERS[:1]:
        factory.RegisterDisplayableManager(manager)
    group = slicer.vtkMRMLDisplayableManagerGroup()
    try:
        group.Initialize(factory, renderer)
        group.SetMRMLDisplayableNode(view_node)

        bounds = renderer.ComputeVisiblePropBounds()
        camera = renderer.GetActiveCamera()
        camera.SetParallelProjection(bool(parallel_projection))
        if bounds[0] <= bounds[1]:
            centre = np.array([(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2])
        else:
            centre = np.zeros(3)
        camera.SetFocalPoint(*centre)
        camera.SetPosition(*(centre + eye))
        camera.SetViewUp(*up)
        if bounds[0] <= bounds[1]:
            renderer.ResetCamera(bounds)
        camera.Zoom(float(zoom))
        renderer.ResetCameraClippingRange()
        render_window.Render()

        grabber = vtk.vtkWindowToImageFilter()
        grabber.SetInput(render_window)
        grabber.SetInputBufferTypeToRGB()
        grabber.ReadFrontBufferOff()
        grabber.Update()
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(path))
        writer.SetInputConnection(grabber.GetOutputPort())
        writer.Write()
    finally:
        group.SetMRMLDisplayableNode(None)
        if scene.IsNodePresent(view_node):
            scene.RemoveNode(view_node)
        render_window.Finalize()
    return path


def read_png(path: str | os.PathLike) -> np.ndarray:
    """A PNG as a (height, width, channels) uint8 array, row 0 at the top of the picture."""
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    width, height, _ = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    arr = numpy_support.vtk_to_numpy(scalars).reshape(height, width, scalars.GetNumberOfComponents())
    return np.ascontiguousarray(arr[::-1])
