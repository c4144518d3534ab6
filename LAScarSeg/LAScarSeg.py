"""LA Scar Segmentation: the 3D Slicer module of the LAScarSeg extension.

Left-atrium (LA) segmentation and LA-scar quantification from late-gadolinium-enhanced (LGE) MRI
with MTL-SESA (Li L, Weng X, Schnabel JA, Zhuang X, MICCAI 2020). All algorithms live in the
plain-Python package ``LAScarSegLib``; this file only connects them to Slicer.

Where the files are
-------------------
Slicer looks for scripted modules non-recursively, so in a built or installed extension this file
sits directly in ``qt-scripted-modules/`` with ``LAScarSegLib/`` and ``Resources/`` beside it
(the top-level CMakeLists.txt copies it there). A developer may instead add the repository's
``LAScarSeg/`` folder to Slicer's additional module paths: then ``LAScarSegLib/`` and
``Resources/`` are one level up. ``extensionRoot()`` finds whichever is true and puts that folder
on ``sys.path``; ``resourcePath()`` resolves resources in both layouts.

Importing this file never imports PyTorch: Slicer must be able to load the module before the
PyTorch extension has installed torch.

What is here now (foundation) and what comes with the GUI issue
---------------------------------------------------------------
Now: the module description, a widget that shows the help and a live status (library version,
whether PyTorch is installed, whether the model registry is present), a minimal logic, and a
self-test that runs a real check of the library without torch (a synthetic phantom's labels).

To come in the GUI issue, built on ``LAScarSegLib.logic`` (CONTRACTS section 7):
  * a ``@parameterNodeWrapper`` parameter class and ``Resources/UI/LAScarSeg.ui`` whose widgets
    carry ``SlicerParameterName`` properties;
  * input selectors (LGE volume; optional LA / scar labels for evaluation), device and model
    choice, the wall band, and an Apply button;
  * the pipeline in a background process with real progress and a Cancel that stops it, CPU
    fallback on GPU out-of-memory, and ``addResultToScene`` on the main thread;
  * installing torch through the PyTorch extension (``PyTorchUtils``) after the user confirms,
    never silently and never during a self-test;
  * sample data registered on ``startupCompleted`` with SHA-256 checksums.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

MODULE_NAME = "LAScarSeg"
_MODULE_DIR = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------------- file layout
def extensionRoot() -> str | None:
    """The folder that holds ``LAScarSegLib/`` and ``Resources/`` for this module file.

    Beside this file in a built or installed extension (``qt-scripted-modules/``), one level up
    when Slicer loads the module straight from the repository's ``LAScarSeg/`` folder.
    """
    for candidate in (_MODULE_DIR, os.path.dirname(_MODULE_DIR)):
        if os.path.isfile(os.path.join(candidate, "LAScarSegLib", "__init__.py")):
            return candidate
    return None


def _putLibraryOnPath() -> None:
    # The library shipped with this module comes first, so a different LAScarSegLib installed
    # in Slicer's Python (for example with pip) cannot be picked up by mistake.
    root = extensionRoot()
    if root is None:
        return
    root = os.path.normpath(root)
    if not any(os.path.normpath(os.path.abspath(p or os.curdir)) == root for p in sys.path):
        sys.path.insert(0, root)


_putLibraryOnPath()


def resourceDir() -> str:
    """The ``Resources`` folder of the extension (beside this file, or one level up)."""
    candidates = [os.path.join(_MODULE_DIR, "Resources"), os.path.join(os.path.dirname(_MODULE_DIR), "Resources")]
    spec = importlib.util.find_spec("LAScarSegLib")
    if spec is not None and spec.origin:
        # The library's own location, for a module file copied elsewhere (for example the copy
        # that CMake configures into the build folder before installing it).
        candidates.append(os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "Resources"))
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, "Icons", MODULE_NAME + ".png")):
            return candidate
    raise FileNotFoundError(
        f"{MODULE_NAME}: no Resources folder with Icons/{MODULE_NAME}.png near {_MODULE_DIR} "
        f"(looked in: {', '.join(candidates)})"
    )


def resourcePath(filename: str) -> str:
    """Full path of a resource, e.g. ``resourcePath("Icons/LAScarSeg.png")``."""
    return os.path.join(resourceDir(), filename)


# ------------------------------------------------------------------------------------- module
class LAScarSeg(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and Help & Acknowledgement section."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LA Scar Segmentation")
        self.parent.categories = ["Cardiac"]
        self.parent.dependencies = []  # PyTorch is imported lazily, through the PyTorch extension
        self.parent.contributors = ["LAScarSeg developers"]
        self.parent.helpText = _(
            "Segments the left atrium (LA) and quantifies LA scar from 3D late-gadolinium-"
            "enhanced (LGE) MRI with a multi-task network (MTL-SESA: a 3D U-Net with spatial "
            "encoding and shape attention). Scar is projected onto the LA surface, so the "
            "result is a surface scar map and the scar percentage of the LA wall, independent "
            "of wall thickness.<br><br>"
            "<b>For research use only; not for diagnosis or treatment.</b> The LA segmentation "
            "was trained and evaluated on public LGE MRI challenge data. The scar output has "
            "been validated on synthetic scar only (no real scar labels were available); treat "
            "scar maps and percentages as unvalidated on patient data.<br><br>"
            "This version shows the module status; the segmentation panel comes in the next "
            "version. The same pipeline runs from the command line: <code>lascarseg segment "
            "IMAGE --out DIR</code>."
        )
        self.parent.acknowledgementText = _(
            "Implements the method of: Li L, Weng X, Schnabel JA, Zhuang X. \"Joint Left Atrial "
            "Segmentation and Scar Quantification Based on a DNN with Spatial Encoding and "
            "Shape Attention\". Medical Image Computing and Computer Assisted Intervention "
            "(MICCAI) 2020. Please cite this paper when you use the module."
        )
        self._setIconFromResources()

    def _setIconFromResources(self) -> None:
        # Slicer picks up Resources/Icons/<Module>.png beside the module file by itself. When the
        # module is loaded from the repository's LAScarSeg/ folder the icon is one level up.
        if os.path.isfile(os.path.join(_MODULE_DIR, "Resources", "Icons", MODULE_NAME + ".png")):
            return
        try:
            iconPath = resourcePath(f"Icons/{MODULE_NAME}.png")
        except FileNotFoundError:
            return
        import qt

        self.parent.icon = qt.QIcon(iconPath)


# ------------------------------------------------------------------------------------- widget
class LAScarSegWidget(ScriptedLoadableModuleWidget):
    """Help, acknowledgement and a status box for now; the segmentation panel comes next."""

    def resourcePath(self, filename: str) -> str:
        return resourcePath(filename)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        import ctk
        import qt

        self.logic = LAScarSegLogic()
        status = self.logic.status()

        statusBox = ctk.ctkCollapsibleButton()
        statusBox.text = _("Status")
        self.layout.addWidget(statusBox)
        form = qt.QFormLayout(statusBox)

        form.addRow(_("Library:"), qt.QLabel(f"LAScarSegLib {status['libraryVersion']}"))
        torchText = (
            _("installed")
            if status["torchInstalled"]
            else _("not installed (it will be offered through the PyTorch extension when needed)")
        )
        torchLabel = qt.QLabel(torchText)
        torchLabel.wordWrap = True
        form.addRow(_("PyTorch:"), torchLabel)
        modelsText = _("present") if status["modelRegistry"] else _("no model registry in Resources/Models")
        form.addRow(_("Models:"), qt.QLabel(modelsText))

        notice = qt.QLabel(
            _(
                "The segmentation panel comes in the next version of this module. Until then, "
                "run the pipeline with the command line tool <code>lascarseg</code>."
            )
        )
        notice.wordWrap = True
        form.addRow(notice)

        self.layout.addStretch(1)


# -------------------------------------------------------------------------------------- logic
class LAScarSegLogic(ScriptedLoadableModuleLogic):
    """Minimal logic for now: module status and the library self-check used by the self-test.

    The segmentation logic (``process``, ``addResultToScene``, ``requantify``) lives in
    ``LAScarSegLib.logic`` (CONTRACTS section 7) and is connected here in the GUI issue.
    """

    def __init__(self, parent=None):
        ScriptedLoadableModuleLogic.__init__(self, parent)

    def resourcePath(self, filename: str) -> str:
        return resourcePath(filename)

    @staticmethod
    def status() -> dict:
        """Library version, whether torch is installed (found, not imported), model registry."""
        import LAScarSegLib

        registry = os.path.join(resourceDir(), "Models", "models.json")
        return {
            "libraryVersion": LAScarSegLib.__version__,
            "libraryPath": os.path.dirname(os.path.abspath(LAScarSegLib.__file__)),
            "torchInstalled": importlib.util.find_spec("torch") is not None,
            "modelRegistry": os.path.isfile(registry),
        }

    @staticmethod
    def phantomAvailable() -> bool:
        try:
            from LAScarSegLib import phantom
        except ImportError:
            return False
        return hasattr(phantom, "make_phantom")

    @staticmethod
    def checkPhantomLabels(seed: int = 0) -> list[str]:
        """Generate the synthetic phantom and list every inconsistency in its labels.

        An empty list means the labels are consistent: image, LA, wall and scar share one grid,
        the masks are binary and non-empty, the scar lies inside the wall, and the wall lies
        outside the LA (CONTRACTS section 2). Needs numpy and SimpleITK, never torch.
        """
        import numpy as np

        from LAScarSegLib.phantom import make_phantom

        ph = make_phantom(seed=seed)
        problems: list[str] = []
        parts = {}
        for name in ("image", "la", "wall", "scar"):
            volume = getattr(ph, name, None)
            if volume is None or not hasattr(volume, "array") or not hasattr(volume, "geometry"):
                problems.append(f"phantom.{name} is missing or is not a Volume")
            else:
                parts[name] = volume
        if problems:
            return problems

        image = parts["image"]
        if not np.all(np.isfinite(image.array)):
            problems.append("phantom.image has non-finite voxels")
        masks = {}
        for name in ("la", "wall", "scar"):
            volume = parts[name]
            if volume.array.shape != image.array.shape or volume.geometry != image.geometry:
                problems.append(f"phantom.{name} is not on the image grid")
                continue
            values = set(np.unique(volume.array).tolist())
            if not values <= {0, 1}:
                problems.append(f"phantom.{name} is not binary (values {sorted(values)})")
            mask = volume.array != 0
            if not mask.any():
                problems.append(f"phantom.{name} is empty")
            masks[name] = mask
        if {"wall", "scar"} <= masks.keys() and np.any(masks["scar"] & ~masks["wall"]):
            problems.append(f"{int(np.sum(masks['scar'] & ~masks['wall']))} scar voxels lie outside the wall")
        if {"la", "wall"} <= masks.keys() and np.any(masks["la"] & masks["wall"]):
            problems.append(f"{int(np.sum(masks['la'] & masks['wall']))} wall voxels lie inside the LA")
        return problems


# --------------------------------------------------------------------------------------- test
class LAScarSegTest(ScriptedLoadableModuleTest):
    """Self-test: real checks through the library, without torch and without network access."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_LibraryAndResources()
        self.setUp()
        if LAScarSegLogic.phantomAvailable():
            self.test_PhantomLabels()
        else:
            self.delayDisplay("LAScarSegLib.phantom.make_phantom not found: phantom check not run")

    def test_LibraryAndResources(self):
        self.delayDisplay("Checking the library and the resources")
        status = LAScarSegLogic.status()
        self.assertTrue(status["libraryVersion"])
        self.assertTrue(os.path.isfile(resourcePath(f"Icons/{MODULE_NAME}.png")))
        root = extensionRoot()
        self.assertIsNotNone(root, "LAScarSegLib/ is neither beside nor one level above the module file")
        self.assertEqual(
            os.path.normcase(os.path.realpath(status["libraryPath"])),
            os.path.normcase(os.path.realpath(os.path.join(root, "LAScarSegLib"))),
            "the LAScarSegLib that was imported is not the one shipped with this module",
        )
        self.delayDisplay("Library and resources found")

    def test_PhantomLabels(self):
        if not LAScarSegLogic.phantomAvailable():
            self.skipTest("LAScarSegLib.phantom.make_phantom not found")
        self.delayDisplay("Generating a synthetic phantom and checking its labels")
        problems = LAScarSegLogic.checkPhantomLabels(seed=0)
        self.assertEqual(problems, [], "; ".join(problems))
        logging.info("%s self-test: phantom labels consistent", MODULE_NAME)
        self.delayDisplay("Phantom labels consistent")
