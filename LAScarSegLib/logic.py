"""The Slicer logic's import path (CONTRACTS section 7): `from LAScarSegLib.logic import LAScarSegLogic`.

Its parts live in `LAScarSegLib.slicer`; this module names what scripts and the module file use.
Torch-free, like everything the Slicer application's own process imports.
"""

from __future__ import annotations

from .slicer.logic import LA_SEGMENT, SCAR_SEGMENT, SURFACE_NAME, LAScarSegLogic, LAScarSegResult, load_phantom

__all__ = ["LA_SEGMENT", "SCAR_SEGMENT", "SURFACE_NAME", "LAScarSegLogic", "LAScarSegResult", "load_phantom"]
