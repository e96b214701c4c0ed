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
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
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
ALERT_DELIVERIES = Counter(
    "sentistream_alert_deliveries_total",
    "Alert delivery outcomes by destination (kafka, webhook): delivered, failed (an attempt failed, retried "
    "later), expired (gave up at SENTISTREAM_ALERT_DELIVERY_MAX_AGE_S), suppressed (muted/acked/historical), "
    "skipped (destination not configured or not taking the event).",
    ["destination", "outcome"], registry=REGISTRY)
POSTS_UNSCORED = Counter(
    "sentistream_posts_unscored_total",
    "Posts stored without sentiment, by reason (text of posts.unscored_reason before its first ':').",
    ["reason"], registry=REGISTRY)
WINDOW_RECOMPUTE_FAILURES = Counter(
    "sentistream_window_recompute_failures_total",
    "Failed attempts to recompute a batch's windows; each is retried, the batch is acked only after one succeeds.",
    registry=REGISTRY)
WINDOW_OUT_OF_RANGE = Counter(
    "sentistream_window_out_of_range_total",
    "Posts stored in no window: a window of their created_at would start before year 1 (datetime's range).",
    registry=REGISTRY)
SCORER_UP = Gauge("sentistream_scorer_up", "1 when the sentiment model is loaded and scoring.", registry=REGISTRY)
COMPONENT_UP = Gauge("sentistream_component_up", "1 when a dependency is reachable, per component.",
                     ["component"], registry=REGISTRY)

OVERLOAD = Gauge("sentistream_overload", "1 while the worker is in overload mode (pictures skipped, batches widened).",
                 registry=REGISTRY)
LAG_SECONDS = Gauge("sentistream_lag_seconds", "How long the oldest post of the latest batch waited in Kafka.",
                    registry=REGISTRY)
PICTURE_CACHE = Counter(
    "sentistream_picture_cache_total",
    "Picture-feature cache lookups by level (memory: per picture, a repost within a batch is a hit; postgres: "
    "per distinct picture the memory lacked) and result (hit, miss, rejected: a stored vector of the wrong "
    "size or type or with NaN, ignored and encoded again).",
    ["level", "result"], registry=REGISTRY)
PICTURES_ENCODED = Counter("sentistream_pictures_encoded_total",
                           "Pictures that went through the image encoder (neither cache level had them).",
                           registry=REGISTRY)
PICTURE_CACHE_ERRORS = Counter(
    "sentistream_picture_cache_errors_total",
    "Failed reads or writes of the PostgreSQL picture-feature cache; the batch was scored with the encoder.",
    ["operation"], registry=REGISTRY)

BATCH_STAGES = ("total", "media", "score", "sink", "windows")
MEDIA_STATUSES = ("ok", "too_large", "bad_type", "timeout", "blocked", "http_error", "skipped",
                  "skipped_overload")
COMPONENTS = ("broker", "database", "model")

for _stage in BATCH_STAGES:  # export every series from the start, so dashboards see zeros, not gaps
    BATCH_SECONDS.labels(_stage)
for _status in MEDIA_STATUSES:
    MEDIA_FETCHES.labels(_status)
for _level, _results in (("memory", ("hit", "miss")), ("postgres", ("hit", "miss", "rejected"))):
    for _result in _results:
        PICTURE_CACHE.labels(_level, _result)
for _operation in ("read", "write"):
    PICTURE_CACHE_ERRORS.labels(_operation)
for _destination in ("kafka", "webhook"):
    for _outcome in ("delivered", "failed", "expired", "suppressed", "skipped"):
        ALERT_DELIVERIES.labels(_destination, _outcome)


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


def count_picture_cache(level: str, *, hit: int = 0, miss: int = 0, rejected: int = 0) -> None:
    for result, n in (("hit", hit), ("miss", miss), ("rejected", rejected)):
        if n:
            PICTURE_CACHE.labels(level, result).inc(n)


def count_pictures(counts: Mapping[str, int]) -> None:
    """The Scorer's per-batch picture counts (``on_picture_counts``): memory_hit, memory_miss, encoded."""
    count_picture_cache("memory", hit=counts.get("memory_hit", 0), miss=counts.get("memory_miss", 0))
    if counts.get("encoded"):
        PICTURES_ENCODED.inc(counts["encoded"])


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
    down_since: float | None = None  # monotonic clock, while down


