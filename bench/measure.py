"""Repeated timings (min / median over >= 3 runs) and peak memory while a step runs.

Shared machines spread repeats by up to 30 %, so a figure is a distribution summary, never one run;
the *best* run (minimum time) is the least disturbed one, the median the typical one.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timings:
    """Wall times in seconds of repeated runs of the same work of ``items`` units."""

    seconds: tuple[float, ...]
    items: int

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate_median(self) -> float:
        """Items per second at the median time."""
        return self.items / self.median if self.median > 0 else float("inf")

    @property
    def rate_best(self) -> float:
        return self.items / self.best if self.best > 0 else float("inf")

    @property
    def ms_per_item_median(self) -> float:
        return 1000 * self.median / self.items if self.items else float("nan")

    @property
    def spread(self) -> float:
        """(max - min) / min: how noisy the repeats were."""
        return (max(self.seconds) - self.best) / self.best if self.best > 0 else 0.0


def time_repeats(work: Callable[[], object], items: int, repeats: int,
                 before_each: Callable[[], object] | None = None) -> Timings:
    """Run ``work`` ``repeats`` times (``before_each`` untimed), returning the wall times."""
    seconds = []
    for _ in range(repeats):
        if before_each is not None:
            before_each()
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return Timings(tuple(seconds), items)


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


class PeakRss:
    """Samples this process's resident memory in a thread; ``peak_mib`` is the maximum seen.

    ``resource.getrusage`` only gives the lifetime peak, which cannot tell two configurations in one
    process apart, hence the sampler (20 ms: short spikes may be missed, which is said in the notes).
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        import psutil

        self._process = psutil.Process()
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRss:
        self.peak_bytes = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


def lifetime_peak_rss_mib() -> float:
    """ru_maxrss of this process (KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
