"""The Slicer module's GUI without the Slicer application: static checks of the widget against
its .ui file and parameter class, and the widget's run / cancel / failure flow with Qt widgets
and Slicer's ScriptedLoadableModule stubbed (real MRML from slicer-core, a real worker process).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
MODULE_FILE = ROOT / "LAScarSeg" / "LAScarSeg.py"
UI_FILE = ROOT / "Resources" / "UI" / "LAScarSeg.ui"

#: The class each widget the module uses must have in the .ui file.
EXPECTED_CLASSES = {
    "inputVolumeSelector": "qMRMLNodeComboBox", "laLabelSelector": "qMRMLNodeComboBox",
    "scarLabelSelector": "qMRMLNodeComboBox", "methodComboBox": "QComboBox", "deviceComboBox": "QComboBox",
    "modelComboBox": "QComboBox", "importModelButton": "QPushButton", "bandStartSpinBox": "QDoubleSpinBox",
    "bandEndSpinBox": "QDoubleSpinBox", "keepLargestCheckBox": "QCheckBox", "applyButton": "QPushButton",
    "progressBar": "QProgressBar", "statusLabel": "QLabel", "resultsLabel": "QLabel",
    "requantifyButton": "QPushButton", "resultsCollapsibleButton": "ctkCollapsibleButton",
    "advancedCollapsibleButton": "ctkCollapsibleButton", "laSeedSelector": "qMRMLNodeComboBox",
}
#: Which widget class can show which parameter type: Slicer's parameterNodeWrapper connectors test the
#: exact class (qt.QComboBox, not ctkComboBox; qt.QDoubleSpinBox or ctkSliderWidget, not
#: ctkDoubleSpinBox; qt.QCheckBox), so a look-alike would fail in Slicer with "Unable to create GUI connector".
CONNECTORS = {"node": {"qMRMLNodeComboBox"}, "str-choice": {"QComboBox"},
              "float": {"QDoubleSpinBox", "ctkSliderWidget"}, "bool": {"QCheckBox"}}


# ------------------------------------------------------------------------------------- parsing
def ui_widgets() -> dict[str, dict]:
    """name -> {"class", "param" (SlicerParameterName or None), "nodeTypes"} from the .ui XML."""
    out = {}
    for w in ET.parse(UI_FILE).getroot().iter("widget"):
        entry = {"class": w.get("class"), "param": None, "nodeTypes": None}
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                entry["param"] = prop.findtext("string")
            if prop.get("name") == "nodeTypes":
                entry["nodeTypes"] = [s.text for s in prop.iter("string")]
        out[w.get("name")] = entry
    return out


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def ui_attributes_used() -> set[str]:
    """Every X in `self.ui.X` in the module file."""
    names = set()
    for node in ast.walk(module_tree()):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            names.add(node.attr)
    return names


def parameter_fields() -> dict[str, str]:
    """Field name -> annotation source of the @parameterNodeWrapper class."""
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in LAScarSeg.py")


def kind(annotation: str) -> str:
    if "vtkMRML" in annotation:
        return "node"
    if annotation.startswith("Annotated[str") and "Choice(" in annotation:
        return "str-choice"
    if annotation.startswith("Annotated[float") or annotation == "float":
        return "float"
    if annotation == "bool":
        return "bool"
    raise AssertionError(f"no connector known for {annotation}")


# --------------------------------------------------------------------------------- static checks
def test_every_ui_attribute_the_widget_uses_exists_with_the_expected_class() -> None:
    widgets = ui_widgets()
    used = ui_attributes_used()
    assert {"applyButton", "progressBar", "statusLabel", "requantifyButton"} <= used  # the parser sees them
    missing = sorted(used - set(widgets))
    assert not missing, f"the widget uses self.ui.{missing} but {UI_FILE.name} has no such widget"
    unknown = sorted(used - set(EXPECTED_CLASSES))
    assert not unknown, f"state the expected class of {unknown} in EXPECTED_CLASSES"
    wrong = {n: widgets[n]["class"] for n in used if widgets[n]["class"] != EXPECTED_CLASSES[n]}
    assert not wrong, f"widgets of an unexpected class: {wrong}"


def test_every_slicer_parameter_name_names_a_parameter_field_of_a_matching_type() -> None:
    fields = parameter_fields()
    assert {"inputVolume", "laLabel", "scarLabel", "laSeed", "method", "device", "bandStartMm", "bandEndMm",
            "keepLargest"} == set(fields)
    bound = {w["param"]: (name, w) for name, w in ui_widgets().items() if w["param"]}
    unknown = sorted(set(bound) - set(fields))
    assert not unknown, f"SlicerParameterName values that name no parameter field: {unknown}"
    assert set(fields) == set(bound), f"parameters without a widget: {sorted(set(fields) - set(bound))}"
    for param, (name, widget) in bound.items():
        assert widget["class"] in CONNECTORS[kind(fields[param])], (param, name, widget["class"], fields[param])
        if kind(fields[param]) == "node":  # the selector offers exactly the parameter's node types
            wanted = {t for t in ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode",
                                  "vtkMRMLMarkupsFiducialNode") if t in fields[param]}
            assert set(widget["nodeTypes"]) == wanted, (param, widget["nodeTypes"])


def test_the_ui_file_is_listed_for_installation() -> None:
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "Resources/UI/${MODULE_NAME}.ui" in text


# ------------------------------------------------------------------------- import with stubs
_STUBS = r'''
import importlib.util, json, sys, types, unittest

def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m

import slicer  # the real slicer-core package: MRML, slicer.util
import slicer.util

class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent

class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent

class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.parent = parent

class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=1000):
        print("delayDisplay:", message, file=sys.stderr)

class Choice:
    def __init__(self, choices):
        self.choices = list(choices)

class WithinRange:
    def __init__(self, lo, hi):
        self.range = (lo, hi)

slicer.ScriptedLoadableModule = stub("slicer.ScriptedLoadableModule", ScriptedLoadableModule=ScriptedLoadableModule,
    ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest=ScriptedLoadableModuleTest)
slicer.i18n = stub("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text)
slicer.parameterNodeWrapper = stub("slicer.parameterNodeWrapper", parameterNodeWrapper=lambda cls: cls,
                                   Choice=Choice, WithinRange=WithinRange)
stub("qt")
stub("ctk")
spec = importlib.util.spec_from_file_location("LAScarSeg", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["LAScarSeg"] = module
spec.loader.exec_module(module)
'''

_IMPORT_PROBE = _STUBS + r'''
import types, typing
from LAScarSegLib.logic import LAScarSegLogic as LibraryLogic
from LAScarSegLib.quantify.baselines import method_names
from LAScarSegLib.slicer.panel import reset_stale_choices
hints = typing.get_type_hints(module.LAScarSegParameterNode, include_extras=True)
method_choice = hints["method"].__metadata__[0].choices
report = {
    "torch": "torch" in sys.modules,
    "classes": [n for n in ("LAScarSeg", "LAScarSegWidget", "LAScarSegLogic", "LAScarSegTest", "LAScarSegParameterNode")
                if isinstance(getattr(module, n, None), type)],
    "logic_is_library_logic": issubclass(module.LAScarSegLogic, LibraryLogic)
                              and issubclass(module.LAScarSegLogic, ScriptedLoadableModuleLogic),
    "test_methods": sorted(n for n in dir(module.LAScarSegTest) if n.startswith("test_")),
    "method_choices_ok": method_choice == ["MTL-SESA"] + list(method_names()),
    "device_choices": hints["device"].__metadata__[0].choices,
    "defaults": {k: getattr(module.LAScarSegParameterNode, k, None) for k in ("method", "device", "bandStartMm",
                                                                              "bandEndMm", "keepLargest")},
}
# a scene saved by another version: a method and a device this one does not offer are reset
stale = types.SimpleNamespace(method="iir-9.99", device="tpu")
fresh = types.SimpleNamespace(method=method_choice[-1], device="cpu")
report["stale_reset"] = [reset_stale_choices(stale), stale.method, stale.device]
report["fresh_reset"] = [reset_stale_choices(fresh), fresh.method == method_choice[-1], fresh.device]
print("REPORT " + json.dumps(report))
'''


def run_probe(code: str, *args: str, timeout: int = 300) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "Testing" / "Python")])
    proc = subprocess.run([sys.executable, "-c", code, str(MODULE_FILE), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"probe failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    line = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def test_module_imports_with_slicer_only_modules_stubbed() -> None:
    report = run_probe(_IMPORT_PROBE)
    assert report["torch"] is False  # importing the module never imports torch
    assert report["classes"] == ["LAScarSeg", "LAScarSegWidget", "LAScarSegLogic", "LAScarSegTest",
                                 "LAScarSegParameterNode"]
    assert report["logic_is_library_logic"]
    assert {"test_LibraryAndResources", "test_PhantomLabels", "test_SegmentPhantom"} <= set(report["test_methods"])
    assert report["method_choices_ok"] and report["device_choices"] == ["auto", "cuda", "cpu"]
    assert report["defaults"] == {"method": "MTL-SESA", "device": "auto", "bandStartMm": -1.0, "bandEndMm": 3.0,
                                  "keepLargest": True}
    assert report["stale_reset"] == [["method", "device"], "MTL-SESA", "auto"]
    assert report["fresh_reset"] == [[], True, "cpu"]


# ------------------------------------------------------------------- the widget's run flow (Qt stubbed)
_WIDGET_PROBE = _STUBS + r'''
import time, types
import slicer_harness as sh
from LAScarSegLib.slicer.mrml import volume_to_node
from LAScarSegLib.synth.phantom import make_phantom

class FakeWidget:
    """Stands for a Qt widget: the properties the module sets and reads."""
    def __init__(self, **kw):
        self.text, self.enabled, self.value, self.toolTip, self.collapsed = "", True, 0, "", True
        self.currentData, self.style = None, ""
        self.__dict__.update(kw)
    def setStyleSheet(self, style):
        self.style = style

class FakeTimer:
    def __init__(self):
        self.active = False
    def start(self):
        self.active = True
    def stop(self):
        self.active = False

harness = sh.MRMLHarness()
model, scenario = sys.argv[2] or None, sys.argv[3]
with harness.slicer_globals():
    if scenario == "fail":  # it fails while loading the model: any small volume will do
        import numpy as np
        from LAScarSegLib.core.image import Geometry, Volume
        small = Volume(np.random.default_rng(0).random((24, 24, 24), dtype=np.float32), Geometry((24, 24, 24), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
        image = volume_to_node(small, "lge")
    else:
        image = volume_to_node(make_phantom(30_017).image, "lge")
    before = harness.scene.GetNumberOfNodes()
    widget = module.LAScarSegWidget()
    widget.ui = types.SimpleNamespace(**{n: FakeWidget() for n in (
        "applyButton", "requantifyButton", "progressBar", "statusLabel", "resultsLabel", "modelComboBox",
        "resultsCollapsibleButton")})
    widget.ui.modelComboBox.currentData = model
    widget.logic = module.LAScarSegLogic()
    widget._timer = FakeTimer()
    widget._parameterNode = types.SimpleNamespace(inputVolume=image, laLabel=None, scarLabel=None, laSeed=None,
                                                  method="MTL-SESA",
                                                  device="cpu", bandStartMm=-1.0, bandEndMm=3.0, keepLargest=True)
    widget.ensureTorch = lambda: True  # torch is installed here; the PyTorchUtils path needs Slicer
    report = {}
    widget._checkCanApply()
    report["idle_button"] = widget.ui.applyButton.text
    widget.onApplyButton()
    report["running_button"] = widget.ui.applyButton.text
    report["timer_started"] = widget._timer.active
    worker = widget._worker
    statuses, deadline = [], time.monotonic() + 240
    while widget._worker is not None and time.monotonic() < deadline:
        widget._onPoll()
        statuses.append(widget.ui.statusLabel.text)
        if scenario == "cancel" and widget.ui.progressBar.value > 0:
            t0 = time.perf_counter()
            widget.onApplyButton()  # the same button, now "Cancel"
            report["cancel_s"] = time.perf_counter() - t0
            report["process_gone"] = worker.process.poll() is not None
        time.sleep(0.05)
    report["status"] = widget.ui.statusLabel.text
    report["error_style"] = widget.ui.statusLabel.style
    report["final_button"] = widget.ui.applyButton.text
    report["progress_seen"] = any(s.startswith(("load", "inference")) for s in statuses)
    report["nodes_added"] = harness.scene.GetNumberOfNodes() - before
harness.close()
print("REPORT " + json.dumps(report))
'''


def test_widget_run_that_fails_shows_the_error_and_leaves_the_scene() -> None:
    report = run_probe(_WIDGET_PROBE, "/nonexistent/lascarseg-model.pt", "fail")
    assert report["idle_button"] == "Segment LA + Scar"
    assert report["running_button"] == "Cancel" and report["timer_started"]
    assert "/nonexistent/lascarseg-model.pt: model file does not exist" in report["status"]
    assert "b00020" in report["error_style"]
    assert report["final_button"] == "Segment LA + Scar" and report["nodes_added"] == 0


def test_widget_cancel_stops_the_worker_within_2_s_and_leaves_the_scene() -> None:
    report = run_probe(_WIDGET_PROBE, os.environ.get("LASCARSEG_TEST_MODEL", ""), "cancel")
    assert report["progress_seen"], report
    assert report["cancel_s"] < 2.0 and report["process_gone"]
    assert report["status"].startswith("Cancelled") and report["final_button"] == "Segment LA + Scar"
    assert report["nodes_added"] == 0


# ------------------------------------------------------------ the module's own self-test, run here
_SELF_TEST_PROBE = _STUBS + r'''
import unittest
import slicer_harness as sh

harness = sh.MRMLHarness()
with harness.slicer_globals():
    # Inside Slicer getModuleLogic builds the module's widget and returns its logic; the module's
    # own Logic class is what it would return.
    slicer.util.getModuleLogic = lambda name: module.LAScarSegLogic() if name == "LAScarSeg" else None
    result = unittest.TestResult()
    test = module.LAScarSegTest("runTest")
    test.run(result)
    report = {
        "ran": result.testsRun,
        "errors": [repr(e[1])[-3000:] for e in result.errors],
        "failures": [f[1][-3000:] for f in result.failures],
        "skipped": [s[1] for s in result.skipped],
        "outputs_in_scene": [harness.scene.GetNumberOfNodesByClass(c) for c in
                             ("vtkMRMLSegmentationNode", "vtkMRMLModelNode", "vtkMRMLTableNode")],
        "torch_imported": "torch" in sys.modules,
    }
harness.close()
print("REPORT " + json.dumps(report))
'''


def test_the_modules_self_test_passes_on_a_real_mrml_scene() -> None:
    """LAScarSegTest.runTest, as `Slicer --testing` or Reload and Test runs it: library and
    resources, phantom labels, and the phantom segmented with the bundled model through the
    module's own Logic class, checked by LAScarSegLib.slicer.checks (only Qt and the application
    are stubbed; the scene is slicer-core's)."""
    report = run_probe(_SELF_TEST_PROBE, timeout=600)
    assert report["ran"] == 1 and not report["skipped"], report
    assert report["errors"] == [] and report["failures"] == [], report
    # the second addResultToScene replaced the first run's outputs: one set is left, beside the
    # user's manual scar segmentation (segmentations, models, tables)
    assert report["outputs_in_scene"] == [2, 1, 1], report
    # the network ran in the worker process (the outputs above are its result): Slicer's own process
    # never imports torch (CONTRACTS section 1)
    assert not report["torch_imported"]
