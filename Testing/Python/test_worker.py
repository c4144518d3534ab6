"""The background worker for real: a separate process, progress, Cancel within 2 s, clear errors.

One full pipeline run (the result comes back and goes into an MRML scene); the cancel test stops
a run early; the failure tests end within a few seconds. The model is the registered default
(LASCARSEG_TEST_MODEL points at another .pt file for development only).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from LAScarSegLib.core.errors import Cancelled, ModelError
from LAScarSegLib.synth.phantom import make_phantom
from LAScarSegLib.quantify.readout import PipelineResult
from LAScarSegLib.app.worker_client import Worker, WorkerError, WorkerRequest, default_launcher

MODEL = os.environ.get("LASCARSEG_TEST_MODEL") or None  # None: the registered default model


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(30_013)


#: In our virtual environment but not in Slicer's Python (which has numpy, SciPy, SimpleITK and VTK;
#: torch comes from the PyTorch extension): the worker must run without them.
NOT_IN_SLICER = ("edt", "matplotlib", "yaml", "tqdm", "monai", "medpy")


def not_in_slicer_prelude(record: Path) -> str:
    """Python code that makes importing NOT_IN_SLICER fail, and appends each refused name to `record`."""
    return (
        "import sys\n"
        "class _NotInSlicer:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {NOT_IN_SLICER!r}:\n"
        f"            with open({str(record)!r}, 'a') as f:\n"
        "                f.write(name + '\\n')\n"
        "            raise ImportError(name + ' is not in Slicer Python')\n"
        "sys.meta_path.insert(0, _NotInSlicer())\n"
    )


class RecordingLauncher:
    """The real launcher, recording what it was asked to start (the launcher is injectable); with
    a `prelude`, that code runs in the worker before the worker's own."""

    def __init__(self, prelude: str = ""):
        self.calls: list[tuple[list[str], dict]] = []
        self.prelude = prelude

    def __call__(self, command, **kwargs):
        self.calls.append((list(command), kwargs))
        if self.prelude:
            python, flag, code, *rest = command
            assert flag == "-c"
            command = [python, flag, self.prelude + code, *rest]
        return default_launcher(command, **kwargs)


def test_worker_runs_the_pipeline_in_another_process_and_hands_back_the_result(phantom, mrml, tmp_path) -> None:
    """... with only the packages Slicer's Python has: the training and bench extras are refused."""
    refused = tmp_path / "refused.txt"
    launcher = RecordingLauncher(prelude=not_in_slicer_prelude(refused))
    worker = Worker(WorkerRequest(phantom.image, la_label=phantom.la, model=MODEL, threads=2),
                    launcher=launcher).start()
    assert worker.process.pid != os.getpid() and worker.running()
    folder = worker.folder
    messages = []
    result = worker.wait(timeout=600, on_message=messages.append)
    command, kwargs = launcher.calls[0]
    assert command[0] == sys.executable and command[1] == "-c" and "LAScarSegLib.app.worker import main" in command[2]
    assert command[3] == str(folder) and kwargs["cwd"] == str(folder)
    progress = [m.fraction for m in messages if m.kind == "progress"]
    assert len(progress) > 10 and progress == sorted(progress) and progress[-1] > 0.9
    assert any(m.text.startswith("inference") for m in messages)
    assert messages[-1].kind == "done" and worker.state == "done" and worker.process.returncode == 0
    assert isinstance(result, PipelineResult)
    assert result.image.geometry.same_grid(phantom.image.geometry)
    assert result.mesh.GetPointData().GetArray("Scar") is not None
    assert result.mesh.GetPointData().GetArray("ScarProbability") is not None
    assert result.report.metrics["la"]["dice"] > 0.5 and result.prediction is not None
    assert not folder.exists()  # the hand-over folder is removed
    # the run did reach for edt and went on with SciPy's distance transform instead
    assert "edt" in refused.read_text().split()
    # The main thread puts it into the scene as the widget does.
    from LAScarSegLib.slicer import checks as logic_checks
    from LAScarSegLib.logic import LAScarSegLogic
    from LAScarSegLib.slicer.mrml import volume_to_node

    node = volume_to_node(phantom.image, "lge")
    logic_checks.check_outputs(LAScarSegLogic().addResultToScene(node, result), node)


