"""The background worker process: the pipeline on a request from `worker_client.Worker`.

`python -m LAScarSegLib.app.worker FOLDER` reads FOLDER/request.pkl, runs `pipeline.segment`,
prints progress, done or error as JSON lines (prefixed, among whatever else a library prints) and
writes the result into FOLDER for the client to read back.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Sequence

import vtk

from ..core.errors import InputError
from ..core.threads import set_threads
from ..quantify.readout import PipelineResult
from .pipeline import segment
from .worker_client import ERRORS, MESH_FILE, PREFIX, REQUEST_FILE, RESULT_FILE, WorkerError, WorkerRequest


def save_result(result: PipelineResult, folder: Path) -> None:
    """A `PipelineResult` as plain data in `folder`: the mesh as VTP, everything else pickled."""
    writer = vtk.vtkXMLPolyDataWriter()
    writer.SetFileName(str(folder / MESH_FILE))
    writer.SetInputData(result.mesh)
    writer.SetDataModeToBinary()
    if not writer.Write():
        raise WorkerError("could not write the LA surface")
    partial = folder / (RESULT_FILE + ".part")
    with open(partial, "wb") as f:
        pickle.dump({**vars(result), "mesh": None}, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, folder / RESULT_FILE)  # the result exists only once complete


def _send(kind: str, **fields: Any) -> None:
    sys.stdout.write(PREFIX + json.dumps({"kind": kind, **fields}) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """The worker process: `python -m LAScarSegLib.app.worker FOLDER`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m LAScarSegLib.app.worker FOLDER\n")
        return 2
    folder = Path(args[0])
    try:
        with open(folder / REQUEST_FILE, "rb") as f:
            req: WorkerRequest = pickle.load(f)
        if req.threads:
            set_threads(int(req.threads))
        result = segment(req.image, la_label=req.la_label, scar_label=req.scar_label, model=req.model,
                         device=req.device, band_mm=req.band_mm, keep_largest=req.keep_largest, la_seed=req.la_seed,
                         method=req.method, baselines=req.baselines, progress=lambda f, m: _send("progress", fraction=f, text=m))
        save_result(result, folder)
    except Exception as exc:  # reported to the parent, which raises it there
        # the nearest class the parent knows (NoLAFound travels as InputError: a message for the user)
        known = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in ERRORS), type(exc).__name__)
        _send("error", error_type=known, text=str(exc))
        return 2 if isinstance(exc, InputError) else 1
    _send("done", fraction=1.0, text="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
