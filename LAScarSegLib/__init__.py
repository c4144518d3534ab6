"""LAScarSegLib: left-atrium and LA-scar segmentation from LGE MRI (MTL-SESA, Li et al. MICCAI 2020).

Sub-packages by role, in the order data flows; a package imports only those before it:

    core -> model -> synth -> infer -> quantify -> train -> app -> slicer

core (volumes with their geometry, I/O, data layouts, distance maps, output files, progress),
model (variants, network, card, registry, loading), synth (phantoms, synthetic scar), infer
(sliding windows, LA localisation, masks), quantify (surface projection, burdens and stages,
metrics, baselines, the report and the one read-out that builds it), train (losses, data,
recipes, the training loop, export), app (pipeline, command line, batch, evaluate, bench, demo,
worker) and slicer (MRML nodes and the Slicer logic; its import path is `LAScarSegLib.logic`).

What the Slicer application's own process imports (this package, `LAScarSegLib.logic` and all
they import) never imports torch, so Slicer loads the module before PyTorch is installed; the
network runs in the worker process.
"""

from __future__ import annotations

from .core.errors import Cancelled, InputError, LAScarSegError, ModelError, NoLAFound

__version__ = "0.1.0"

__all__ = ["Cancelled", "InputError", "LAScarSegError", "ModelError", "NoLAFound", "__version__"]