@dataclass
class PartitionProgress:
    """What the health check knows about one assigned partition: its committed offset, its log end, and
    since when the committed offset has stood still while behind."""

    committed: int | None = None
    log_end: int | None = None
    behind_since: float | None = None  # clock time of the last commit, or when it fell behind, while lag > 0

    @property
    def lag(self) -> int:
        if self.log_end is None:
            return 0
        return max(0, self.log_end - (self.committed or 0))


class HealthState:
    """Up/down with the last error per dependency, plus progress checks for a stalled consumer.

    Red (``healthy`` False, ``/health`` 503) when:

    * a component is down for longer than its grace (``down_grace_s``, default 0: at once).  The worker
      gives the database ``SENTISTREAM_DB_DOWN_UNHEALTHY_S`` so a restart blip stays green;
    * an assigned partition's *committed* offset has not advanced for ``stall_after_s`` while its log end
      is ahead (``observe_partitions``, fed by a periodic timer so a worker stuck inside a batch is seen);
    * with a backlog, no batch was committed for ``stall_after_s`` (``record_progress``).
    """

    def __init__(self, components: Iterable[str] = COMPONENTS, stall_after_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic,
                 down_grace_s: Mapping[str, float] | None = None) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.stall_after_s = stall_after_s
        self.down_grace_s = dict(down_grace_s or {})
        self.components: dict[str, ComponentHealth] = {name: ComponentHealth() for name in components}
        self.partitions: dict[tuple[str, int], PartitionProgress] = {}
        self._last_progress: float | None = None
        self._started = clock()
        self.backlog = 0
        for name in self.components:
            COMPONENT_UP.labels(name).set(0)

    def mark_up(self, component: str) -> None:
        self._set(component, True, None)

    def mark_down(self, component: str, error: BaseException | str, *, since: float | None = None) -> None:
        """``since``: when the outage began on this object's clock, if earlier than now (a call that has
        hung for a while is reported with its start)."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._set(component, False, text[:500], since)

    def _set(self, component: str, up: bool, error: str | None, since: float | None = None) -> None:
        now = datetime.now(UTC)
        with self._lock:
            health = self.components.setdefault(component, ComponentHealth())
            if health.up != up or health.changed_at is None:
                health.changed_at = now
            health.up = up
            if up:
                health.last_ok_at = now
                health.down_since = None
            else:
                health.last_error = error
                start = self._clock() if since is None else since
                health.down_since = start if health.down_since is None else min(health.down_since, start)
        COMPONENT_UP.labels(component).set(1 if up else 0)
        if component == "model":
            SCORER_UP.set(1 if up else 0)

    def record_progress(self, backlog: int | None = None) -> None:
        """Call after each committed batch (optionally with the current total lag)."""
        with self._lock:
            self._last_progress = self._clock()
            if backlog is not None:
                self.backlog = backlog

    def observe_partitions(self, offsets: Mapping[tuple[str, int], tuple[int | None, int | None]]) -> None:
        """The assigned partitions now, each with (committed offset, log end); forgets the others.

        A partition counts as behind while its log end is past its committed offset (None: nothing
        committed yet, i.e. 0); its stall clock restarts whenever the committed offset moves.
        """
        now = self._clock()
        with self._lock:
            for tp in [tp for tp in self.partitions if tp not in offsets]:
                del self.partitions[tp]
            for tp, (committed, log_end) in offsets.items():
                p = self.partitions.setdefault(tp, PartitionProgress())
                moved = committed != p.committed
                p.committed = committed
                if log_end is not None:
                    p.log_end = log_end
                if p.lag <= 0:
                    p.behind_since = None
                elif moved or p.behind_since is None:
                    p.behind_since = now
            self.backlog = sum(p.lag for p in self.partitions.values())
        CONSUMER_LAG.clear()
        set_consumer_lag({tp: p.lag for tp, p in self.partitions.items()})

    def stalled_partitions(self) -> list[tuple[str, int]]:
        with self._lock:
            return self._stalled_partitions(self._clock())

    def _stalled_partitions(self, now: float) -> list[tuple[str, int]]:
        return sorted(tp for tp, p in self.partitions.items()
                      if p.behind_since is not None and now - p.behind_since > self.stall_after_s)

    def stalled(self) -> bool:
        with self._lock:
            now = self._clock()
            if self._stalled_partitions(now):
                return True
            if self.backlog <= 0:
                return False
            since = self._last_progress if self._last_progress is not None else self._started
            return now - since > self.stall_after_s

    def _component_ok(self, name: str, c: ComponentHealth, now: float) -> bool:
        if c.up:
            return True
        grace = self.down_grace_s.get(name, 0.0)
        return grace > 0 and c.down_since is not None and now - c.down_since <= grace

    @property
    def healthy(self) -> bool:
        with self._lock:
            now = self._clock()
            components_ok = all(self._component_ok(n, c, now) for n, c in self.components.items())
        return components_ok and not self.stalled()

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready body for ``/health`` (serve it with 200 when ``healthy``, else 503)."""
        stalled = self.stalled()
        with self._lock:
            now = self._clock()
            components = {
                name: {"up": c.up, "ok": self._component_ok(name, c, now), "last_error": c.last_error,
                       "changed_at": c.changed_at.isoformat() if c.changed_at else None,
                       "last_ok_at": c.last_ok_at.isoformat() if c.last_ok_at else None,
                       "down_for_s": None if c.down_since is None else round(now - c.down_since, 1)}
                for name, c in self.components.items()
            }
            since = None if self._last_progress is None else round(now - self._last_progress, 3)
            backlog = self.backlog
            stalled_tps = set(self._stalled_partitions(now))
            partitions = {
                f"{topic}:{partition}": {
                    "committed": p.committed, "log_end": p.log_end, "lag": p.lag, "stalled": (topic, partition)
                    in stalled_tps,
                    "seconds_behind_without_commit": None if p.behind_since is None
                    else round(now - p.behind_since, 1)}
                for (topic, partition), p in sorted(self.partitions.items())
            }
        ok = all(c["ok"] for c in components.values()) and not stalled
        return {"status": "ok" if ok else "degraded", "components": components,
                "progress": {"backlog": backlog, "seconds_since_progress": since, "stalled": stalled,
                             "stalled_partitions": sorted(f"{t}:{p}" for t, p in stalled_tps),
                             "partitions": partitions}}


