"""LA Scar Segmentation, the 3D Slicer module of LAScarSeg (MTL-SESA, Li et al. MICCAI 2020): the module
class, the parameter node (bound to ``Resources/UI/LAScarSeg.ui``), the widget (the pipeline runs in the
background worker, with progress and a Cancel that stops it), the module logic and the self-test. Every
algorithm lives in ``LAScarSegLib``, which ``extensionRoot()`` finds beside this file (installed in
``qt-scripted-modules/``) or one level up (the repository) and puts first on ``sys.path``. Importing this
file never imports PyTorch.
"""

# No `from __future__ import annotations` here: parameterNodeWrapper resolves the parameter class's
# annotations when the class is decorated, and real objects need no lookup through sys.modules.
import importlib.util
import logging
import os
import sys
from typing import Annotated, Union

import slicer
import vtk
from slicer import (vtkMRMLLabelMapVolumeNode, vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode,
                    vtkMRMLSegmentationNode)
from slicer.i18n import tr as _, translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

MODULE_NAME = "LAScarSeg"
_MODULE_DIR = os.path.dirname(os.path.abspath(__file__))


def extensionRoot() -> str | None:
    """The folder with ``LAScarSegLib/`` and ``Resources/``: beside this file (installed), or one level up."""
    for candidate in (_MODULE_DIR, os.path.dirname(_MODULE_DIR)):
        if os.path.isfile(os.path.join(candidate, "LAScarSegLib", "__init__.py")):
            return candidate
    return None


def _putLibraryOnPath() -> None:
    # The library shipped with this module comes first: another LAScarSegLib in Slicer's Python is never picked up.
    root = extensionRoot()
    if root is None:
        return
    root = os.path.normpath(root)
    if not any(os.path.normpath(os.path.abspath(p or os.curdir)) == root for p in sys.path):
        sys.path.insert(0, root)


_putLibraryOnPath()

# The library beside this file (first on sys.path, above); nothing of it imports torch.
from LAScarSegLib.core.errors import Cancelled, LAScarSegError  # noqa: E402
from LAScarSegLib.logic import LAScarSegLogic as LibraryLogic, load_phantom  # noqa: E402
from LAScarSegLib.model.card import INTENDED_USE  # noqa: E402
from LAScarSegLib.model.registry import available_models, import_model  # noqa: E402
from LAScarSegLib.slicer import checks  # noqa: E402
from LAScarSegLib.slicer.mrml import first_point_ras  # noqa: E402
from LAScarSegLib.slicer.panel import (DEVICES, NETWORK_LABEL, library_problems, library_status,  # noqa: E402
                                      method_choices, register_sample_data, reset_stale_choices,
                                      segmentation_skip_reason)
from LAScarSegLib.slicer.presentation import results_html, status_text  # noqa: E402
from LAScarSegLib.slicer.torch_install import ensure_torch  # noqa: E402


def resourceDir() -> str:
    """The ``Resources`` folder of the extension (beside this file, or one level up)."""
    candidates = [os.path.join(_MODULE_DIR, "Resources"), os.path.join(os.path.dirname(_MODULE_DIR), "Resources")]
    spec = importlib.util.find_spec("LAScarSegLib")
    if spec is not None and spec.origin:  # the library's own place, for a module file copied elsewhere (CMake)
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


class LAScarSeg(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and Help & Acknowledgement section."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LA Scar Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Cardiac")]
        self.parent.dependencies = []  # PyTorch is imported lazily, through the PyTorch extension
        self.parent.contributors = ["LAScarSeg developers"]
        self.parent.helpText = _(
            "Segments the left atrium (LA) and quantifies LA scar from 3D late-gadolinium-enhanced (LGE) MRI with a "
            "multi-task network (MTL-SESA: a 3D U-Net with spatial encoding and shape attention). Scar is projected "
            "onto the LA surface, so the result is a surface scar map and the scar percentage of the LA wall, "
            "independent of wall thickness.<br><br>Choose the LGE volume and press <b>Segment LA + Scar</b>: the run "
            "goes on in the background (Cancel stops it) and adds a segmentation (Left atrium, Scar), the model 'LA "
            "surface' coloured normal wall / scar, and a metrics table. After editing the Left atrium segment in "
            "Segment Editor, <b>Re-quantify</b> recomputes the scar map and burden without running the network again. "
            "Optional manual LA and scar labels give evaluation metrics. <b>Method</b> chooses whose scar is shown: "
            "MTL-SESA, or a classical baseline (IIR, mean + k SD, Otsu, GMM) on MTL-SESA's LA, with MTL-SESA's burden "
            "reported beside it.<br><br><b>For research use only; not for diagnosis or treatment.</b> The LA "
            "segmentation was trained and evaluated on public LGE MRI challenge data. The scar output has been "
            "validated on synthetic scar only (no real scar labels were available); treat scar maps and percentages "
            "as unvalidated on patient data.<br><br>The same pipeline runs from the command line: <code>lascarseg "
            "segment IMAGE --out DIR</code>, and from Python: <code>slicer.util.getModuleLogic('LAScarSeg')"
            ".process(volumeNode)</code>.")
        self.parent.acknowledgementText = _(
            "Implements the method of: Li L, Weng X, Schnabel JA, Zhuang X. \"Joint Left Atrial Segmentation and Scar "
            "Quantification Based on a DNN with Spatial Encoding and Shape Attention\". Medical Image Computing and "
            "Computer Assisted Intervention (MICCAI) 2020. Please cite this paper when you use the module.")
        self._setIconFromResources()
        app = getattr(slicer, "app", None)
        if app is not None and hasattr(app, "connect"):
            app.connect("startupCompleted()", registerSampleData)

    def _setIconFromResources(self) -> None:
        # Slicer finds Resources/Icons/<Module>.png beside the module file; from the repository it is one level up.
        icon = os.path.join(os.path.dirname(_MODULE_DIR), "Resources", "Icons", MODULE_NAME + ".png")
        if not os.path.isfile(os.path.join(_MODULE_DIR, "Resources", "Icons", MODULE_NAME + ".png")) and os.path.isfile(icon):
            import qt

            self.parent.icon = qt.QIcon(icon)


