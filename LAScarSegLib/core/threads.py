"""How many CPU threads the numeric libraries may use: set once, before they start their pools."""

from __future__ import annotations

import os
import sys

import SimpleITK as sitk

from .errors import InputError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


def set_threads(n: int | None) -> None:
    """Bound CPU use of every numeric library (None: leave them as they are). Torch is bounded
    when it is loaded already; a torch imported later reads OMP_NUM_THREADS."""
    if n is None:
        return
    if n < 1:
        raise InputError(f"--threads must be at least 1, got {n}")
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
