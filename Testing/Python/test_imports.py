"""CONTRACTS section 1: what the Slicer application's own process imports never imports torch.

That is the module file, `LAScarSegLib`, `LAScarSegLib.logic` and everything they import: exactly
the set `TORCH_FREE` below (CONTRACTS section 1 names it). The network runs in the worker process.
Every other module may import torch at the top. Only `LAScarSegLib.slicer` (and what only it uses)
imports `slicer`; nothing in the library imports qt or ctk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_architecture import import_graph
from test_module_static import _STUBS

ROOT = Path(__file__).resolve().parents[2]
MODULE_FILE = ROOT / "LAScarSeg" / "LAScarSeg.py"
FORBIDDEN = ("torch", "qt", "ctk", "PythonQt")

#: What Slicer's process loads: change this only together with CONTRACTS section 1.
TORCH_FREE = {
    "LAScarSegLib", "LAScarSegLib.logic",
    "LAScarSegLib.core", "LAScarSegLib.core.distance", "LAScarSegLib.core.errors", "LAScarSegLib.core.image",
    "LAScarSegLib.core.nifti", "LAScarSegLib.core.outputs", "LAScarSegLib.core.progress",
    "LAScarSegLib.model", "LAScarSegLib.model.card", "LAScarSegLib.model.registry",
    "LAScarSegLib.synth", "LAScarSegLib.synth.anatomy", "LAScarSegLib.synth.phantom", "LAScarSegLib.synth.scar",
    "LAScarSegLib.infer", "LAScarSegLib.infer.masks",
    "LAScarSegLib.quantify", "LAScarSegLib.quantify.baselines", "LAScarSegLib.quantify.metrics",
    "LAScarSegLib.quantify.projection", "LAScarSegLib.quantify.readout", "LAScarSegLib.quantify.report",
    "LAScarSegLib.quantify.stages",
    "LAScarSegLib.app", "LAScarSegLib.app.worker_client",
    "LAScarSegLib.slicer", "LAScarSegLib.slicer.checks", "LAScarSegLib.slicer.logic", "LAScarSegLib.slicer.mrml",
    "LAScarSegLib.slicer.panel", "LAScarSegLib.slicer.presentation", "LAScarSegLib.slicer.torch_install",
}

#: The module file imported with Slicer's application-only modules stubbed (slicer-core gives MRML),
#: as test_module_static.py does, then the library's Slicer logic; what was loaded is reported.
_PROBE = _STUBS + r'''
import LAScarSegLib.logic
print("REPORT " + json.dumps({
    "library": sorted(k for k in sys.modules if k.split(".")[0] == "LAScarSegLib"),
    "forbidden": sorted(k for k in sys.modules if k.split(".")[0] in %r and k not in ("qt", "ctk")),
    "qt_stubbed": all(not hasattr(sys.modules[k], "__file__") for k in ("qt", "ctk")),
}))
''' % (FORBIDDEN,)


def _probe() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(MODULE_FILE)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def test_slicers_process_imports_exactly_the_torch_free_set_and_no_torch() -> None:
    report = _probe()
    assert report["forbidden"] == [] and report["qt_stubbed"]  # qt and ctk are only the probe's stubs
    assert set(report["library"]) == TORCH_FREE, (sorted(set(report["library"]) - TORCH_FREE),
                                                  sorted(TORCH_FREE - set(report["library"])))


def test_the_torch_free_set_imports_nothing_outside_it_not_even_inside_a_function() -> None:
    """Read from the source: a function-level import into a torch module would hide from the probe."""
    graph = import_graph()
    leaks = sorted(f"{src} -> {dst}" for src in TORCH_FREE for dst in graph.edges.get(src, ())
                   if dst not in TORCH_FREE)
    assert leaks == []
    assert not [m for m in TORCH_FREE if any(t == "torch" for _s, _l, t in graph.inner if _s == m)]


def test_only_the_slicer_side_imports_slicer_and_nothing_imports_qt() -> None:
    graph = import_graph()
    text = {m: p.read_text(encoding="utf-8") for m, p in graph.modules.items()}
    uses_slicer = sorted(m for m, t in text.items() if "\nimport slicer" in t or "\nfrom slicer " in t)
    assert uses_slicer and all(m.startswith("LAScarSegLib.slicer.") for m in uses_slicer), uses_slicer
    assert not [m for m, t in text.items() if "\nimport qt" in t or "\nimport ctk" in t]


def test_the_check_itself_would_catch_torch() -> None:
    """Guard against a vacuous test: importing torch is seen by the same kind of probe."""
    code = "import sys, torch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
