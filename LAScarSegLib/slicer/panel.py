"""What the module panel offers and registers, without Qt: the method and device choices, the
reset of choices a scene saved by another version holds, the phantom as Slicer sample data
(`SampleData` is passed in: it is Slicer's own Qt module), and the self-test's library check."""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any, Callable

import LAScarSegLib

from ..quantify.baselines import method_names

#: The network's label in the method choice (the report names it "mtl-sesa").
NETWORK_LABEL = "MTL-SESA"
DEVICES = ["auto", "cuda", "cpu"]
SAMPLE_NAME = "LAScarSegPhantom"
SAMPLE_CATEGORY = "Cardiac"


def method_choices() -> list[str]:
    """MTL-SESA, then the classical baselines; a chosen baseline's scar (on MTL-SESA's LA) is what
    the scene shows, with MTL-SESA's burden reported beside it."""
    return [NETWORK_LABEL, *method_names()]


def reset_stale_choices(parameterNode: Any) -> list[str]:
    """Put a method or device that is no longer offered (a scene saved by another version) back to
    its default; returns the names of the fields reset. Slicer's combo-box connector refuses a
    value it lacks, so without this the panel cannot connect."""
    reset = []
    for name, choices, default in (("method", method_choices(), NETWORK_LABEL), ("device", DEVICES, "auto")):
        if getattr(parameterNode, name) not in choices:
            logging.warning("LAScarSeg: %s %r is not offered by this version; set to %r",
                            name, getattr(parameterNode, name), default)
            setattr(parameterNode, name, default)
            reset.append(name)
    return reset


def register_sample_data(sample_data: Any, thumbnail: str, loader: Callable[[], Any], describe: str) -> None:
    """The synthetic LGE phantom as sample data under "Cardiac" (once).

    It is generated locally from a fixed seed (the same voxels every time), so there is no file to
    download and no checksum to check; `loader` builds the nodes. `sampleDataSourcesByCategory()`
    creates the registry if the SampleData module has not yet run (registerCustomSampleDataSource
    takes no description, so the source is appended here).
    """
    source = sample_data.SampleDataSource(
        sampleName=SAMPLE_NAME, sampleDescription=describe, uris=["lascarseg:phantom/seed-0"],
        fileNames=[f"{SAMPLE_NAME}.nrrd"], nodeNames=[SAMPLE_NAME], thumbnailFileName=thumbnail,
        customDownloader=lambda source=None: loader())
    sources = sample_data.SampleDataLogic.sampleDataSourcesByCategory().setdefault(SAMPLE_CATEGORY, [])
    if not any(s.sampleName == source.sampleName for s in sources):
        sources.append(source)


def library_status(resource_dir: str) -> dict[str, Any]:
    """Library version and folder, whether torch is installed (found, not imported), whether the
    model registry is there."""
    return {"libraryVersion": LAScarSegLib.__version__,
            "libraryPath": os.path.dirname(os.path.abspath(LAScarSegLib.__file__)),
            "torchInstalled": importlib.util.find_spec("torch") is not None,
            "modelRegistry": os.path.isfile(os.path.join(resource_dir, "Models", "models.json"))}


def library_problems(status: dict[str, Any], extension_root: str | None, icon: str) -> list[str]:
    """What is wrong with the library and resources the module found (empty: nothing)."""
    problems = []
    if not status.get("libraryVersion"):
        problems.append("the library has no version")
    if not os.path.isfile(icon):
        problems.append(f"the module icon {icon} is missing")
    if extension_root is None:
        problems.append("LAScarSegLib/ is neither beside nor one level above the module file")
    elif (os.path.normcase(os.path.realpath(status["libraryPath"]))
          != os.path.normcase(os.path.realpath(os.path.join(extension_root, "LAScarSegLib")))):
        problems.append("the LAScarSegLib that was imported is not the one shipped with this module")
    return problems


def segmentation_skip_reason(status: dict[str, Any]) -> str | None:
    """Why the self-test cannot segment here (it installs nothing), or None."""
    if not status.get("torchInstalled"):
        return "PyTorch is not installed (the self-test installs nothing): segmentation not tested"
    if not status.get("modelRegistry"):
        return "no bundled model in Resources/Models: segmentation not tested"
    return None