def _wait_for_inference(worker: Worker) -> None:
    deadline = time.monotonic() + 300
    seen = []
    while time.monotonic() < deadline and not any(m.text.startswith("inference") for m in seen):
        seen += worker.poll()
        assert worker.state == "running", f"the worker ended before inference: {worker.state} {worker.error}"
        time.sleep(0.05)
    assert any(m.text.startswith("inference") for m in seen), "no inference progress within 300 s"


def test_cancel_ends_the_worker_process_within_2_s(phantom) -> None:
    worker = Worker(WorkerRequest(phantom.image, model=MODEL)).start()
    folder = worker.folder
    _wait_for_inference(worker)
    pid = worker.process.pid
    t0 = time.perf_counter()
    seconds = worker.cancel()
    gone = time.perf_counter() - t0
    assert worker.process.poll() is not None and gone < 2.0 and seconds < 2.0
    if os.name != "nt":
        with pytest.raises(ProcessLookupError):  # reaped: no such process any more
            os.kill(pid, 0)
    assert worker.state == "cancelled" and not folder.exists()
    with pytest.raises(Cancelled):
        worker.result()


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its new parent to reap it)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the launcher's child through /proc (Linux)")
def test_cancel_also_ends_the_child_of_a_launcher_like_PythonSlicer(phantom) -> None:
    # Slicer's PythonSlicer starts the real interpreter as its child and does not pass signals on;
    # this launcher does the same (a Python parent that dies on SIGTERM and leaves its child behind).
    def via_launcher(command, **kwargs):
        relay = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
        return default_launcher([sys.executable, "-c", relay, *command], **kwargs)

    worker = Worker(WorkerRequest(phantom.image, model=MODEL), launcher=via_launcher).start()
    _wait_for_inference(worker)
    children = _children(worker.process.pid)
    assert len(children) == 1, children
    t0 = time.perf_counter()
    worker.cancel()
    while _alive(children[0]) and time.perf_counter() - t0 < 2.0:
        time.sleep(0.02)
    assert not _alive(children[0]), "the launcher's child (the real worker) outlived Cancel by 2 s"
    assert worker.state == "cancelled"


def test_a_library_error_comes_back_with_its_type_and_message(phantom) -> None:
    worker = Worker(WorkerRequest(phantom.image, model="/nonexistent/lascarseg-model.pt")).start()
    with pytest.raises(ModelError, match="/nonexistent/lascarseg-model.pt: model file does not exist"):
        worker.wait(timeout=300)
    assert worker.state == "failed" and worker.process.returncode == 1


def test_no_la_found_comes_back_as_an_input_error() -> None:
    """A subclass of a library error (NoLAFound) comes back as the class the parent knows, with its
    message: the Slicer module shows it as a message, not as a crash."""
    import numpy as np

    from LAScarSegLib.core.errors import InputError
    from LAScarSegLib.core.image import Geometry, Volume

    ramp = np.broadcast_to(np.linspace(0, 1, 32, dtype=np.float32), (48, 40, 32)).copy()  # no structure at all
    image = Volume(ramp, Geometry((32, 40, 48), (1.25, 1.25, 1.25), (0, 0, 0)), "ramp")
    worker = Worker(WorkerRequest(image, model=MODEL)).start()
    with pytest.raises(InputError, match="no left atrium found") as caught:
        worker.wait(timeout=300)
    assert type(caught.value) is InputError and worker.process.returncode == 2


def test_a_crash_comes_back_as_a_clear_error_with_the_exit_code_and_stderr(phantom) -> None:
    def crashing(command, **kwargs):
        # a byte that is no UTF-8 (a Windows code page's, say) must not kill the reader thread
        code = "import sys; sys.stderr.buffer.write(b'worker \\xff exploded\\n'); sys.exit(3)"
        return default_launcher([sys.executable, "-c", code], **kwargs)

    worker = Worker(WorkerRequest(phantom.image), launcher=crashing).start()
    with pytest.raises(WorkerError, match="exit code 3:\nworker \ufffd exploded"):
        worker.wait(timeout=60)
    with pytest.raises(WorkerError, match="runs once"):
        worker.start()


def test_worker_entry_point_refuses_bad_usage() -> None:
    proc = subprocess.run([sys.executable, "-m", "LAScarSegLib.app.worker"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "usage" in proc.stderr
