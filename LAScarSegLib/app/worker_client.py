"""The background worker's client: it starts the pipeline in another process, follows its
progress, really cancels it and hands its result back (what Slicer's own process uses).

Why a process and not a thread: Slicer's GUI must not freeze, Cancel must really stop the job (a
Python thread cannot be killed in the middle of a PyTorch call, a process can), and Slicer's
process never imports torch. The worker (`app.worker`) is run as `main(["FOLDER"])` in a new
interpreter (in Slicer, `PythonSlicer`): it reads the pickled `WorkerRequest` from FOLDER, runs
`pipeline.segment`, prints one JSON message per line on stdout (progress, done or error) and writes
the result as plain data (the mesh as VTP) into FOLDER. Here, `Worker` starts it through an
injectable launcher, a reader thread turns its stdout into a queue that the GUI drains on its
main thread (`poll`), `cancel` terminates the process and its children (and kills what is left
after one second), and `result` hands the `PipelineResult` back for
`LAScarSegLogic.addResultToScene` on the main thread. Torch-free.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import vtk

from ..core.errors import Cancelled, DamagedInstall, InputError, LAScarSegError, ModelError
from ..core.image import Volume
from ..infer.masks import LASeed
from ..quantify.readout import NETWORK_METHOD, PipelineResult

REQUEST_FILE = "request.pkl"
RESULT_FILE = "result.pkl"
MESH_FILE = "la_surface.vtp"
PREFIX = "LASCARSEG "  # marks the worker's own lines among whatever else a library prints
KILL_AFTER_S = 1.0  # after terminate(), kill() if the process is still there: gone within 2 s

Launcher = Callable[..., subprocess.Popen]
ERRORS: dict[str, type[LAScarSegError]] = {"InputError": InputError, "ModelError": ModelError,
                                            "DamagedInstall": DamagedInstall, "Cancelled": Cancelled}


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
    la_seed: LASeed | None = None
    method: str = NETWORK_METHOD
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
def load_result(folder: Path) -> PipelineResult:
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


# ---------------------------------------------------------------------------------- parent side
def _library_root() -> Path:
    """The folder that holds LAScarSegLib/ (the repository, or Slicer's qt-scripted-modules)."""
    return Path(__file__).resolve().parents[2]


def python_for_worker() -> str:
    """The interpreter for the worker: PythonSlicer (Slicer's Python with Slicer's environment)
    when there is one, else this interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    exe_dir = os.path.dirname(sys.executable)
    for name in ("PythonSlicer", "PythonSlicer.exe"):
        for folder in (exe_dir, os.path.join(exe_dir, "..", "bin")):
            candidate = os.path.normpath(os.path.join(folder, name))
            if os.path.isfile(candidate):
                return candidate
    return sys.executable


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

    `python`: the interpreter for the worker (default `python_for_worker()`: PythonSlicer, else this one).
    `launcher(command, env=..., cwd=...)` starts it and returns a Popen-like object with stdout
    and stderr text streams (tests and Slicer may pass their own).
    """

    def __init__(self, request: WorkerRequest, *, python: str | None = None, launcher: Launcher | None = None):
        self.request = request
        self.python = python or python_for_worker()
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
                "from LAScarSegLib.app.worker import main; sys.exit(main())")
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

    def wait(self, timeout: float | None = None, on_message: Callable[[WorkerMessage], None] | None = None,
             cancel: threading.Event | None = None):
        """Block until the worker ends; returns `result()` or raises its error (for consoles and tests).
        `cancel` set: the worker is stopped (`cancel()`) and `Cancelled` raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for msg in self.poll():
                if on_message:
                    on_message(msg)
            if self.state != "running":
                break
            if cancel is not None and cancel.is_set():
                self.cancel()
                raise Cancelled("cancelled by the user")
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
            cls = ERRORS.get(self.error.error_type, WorkerError)
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
