"""LA Scar Segmentation: the 3D Slicer module of the LAScarSeg extension.

Left-atrium (LA) segmentation and LA-scar quantification from late-gadolinium-enhanced (LGE) MRI
with MTL-SESA (Li L, Weng X, Schnabel JA, Zhuang X, MICCAI 2020). All algorithms live in the
plain-Python package ``LAScarSegLib``; this file only connects them to Slicer's GUI:

* ``LAScarSegParameterNode``: the GUI state (``@parameterNodeWrapper``), bound to the widgets of
  ``Resources/UI/LAScarSeg.ui`` through their ``SlicerParameterName`` properties.
* ``LAScarSegWidget``: runs the pipeline in a background process (``LAScarSegLib.worker``) with
  real progress, a Cancel that stops that process, and ``addResultToScene`` on the main thread.
* ``LAScarSegLogic``: a thin subclass of ``LAScarSegLib.logic.LAScarSegLogic`` (CONTRACTS
  section 7); ``slicer.util.getModuleLogic("LAScarSeg").process(...)`` blocks and works in the
  Python console and in ``Slicer --no-main-window --python-script``.
* ``LAScarSegTest``: the self-test; it runs the same checks as the pytest suite
  (``LAScarSegLib.logic_checks``).

Where the files are
-------------------
Slicer looks for scripted modules non-recursively, so in a built or installed extension this file
sits directly in ``qt-scripted-modules/`` with ``LAScarSegLib/`` and ``Resources/`` beside it
(the top-level CMakeLists.txt copies it there). A developer may instead add the repository's
``LAScarSeg/`` folder to Slicer's additional module paths: then ``LAScarSegLib/`` and
``Resources/`` are one level up. ``extensionRoot()`` finds whichever is true and puts that folder
on ``sys.path``; ``resourcePath()`` resolves resources in both layouts.

Importing this file never imports PyTorch: Slicer must be able to load the module before the
PyTorch extension has installed torch (torch is installed through ``PyTorchUtils`` after the user
confirms, never during a self-test).
"""

# No `from __future__ import annotations` here: parameterNodeWrapper resolves the parameter class's
# annotations when the class is decorated, and real objects need no lookup through sys.modules.
import importlib.util
import logging
import os
import shutil
import sys
from typing import Annotated, Union

import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODULE_NAME = "LAScarSeg"
MTL_SESA = "MTL-SESA"
MIN_TORCH = (2, 9)  # CONTRACTS section 1
DEVICES = ["auto", "cuda", "cpu"]
_MODULE_DIR = os.path.dirname(os.path.abspath(__file__))


def _version_tuple(version: str) -> tuple[int, ...]:
    """(2, 9) of "2.9.1+cu126": the numeric release parts only."""
    import re

    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:2])


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


def _libraryLogic() -> type:
    # Imported after _putLibraryOnPath(), so the library beside this file is the one used.
    from LAScarSegLib.logic import LAScarSegLogic as LibraryLogic

    return LibraryLogic


def methodChoices() -> list[str]:
    """MTL-SESA, then the classical baselines; a chosen baseline's scar (on MTL-SESA's LA) is what
    the scene shows, with MTL-SESA's burden reported beside it."""
    from LAScarSegLib.baselines import method_names

    return [MTL_SESA] + list(method_names())


