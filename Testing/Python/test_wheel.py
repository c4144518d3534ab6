"""The wheel: `pip wheel .` carries the library with every sub-package and the bundled model, and a
non-editable install of it runs `lascarseg segment` with that model.

(a) The wheel built from (a copy of) the repository holds every `LAScarSegLib/**/*.py`, the bundled
    registry `LAScarSegLib/bundled_models/models.json` (the same bytes as Resources/Models/models.json),
    every model file it names with the SHA-256 it records, and the model cards; nothing else at its
    top level (no Testing/, no .venv); its console script names a module that is in it.
(b) Installed with `pip install --no-deps` into a fresh virtual environment that reuses this
    environment's dependencies through a `.pth` file pointing at a folder of links to every
    distribution of this environment's site-packages except lascarseg's own (the editable install's
    `__editable__*` finder, its .pth and its dist-info stay out), the library imports from that
    environment, not from the repository, and `lascarseg segment` on a phantom, run from a folder
    outside the repository, exits 0 with a report naming the registered default model.

The build runs without build isolation and without an index (offline): it uses this environment's
setuptools. It runs in a copy of the repository so that no build/ or *.egg-info is written into the
working tree while other tests run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "LAScarSegLib"
MODELS = ROOT / "Resources" / "Models"
BUNDLED = "LAScarSegLib/bundled_models"
PROJECT = "lascarseg"

# Not copied into the build tree: version control, environments, build outputs, caches, run folders.
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                     "*.pyc", ".pytest_cache", ".ruff_cache", "runs", "demo-output", ".bench")


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would put the repository or another
    environment on a child's sys.path."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__"}}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or _clean_env(), capture_output=True, check=False,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                                  f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _registry() -> dict:
    return json.loads((MODELS / "models.json").read_text())


def _default_entry(reg: dict) -> dict:
    return next(m for m in reg["models"] if m["name"] == reg["default"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel offline (no build isolation, no index) from a copy of the repository."""
    pytest.importorskip("setuptools", minversion="68")
    base = tmp_path_factory.mktemp("wheel")
    src, out = base / "src", base / "dist"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "--no-index",
          "-w", out], cwd=base, timeout=240)
    wheels = sorted(out.glob(f"{PROJECT}-*.whl"))
    assert len(wheels) == 1, f"expected one {PROJECT} wheel in {out}, found {[w.name for w in out.iterdir()]}"
    return wheels[0]


# ------------------------------------------------------------------------------- (a) contents
def test_wheel_holds_the_library_and_the_bundled_model(wheel) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())

        library = {p.relative_to(ROOT).as_posix() for p in LIB.rglob("*.py") if "__pycache__" not in p.parts}
        assert library, f"no Python files under {LIB}"
        missing = sorted(library - names)
        assert not missing, f"library files missing from {wheel.name} (a sub-package not in pyproject.toml?): {missing}"

        registry = f"{BUNDLED}/models.json"
        assert registry in names, f"{wheel.name} has no {registry}"
        assert zf.read(registry) == (MODELS / "models.json").read_bytes(), "the wheel's models.json differs from Resources/Models"
        reg = json.loads(zf.read(registry))
        assert reg["models"], "the bundled registry lists no model"
        assert reg["default"] in {m["name"] for m in reg["models"]}
        for m in reg["models"]:
            member = f"{BUNDLED}/{m['file']}"
            assert member in names, f"{wheel.name} lacks the model file {member} that models.json names"
            assert _sha256(zf.read(member)) == m["sha256"], f"{member}: SHA-256 differs from models.json's"
        for card in sorted(MODELS.glob("*.md")):
            assert f"{BUNDLED}/{card.name}" in names, f"{wheel.name} lacks the model card {card.name}"

        dist_info = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
        assert len(dist_info) == 1 and next(iter(dist_info)).startswith(f"{PROJECT}-"), dist_info
        top = {n.split("/")[0] for n in names}
        assert top == {"LAScarSegLib"} | dist_info, f"unexpected top-level entries in {wheel.name}: {sorted(top)}"
        assert not [n for n in names if "/Testing/" in f"/{n}" or "/.venv/" in f"/{n}" or "__pycache__" in n]

        # the console script's module is in the wheel (an entry point that names a moved module
        # installs a `lascarseg` that cannot start)
        entry_points = zf.read(f"{next(iter(dist_info))}/entry_points.txt").decode()
        match = re.search(rf"^{PROJECT}\s*=\s*([\w.]+):(\w+)\s*$", entry_points, re.MULTILINE)
        assert match, f"no `{PROJECT}` console script in entry_points.txt:\n{entry_points}"
        module = match.group(1).replace(".", "/")
        assert f"{module}.py" in names or f"{module}/__init__.py" in names, (
            f"the console script names {match.group(1)}, which is not in {wheel.name}")


