"""Whether PyTorch is there for the worker, and installing it through Slicer's PyTorch extension
after the user's consent (never silently, never during a self-test).

The dialogs are injected (`confirm`, `error`), so the steps run and are tested without Qt; the
module panel passes Slicer's `confirmOkCancelDisplay` and `errorDisplay`. Torch itself is never
imported here: the worker runs it.
"""

from __future__ import annotations

import importlib.util
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable

#: CONTRACTS section 1: the exported model needs torch 2.9 or newer.
MIN_TORCH = (2, 9)


def version_tuple(text: str) -> tuple[int, ...]:
    """(2, 9) of "2.9.1+cu126": the numeric release parts only."""
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:2])


def installed_torch_version() -> str | None:
    """The installed torch's version without importing it; "" when importable without metadata
    (a source tree: trusted), None when torch is not there at all."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        return version("torch")
    except PackageNotFoundError:
        return ""


def ensure_torch(confirm: Callable[[str], bool], error: Callable[[str], None],
                 pytorch_utils: Callable[[], Any] | None = None) -> bool:
    """True when a usable torch is installed, or was installed now after `confirm` said yes.

    `pytorch_utils()` returns Slicer's `PyTorchUtils` module (ImportError without the extension).
    Every refusal or missing piece is told to the user through `error`, with what to do.
    """
    have = installed_torch_version()
    if have is not None:
        if have == "" or version_tuple(have) >= MIN_TORCH:
            return True
        error(f"LAScarSeg needs PyTorch {'.'.join(map(str, MIN_TORCH))} or newer; this Slicer has {have}. Update "
              "it in the PyTorch Utils module (uninstall, restart Slicer, install), then run LAScarSeg again.")
        return False
    try:
        utils = pytorch_utils() if pytorch_utils is not None else importlib.import_module("PyTorchUtils")
    except ImportError:
        error("LAScarSeg needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, restart "
              "Slicer, and try again.")
        return False
    logic = utils.PyTorchUtilsLogic()
    if logic.torchInstalled():
        return True
    if not confirm("LAScarSeg needs PyTorch, which is not installed yet. Install it now through the PyTorch "
                   "extension? This downloads about 1-3 GB and may take several minutes."):
        return False
    return logic.installTorch(askConfirmation=False, torchVersionRequirement=f">={MIN_TORCH[0]}.{MIN_TORCH[1]}") \
        is not None