def registerSampleData() -> None:
    import SampleData

    register_sample_data(SampleData, resourcePath(f"Icons/{MODULE_NAME}.png"), lambda: LAScarSegLogic().loadPhantom(),
                         _("LGE phantom (synthetic LA + scar)"))


@parameterNodeWrapper
class LAScarSegParameterNode:
    """The GUI state; each field is bound to the widget whose SlicerParameterName names it."""

    inputVolume: vtkMRMLScalarVolumeNode
    laLabel: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    scarLabel: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    laSeed: Union[vtkMRMLMarkupsFiducialNode, None]  # its first point: inside the LA (optional)
    method: Annotated[str, Choice(method_choices())] = NETWORK_LABEL
    device: Annotated[str, Choice(DEVICES)] = "auto"
    bandStartMm: Annotated[float, WithinRange(-10.0, 0.0)] = -1.0
    bandEndMm: Annotated[float, WithinRange(0.0, 10.0)] = 3.0
    keepLargest: bool = True


class LAScarSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs, method, device, advanced options, one Apply/Cancel button, progress,
    status line, results and Re-quantify. The pipeline runs in a background process."""

    POLL_MS = 100

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self._parameterNode = self._parameterNodeGuiTag = self._timer = self._lastResult = None
        self._worker = self._workerInput = None  # the running job and its input volume
        self._workerBand = (-1.0, 3.0)  # the projection band of the running job

    def resourcePath(self, filename: str) -> str:
        return resourcePath(filename)

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
        self.ui.statusLabel.text = INTENDED_USE
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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self._stopWorker()
        self.setParameterNode(None)
        self._lastResult = None

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        parameterNode = self.logic.getParameterNode()
        reset_stale_choices(parameterNode)  # before connectGui, which refuses a value its combo box lacks
        self.setParameterNode(parameterNode)
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and first.GetClassName() == "vtkMRMLScalarVolumeNode":  # not a labelmap nor an RGB volume
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
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
            self._setStatus(INTENDED_USE)
        self.ui.requantifyButton.enabled = (not running and self._lastResult is not None
                                            and slicer.mrmlScene.IsNodePresent(self._lastResult.segmentation))

    def _fillModels(self) -> None:
        self.ui.modelComboBox.clear()
        for label, model in available_models():
            self.ui.modelComboBox.addItem(label, model or "")

    def onApplyButton(self) -> None:
        if self._worker is not None:
            self._stopWorker()
            return self._showFailure(Cancelled(), "")
        p = self._parameterNode
        try:
            self.logic.inputImage(p.inputVolume)  # a bad input is told before torch is looked for
            if not self.ensureTorch():
                self._setStatus(_("PyTorch is needed to run the network; it was not installed."))
                return
            self._worker = self.logic.startRun(
                p.inputVolume, p.laLabel, p.scarLabel, model=self.ui.modelComboBox.currentData or None, device=p.device,
                bandMm=(p.bandStartMm, p.bandEndMm), keepLargest=p.keepLargest, method=p.method,
                laSeed=first_point_ras(p.laSeed))
        except Exception as exc:
            self._showFailure(exc, _("Could not start the run: "))
            return
        self._workerInput = p.inputVolume
        self._workerBand = self._worker.request.band_mm  # what the run used, whatever the spin boxes say
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
        try:
            result = self.logic.addResultToScene(self._workerInput, worker.result(), bandMm=self._workerBand)
        except Exception as exc:
            self._showFailure(exc, _("The run failed: "))
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
        except Exception as exc:
            self._showFailure(exc, _("Re-quantification failed: "))
            return
        self._showResult(new)
        self._setStatus(_("Re-quantified on the edited LA segment."))

    def onImportModel(self) -> None:
        import qt
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Import a LAScarSeg model"), "",
                                              _("TorchScript model (*.pt)"))
        if not path:
            return
        try:
            with slicer.util.WaitCursor():
                entry = import_model(path)
        except (LAScarSegError, OSError) as exc:  # a bad card, a wrong file, an unwritable folder
            self._setStatus(_("The model could not be imported: ") + str(exc), error=True)
            slicer.util.errorDisplay(_("The model could not be imported.") + "\n\n" + str(exc))
            return
        self._fillModels()  # never raises: an unreadable user registry is logged and skipped
        self.ui.modelComboBox.currentIndex = self.ui.modelComboBox.count - 1
        self._setStatus(_("Imported model ") + f"{entry['name']} {entry['version']}")

    def ensureTorch(self) -> bool:
        """Torch through the PyTorch extension, after the user's confirmation (never silently)."""
        return ensure_torch(slicer.util.confirmOkCancelDisplay, slicer.util.errorDisplay)

    def _showFailure(self, exc: Exception, prefix: str) -> None:
        """A LAScarSeg error is a message for the user; anything else is logged with its traceback."""
        if isinstance(exc, Cancelled):
            return self._setStatus(_("Cancelled: the scene is as it was."))
        if not isinstance(exc, LAScarSegError):
            logging.exception("LAScarSeg: %s", prefix)
        self._setStatus(str(exc) if isinstance(exc, LAScarSegError) else prefix + str(exc), error=True)

    def _setStatus(self, text: str, error: bool = False, warning: bool = False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #b00020" if error else "color: #a05a00" if warning else "")
        if error:
            logging.error("LAScarSeg: %s", text)

    def _showResult(self, result) -> None:
        self._lastResult = result
        self.ui.resultsLabel.text = results_html(result.report)
        self.ui.resultsCollapsibleButton.collapsed = False
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


class LAScarSegLogic(ScriptedLoadableModuleLogic, LibraryLogic):
    """The library's logic (process, startRun, addResultToScene, requantify) with Slicer's module logic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self, parent)

    def resourcePath(self, filename: str) -> str:
        return resourcePath(filename)

    def getParameterNode(self):
        return LAScarSegParameterNode(super().getParameterNode())

    @staticmethod
    def status() -> dict:
        """Library version and folder, torch installed (found, not imported), model registry."""
        return library_status(resourceDir())

    @staticmethod
    def loadPhantom(seed: int = 0) -> dict:
        nodes = load_phantom(slicer.mrmlScene, seed)
        app = getattr(slicer, "app", None)
        if app is not None and app.layoutManager() is not None:  # as Sample Data shows what it loads
            slicer.util.setSliceViewerLayers(background=nodes["image"], fit=True)
        return nodes


class LAScarSegTest(ScriptedLoadableModuleTest):
    """Self-test: library, phantom, and a run with the bundled model on the phantom, checked by the pytest
    suite's functions (LAScarSegLib.slicer.checks). It installs nothing: without torch or a model it says so."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_LibraryAndResources()
        self.setUp()
        self.test_PhantomLabels()
        self.setUp()
        reason = segmentation_skip_reason(LAScarSegLogic.status())
        if reason:  # "Reload and Test" runs runTest outside unittest: say it, do not raise SkipTest
            self.delayDisplay(reason)
        else:
            self.test_SegmentPhantom()

    def test_LibraryAndResources(self):
        self.delayDisplay("Checking the library and the resources")
        problems = library_problems(LAScarSegLogic.status(), extensionRoot(), resourcePath(f"Icons/{MODULE_NAME}.png"))
        self.assertEqual(problems, [], "; ".join(problems))
        self.delayDisplay("Library and resources found")

    def test_PhantomLabels(self):
        self.delayDisplay("Generating a synthetic phantom and checking its labels")
        problems = checks.phantom_label_problems(seed=0)
        self.assertEqual(problems, [], "; ".join(problems))
        self.delayDisplay("Phantom labels consistent")

    def test_SegmentPhantom(self):
        """process() on the phantom with the bundled model, then the checks pytest runs."""
        reason = segmentation_skip_reason(LAScarSegLogic.status())
        if reason:
            self.skipTest(reason)
        self.delayDisplay("Segmenting the phantom with the bundled model (CPU: about a minute)")
        logic = slicer.util.getModuleLogic(MODULE_NAME)
        case = checks.run_phantom_case(logic, slicer.mrmlScene, seed=0)
        checks.check_phantom_case(case)
        again = logic.addResultToScene(case["image"], case["result"].pipelineResult)
        checks.check_outputs(again, case["image"])
        self.assertFalse(slicer.mrmlScene.IsNodePresent(case["result"].segmentation),
                         "a second run must replace the outputs")
        self.delayDisplay(f"Phantom segmented in {case['seconds']:.0f} s; outputs checked")
