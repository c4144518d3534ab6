"""Progress, cancel and stage timing: the one way a long job reports how far it got.

`ProgressFn(fraction, message)` is what every job accepts. `Stages` runs a job's named stages:
it times them, maps each stage's own 0..1 onto its share of the bar (the bar never runs back),
checks the cancel event between and within them, and calls the `on_stage` hook with each stage's
name, wall and CPU seconds, which is how `lascarseg bench pipeline` times a run without patching it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Mapping

from .errors import Cancelled

ProgressFn = Callable[[float, str], None]
#: `on_stage(name, wall_s, cpu_s)`: called after each stage (and each named step inside one).
StageHook = Callable[[str, float, float], None]


class Stages:
    """Times a job's stages, forwards progress, and checks the cancel event between and within them.

    `shares` maps each stage name to its (start, end) fraction of the progress bar.
    """

    def __init__(self, shares: Mapping[str, tuple[float, float]], progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None, on_stage: StageHook | None = None):
        self.shares, self.progress, self.cancel, self.on_stage = dict(shares), progress, cancel, on_stage
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._done = 0.0

    def _report(self, fraction: float, text: str) -> None:
        if self.progress:
            self._done = max(self._done, fraction)
            self.progress(self._done, text)

    def check(self) -> None:
        """Raise `Cancelled` once the cancel event is set."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled by the user")

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run stage `name` (cancel checked first); its seconds add up in `timings[name]`."""
        self.check()
        lo, hi = self.shares[name]
        self._report(lo, name)
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall = time.perf_counter() - t
        self.timings[name] = round(self.timings.get(name, 0.0) + wall, 3)
        if self.on_stage is not None:
            self.on_stage(name, wall, time.process_time() - c)
        self._report(hi, name)
        return out

    def step(self, label: str, fn: Callable[[], Any]) -> Any:
        """A named step inside a stage: timed for the hook only (not in `timings`, not on the bar)."""
        if self.on_stage is None:
            return fn()
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        self.on_stage(label, time.perf_counter() - t, time.process_time() - c)
        return out

    def sub_progress(self, name: str) -> ProgressFn:
        """The progress of stage `name`'s own 0..1, mapped onto its share of the bar."""
        lo, hi = self.shares[name]
        return lambda f, msg: self._report(lo + (hi - lo) * f, f"{name}: {msg}")

    def total(self) -> float:
        return round(time.perf_counter() - self._t0, 3)


def part(progress: ProgressFn | None, lo: float, hi: float) -> ProgressFn | None:
    """`progress` for a part of a job that runs from `lo` to `hi` of the whole bar."""
    return None if progress is None else (lambda f, text: progress(lo + (hi - lo) * f, text))
