"""LAScarSegLib: left-atrium and LA-scar segmentation from LGE MRI (MTL-SESA, Li et al. MICCAI 2020).

Importable without Slicer, Qt or PyTorch: torch is imported inside the functions that run or train
a model, so 3D Slicer can load the module before PyTorch is installed.
"""

from __future__ import annotations

from .errors import Cancelled, InputError, LAScarSegError, ModelError

__version__ = "0.1.0"

__all__ = ["Cancelled", "InputError", "LAScarSegError", "ModelError", "__version__"]
