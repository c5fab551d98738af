"""Where a run's seconds go: start-up, data, model, the first step (tracing), training, validation, writing.

Why: a fine-tuning run is judged by its wall-clock time, and most of a short run's time is not
training steps. ``tfft train`` prints these figures when it finishes and keeps them in
``metrics.json`` (``seconds``), so a slow run says which part was slow.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Dict, Iterator, Optional

from tfft.backend import keras


class Stopwatch:
    """Seconds per named phase of a run, in the order the phases first ran."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + max(seconds, 0.0)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def report(self) -> str:
        total = sum(self.seconds.values())
        return f"{total:.1f} s: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.seconds.items())


def seconds_since_process_start() -> Optional[float]:
    """How long this process has run (Python start-up and imports included); None where ``/proc`` is absent."""
    try:
        # Field 22 of /proc/self/stat, the start time in clock ticks since boot, counted after the ")" of the name.
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


class FitTimes(keras.callbacks.Callback):
    """Splits ``model.fit``'s time into the first step (tracing the step function, starting the input
    pipeline) and the other steps; validation, timed by its own callback, is given back by the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.first_step: Optional[float] = None
        self.started = self.finished = 0.0

    def on_train_begin(self, logs=None) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.first_step is None:
            self.first_step = time.perf_counter() - self.started

    def on_train_end(self, logs=None) -> None:
        self.finished = time.perf_counter()

    def record(self, stopwatch: Stopwatch, validation_seconds: float) -> None:
        first = self.first_step or 0.0
        stopwatch.add("first step (tracing)", first)
        stopwatch.add("training steps", self.finished - self.started - first - validation_seconds)
        stopwatch.add("validation", validation_seconds)
