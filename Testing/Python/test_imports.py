"""CONTRACTS section 1: the library imports without Slicer, Qt or torch (except LAScarSegLib.logic)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import LAScarSegLib

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "slicer", "qt", "ctk", "PythonQt")


def library_modules() -> list[str]:
    return sorted(
        f"LAScarSegLib.{m.name}"
        for m in pkgutil.iter_modules(LAScarSegLib.__path__)
        if m.name != "logic"
    )


def test_every_library_module_imports_without_torch_slicer_or_qt() -> None:
    modules = library_modules()
    assert {"LAScarSegLib.image", "LAScarSegLib.distance", "LAScarSegLib.datasets"} <= set(modules)
    code = (
        "import importlib, json, sys\n"
        f"mods = {modules!r}\n"
        "importlib.import_module('LAScarSegLib')\n"
        "for m in mods: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_check_itself_would_catch_torch() -> None:
    """Guard against a vacuous test: importing torch is seen by the same probe."""
    code = "import sys, torch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
