"""The background worker: the pure pipeline in a separate process, with progress and a real Cancel.

Why a process and not a thread: Slicer's GUI must not freeze, and Cancel must really stop the
job. A Python thread cannot be killed in the middle of a PyTorch call, a process can. The worker is
`main(["FOLDER"])` in a new interpreter (in Slicer, `PythonSlicer`): it reads the pickled request
from FOLDER, runs `pipeline.segment`, prints one JSON message per line on stdout (progress, done
or error) and writes the result as plain data (Volumes, dicts, the mesh as VTP bytes) into
FOLDER. In the parent, `Worker` starts it through an injectable launcher, a reader thread turns
its stdout into a queue that the GUI drains on its main thread (`poll`), `cancel` terminates the
process and its children (and kills what is left after one second), and `result` hands the
`PipelineResult` back for `LAScarSegLogic.addResultToScene` on the main thread.

No slicer, qt or torch at module level: the parent side runs inside Slicer's GUI process.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import Cancelled, InputError, LAScarSegError, ModelError
from .image import Volume

REQUEST_FILE = "request.pkl"
RESULT_FILE = "result.pkl"
MESH_FILE = "la_surface.vtp"
PREFIX = "LASCARSEG "  # marks the worker's own lines among whatever else a library prints
KILL_AFTER_S = 1.0  # after terminate(), kill() if the process is still there: gone within 2 s

Launcher = Callable[..., subprocess.Popen]
_ERRORS: dict[str, type[LAScarSegError]] = {"InputError": InputError, "ModelError": ModelError,
                                            "Cancelled": Cancelled}


class WorkerError(LAScarSegError):
    """The worker failed in a way the library did not name (a crash, an unexpected exception)."""


@dataclass
class WorkerRequest:
    """What `pipeline.segment` needs, as plain picklable data (no MRML nodes)."""

    image: Volume
    la_label: Volume | None = None
    scar_label: Volume | None = None
    model: str | None = None
    device: str = "auto"
    band_mm: tuple[float, float] = (-1.0, 3.0)
    keep_largest: bool = True
    baselines: Sequence[str] | None = None
    threads: int | None = None


@dataclass
class WorkerMessage:
    kind: str  # "progress", "done" or "error"
    fraction: float = 0.0
    text: str = ""
    error_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ result transport
def save_result(result, folder: Path) -> None:
    """A `PipelineResult` as plain data in `folder`: the mesh as VTP, everything else pickled."""
    import vtk

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


def load_result(folder: Path):
    import vtk

    from .pipeline import PipelineResult

    with open(folder / RESULT_FILE, "rb") as f:
        data = pickle.load(f)
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(folder / MESH_FILE))
    reader.Update()
    mesh = vtk.vtkPolyData()
    mesh.DeepCopy(reader.GetOutput())
    if mesh.GetNumberOfPoints() == 0:
        raise WorkerError("the worker's LA surface could not be read back")
    return PipelineResult(**{**data, "mesh": mesh})


# ----------------------------------------------------------------------------------- child side
def _send(kind: str, **fields: Any) -> None:
    sys.stdout.write(PREFIX + json.dumps({"kind": kind, **fields}) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """The worker process: `python -m LAScarSegLib.worker FOLDER`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m LAScarSegLib.worker FOLDER\n")
        return 2
    folder = Path(args[0])
    try:
        with open(folder / REQUEST_FILE, "rb") as f:
            req: WorkerRequest = pickle.load(f)
        if req.threads:
            import torch

            torch.set_num_threads(int(req.threads))
        from .pipeline import segment

        result = segment(req.image, la_label=req.la_label, scar_label=req.scar_label, model=req.model,
                         device=req.device, band_mm=req.band_mm, keep_largest=req.keep_largest,
                         baselines=req.baselines, progress=lambda f, m: _send("progress", fraction=f, text=m))
        save_result(result, folder)
    except Exception as exc:  # reported to the parent, which raises it there
        # the nearest class the parent knows (NoLAFound travels as InputError: a message for the user)
        known = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in _ERRORS), type(exc).__name__)
        _send("error", error_type=known, text=str(exc))
        return 2 if isinstance(exc, InputError) else 1
    _send("done", fraction=1.0, text="done")
    return 0


# ---------------------------------------------------------------------------------- parent side
def _library_root() -> Path:
    """The folder that holds LAScarSegLib/ (the repository, or Slicer's qt-scripted-modules)."""
    return Path(__file__).resolve().parents[1]