def pythonForWorker() -> str:
    """The interpreter for the background worker: PythonSlicer (Slicer's Python with Slicer's
    environment); sys.executable outside Slicer."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    exe_dir = os.path.dirname(sys.executable)
    for name in ("PythonSlicer", "PythonSlicer.exe"):
        for folder in (exe_dir, os.path.join(exe_dir, "..", "bin")):
            candidate = os.path.normpath(os.path.join(folder, name))
            if os.path.isfile(candidate):
                return candidate
    return sys.executable


# ------------------------------------------------------------------------------------- module
class LAScarSeg(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and Help & Acknowledgement section."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LA Scar Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Cardiac")]
        self.parent.dependencies = []  # PyTorch is imported lazily, through the PyTorch extension
        self.parent.contributors = ["LAScarSeg developers"]
        self.parent.helpText = _(
            "Segments the left atrium (LA) and quantifies LA scar from 3D late-gadolinium-"
            "enhanced (LGE) MRI with a multi-task network (MTL-SESA: a 3D U-Net with spatial "
            "encoding and shape attention). Scar is projected onto the LA surface, so the "
            "result is a surface scar map and the scar percentage of the LA wall, independent "
            "of wall thickness.<br><br>"
            "Choose the LGE volume and press <b>Segment LA + Scar</b>: the run goes on in the "
            "background (Cancel stops it) and adds a segmentation (Left atrium, Scar), the model "
            "'LA surface' coloured normal wall / scar, and a metrics table. After editing the "
            "Left atrium segment in Segment Editor, <b>Re-quantify</b> recomputes the scar map "
            "and burden without running the network again. Optional manual LA and scar labels "
            "give evaluation metrics. <b>Method</b> chooses whose scar is shown: MTL-SESA, or a "
            "classical baseline (IIR, mean + k SD, Otsu, GMM) on MTL-SESA's LA, with MTL-SESA's "
            "burden reported beside it.<br><br>"
            "<b>For research use only; not for diagnosis or treatment.</b> The LA segmentation "
            "was trained and evaluated on public LGE MRI challenge data. The scar output has "
            "been validated on synthetic scar only (no real scar labels were available); treat "
            "scar maps and percentages as unvalidated on patient data.<br><br>"
            "The same pipeline runs from the command line: <code>lascarseg segment IMAGE --out "
            "DIR</code>, and from Python: <code>slicer.util.getModuleLogic('LAScarSeg')"
            ".process(volumeNode)</code>."
        )
        self.parent.acknowledgementText = _(
            "Implements the method of: Li L, Weng X, Schnabel JA, Zhuang X. \"Joint Left Atrial "
            "Segmentation and Scar Quantification Based on a DNN with Spatial Encoding and "
            "Shape Attention\". Medical Image Computing and Computer Assisted Intervention "
            "(MICCAI) 2020. Please cite this paper when you use the module."
        )
        self._setIconFromResources()
        app = getattr(slicer, "app", None)
        if app is not None and hasattr(app, "connect"):
            app.connect("startupCompleted()", registerSampleData)

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


def registerSampleData() -> None:
    """The synthetic LGE phantom as sample data under "Cardiac".

    It is generated locally from a fixed seed (the same voxels every time), so there is no file
    to download and no checksum to check; the custom loader builds the nodes.
    """
    import SampleData

    source = SampleData.SampleDataSource(
        sampleName="LAScarSegPhantom",
        sampleDescription=_("LGE phantom (synthetic LA + scar)"),
        uris=["lascarseg:phantom/seed-0"],
        fileNames=["LAScarSegPhantom.nrrd"],
        nodeNames=["LAScarSegPhantom"],
        thumbnailFileName=resourcePath(f"Icons/{MODULE_NAME}.png"),
        customDownloader=lambda source=None: LAScarSegLogic().loadPhantom(),
    )
    # sampleDataSourcesByCategory() creates the registry if the SampleData module has not yet
    # (registerCustomSampleDataSource has no sampleDescription, so the source is appended here).
    sources = SampleData.SampleDataLogic.sampleDataSourcesByCategory().setdefault("Cardiac", [])
    if not any(s.sampleName == source.sampleName for s in sources):
        sources.append(source)


# --------------------------------------------------------------------------- parameter node
@parameterNodeWrapper
class LAScarSegParameterNode:
    """The GUI state; each field is bound to the widget whose SlicerParameterName names it."""

    inputVolume: vtkMRMLScalarVolumeNode
    laLabel: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    scarLabel: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    method: Annotated[str, Choice(methodChoices())] = MTL_SESA
    device: Annotated[str, Choice(DEVICES)] = "auto"
    bandStartMm: Annotated[float, WithinRange(-10.0, 0.0)] = -1.0
    bandEndMm: Annotated[float, WithinRange(0.0, 10.0)] = 3.0
    keepLargest: bool = True


# ------------------------------------------------------------------------------------- widget
class LAScarSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs, method, device, advanced options, one Apply/Cancel button, progress,
    status line, results and Re-quantify. The pipeline runs in a background process."""

    POLL_MS = 100

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._worker = None
        self._workerInput = None
        self._workerMethod = MTL_SESA  # the method of the running job (the combo may change meanwhile)
        self._workerBand = (-1.0, 3.0)  # the projection band of the running job
        self._timer = None
        self._lastResult = None

    def resourcePath(self, filename: str) -> str:
        return resourcePath(filename)

    # ------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        import qt

        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{MODULE_NAME}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LAScarSegLogic()

        self._fillModels()
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self._onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        # Re-quantify needs the output segmentation: disable it as soon as that node is deleted
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self._checkCanApply)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.requantifyButton.connect("clicked(bool)", self.onRequantifyButton)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.statusLabel.text = self.logic.intendedUse()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._stopWorker()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtkModifiedEvent(), self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self._stopWorker()
        self.setParameterNode(None)
        self._lastResult = None

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        parameterNode = self.logic.getParameterNode()
        resetStaleChoices(parameterNode)  # before connectGui, which refuses a value its combo box lacks
        self.setParameterNode(parameterNode)
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and first.GetClassName() == "vtkMRMLScalarVolumeNode":  # not a labelmap nor an RGB volume
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtkModifiedEvent(), self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtkModifiedEvent(), self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        running = self._worker is not None
        ready = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = running or ready
        self.ui.applyButton.text = _("Cancel") if running else _("Segment LA + Scar")
        self.ui.applyButton.toolTip = (_("Stop the run") if running else
                                       _("Segment the LA and the scar") if ready else _("Select the LGE volume first"))
        prompt = _("Select the input LGE volume to segment.")
        if not running and not ready:
            self._setStatus(prompt)
        elif ready and self.ui.statusLabel.text == prompt:
            self._setStatus(self.logic.intendedUse())
        self.ui.requantifyButton.enabled = (not running and self._lastResult is not None
                                            and slicer.mrmlScene.IsNodePresent(self._lastResult.segmentation))

    def _fillModels(self) -> None:
        self.ui.modelComboBox.clear()
        for label, model in self.logic.availableModels():
            self.ui.modelComboBox.addItem(label, model or "")

    def _selectedModel(self) -> str | None:
        return self.ui.modelComboBox.currentData or None

    # ----------------------------------------------------------------------- run / cancel
    def onApplyButton(self) -> None:
        if self._worker is not None:
            self._stopWorker()
            self._setStatus(_("Cancelled: the scene is as it was."))
            return
        from LAScarSegLib.errors import LAScarSegError
        from LAScarSegLib.worker import Worker, WorkerRequest

        p = self._parameterNode
        try:
            image = self.logic.inputImage(p.inputVolume)
            if not self.ensureTorch():
                self._setStatus(_("PyTorch is needed to run the network; it was not installed."))
                return
            model = self._selectedModel()
            if model:
                self.logic.checkImportedModel(model)
            request = WorkerRequest(
                image,
                la_label=self.logic.labelVolume(p.laLabel, p.inputVolume, "Left atrium"),
                scar_label=self.logic.labelVolume(p.scarLabel, p.inputVolume, "Scar"),
                model=model, device=p.device, band_mm=(p.bandStartMm, p.bandEndMm),
                keep_largest=p.keepLargest, baselines=self.logic.baselinesToRun(p.method))
            self._worker = Worker(request, python=pythonForWorker()).start()
        except LAScarSegError as exc:
            self._setStatus(str(exc), error=True)
            return
        except Exception as exc:
            logging.exception("LAScarSeg: could not start the run")
            self._setStatus(_("Could not start the run: ") + str(exc), error=True)
            return
        self._workerInput = p.inputVolume
        self._workerMethod = p.method
        self._workerBand = request.band_mm  # what the run used, whatever the spin boxes say when it ends
        self.ui.progressBar.value = 0
        self._setStatus(_("Starting..."))
        self._timer.start()
        self._checkCanApply()

    def _onPoll(self) -> None:
        worker = self._worker
        if worker is None:
            self._timer.stop()
            return
        for message in worker.poll():
            if message.kind == "progress":
                self.ui.progressBar.value = int(1000 * message.fraction)
                self._setStatus(message.text)
        if worker.state == "running":
            return
        self._timer.stop()
        self._worker = None
        self._finish(worker)
        self._checkCanApply()

    def _finish(self, worker) -> None:
        from LAScarSegLib.errors import Cancelled, LAScarSegError

        try:
            pipelineResult = worker.result()
            # A baseline chosen as the method: the scene shows its scar, not the network's.
            result = self.logic.addResultToScene(self._workerInput, pipelineResult,
                                                 bandMm=self._workerBand, method=self._workerMethod)
        except Cancelled:
            self._setStatus(_("Cancelled: the scene is as it was."))
            return
        except LAScarSegError as exc:
            self._setStatus(str(exc), error=True)
            return
        except Exception as exc:
            logging.exception("LAScarSeg: the run failed")
            self._setStatus(_("The run failed: ") + str(exc), error=True)
            return
        self.ui.progressBar.value = 1000
        self._showResult(result)

    def _stopWorker(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        if hasattr(self, "ui"):
            self.ui.progressBar.value = 0
            self._checkCanApply()

    def onRequantifyButton(self) -> None:
        from LAScarSegLib.errors import LAScarSegError

        result = self._lastResult
        if result is None or result.segmentation is None or result.segmentation.GetScene() is None:
            self._setStatus(_("The LA and scar segmentation is no longer in the scene: run the segmentation again."),
                            error=True)
            self._checkCanApply()
            return
        try:
            with slicer.util.WaitCursor():
                new = self.logic.requantify(self._workerInput or self._parameterNode.inputVolume,
                                            result.segmentation, result)
        except LAScarSegError as exc:
            self._setStatus(str(exc), error=True)
            return
        except Exception as exc:
            logging.exception("LAScarSeg: re-quantification failed")
            self._setStatus(_("Re-quantification failed: ") + str(exc), error=True)
            return
        self._showResult(new)
        self._setStatus(_("Re-quantified on the edited LA segment."))

    def onImportModel(self) -> None:
        import qt

        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Import a LAScarSeg model"), "",
                                              _("TorchScript model (*.pt)"))
        if not path:
            return
        from LAScarSegLib.errors import LAScarSegError

        try:
            with slicer.util.WaitCursor():
                entry = self.logic.importModel(path)
        except (LAScarSegError, OSError) as exc:  # a bad card, a wrong file, an unwritable folder
            self._setStatus(_("The model could not be imported: ") + str(exc), error=True)
            slicer.util.errorDisplay(_("The model could not be imported.") + "\n\n" + str(exc))
            return
        self._fillModels()  # never raises: an unreadable user registry is logged and skipped
        self.ui.modelComboBox.currentIndex = self.ui.modelComboBox.count - 1
        self._setStatus(_("Imported model ") + f"{entry['name']} {entry['version']}")

    # ------------------------------------------------------------------------- torch
    def ensureTorch(self) -> bool:
        """Torch through the PyTorch extension, after the user's confirmation (never silently)."""
        if importlib.util.find_spec("torch") is not None:
            from importlib.metadata import PackageNotFoundError, version  # not `import torch`: the worker runs it

            try:
                have = version("torch")
            except PackageNotFoundError:  # importable without distribution metadata (a source tree): trust it
                return True
            if _version_tuple(have) >= MIN_TORCH:
                return True
            slicer.util.errorDisplay(
                _("LAScarSeg needs PyTorch {need} or newer; this Slicer has {have}. Update it in the PyTorch Utils "
                  "module (uninstall, restart Slicer, install), then run LAScarSeg again.").format(
                    need=".".join(map(str, MIN_TORCH)), have=have))
            return False
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay(_("LAScarSeg needs PyTorch. Install the 'PyTorch' extension from the "
                                       "Extensions Manager, restart Slicer, and try again."))
            return False
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if torchLogic.torchInstalled():
            return True
        if not slicer.util.confirmOkCancelDisplay(
                _("LAScarSeg needs PyTorch, which is not installed yet. Install it now through the PyTorch "
                  "extension? This downloads about 1-3 GB and may take several minutes.")):
            return False
        torch = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=">=2.9")
        return torch is not None

    # ---------------------------------------------------------------------------- output
    def _setStatus(self, text: str, error: bool = False, warning: bool = False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #b00020" if error else "color: #a05a00" if warning else "")
        if error:
            logging.error("LAScarSeg: %s", text)

    def _showResult(self, result) -> None:
        self._lastResult = result
        self.ui.resultsLabel.text = self.logic.resultsHtml(result.report)
        self.ui.resultsCollapsibleButton.collapsed = False
        from LAScarSegLib.logic import status_text

        self._setStatus(status_text(result.report), warning=bool(result.report.get("warnings")))
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:  # the table view shows the metrics; the 3D view the surface
            layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
            appLogic = slicer.app.applicationLogic()
            appLogic.GetSelectionNode().SetActiveTableID(result.metricsTable.GetID())
            appLogic.PropagateTableSelection()
            if layoutManager.threeDViewCount:
                layoutManager.threeDWidget(0).threeDView().resetFocalPoint()
        self._checkCanApply()


def resetStaleChoices(parameterNode) -> list[str]:
    """Put a method or device that is no longer offered (a scene saved by another version) back to
    its default; returns the names of the fields reset. Without this the panel cannot connect."""
    reset = []
    for field, choices, default in (("method", methodChoices(), MTL_SESA), ("device", DEVICES, "auto")):
        if getattr(parameterNode, field) not in choices:
            logging.warning("LAScarSeg: %s %r is not offered by this version; set to %r",
                            field, getattr(parameterNode, field), default)
            setattr(parameterNode, field, default)
            reset.append(field)
    return reset


def vtkModifiedEvent() -> int:
    import vtk

    return vtk.vtkCommand.ModifiedEvent


# -------------------------------------------------------------------------------------- logic
class LAScarSegLogic(ScriptedLoadableModuleLogic, _libraryLogic()):
    """The library's logic (process, addResultToScene, requantify) with Slicer's module logic.

    ``slicer.util.getModuleLogic("LAScarSeg").process(volumeNode)`` blocks until the results are
    in the scene; the widget runs the same pipeline in a background process instead.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self, parent)

    def resourcePath(self, filename: str) -> str:
        return resourcePath(filename)

    def getParameterNode(self):
        return LAScarSegParameterNode(super().getParameterNode())

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
    def intendedUse() -> str:
        from LAScarSegLib.export import INTENDED_USE

        return INTENDED_USE

    @staticmethod
    def availableModels() -> list:
        from LAScarSegLib.logic import available_models

        return available_models()

    @staticmethod
    def importModel(path: str) -> dict:
        from LAScarSegLib.logic import import_model

        return import_model(path)

    @staticmethod
    def checkImportedModel(path: str) -> None:
        from LAScarSegLib.logic import check_imported_model

        check_imported_model(path)

    @staticmethod
    def loadPhantom(seed: int = 0) -> dict:
        from LAScarSegLib.logic import load_phantom

        nodes = load_phantom(slicer.mrmlScene, seed)
        app = getattr(slicer, "app", None)
        if app is not None and app.layoutManager() is not None:  # as Sample Data shows what it loads
            slicer.util.setSliceViewerLayers(background=nodes["image"], fit=True)
        return nodes

    @staticmethod
    def resultsHtml(report: dict) -> str:
        from LAScarSegLib.logic import results_html

        return results_html(report)

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
    """Self-test: the library, the phantom, and a full run with the bundled model on the phantom,
    checked by the same functions as the pytest suite (LAScarSegLib.logic_checks). It never
    installs anything: without PyTorch or a bundled model the segmentation test is skipped and
    says why."""

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
        self.setUp()
        reason = self._segmentationSkipReason()
        if reason:  # "Reload and Test" runs runTest outside unittest: say it, do not raise SkipTest
            self.delayDisplay(reason)
        else:
            self.test_SegmentPhantom()

    @staticmethod
    def _segmentationSkipReason() -> str | None:
        if importlib.util.find_spec("torch") is None:
            return "PyTorch is not installed (the self-test installs nothing): segmentation not tested"
        if not LAScarSegLogic.status()["modelRegistry"]:
            return "no bundled model in Resources/Models: segmentation not tested"
        return None

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

    def test_SegmentPhantom(self):
        """process() on the phantom with the bundled model, then the checks pytest runs."""
        reason = self._segmentationSkipReason()
        if reason:
            self.skipTest(reason)
        from LAScarSegLib import logic_checks

        self.delayDisplay("Segmenting the phantom with the bundled model (CPU: about a minute)")
        logic = slicer.util.getModuleLogic(MODULE_NAME)
        case = logic_checks.run_phantom_case(logic, slicer.mrmlScene, seed=0)
        logic_checks.check_phantom_case(case)
        again = logic.addResultToScene(case["image"], case["result"].pipelineResult)
        logic_checks.check_outputs(again, case["image"])
        self.assertFalse(slicer.mrmlScene.IsNodePresent(case["result"].segmentation),
                         "a second run must replace the outputs")
        self.delayDisplay(f"Phantom segmented in {case['seconds']:.0f} s; outputs checked")
