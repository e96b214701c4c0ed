"""After a batch is committed: recompute the windows it touched, detect spikes, queue new alerts.

This runs before the batch is acked (see ``BatchProcessor.process``), so a crash between the sink's
commit and this step replays the batch and runs it again; every part is idempotent (windows are
recomputed from rows, alerts are unique per topic/window/event, and each new alert's delivery is queued
in the outbox in the same transaction, keyed by alert and destination).  Sending is not done here: the
worker's ``stream.alert_delivery.AlertDeliverer`` is kicked after the batch and sends in the background.

Windows stay right: a recompute that fails is counted (``sentistream_window_recompute_failures_total``)
and retried a few times; a database outage is waited out by the pipeline; a failure that outlives the
retries raises :class:`WindowRecomputeError` out of the batch, so the batch is not acked and its offsets
are held (redelivery recomputes the windows again) instead of leaving every window it touched stale.
A time no window can hold (before year 1, see ``stream.windows``) is counted and skipped, never raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy.engine import Engine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from stream import metrics
from stream.alerts import SpikeAlert, SpikeDetector, looks_with_history
from stream.incidents import apply_looks, explain_incident
from stream.sink import DeadLetter, SinkRecord, WriteResult, is_transient
from stream.windows import TimedTopic, WindowKey, recompute_windows, windows_touched

log = logging.getLogger(__name__)
TopicPartition = tuple[str, int]
HOLD = datetime.min.replace(tzinfo=UTC)  # a watermark before every window: nothing closes yet


class WindowRecomputeError(RuntimeError):
    """Recomputing a batch's windows failed on every attempt: the batch must not be acked.

    ``hold_batch`` tells the pipeline not to bisect it into dead letters: the posts are stored and fine,
    it is their windows that are not, and only a redelivery recomputes them.
    """

    hold_batch = True


class EventTimeWatermark:
    """The event time up to which every partition this worker still has a backlog on has been read.

    Spike detection closes a window (folds it into the baseline and gives it its final test) only once
    the watermark has passed it, so a backfill or a replay, where one partition can be minutes of event
    time ahead of another, never judges a window before all its posts are in.  A partition that is
    caught up (no backlog) does not hold the watermark back: in a live, caught-up feed the watermark is
    simply the newest event time seen, and an idle partition never stalls the alerts.

    Read positions count every message consumed, posts *and* dead letters (:meth:`mark_read`): a dead
    letter carries no event time, but once it is read the partition has no backlog behind it, so a
    partition whose newest message is a dead letter does not hold the watermark back forever.  Event
    times later than ``max_future_s`` past the wall clock are clamped to it, so one post dated year 9999
    cannot close every open window at once.
    """

    def __init__(self, assigned: Callable[[], Iterable[TopicPartition]] | None = None,
                 highwater: Callable[[TopicPartition], int | None] | None = None,
                 max_future_s: float = 300.0, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.assigned = assigned
        self.highwater = highwater
        self.max_future_s = max_future_s
        self.clock = clock
        self.max_event_time: dict[TopicPartition, datetime] = {}
        self.next_offset: dict[TopicPartition, int] = {}

    def update(self, records: Sequence[SinkRecord]) -> None:
        """Posts read: each advances its partition's event time and read position."""
        horizon = self.clock() + timedelta(seconds=self.max_future_s)
        for r in records:
            if r.source is None:
                continue
            tp = (r.source[0], r.source[1])
            event_time = min(r.post.created_at, horizon)
            if tp not in self.max_event_time or event_time > self.max_event_time[tp]:
                self.max_event_time[tp] = event_time
            self.mark_read([r.source])

    def mark_read(self, positions: Iterable[tuple[str, int, int]]) -> None:
        """(topic, partition, offset) of messages consumed without a post, e.g. dead letters."""
        for topic, partition, offset in positions:
            if partition < 0 or offset < 0:
                continue  # a dead letter of unknown origin moves nothing
            tp = (topic, partition)
            self.next_offset[tp] = max(self.next_offset.get(tp, 0), offset + 1)

    def current(self) -> datetime | None:
        """None only without a partition source (then windows close by the newest one seen);
        ``HOLD`` while a partition with unread posts has not been read at all."""
        newest = max(self.max_event_time.values(), default=None)
        if self.assigned is None or self.highwater is None:
            return newest
        behind: list[datetime] = []
        for tp in self.assigned():
            high = self.highwater(tp)
            if high is None:
                return HOLD  # not fetched yet: it may hold older posts than any we have seen
            backlog = high - self.next_offset.get(tp, 0) > 0
            if tp not in self.max_event_time:
                if backlog:
                    return HOLD  # a partition with posts we have not read yet: hold every window open
                continue  # empty, or read to its end and only dead letters so far
            if backlog:
                behind.append(self.max_event_time[tp])
        return min(behind) if behind else (newest or HOLD)