def default_launcher(command: list[str], **kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen` with text pipes, in a process group of its own (no console window on
    Windows), so that Cancel can end the whole tree: Slicer's PythonSlicer is a launcher that runs
    the real interpreter as its child and does not pass signals on."""
    if os.name == "nt":
        kwargs.setdefault("creationflags", getattr(subprocess, "CREATE_NO_WINDOW", 0)
                          | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
    else:
        kwargs.setdefault("start_new_session", True)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs)


def _leads_own_group(pid: int) -> bool:
    try:
        return os.name != "nt" and os.getpgid(pid) == pid
    except (ProcessLookupError, PermissionError):
        return False


def stop_process_tree(process: subprocess.Popen, kill: bool, group: bool) -> None:
    """Terminate (or kill) `process` and, with `group` (it was started leading a process group, as
    `default_launcher` does), every process of that group: a launcher's child must not outlive Cancel."""
    import signal

    if os.name == "nt":
        if process.poll() is None:  # taskkill /T takes the children along
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True, check=False)
        return
    if group:
        try:
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:  # the whole group is gone already
            pass
    elif process.poll() is None:
        process.kill() if kill else process.terminate()


class Worker:
    """One background run of the pipeline; methods are called from the GUI's main thread.

    `python`: the interpreter for the worker (in Slicer, PythonSlicer; default sys.executable).
    `launcher(command, env=..., cwd=...)` starts it and returns a Popen-like object with stdout
    and stderr text streams (tests and Slicer may pass their own).
    """

    def __init__(self, request: WorkerRequest, *, python: str | None = None, launcher: Launcher | None = None):
        self.request = request
        self.python = python or sys.executable
        self.launcher = launcher or default_launcher
        self.folder: Path | None = None
        self.process: subprocess.Popen | None = None
        self.messages: "queue.Queue[WorkerMessage]" = queue.Queue()
        self.state = "new"  # new, running, done, failed, cancelled
        self.error: WorkerMessage | None = None
        self._stderr: list[str] = []
        self._threads: list[threading.Thread] = []
        self._cancelled = False
        self._group = False  # the process leads a process group of its own (cancel ends the group)

    # ----------------------------------------------------------------------------- control
    def command(self) -> list[str]:
        """The worker's command line. The library's folder goes on sys.path in the command itself:
        Slicer's PythonSlicer launcher sets its own PYTHONPATH, which may not keep ours."""
        code = (f"import sys; sys.path.insert(0, {str(_library_root())!r}); "
                "from LAScarSegLib.worker import main; sys.exit(main())")
        return [self.python, "-c", code, str(self.folder)]

    def start(self) -> "Worker":
        if self.state != "new":
            raise WorkerError("a worker runs once; make a new one")
        self.folder = Path(tempfile.mkdtemp(prefix="lascarseg-worker-"))
        with open(self.folder / REQUEST_FILE, "wb") as f:
            pickle.dump(self.request, f, protocol=pickle.HIGHEST_PROTOCOL)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"  # what the parent decodes, whatever the locale (Windows: cp1252)
        try:
            self.process = self.launcher(self.command(), env=env, cwd=str(self.folder))
        except Exception:
            self._cleanup()
            raise
        self._group = _leads_own_group(self.process.pid)
        self.state = "running"
        for target, stream in ((self._read_stdout, self.process.stdout), (self._read_stderr, self.process.stderr)):
            thread = threading.Thread(target=target, args=(stream,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def cancel(self) -> float:
        """Stop the worker process: terminate, then kill after `KILL_AFTER_S`. Returns the seconds
        until the process was gone."""
        t0 = time.perf_counter()
        self._cancelled = True
        if self.process is not None:
            stop_process_tree(self.process, kill=False, group=self._group)
            try:
                self.process.wait(KILL_AFTER_S)
            except subprocess.TimeoutExpired:
                pass
            stop_process_tree(self.process, kill=True, group=self._group)  # whatever of the tree is left
            self.process.wait()
        self.state = "cancelled"
        self._finish_threads()
        self._cleanup()
        return time.perf_counter() - t0

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # ------------------------------------------------------------------------------ output
    def poll(self) -> list[WorkerMessage]:
        """The messages that arrived since the last call (never blocks); updates `state`."""
        ended = self.state == "running" and self.process is not None and self.process.poll() is not None
        if ended:
            self._finish_threads()  # read the last lines before the last drain
        out: list[WorkerMessage] = []
        while True:
            try:
                msg = self.messages.get_nowait()
            except queue.Empty:
                break
            out.append(msg)
            if msg.kind == "error":
                self.error = msg
        if ended:
            self.state = "done" if self.process.returncode == 0 and self.error is None else "failed"
        return out

    def wait(self, timeout: float | None = None, on_message: Callable[[WorkerMessage], None] | None = None):
        """Block until the worker ends; returns `result()` or raises its error (for consoles and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for msg in self.poll():
                if on_message:
                    on_message(msg)
            if self.state != "running":
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not finish within {timeout} s")
            time.sleep(0.05)
        return self.result()

    def result(self):
        """The `PipelineResult` of a finished run; raises the run's error otherwise."""
        if self.state == "cancelled" or self._cancelled:
            raise Cancelled("cancelled by the user")
        if self.state == "running":
            raise WorkerError("the worker is still running")
        try:
            if self.state == "failed":
                raise self._exception()
            if self.folder is None or not (self.folder / RESULT_FILE).is_file():
                raise WorkerError("the worker ended without a result")
            return load_result(self.folder)
        finally:
            self._cleanup()

    def _exception(self) -> Exception:
        if self.error is not None:
            cls = _ERRORS.get(self.error.error_type, WorkerError)
            text = self.error.text if cls is not WorkerError else f"{self.error.error_type}: {self.error.text}"
            return cls(text)
        tail = "".join(self._stderr[-20:]).strip()
        code = self.process.returncode if self.process is not None else None
        return WorkerError(f"the worker process ended with exit code {code}" + (f":\n{tail}" if tail else ""))

    # --------------------------------------------------------------------------- internals
    def _read_stdout(self, stream) -> None:
        for line in iter(stream.readline, ""):
            if not line.startswith(PREFIX):
                continue
            try:
                data = json.loads(line[len(PREFIX):])
            except json.JSONDecodeError:
                continue
            self.messages.put(WorkerMessage(data.get("kind", ""), float(data.get("fraction", 0.0)),
                                            data.get("text", ""), data.get("error_type", "")))
        stream.close()

    def _read_stderr(self, stream) -> None:
        for line in iter(stream.readline, ""):
            self._stderr.append(line)
            del self._stderr[:-200]
        stream.close()

    def _finish_threads(self) -> None:
        for thread in self._threads:
            thread.join(timeout=1.0)

    def _cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


if __name__ == "__main__":
    sys.exit(main())
