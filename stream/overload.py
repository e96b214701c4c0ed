"""OverloadController: when the worker falls behind, shed the expensive part (pictures) until it catches up.

Input outgrowing one worker used to mean latency simply grew.  The controller watches how long the oldest
post of each batch waited in Kafka (its broker timestamp against the clock when the batch was taken: the
consumer's lag in seconds) and switches the worker into *overload mode* when that exceeds
``SENTISTREAM_OVERLOAD_LAG_S``.  In overload mode pictures are neither fetched nor encoded (each media
row is recorded ``skipped_overload`` and its post is scored text-only, about ten times cheaper per post),
and batches are widened to ``SENTISTREAM_OVERLOAD_BATCH_SIZE`` to spread per-batch costs (sink
transaction, window recompute) over more posts.  Nothing is dropped: every post is still stored and scored.

Hysteresis keeps the mode from flapping at the threshold: it is left only once a batch's lag falls below
``EXIT_FRACTION`` of the entry threshold, i.e. the backlog is essentially drained.  The controller is pure
(clock injected) so its decisions are unit-tested without a broker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

EXIT_FRACTION = 0.25
"""Overload mode ends when a batch's lag is below this fraction of the entry threshold: far enough below
it that the first batches after switching pictures back on (slower again) do not re-enter at once."""

SKIPPED_OVERLOAD = "skipped_overload"
"""``post_media.status`` of a picture not fetched because the worker was in overload mode."""


@dataclass(frozen=True, slots=True)
class OverloadSnapshot:
    """What /health shows: the mode, the last lag observed, and how often the mode was entered."""

    active: bool
    lag_s: float | None
    threshold_s: float
    since_s: float | None  # seconds in the current mode when active
    episodes: int

    def as_dict(self) -> dict[str, Any]:
        return {"active": self.active, "lag_s": None if self.lag_s is None else round(self.lag_s, 3),
                "threshold_s": self.threshold_s,
                "since_s": None if self.since_s is None else round(self.since_s, 1), "episodes": self.episodes}


class OverloadController:
    """Decides per batch between full mode and overload mode from the lag of the batch's oldest post.

    ``lag_threshold_s`` <= 0 disables overload mode (the controller still reports the lag).
    """

    def __init__(self, lag_threshold_s: float, normal_batch_size: int, overload_batch_size: int,
                 clock: Callable[[], float] = time.time,
                 on_change: Callable[[bool], None] = lambda active: None) -> None:
        self.lag_threshold_s = lag_threshold_s
        self.normal_batch_size = max(1, normal_batch_size)
        self.overload_batch_size = max(self.normal_batch_size, overload_batch_size)
        self.clock = clock
        self.on_change = on_change
        self.active = False
        self.last_lag_s: float | None = None
        self.episodes = 0
        self._entered_at: float | None = None

    @property
    def exit_threshold_s(self) -> float:
        return self.lag_threshold_s * EXIT_FRACTION

    @property
    def batch_size(self) -> int:
        """Most posts the next batch may take: widened while overloaded."""
        return self.overload_batch_size if self.active else self.normal_batch_size

    def observe(self, timestamps: Iterable[float | None]) -> bool:
        """Feed one batch's broker timestamps (epoch seconds; None = unknown) as it is taken; returns
        whether this batch runs in overload mode."""
        known = [t for t in timestamps if t is not None and t > 0]
        if known:
            return self.observe_lag(max(0.0, self.clock() - min(known)))
        return self.active

    def observe_lag(self, lag_s: float) -> bool:
        """Feed the lag of one batch's oldest post; returns whether this batch runs in overload mode."""
        self.last_lag_s = lag_s
        if self.lag_threshold_s <= 0:
            return False
        if not self.active and lag_s > self.lag_threshold_s:
            self.active = True
            self.episodes += 1
            self._entered_at = self.clock()
            log.warning("overload: the oldest waiting post is %.1fs old (> SENTISTREAM_OVERLOAD_LAG_S=%g); "
                        "pictures skipped (skipped_overload) and batches widened to %d until the lag is "
                        "below %.1fs", lag_s, self.lag_threshold_s, self.overload_batch_size,
                        self.exit_threshold_s)
            self.on_change(True)
        elif self.active and lag_s < self.exit_threshold_s:
            spent = self.clock() - (self._entered_at or self.clock())
            self.active = False
            self._entered_at = None
            log.warning("overload over after %.1fs: lag %.1fs; pictures scored again", spent, lag_s)
            self.on_change(False)
        return self.active

    def snapshot(self) -> OverloadSnapshot:
        since = self.clock() - self._entered_at if self.active and self._entered_at is not None else None
        return OverloadSnapshot(self.active, self.last_lag_s, self.lag_threshold_s, since, self.episodes)
