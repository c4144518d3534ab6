"""Exceptions shared by the library, the command line and the Slicer logic.

`InputError` is what a user can fix (a bad file, a wrong label value, a bad option): the CLI maps
it to exit code 2. Anything else that escapes is a failure of the job (exit code 1).
"""

from __future__ import annotations


class LAScarSegError(Exception):
    """Base class of every error LAScarSeg raises on purpose."""


class InputError(LAScarSegError, ValueError):
    """Bad input: the message names the file or option and says what is wrong with it."""


class ModelError(LAScarSegError):
    """A model file that is missing, corrupt, foreign or lacks an output the job needs."""


class DamagedInstall(ModelError):
    """A registered model (bundled, or imported by the user) is missing or no longer the file that was
    registered: a fault of the installation, not of the command (the CLI exits 1, not 2)."""


class Cancelled(LAScarSegError):
    """Raised when the caller's cancel event is set; the job leaves nothing behind."""


class NoLAFound(InputError):
    """The network found no left atrium in the image (no voxel with LA probability > 0.5)."""