# -------------------------------------------------------------------- (b) non-editable install
def _is_lascarseg_entry(entry: Path) -> bool:
    """lascarseg's own files in a site-packages folder: the package, the editable install's finder
    and .pth, and the distribution's metadata."""
    name = entry.name
    if name.startswith("__editable__") or name == "LAScarSegLib":
        return True
    for suffix in (".dist-info", ".egg-info", ".egg-link"):
        if name.endswith(suffix):
            project = name[: -len(suffix)].split("-")[0]
            return re.sub(r"[-_.]+", "-", project).lower() == PROJECT
    return False


def _dependency_links(dest: Path) -> list[Path]:
    """A folder of links to every entry of this environment's site-packages except lascarseg's own
    and the .pth files (a folder put on sys.path by a .pth line does not have its own .pth files
    run, and none of them is needed)."""
    dest.mkdir()
    sources = list(dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
    sources = [Path(s) for s in sources if Path(s).is_dir() and Path(s).resolve() != ROOT]
    for sp in sources:
        for entry in sorted(sp.iterdir()):
            if _is_lascarseg_entry(entry) or entry.suffix == ".pth" or entry.name == "__pycache__":
                continue
            link = dest / entry.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(entry, target_is_directory=entry.is_dir())
    return sources


PROBE = """
import importlib.metadata as md, json, sys
import LAScarSegLib
from LAScarSegLib.model import registry
print(json.dumps({
    "file": LAScarSegLib.__file__,
    "models_dir": str(registry.MODELS_DIR),
    "dist": str(md.distribution("lascarseg").locate_file("")),
    "editable": [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()]
                + [m for m in sys.modules if m.startswith("__editable__")],
    "path": sys.path,
}))
"""


@pytest.mark.slow
def test_non_editable_install_segments_with_the_bundled_model(wheel, tmp_path) -> None:
    from LAScarSegLib.core.image import write_volume
    from LAScarSegLib.synth.phantom import make_phantom

    if os.name == "nt":
        pytest.skip("the dependency folder is made of symbolic links")
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path, timeout=120)
    vpy = venv / "bin" / "python"
    paths = json.loads(_run([vpy, "-c", "import json, sysconfig; print(json.dumps(sysconfig.get_paths()))"],
                            cwd=work).stdout)
    venv_site, scripts = Path(paths["purelib"]), Path(paths["scripts"])
    assert venv_site.resolve().is_relative_to(venv.resolve())

    deps = tmp_path / "deps"
    sources = _dependency_links(deps)
    assert sources, "found no site-packages folder of this environment"
    (venv_site / "_lascarseg_test_dependencies.pth").write_text(f"{deps}\n")

    env = _clean_env(VIRTUAL_ENV=str(venv), PATH=f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}")
    # before the install, the fresh environment must not see lascarseg at all (no editable leak)
    leak = subprocess.run([vpy, "-c", "import LAScarSegLib; print(LAScarSegLib.__file__)"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert leak.returncode != 0, f"LAScarSegLib importable before the install, from {leak.stdout.strip()}"

    _run([vpy, "-m", "pip", "install", "--no-deps", "--no-index", wheel], cwd=work, env=env, timeout=240)

    probe = json.loads(_run([vpy, "-c", PROBE], cwd=work, env=env).stdout)
    lib_file = Path(probe["file"]).resolve()
    assert lib_file.is_relative_to(venv_site.resolve()), f"LAScarSegLib imported from {lib_file}, not from {venv_site}"
    assert not lib_file.is_relative_to(ROOT), lib_file
    assert Path(probe["dist"]).resolve() == venv_site.resolve(), probe["dist"]
    assert not probe["editable"], f"the editable install leaked into the fresh environment: {probe['editable']}"
    assert str(ROOT) not in probe["path"], probe["path"]
    assert Path(probe["models_dir"]).resolve() == (venv_site / "LAScarSegLib" / "bundled_models").resolve(), probe["models_dir"]

    write_volume(make_phantom(0).image, work / "image.nii.gz")
    exe = scripts / "lascarseg"
    assert exe.is_file(), f"pip installed no console script at {exe}"
    _run([exe, "segment", "image.nii.gz", "--out", "out", "--threads", "2"], cwd=work, env=env, timeout=300)

    report = json.loads((work / "out" / "report.json").read_text())
    expected = _default_entry(_registry())
    assert report["model"]["name"] == expected["name"]
    assert report["model"]["sha256"] == expected["sha256"]
    assert report["model"]["version"] == expected["version"]
