"""The worker's Prometheus metrics and the health state behind ``/health``: one small registry.

Metrics live in their own ``CollectorRegistry`` (not prometheus_client's global one) so that the worker's
web view exposes exactly these, and tests can read values without other libraries' collectors.  Label
values come from small fixed sets (media status, batch stage, component): never a post id or URL.

``HealthState`` answers the question operators ask after the known faust/aiokafka failure modes (a
consumer that stops silently, a rebalance that never finishes): is each dependency up, and is the worker
still making progress while there is a backlog?  It is updated by the code that talks to each dependency.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

POSTS_IN = Counter("sentistream_posts_in_total", "Messages read from the posts topic.", registry=REGISTRY)
POSTS_OUT = Counter("sentistream_posts_out_total", "Posts committed to PostgreSQL (with their sentiments).",
                    registry=REGISTRY)
DEAD_LETTERS = Counter("sentistream_dead_letters_total", "Messages sent to the dead-letter topic.",
                       registry=REGISTRY)
BATCH_SIZE = Histogram("sentistream_batch_size", "Posts per micro-batch.", registry=REGISTRY,
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
BATCH_SECONDS = Histogram(
    "sentistream_batch_seconds", "Wall time per micro-batch, by stage (total, media, score, sink, windows).",
    ["stage"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60))
MEDIA_FETCHES = Counter("sentistream_media_fetches_total", "Media fetch outcomes, by status.", ["status"],
                        registry=REGISTRY)
CONSUMER_LAG = Gauge("sentistream_consumer_lag", "Messages behind the partition end, per partition.",
                     ["topic", "partition"], registry=REGISTRY)
ALERTS = Counter("sentistream_alerts_total", "Alerts raised (new rows only), by kind.", ["kind"],
                 registry=REGISTRY)
WINDOW_RECOMPUTE_FAILURES = Counter(
    "sentistream_window_recompute_failures_total",
    "Failed attempts to recompute a batch's windows; each is retried, the batch is acked only after one succeeds.",
    registry=REGISTRY)
WINDOW_OUT_OF_RANGE = Counter(
    "sentistream_window_out_of_range_total",
    "Posts stored in no window: a window of their created_at would start before year 1 (datetime's range).",
    registry=REGISTRY)
POSTS_UNSCORED = Counter(
    "sentistream_posts_unscored_total",
    "Posts stored without sentiment, by reason (text of posts.unscored_reason before its first ':').",
    ["reason"], registry=REGISTRY)
SCORER_UP = Gauge("sentistream_scorer_up", "1 when the sentiment model is loaded and scoring.", registry=REGISTRY)
COMPONENT_UP = Gauge("sentistream_component_up", "1 when a dependency is reachable, per component.",
                     ["component"], registry=REGISTRY)

BATCH_STAGES = ("total", "media", "score", "sink", "windows")
MEDIA_STATUSES = ("ok", "too_large", "bad_type", "timeout", "blocked", "http_error", "skipped")
COMPONENTS = ("broker", "database", "model")

for _stage in BATCH_STAGES:  # export every series from the start, so dashboards see zeros, not gaps
    BATCH_SECONDS.labels(_stage)
for _status in MEDIA_STATUSES:
    MEDIA_FETCHES.labels(_status)


def observe_batch(size: int, seconds_by_stage: dict[str, float]) -> None:
    """Record one batch: its size and how long each stage took."""
    BATCH_SIZE.observe(size)
    for stage, seconds in seconds_by_stage.items():
        BATCH_SECONDS.labels(stage).observe(seconds)


def count_media(statuses: Iterable[str]) -> None:
    for status in statuses:
        MEDIA_FETCHES.labels(status).inc()


def count_unscored(labels: Iterable[str]) -> None:
    """One per post stored unscored; ``labels`` come from ``stream.pipeline.unscored_label``."""
    for label in labels:
        POSTS_UNSCORED.labels(label).inc()


def set_consumer_lag(lag_by_partition: dict[tuple[str, int], int]) -> None:
    for (topic, partition), lag in lag_by_partition.items():
        CONSUMER_LAG.labels(topic, str(partition)).set(max(lag, 0))


def render() -> tuple[bytes, str]:
    """The exposition body and its Content-Type, for the worker's ``/metrics`` view."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def sample(name: str, labels: dict[str, str] | None = None) -> float | None:
    """Current value of one sample (tests, and the demo summary)."""
    return REGISTRY.get_sample_value(name, labels or {})


@dataclass
class ComponentHealth:
    up: bool = False
    last_error: str | None = None
    changed_at: datetime | None = None
    last_ok_at: datetime | None = None


class HealthState:
    """Up/down with the last error per dependency, plus a progress check for a stalled consumer.

    ``stall_after_s``: with a backlog (``backlog > 0``) and no batch committed for this long, the worker
    reports itself unhealthy even though every connection looks fine.
    """

    def __init__(self, components: Iterable[str] = COMPONENTS, stall_after_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.stall_after_s = stall_after_s
        self.components: dict[str, ComponentHealth] = {name: ComponentHealth() for name in components}
        self._last_progress: float | None = None
        self._started = clock()
        self.backlog = 0
        for name in self.components:
            COMPONENT_UP.labels(name).set(0)

    def mark_up(self, component: str) -> None:
        self._set(component, True, None)

    def mark_down(self, component: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._set(component, False, text[:500])

    def _set(self, component: str, up: bool, error: str | None) -> None:
        now = datetime.now(UTC)
        with self._lock:
            health = self.components.setdefault(component, ComponentHealth())
            if health.up != up or health.changed_at is None:
                health.changed_at = now
            health.up = up
            if up:
                health.last_ok_at = now
            else:
                health.last_error = error
        COMPONENT_UP.labels(component).set(1 if up else 0)
        if component == "model":
            SCORER_UP.set(1 if up else 0)

    def record_progress(self, backlog: int | None = None) -> None:
        """Call after each committed batch (optionally with the current total lag)."""
        with self._lock:
            self._last_progress = self._clock()
            if backlog is not None:
                self.backlog = backlog

    def stalled(self) -> bool:
        with self._lock:
            if self.backlog <= 0:
                return False
            since = self._last_progress if self._last_progress is not None else self._started
            return self._clock() - since > self.stall_after_s

    @property
    def healthy(self) -> bool:
        with self._lock:
            all_up = all(c.up for c in self.components.values())
        return all_up and not self.stalled()

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready body for ``/health`` (serve it with 200 when ``healthy``, else 503)."""
        stalled = self.stalled()
        with self._lock:
            components = {
                name: {"up": c.up, "last_error": c.last_error,
                       "changed_at": c.changed_at.isoformat() if c.changed_at else None,
                       "last_ok_at": c.last_ok_at.isoformat() if c.last_ok_at else None}
                for name, c in self.components.items()
            }
            since = None if self._last_progress is None else round(self._clock() - self._last_progress, 3)
            backlog = self.backlog
        ok = all(c["up"] for c in components.values()) and not stalled
        return {"status": "ok" if ok else "degraded", "components": components,
                "progress": {"backlog": backlog, "seconds_since_progress": since, "stalled": stalled}}
