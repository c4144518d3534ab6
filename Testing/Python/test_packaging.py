"""Packaging of the Slicer extension: CMake lists, metadata, module layout, module import.

(a) CMakeLists.txt lists every library file and every resource that exists now (computed from
    the file system at test time), and nothing that does not exist.
(b) The module file is LAScarSeg/LAScarSeg.py, alone in its folder, with no __init__.py beside it,
    and CMake places it directly in qt-scripted-modules/.
(c) LAScarSeg.s4ext, Resources/LAScarSeg.json and the CMake EXTENSION_* variables agree.
(d) The module file imports in plain Python with the Slicer-only modules stubbed (in a
    subprocess, so no stub leaks into other tests), from the source tree and from an installed
    layout; its classes exist and its self-test runs.
(e) Importing the module does not import torch.
A last test configures, builds and installs the real CMakeLists.txt against a stand-in for
Slicer's CMake package (same placement rules as slicerMacroBuildScriptedModule /
ctkMacroCompilePythonScript) and checks the resulting qt-scripted-modules/ folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CMAKELISTS = ROOT / "CMakeLists.txt"
S4EXT = ROOT / "LAScarSeg.s4ext"
INDEX_JSON = ROOT / "Resources" / "LAScarSeg.json"
MODULE_FILE = ROOT / "LAScarSeg" / "LAScarSeg.py"
LIB = ROOT / "LAScarSegLib"
RESOURCES = ROOT / "Resources"
MODULE_NAME = "LAScarSeg"

# Files under Resources/ that are deliberately not installed with the module.
RESOURCE_EXCLUSIONS = {
    "Resources/LAScarSeg.json": "Extensions Index catalog entry (metadata, not a runtime resource)",
}
IGNORED_NAMES = {".gitkeep", ".DS_Store", "Thumbs.db"}

# Slicer's Extensions Index validates entries against this schema (its pre-commit
# check-jsonschema hook uses schemas/slicer-extension-catalog-entry-schema-v1.0.1.json).
INDEX_SCHEMA_URL = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
    "slicer-extension-catalog-entry-schema-v1.0.1.json#"
)
INDEX_PROPERTIES = {
    "$schema": str,
    "category": str,
    "scm_url": str,
    "scm_revision": str,
    "scm_type": str,
    "build_dependencies": list,
    "build_subdirectory": str,
    "enabled": bool,
    "tier": int,
}
INDEX_REQUIRED = {"$schema", "category", "scm_url"}
# Slicer's build system (slicerFunctionExtractExtensionDescriptionFromJson) also requires this.
INDEX_REQUIRED_BY_BUILD = {"scm_revision"}


# ------------------------------------------------------------------------------ CMake parsing
def _strip_cmake_comments(text: str) -> str:
    out_lines = []
    for line in text.splitlines():
        in_quote = False
        escaped = False
        cut = len(line)
        for i, ch in enumerate(line):
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = not in_quote
            elif ch == "#" and not in_quote:
                cut = i
                break
        out_lines.append(line[:cut])
    return "\n".join(out_lines)


def _parse_args(text: str, start: int) -> tuple[list[str], int]:
    """Arguments of a command whose '(' is at text[start-1]; returns (args, index after ')')."""
    args: list[str] = []
    i = start
    depth = 1
    current = ""
    have_current = False
    while i < len(text):
        ch = text[i]
        if ch == '"':
            j = i + 1
            value = ""
            while text[j] != '"':
                if text[j] == "\\":
                    value += text[j + 1]
                    j += 2
                else:
                    value += text[j]
                    j += 1
            current += value
            have_current = True
            i = j + 1
            continue
        if ch == "(":
            depth += 1
            current += ch
            have_current = True
        elif ch == ")":
            depth -= 1
            if depth == 0:
                if have_current:
                    args.append(current)
                return args, i + 1
            current += ch
        elif ch.isspace():
            if have_current:
                args.append(current)
            current = ""
            have_current = False
        else:
            current += ch
            have_current = True
        i += 1
    raise ValueError("unbalanced parentheses in CMakeLists.txt")


def parse_cmake(path: Path = CMAKELISTS) -> list[tuple[str, list[str]]]:
    text = _strip_cmake_comments(path.read_text(encoding="utf-8"))
    commands = []
    for match in re.finditer(r"(?m)^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(", text):
        args, _ = _parse_args(text, match.end())
        commands.append((match.group(1), args))
    return commands


def cmake_variables(commands) -> dict[str, list[str]]:
    variables: dict[str, list[str]] = {}
    for name, args in commands:
        if name.lower() == "set" and args:
            variables[args[0]] = args[1:]
    return variables


def expand(value: str, variables: dict[str, list[str]]) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1)
        if name in variables and name not in ("CMAKE_CURRENT_BINARY_DIR", "CMAKE_CURRENT_SOURCE_DIR"):
            return ";".join(variables[name])
        return m.group(0)

    return re.sub(r"\$\{([A-Za-z0-9_]+)\}", repl, value)


@pytest.fixture(scope="module")
def cmake():
    commands = parse_cmake()
    variables = cmake_variables(commands)
    scripts = [expand(v, variables) for v in variables.get("MODULE_PYTHON_SCRIPTS", [])]
    resources = [expand(v, variables) for v in variables.get("MODULE_PYTHON_RESOURCES", [])]
    return {"commands": commands, "vars": variables, "scripts": scripts, "resources": resources}


def extension_var(cmake, name: str) -> str:
    values = cmake["vars"].get(f"EXTENSION_{name}")
    assert values is not None, f"CMakeLists.txt does not set EXTENSION_{name}"
    return " ".join(values)


# ------------------------------------------------------------------------------ file system
def _git_ignored(paths: list[str]) -> set[str]:
    if not paths or shutil.which("git") is None or not (ROOT / ".git").exists():
        return set()
    proc = subprocess.run(
        ["git", "check-ignore", "--stdin"],
        cwd=ROOT,
        input="\n".join(paths) + "\n",
        capture_output=True,
        text=True,
    )
    return {line.strip() for line in proc.stdout.splitlines() if line.strip()}


def files_under(folder: Path) -> list[str]:
    found = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or "__pycache__" in p.parts or p.suffix == ".pyc" or p.name in IGNORED_NAMES:
            continue
        found.append(p.relative_to(ROOT).as_posix())
    ignored = _git_ignored(found)
    return [f for f in found if f not in ignored]


# ------------------------------------------------------------------------------------- (a)
def test_cmake_lists_every_library_file_and_nothing_else(cmake) -> None:
    on_disk = [f for f in files_under(LIB) if f.endswith(".py")]
    listed = [s for s in cmake["scripts"] if s.startswith("LAScarSegLib/")]
    assert len(listed) == len(set(listed)), "MODULE_PYTHON_SCRIPTS lists a file twice"
    missing = sorted(set(on_disk) - set(listed))
    stale = sorted(set(listed) - set(on_disk))
    assert not missing, f"add these to MODULE_PYTHON_SCRIPTS in CMakeLists.txt: {missing}"
    assert not stale, f"MODULE_PYTHON_SCRIPTS lists files that do not exist: {stale}"
    assert "LAScarSegLib/__init__.py" in listed


def test_library_data_files_are_listed_as_resources(cmake) -> None:
    data = [f for f in files_under(LIB) if not f.endswith(".py")]
    missing = sorted(set(data) - set(cmake["resources"]))
    assert not missing, f"add these to MODULE_PYTHON_RESOURCES in CMakeLists.txt: {missing}"


def test_cmake_lists_every_resource_and_nothing_else(cmake) -> None:
    on_disk = [f for f in files_under(RESOURCES) if f not in RESOURCE_EXCLUSIONS]
    listed = [r for r in cmake["resources"] if r.startswith("Resources/")]
    assert len(listed) == len(set(listed)), "MODULE_PYTHON_RESOURCES lists a file twice"
    missing = sorted(set(on_disk) - set(listed))
    stale = sorted(r for r in cmake["resources"] if not (ROOT / r).is_file())
    assert not missing, f"add these to MODULE_PYTHON_RESOURCES in CMakeLists.txt: {missing}"
    assert not stale, f"MODULE_PYTHON_RESOURCES lists files that do not exist: {stale}"
    excluded_but_listed = sorted(set(listed) & set(RESOURCE_EXCLUSIONS))
    assert not excluded_but_listed, f"excluded resources are listed: {excluded_but_listed}"
    assert f"Resources/Icons/{MODULE_NAME}.png" in listed


def test_every_script_entry_exists_and_lists_are_explicit(cmake) -> None:
    text = CMAKELISTS.read_text(encoding="utf-8")
    assert "GLOB" not in _strip_cmake_comments(text).upper(), "list files explicitly, no file(GLOB)"
    for script in cmake["scripts"]:
        if script.startswith("${CMAKE_CURRENT_BINARY_DIR}/"):
            continue  # the configured module file, checked below
        assert (ROOT / script).is_file(), f"MODULE_PYTHON_SCRIPTS lists {script}, which does not exist"


# ------------------------------------------------------------------------------------- (b)
def test_module_folder_holds_only_the_module_file() -> None:
    assert MODULE_FILE.is_file()
    entries = sorted(p.name for p in MODULE_FILE.parent.iterdir() if p.name != "__pycache__")
    assert entries == [f"{MODULE_NAME}.py"], f"LAScarSeg/ must hold only LAScarSeg.py, found {entries}"
    assert not (MODULE_FILE.parent / "__init__.py").exists()  # it would shadow the module
    assert not (ROOT / "__init__.py").exists()


def test_cmake_places_the_module_directly_in_qt_scripted_modules(cmake) -> None:
    commands = cmake["commands"]
    configured = [args for name, args in commands if name == "configure_file"]
    module_copy = "${CMAKE_CURRENT_BINARY_DIR}/" + MODULE_NAME + ".py"
    assert any(
        expand(a[0], cmake["vars"]) == "${CMAKE_CURRENT_SOURCE_DIR}/LAScarSeg/LAScarSeg.py"
        and expand(a[1], cmake["vars"]) == module_copy
        and "COPYONLY" in a
        for a in configured
    ), "configure_file must copy LAScarSeg/LAScarSeg.py to ${CMAKE_CURRENT_BINARY_DIR}/LAScarSeg.py"
    # An absolute SCRIPTS entry lands at its path relative to CMAKE_CURRENT_BINARY_DIR; a relative
    # entry keeps its folder (LAScarSeg/LAScarSeg.py would land in qt-scripted-modules/LAScarSeg/).
    assert module_copy in cmake["scripts"]
    assert "LAScarSeg/LAScarSeg.py" not in cmake["scripts"]

    build = [args for name, args in commands if name == "slicerMacroBuildScriptedModule"]
    assert len(build) == 1
    args = build[0]
    assert expand(args[args.index("NAME") + 1], cmake["vars"]) == MODULE_NAME
    assert "WITH_GENERIC_TESTS" in args
    assert "WITH_SUBDIR" not in args
    assert args[args.index("SCRIPTS") + 1] == "${MODULE_PYTHON_SCRIPTS}"
    assert args[args.index("RESOURCES") + 1] == "${MODULE_PYTHON_RESOURCES}"

    tests = [args for name, args in commands if name == "slicer_add_python_unittest"]
    assert len(tests) == 1
    script = expand(tests[0][tests[0].index("SCRIPT") + 1], cmake["vars"])
    assert script.endswith(f"/{MODULE_NAME}.py")

    names = [name for name, _ in commands]
    assert "find_package" in names
    includes = [args[0] for name, args in commands if name == "include"]
    for needed in ("${Slicer_USE_FILE}", "${Slicer_EXTENSION_GENERATE_CONFIG}", "${Slicer_EXTENSION_CPACK}"):
        assert needed in includes, f"CMakeLists.txt must include({needed})"


# ------------------------------------------------------------------------------------- (c)
def parse_s4ext(path: Path = S4EXT) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        assert key not in values, f"{path.name}: {key} given twice"
        values[key] = value.strip()
    return values


def _repo_url(url: str) -> str:
    return url[: -len(".git")] if url.endswith(".git") else url


def test_s4ext_json_and_cmake_metadata_agree(cmake) -> None:
    s4 = parse_s4ext()
    entry = json.loads(INDEX_JSON.read_text(encoding="utf-8"))

    for key in ("scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage",
                "contributors", "category", "iconurl", "status", "description", "screenshoturls",
                "enabled"):
        assert s4.get(key), f"{S4EXT.name} lacks {key}"

    assert s4["homepage"] == extension_var(cmake, "HOMEPAGE")
    assert s4["category"] == extension_var(cmake, "CATEGORY") == entry["category"] == "Cardiac"
    assert s4["contributors"] == extension_var(cmake, "CONTRIBUTORS")
    assert s4["description"] == extension_var(cmake, "DESCRIPTION")
    assert s4["iconurl"] == extension_var(cmake, "ICONURL")
    assert s4["screenshoturls"] == extension_var(cmake, "SCREENSHOTURLS")
    assert s4["status"] == extension_var(cmake, "STATUS")
    assert s4["enabled"] == extension_var(cmake, "ENABLED") == ("1" if entry.get("enabled", True) else "0")
    assert s4["build_subdirectory"] == extension_var(cmake, "BUILD_SUBDIRECTORY") == entry["build_subdirectory"]

    depends = s4["depends"].split()
    assert depends == extension_var(cmake, "DEPENDS").split() == entry["build_dependencies"] == ["PyTorch"]

    assert s4["scm"] == entry.get("scm_type", "git") == "git"
    assert s4["scmurl"] == entry["scm_url"]
    assert s4["scmrevision"] == entry["scm_revision"]
    assert _repo_url(entry["scm_url"]) == _repo_url(s4["homepage"]), "homepage and repository differ"

    # The icon and screenshot URLs point into the same repository at the same revision.
    raw_prefix = _repo_url(entry["scm_url"]).replace("https://github.com/", "https://raw.githubusercontent.com/")
    raw_prefix += "/" + entry["scm_revision"] + "/"
    assert s4["iconurl"] == raw_prefix + f"Resources/Icons/{MODULE_NAME}.png"
    for url in s4["screenshoturls"].split():
        assert url.startswith(raw_prefix) and url.lower().endswith((".png", ".jpg", ".jpeg"))

    assert "MICCAI 2020" in s4["description"] and "Research use only" in s4["description"]


def test_index_entry_follows_the_catalog_schema() -> None:
    entry = json.loads(INDEX_JSON.read_text(encoding="utf-8"))
    assert entry["$schema"] == INDEX_SCHEMA_URL
    unknown = sorted(set(entry) - set(INDEX_PROPERTIES))
    assert not unknown, f"the schema allows no additional properties: {unknown}"
    assert INDEX_REQUIRED | INDEX_REQUIRED_BY_BUILD <= set(entry)
    for key, kind in INDEX_PROPERTIES.items():
        if key in entry:
            assert isinstance(entry[key], kind) and not (kind is int and isinstance(entry[key], bool)), key
    assert entry.get("scm_type", "git") in ("git", "local")
    assert all(isinstance(d, str) for d in entry.get("build_dependencies", []))
    assert entry.get("tier", 1) in (1, 3, 5)


def test_module_category_matches_extension_category(cmake) -> None:
    text = MODULE_FILE.read_text(encoding="utf-8")
    match = re.search(r"self\.parent\.categories\s*=\s*\[([^\]]*)\]", text)
    assert match, "the module sets no categories"
    categories = re.findall(r"\"([^\"]+)\"", match.group(1))
    assert extension_var(cmake, "CATEGORY") in categories


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_icon_is_a_small_128px_png() -> None:
    icon = RESOURCES / "Icons" / f"{MODULE_NAME}.png"
    assert _png_size(icon) == (128, 128)
    assert icon.stat().st_size < 30 * 1024


def test_license_and_readme_for_packaging(cmake) -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert extension_var(cmake, "LICENSE_FILE") == "${CMAKE_CURRENT_SOURCE_DIR}/LICENSE"
    assert extension_var(cmake, "README_FILE") == "${CMAKE_CURRENT_SOURCE_DIR}/README.md"
    assert (ROOT / "README.md").is_file(), "Slicer's extension packaging needs EXTENSION_README_FILE"


def test_screenshots_are_in_the_repository() -> None:
    s4 = parse_s4ext()
    raw_prefix = _repo_url(s4["scmurl"]).replace("https://github.com/", "https://raw.githubusercontent.com/")
    raw_prefix += "/" + s4["scmrevision"] + "/"
    paths = [ROOT / u[len(raw_prefix):] for u in s4["screenshoturls"].split()]
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.is_file()]
    assert not missing, f"screenshots missing (make them with Testing/Python/make_screenshot.py): {missing}"
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"


# ------------------------------------------------------------------------------ (d) and (e)
# Runs in a fresh interpreter: stubs the Slicer-only modules, loads the module file by path the
# way Slicer does (into sys.modules under its name), exercises it and prints a JSON report.
_PROBE = textwrap.dedent(
    r'''
    import importlib.util, json, os, sys, types, unittest

    module_file = sys.argv[1]
    run_phantom = sys.argv[2] == "1"

    def stub(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent
            self.moduleName = type(self).__name__

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

        def setup(self):
            pass

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=1000):
            print("delayDisplay:", message, file=sys.stderr)

    class Scene:
        def Clear(self, *args):
            pass

    class QIcon:
        def __init__(self, path):
            self.path = path

    # MRML node classes the module names in its parameter class (type annotations only).
    node_classes = {n: type(n, (), {}) for n in ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode",
                                                 "vtkMRMLSegmentationNode", "vtkMRMLMarkupsFiducialNode")}
    slicer = stub("slicer", mrmlScene=Scene(), __path__=[], **node_classes)
    slicer.ScriptedLoadableModule = stub(
        "slicer.ScriptedLoadableModule",
        ScriptedLoadableModule=ScriptedLoadableModule,
        ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest=ScriptedLoadableModuleTest,
    )
    slicer.i18n = stub("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text)
    slicer.util = stub("slicer.util", VTKObservationMixin=object)
    slicer.parameterNodeWrapper = stub("slicer.parameterNodeWrapper", parameterNodeWrapper=lambda cls: cls,
                                       Choice=lambda *a, **k: None, WithinRange=lambda *a, **k: None)
    stub("qt", QIcon=QIcon)
    stub("ctk")
    # vtk is not stubbed: it is a pip package, and LAScarSegLib.logic (the Logic's base) uses it.

    spec = importlib.util.spec_from_file_location("LAScarSeg", module_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules["LAScarSeg"] = module
    spec.loader.exec_module(module)
    report = {"torch_after_import": "torch" in sys.modules}

    parent = types.SimpleNamespace()
    module.LAScarSeg(parent)
    report["parent"] = {k: (v.path if isinstance(v, QIcon) else v) for k, v in vars(parent).items()}
    report["classes"] = {
        name: isinstance(getattr(module, name, None), type)
        for name in ("LAScarSeg", "LAScarSegWidget", "LAScarSegLogic", "LAScarSegTest")
    }
    report["bases"] = {
        "LAScarSeg": issubclass(module.LAScarSeg, ScriptedLoadableModule),
        "LAScarSegWidget": issubclass(module.LAScarSegWidget, ScriptedLoadableModuleWidget),
        "LAScarSegLogic": issubclass(module.LAScarSegLogic, ScriptedLoadableModuleLogic),
        "LAScarSegTest": issubclass(module.LAScarSegTest, ScriptedLoadableModuleTest),
    }
    report["extensionRoot"] = module.extensionRoot()
    report["resourceDir"] = module.resourceDir()
    report["status"] = module.LAScarSegLogic().status()
    report["torch_after_status"] = "torch" in sys.modules

    test = module.LAScarSegTest()
    test.setUp()
    test.test_LibraryAndResources()
    report["self_test_library"] = "passed"
    if run_phantom:
        from LAScarSegLib.slicer.checks import phantom_label_problems

        report["phantom_problems"] = phantom_label_problems(seed=0)
        test.test_PhantomLabels()
        report["self_test_phantom"] = "passed"
    report["torch_at_end"] = "torch" in sys.modules
    report["real_slicer_imported"] = hasattr(sys.modules["slicer"], "vtkMRMLScene")
    print("REPORT " + json.dumps(report))
    '''
)


def run_probe(module_file: Path, cwd: Path, run_phantom: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(module_file), "1" if run_phantom else "0"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"module probe failed:\n{proc.stdout}\n{proc.stderr}"
    line = [l for l in proc.stdout.splitlines() if l.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def _same(a: str, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(str(b))


def check_probe_report(report: dict, root: Path) -> None:
    assert all(report["classes"].values()), report["classes"]
    assert all(report["bases"].values()), report["bases"]
    parent = report["parent"]
    assert parent["title"] == "LA Scar Segmentation"
    assert parent["categories"] == ["Cardiac"]
    assert parent["contributors"] and all(isinstance(c, str) for c in parent["contributors"])
    help_text = parent["helpText"]
    assert "research use only" in help_text.lower()
    assert "synthetic scar only" in help_text
    ack = parent["acknowledgementText"]
    for needed in ("Li L, Weng X, Schnabel JA, Zhuang X",
                   "Joint Left Atrial Segmentation and Scar Quantification Based on a DNN with "
                   "Spatial Encoding and Shape Attention", "MICCAI", "2020"):
        assert needed in ack, f"acknowledgementText lacks {needed!r}"
    assert _same(report["extensionRoot"], root)
    assert _same(report["resourceDir"], root / "Resources")
    assert _same(report["status"]["libraryPath"], root / "LAScarSegLib"), "imported the wrong LAScarSegLib"
    assert report["self_test_library"] == "passed"
    assert not report["real_slicer_imported"]
    # (e) importing and using the module does not import torch
    assert report["torch_after_import"] is False
    assert report["torch_after_status"] is False
    assert report["torch_at_end"] is False


def test_module_imports_from_the_source_tree_with_slicer_stubbed(tmp_path) -> None:
    report = run_probe(MODULE_FILE, cwd=tmp_path)
    check_probe_report(report, ROOT)
    # Loaded from LAScarSeg/, the icon is one level up: the module sets it itself.
    assert _same(report["parent"]["icon"], ROOT / "Resources" / "Icons" / f"{MODULE_NAME}.png")


def _installed_layout(dest: Path) -> Path:
    """What qt-scripted-modules/ holds after install: the module with the Lib and Resources beside it."""
    dest.mkdir(parents=True)
    shutil.copy2(MODULE_FILE, dest / MODULE_FILE.name)
    shutil.copytree(LIB, dest / "LAScarSegLib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(RESOURCES, dest / "Resources")
    return dest


def test_module_imports_from_an_installed_layout_with_slicer_stubbed(tmp_path) -> None:
    root = _installed_layout(tmp_path / "qt-scripted-modules")
    report = run_probe(root / MODULE_FILE.name, cwd=tmp_path)
    check_probe_report(report, root)
    # Beside its Resources/ folder Slicer sets the icon itself; the module leaves it alone.
    assert "icon" not in report["parent"]


def test_self_test_phantom_check_runs_without_torch(tmp_path) -> None:
    report = run_probe(MODULE_FILE, cwd=tmp_path, run_phantom=True)
    assert report["phantom_problems"] == []
    assert report["self_test_phantom"] == "passed"
    assert report["torch_at_end"] is False


def test_module_file_does_not_import_torch_at_module_level() -> None:
    text = MODULE_FILE.read_text(encoding="utf-8")
    lines = text.splitlines()
    top_level_imports = [(i, l) for i, l in enumerate(lines) if re.match(r"(import|from)\s", l)]
    assert not [l for _i, l in top_level_imports if re.match(r"(import|from)\s+torch\b", l)], top_level_imports
    # the library is imported at the top, but only once the library beside the module file is first on sys.path
    on_path = lines.index("_putLibraryOnPath()")
    library = [i for i, l in top_level_imports if "LAScarSegLib" in l]
    assert library and min(library) > on_path, top_level_imports


# ------------------------------------------------------------------ build with a stand-in Slicer
_MOCK_SLICER_CONFIG = r'''
# Stand-in for Slicer's CMake package, for testing the extension's CMakeLists.txt only.
# Placement rules follow Slicer's slicerMacroBuildScriptedModule and CTK's
# ctkMacroCompilePythonScript: a relative script or resource keeps its path below
# qt-scripted-modules/; an absolute script lands at its path relative to CMAKE_CURRENT_BINARY_DIR;
# the folder is installed without an extra sub-folder (NO_INSTALL_SUBDIR).
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.10/qt-scripted-modules")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/GenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/ExtensionCPack.cmake")
'''

_MOCK_USE_SLICER = r'''
enable_testing()
if(NOT DEFINED EXTENSION_NAME)
  set(EXTENSION_NAME ${PROJECT_NAME})
endif()

macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MOCK "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MOCK_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords: ${MOCK_UNPARSED_ARGUMENTS}")
  endif()
  set(_dest "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")
  set(_outputs)
  foreach(_file IN LISTS MOCK_SCRIPTS)
    get_filename_component(_ext "${_file}" EXT)
    if(NOT "${_ext}" MATCHES "py")
      set(_file "${_file}.py")
    endif()
    if(IS_ABSOLUTE "${_file}")
      set(_src "${_file}")
      file(RELATIVE_PATH _rel "${CMAKE_CURRENT_BINARY_DIR}" "${_file}")
    else()
      set(_src "${CMAKE_CURRENT_SOURCE_DIR}/${_file}")
      set(_rel "${_file}")
    endif()
    if(NOT EXISTS "${_src}")
      message(FATAL_ERROR "slicerMacroBuildScriptedModule(SCRIPTS) given nonexistent file '${_file}'")
    endif()
    add_custom_command(OUTPUT "${_dest}/${_rel}" DEPENDS "${_src}"
      COMMAND ${CMAKE_COMMAND} -E copy "${_src}" "${_dest}/${_rel}")
    list(APPEND _outputs "${_dest}/${_rel}")
  endforeach()
  foreach(_file IN LISTS MOCK_RESOURCES)
    set(_src "${CMAKE_CURRENT_SOURCE_DIR}/${_file}")
    if(NOT EXISTS "${_src}")
      message(FATAL_ERROR "slicerMacroBuildScriptedModule(RESOURCES) given nonexistent file '${_file}'")
    endif()
    add_custom_command(OUTPUT "${_dest}/${_file}" DEPENDS "${_src}"
      COMMAND ${CMAKE_COMMAND} -E copy "${_src}" "${_dest}/${_file}")
    list(APPEND _outputs "${_dest}/${_file}")
  endforeach()
  add_custom_target(Copy${MOCK_NAME}PythonFiles ALL DEPENDS ${_outputs})
  install(DIRECTORY "${_dest}/" DESTINATION "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}")
  if(MOCK_WITH_GENERIC_TESTS)
    file(APPEND "${CMAKE_BINARY_DIR}/mock-tests.txt" "generic ${MOCK_NAME}\n")
  endif()
endmacro()

macro(slicer_add_python_unittest)
  cmake_parse_arguments(MOCKT "" "TESTNAME_PREFIX;SCRIPT" "SLICER_ARGS" ${ARGN})
  get_filename_component(_test_name "${MOCKT_SCRIPT}" NAME_WE)
  get_filename_component(_script_dir "${MOCKT_SCRIPT}" PATH)
  file(APPEND "${CMAKE_BINARY_DIR}/mock-tests.txt" "unittest ${_test_name} ${_script_dir}\n")
endmacro()
'''

_MOCK_CHECK_METADATA = r'''
foreach(_var HOMEPAGE CATEGORY CONTRIBUTORS DESCRIPTION ICONURL SCREENSHOTURLS DEPENDS)
  if("${EXTENSION_${_var}}" STREQUAL "")
    message(FATAL_ERROR "EXTENSION_${_var} is empty")
  endif()
endforeach()
foreach(_var EXTENSION_README_FILE EXTENSION_LICENSE_FILE)
  if(NOT EXISTS "${${_var}}")
    message(FATAL_ERROR "${_var} points to an inexistent file: ${${_var}}")
  endif()
endforeach()
'''


@pytest.mark.slow
def test_cmake_build_and_install_put_the_module_beside_its_library(tmp_path) -> None:
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    if shutil.which("cc") is None and shutil.which("gcc") is None and shutil.which("clang") is None:
        pytest.skip("no C compiler for project()")
    mock = tmp_path / "mock-slicer"
    mock.mkdir()
    (mock / "SlicerConfig.cmake").write_text(_MOCK_SLICER_CONFIG)
    (mock / "UseSlicer.cmake").write_text(_MOCK_USE_SLICER)
    (mock / "GenerateConfig.cmake").write_text(_MOCK_CHECK_METADATA)
    (mock / "ExtensionCPack.cmake").write_text(_MOCK_CHECK_METADATA)
    build, prefix = tmp_path / "build", tmp_path / "install"

    def cmake_run(*args: str) -> None:
        proc = subprocess.run(["cmake", *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"cmake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"

    cmake_run("-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={mock}", "-DBUILD_TESTING=ON")
    cmake_run("--build", str(build))
    cmake_run("--install", str(build), "--prefix", str(prefix))

    expected = {"LAScarSeg.py"}
    expected |= {Path(f).as_posix() for f in files_under(LIB) if f.endswith(".py")}
    expected |= {f for f in files_under(RESOURCES) if f not in RESOURCE_EXCLUSIONS}
    for tree in (build, prefix):
        qsm = tree / "lib" / "Slicer-5.10" / "qt-scripted-modules"
        got = {p.relative_to(qsm).as_posix() for p in qsm.rglob("*") if p.is_file() and p.suffix != ".pyc"}
        assert got == expected, f"{tree.name}: missing {sorted(expected - got)}, extra {sorted(got - expected)}"
        assert (qsm / "LAScarSeg.py").read_bytes() == MODULE_FILE.read_bytes()
        assert not (qsm / "LAScarSeg").exists()

    tests = (build / "mock-tests.txt").read_text().split("\n")
    assert f"generic {MODULE_NAME}" in tests
    unittest_lines = [t.split() for t in tests if t.startswith("unittest ")]
    assert len(unittest_lines) == 1
    _, test_name, script_dir = unittest_lines[0]
    assert test_name == MODULE_NAME
    assert _same(script_dir, build / "lib" / "Slicer-5.10" / "qt-scripted-modules")

    installed = prefix / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    check_probe_report(run_probe(installed / "LAScarSeg.py", cwd=tmp_path), installed)