class PeriodicSummary:
    """The worker's one INFO line per interval, so normal running is not silent: rates in and out, dead
    letters, backlog and the median batch time since the previous line (from the counters above); pictures
    encoded and cache hits when there were any."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_batches: int = 10_000) -> None:
        self._clock = clock
        self._batch_seconds: deque[float] = deque(maxlen=max_batches)
        self._last_at = clock()
        self._last = self._totals()

    @staticmethod
    def _totals() -> tuple[float, ...]:
        return (sample("sentistream_posts_in_total") or 0.0, sample("sentistream_posts_out_total") or 0.0,
                sample("sentistream_dead_letters_total") or 0.0, sample("sentistream_pictures_encoded_total") or 0.0,
                *(sample("sentistream_picture_cache_total", {"level": level, "result": "hit"}) or 0.0
                  for level in ("memory", "postgres")))

    def observe_batch(self, seconds: float) -> None:
        self._batch_seconds.append(seconds)

    def line(self, backlog: int, stalled: Sequence[str] = ()) -> str:
        """The summary since the previous call, and start the next interval."""
        now, totals = self._clock(), self._totals()
        elapsed = max(now - self._last_at, 1e-9)
        posts_in, posts_out, dead, encoded, memory_hits, postgres_hits = (
            t - last for t, last in zip(totals, self._last, strict=True))
        batches = sorted(self._batch_seconds)
        p50 = f"{batches[len(batches) // 2] * 1000:.0f} ms" if batches else "n/a"
        self._batch_seconds.clear()
        self._last_at, self._last = now, totals
        text = (f"last {elapsed:.0f}s: {posts_in / elapsed:.1f} posts/s in, {posts_out / elapsed:.1f} posts/s "
                f"stored, {dead:.0f} dead letters, backlog {backlog}, {len(batches)} batches, p50 {p50}")
        if encoded or memory_hits or postgres_hits:
            text += (f"; pictures {encoded:.0f} encoded, {memory_hits:.0f} from memory, "
                     f"{postgres_hits:.0f} from PostgreSQL")
        if stalled:
            text += f"; STALLED partitions: {', '.join(stalled)}"
        return text