class WindowAlertStage:
    """The ``after_write`` step of the worker's BatchProcessor.

    With ``detector=None`` it only recomputes windows: `sentistream rescore` uses that, so scoring
    history with a new model never raises (or delivers) alerts about the past.  ``attempts`` bounds the
    retries of a failing recompute (see the module docstring).  Delivery never fails or holds the batch:
    ``deliverer`` (an ``AlertDeliverer``) is only kicked, and sends from the outbox in the background.
    """

    def __init__(self, engine: Engine, window_lengths_s: Sequence[int], detector: SpikeDetector | None,
                 executor: Executor | None = None, on_alert: Callable[[SpikeAlert], None] | None = None,
                 watermark: EventTimeWatermark | None = None, attempts: int = 3,
                 retry_wait_s: float = 0.2, historical_after_s: float | None = None,
                 deliverer: Any = None, attended_words: Any = None,
                 attended_model_version: str | None = None) -> None:
        self.engine = engine
        self.window_lengths_s = tuple(window_lengths_s)
        self.detector = detector
        self.executor = executor
        self.on_alert = on_alert
        self.watermark = watermark or EventTimeWatermark()
        self.attempts = max(1, attempts)
        self.retry_wait_s = retry_wait_s
        self.historical_after_s = historical_after_s  # alerts on older windows: stored, never delivered
        self.deliverer = deliverer  # stream.alert_delivery.AlertDeliverer: kicked after each batch
        # The worker's Scorer.attended_words (and its model version): the words the model attended to in
        # an alert's example posts.  None (tests, rescore): the explanation says they are not available.
        self.explain = partial(explain_incident, attended_words=attended_words,
                               attended_model_version=attended_model_version)

    async def __call__(self, written: WriteResult, records: Sequence[SinkRecord],
                       dead_letters: Sequence[DeadLetter] = ()) -> None:
        keys_by_version: dict[str, set[WindowKey]] = defaultdict(set)
        self.watermark.update(records)
        self.watermark.mark_read((d.source_topic, d.source_partition, d.source_offset) for d in dead_letters)
        for r in records:
            if r.sentiment is not None:
                keys_by_version[r.sentiment.model_version] |= windows_touched(
                    [r.post], self.window_lengths_s, _count_out_of_range)
        if keys_by_version:
            await self._recompute_with_retries(dict(keys_by_version), self.watermark.current())
        if self.detector is not None and self.deliverer is not None:
            # New alerts are in the outbox (same transaction); the deliverer sends them in the background,
            # so a slow webhook never holds this batch's ack (stream/alert_delivery.py).
            self.deliverer.kick()

    async def _recompute_with_retries(self, keys_by_version: dict[str, set[WindowKey]],
                                      watermark: datetime | None) -> None:
        """Count every failure; retry the ones a retry can fix here; raise what is left (never swallow).

        A database that is unreachable is raised at once: the pipeline waits it out (its own backoff,
        offsets held).  Anything else gets ``attempts`` tries and then becomes WindowRecomputeError.
        """
        loop = asyncio.get_running_loop()

        def count(exc: BaseException) -> bool:
            metrics.WINDOW_RECOMPUTE_FAILURES.inc()
            log.warning("window recompute failed (%s: %s)", type(exc).__name__, str(exc).splitlines()[0]
                        if str(exc) else "")
            return not is_transient(exc)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.retry_wait_s, max=max(self.retry_wait_s, 5.0))
            + wait_random(0, self.retry_wait_s),
            retry=retry_if_exception(lambda exc: isinstance(exc, Exception) and count(exc)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await loop.run_in_executor(self.executor, self.recompute_and_detect, keys_by_version,
                                               watermark)
        except Exception as exc:
            if is_transient(exc):
                raise
            raise WindowRecomputeError(
                f"recomputing {sum(map(len, keys_by_version.values()))} windows failed {self.attempts} times: "
                f"{type(exc).__name__}: {exc}") from exc

    def recompute_and_detect(self, keys_by_version: dict[str, set[WindowKey]],
                             watermark: datetime | None = None) -> list[SpikeAlert]:
        """One transaction: windows recomputed, spikes looked for, incidents decided, new alerts stored.

        The incidents and their alerts are decided under a per-topic advisory lock from the
        ``alert_incidents`` rows (``stream.incidents.apply_looks``), which queues each new deliverable
        alert through ``stream.incidents.enqueue_delivery`` in this same transaction.
        """
        new: list[SpikeAlert] = []
        log.debug("recomputing %d windows, watermark %s", sum(map(len, keys_by_version.values())), watermark)
        try:
            with self.engine.begin() as conn:
                for version, keys in sorted(keys_by_version.items()):
                    aggregates = recompute_windows(conn, keys, version)
                    if self.detector is not None:
                        now = datetime.now(UTC)
                        looks = looks_with_history(conn, self.detector, aggregates, watermark=watermark, now=now)
                        new += apply_looks(conn, looks, self.detector.config_for, now=now,
                                           historical_after_s=self.historical_after_s, explain=self.explain)
        except BaseException:
            if self.detector is not None:
                self.detector.forget()  # it may have disarmed for an alert that was rolled back: rebuild from rows
            raise
        for alert in new:
            log.warning("ALERT %s", alert.summary())
            if self.on_alert is not None:
                self.on_alert(alert)
        return new


def _count_out_of_range(post: TimedTopic, window_seconds: int) -> None:
    metrics.WINDOW_OUT_OF_RANGE.inc()
    log.warning("post in topic %r at %s is in no %ds window (its window would start before year 1); "
                "it is stored but not aggregated", post.topic, post.created_at.isoformat(), window_seconds)
