"""Cases in parallel worker processes, each with its share of the threads and the model loaded once.

A case starts only when the memory it will need (estimated from its image's size) is free, unless
nothing else runs: a large case waits for the others instead of pushing the machine out of memory.
A worker that dies (killed, out of memory) takes its pool down; the cases it held go to a fresh
pool once more, and a case that brings a pool down twice is recorded as failed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable

import SimpleITK as sitk

from ..core.threads import set_threads
from ..model.loading import load_for_inference, load_localiser

#: Peak resident memory of `segment` per input voxel, and before the first voxel (bench pipeline on
#: a 640x640x88 chest: 2.08 GB peak, 0.47 GB after imports; 45 bytes a voxel, rounded up).
BYTES_PER_VOXEL = 60
BASE_BYTES = 600 * 1024 ** 2
#: How often a waiting case looks at the free memory again (s).
MEMORY_POLL_S = 0.5


def memory_needed(image: str | os.PathLike) -> int:
    """Bytes a case will need at its peak, from its image header (a folder or an unreadable file:
    the base only; the case's own error comes when it runs)."""
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(image))
        reader.ReadImageInformation()
        voxels = 1
        for n in reader.GetSize():
            voxels *= int(n)
    except (RuntimeError, OSError):
        voxels = 0
    return BASE_BYTES + BYTES_PER_VOXEL * voxels


def memory_available() -> int:
    """Bytes the machine can give without swapping (Linux: MemAvailable; elsewhere free pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------- worker process
_WORKER: dict[str, Any] = {}


def _interrupted(signum: int, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)  # unwinds the case: its staging folder goes


def _start_worker(threads: int, model: str | None, localiser: Any, device: str) -> None:
    signal.signal(signal.SIGTERM, _interrupted)
    set_threads(threads)
    _WORKER["loaded"] = load_for_inference(model, device)
    _WORKER["localiser"] = load_localiser(localiser, device)


def _run_in_worker(run_case: Callable[..., dict[str, Any]], case: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    return run_case(case, loaded=_WORKER["loaded"], localiser=_WORKER["localiser"], **kwargs)


# ----------------------------------------------------------------------------------------- pool
@dataclass
class _Queue:
    cases: list[dict[str, Any]]
    broke: dict[str, int] = field(default_factory=dict)  # case id -> pools it was in when one died


def run_in_pool(cases: list[dict[str, Any]], run_case: Callable[..., dict[str, Any]], *, workers: int, threads: int,
                model: str | None, localiser: Any, device: str, kwargs: dict[str, Any],
                on_row: Callable[[dict[str, Any], dict[str, Any]], None],
                on_lost: Callable[[dict[str, Any], str], None],
                memory: Callable[[], int] = memory_available) -> None:
    """Run `run_case(case, loaded=, localiser=, **kwargs)` for every case in `workers` processes of
    `threads // workers` threads (at least one); `on_row(case, row)` as each finishes, `on_lost(case,
    error)` for a case whose worker died twice."""
    queue = _Queue(list(cases))
    each = max(1, threads // workers)
    while queue.cases:
        _one_pool(queue, run_case, workers, each, (model, localiser, device), kwargs, on_row, on_lost, memory)


def _one_pool(queue: _Queue, run_case, workers: int, threads: int, load: tuple, kwargs: dict[str, Any],
              on_row, on_lost, memory: Callable[[], int]) -> None:
    """Run queued cases until done or until a worker dies; the cases in flight then go back on the queue."""
    ctx = multiprocessing.get_context("spawn")  # no torch state forked into the workers
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker, initargs=(threads, *load))
    running: dict[Future, dict[str, Any]] = {}
    finished = False
    try:
        while queue.cases or running:
            while queue.cases and len(running) < workers:
                if running and memory_needed(queue.cases[0]["image"]) > memory():
                    break  # wait for a running case to free its memory; alone, a case always starts
                case = queue.cases.pop(0)
                running[pool.submit(_run_in_worker, run_case, case, kwargs)] = case
            done, _ = wait(running, timeout=MEMORY_POLL_S, return_when=FIRST_COMPLETED)
            for fut in done:
                row = fut.result()  # BrokenProcessPool here: the case stays in `running`, to run again
                on_row(running.pop(fut), row)
        finished = True
    except BrokenProcessPool:  # the pool has ended its other workers too; their cases run again
        for case in running.values():
            queue.broke[case["id"]] = queue.broke.get(case["id"], 0) + 1
            if queue.broke[case["id"]] >= 2:
                on_lost(case, "the worker process running this case died twice (killed, or out of memory)")
            else:
                queue.cases.append(case)
    finally:
        _close(pool, finished)


def _close(pool: ProcessPoolExecutor, finished: bool) -> None:
    """Wait for idle workers to exit; after a cancel or an error, end them now (each would finish
    its case first). Their SIGTERM handler unwinds the case, so its staging folder goes."""
    if finished:
        pool.shutdown(wait=True)
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public API before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + 10
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
