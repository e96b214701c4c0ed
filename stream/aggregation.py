"""After a batch is committed: recompute the windows it touched, detect spikes, deliver new alerts.

This runs before the batch is acked (see ``BatchProcessor.process``), so a crash between the sink's
commit and this step replays the batch and runs it again; every part is idempotent (windows are
recomputed from rows, alerts are unique per topic/window, delivery is tracked in ``alerts.published_at``).
Alerts that were stored but never delivered (a crash, Kafka down) are picked up on the next batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stream.alerts import (
    AlertNotifier,
    SpikeAlert,
    SpikeDetector,
    alert_message,
    insert_alerts,
    mark_delivered,
    observe_with_history,
    spike_examples,
)
from stream.db import AlertRow
from stream.sink import SinkRecord, WriteResult
from stream.windows import WindowKey, recompute_windows, windows_touched

log = logging.getLogger(__name__)

PublishAlert = Callable[[bytes, bytes], Awaitable[None]]
TopicPartition = tuple[str, int]
HOLD = datetime.min.replace(tzinfo=UTC)  # a watermark before every window: nothing closes yet


class EventTimeWatermark:
    """The event time up to which every partition this worker still has a backlog on has been read.

    Spike detection closes a window (folds it into the baseline and gives it its final test) only once
    the watermark has passed it, so a backfill or a replay, where one partition can be minutes of event
    time ahead of another, never judges a window before all its posts are in.  A partition that is
    caught up (no backlog) does not hold the watermark back: in a live, caught-up feed the watermark is
    simply the newest event time seen, and an idle partition never stalls the alerts.
    """

    def __init__(self, assigned: Callable[[], Iterable[TopicPartition]] | None = None,
                 highwater: Callable[[TopicPartition], int | None] | None = None) -> None:
        self.assigned = assigned
        self.highwater = highwater
        self.max_event_time: dict[TopicPartition, datetime] = {}
        self.next_offset: dict[TopicPartition, int] = {}

    def update(self, records: Sequence[SinkRecord]) -> None:
        for r in records:
            if r.source is None:
                continue
            tp = (r.source[0], r.source[1])
            if tp not in self.max_event_time or r.post.created_at > self.max_event_time[tp]:
                self.max_event_time[tp] = r.post.created_at
            self.next_offset[tp] = max(self.next_offset.get(tp, 0), r.source[2] + 1)

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
            if tp not in self.max_event_time:
                if high > 0:
                    return HOLD  # a partition with posts we have not read yet: hold every window open
                continue
            if high - self.next_offset.get(tp, 0) > 0:
                behind.append(self.max_event_time[tp])
        return min(behind) if behind else (newest or HOLD)


class WindowAlertStage:
    """The ``after_write`` step of the worker's BatchProcessor.

    With ``detector=None`` it only recomputes windows: `sentistream rescore` uses that, so scoring
    history with a new model never raises (or delivers) alerts about the past.
    """

    def __init__(self, engine: Engine, window_lengths_s: Sequence[int], detector: SpikeDetector | None,
                 notifier: AlertNotifier | None = None, publish_alert: PublishAlert | None = None,
                 executor: Executor | None = None, on_alert: Callable[[SpikeAlert], None] | None = None,
                 watermark: EventTimeWatermark | None = None) -> None:
        self.engine = engine
        self.window_lengths_s = tuple(window_lengths_s)
        self.detector = detector
        self.notifier = notifier
        self.publish_alert = publish_alert
        self.executor = executor
        self.on_alert = on_alert
        self.watermark = watermark or EventTimeWatermark()

    async def __call__(self, written: WriteResult, records: Sequence[SinkRecord]) -> None:
        keys_by_version: dict[str, set[WindowKey]] = defaultdict(set)
        self.watermark.update(records)
        for r in records:
            if r.sentiment is not None:
                keys_by_version[r.sentiment.model_version] |= windows_touched([r.post], self.window_lengths_s)
        loop = asyncio.get_running_loop()
        if keys_by_version:
            await loop.run_in_executor(self.executor, self.recompute_and_detect, dict(keys_by_version),
                                       self.watermark.current())
        if self.detector is not None:
            await self.deliver_pending()

    def recompute_and_detect(self, keys_by_version: dict[str, set[WindowKey]],
                             watermark: datetime | None = None) -> list[SpikeAlert]:
        """One transaction: windows recomputed, spikes detected, new alerts stored."""
        new: list[SpikeAlert] = []
        log.debug("recomputing %d windows, watermark %s", sum(map(len, keys_by_version.values())), watermark)
        try:
            with self.engine.begin() as conn:
                for version, keys in sorted(keys_by_version.items()):
                    aggregates = recompute_windows(conn, keys, version)
                    if self.detector is not None:
                        new += insert_alerts(conn, observe_with_history(conn, self.detector, aggregates,
                                                                        watermark=watermark))
        except BaseException:
            if self.detector is not None:
                self.detector.forget()  # it may have disarmed for an alert that was rolled back: rebuild from rows
            raise
        for alert in new:
            log.warning("ALERT %s", alert.summary())
            if self.on_alert is not None:
                self.on_alert(alert)
        return new

    async def deliver_pending(self) -> None:
        """Publish to Kafka and POST to the webhook every stored alert not delivered yet."""
        loop = asyncio.get_running_loop()
        pending = await loop.run_in_executor(self.executor, self._pending)
        for alert, examples in pending:
            if self.publish_alert is not None:
                key, value = alert_message(alert)
                await self.publish_alert(key, value)
            status = await self.notifier.notify(alert, examples) if self.notifier else "disabled"
            await loop.run_in_executor(self.executor, self._mark, alert, status)

    def _pending(self) -> list[tuple[SpikeAlert, list[dict[str, Any]]]]:
        a = AlertRow.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(select(a).where(a.c.published_at.is_(None)).order_by(a.c.id).limit(100)).all()
            out = []
            for r in rows:
                alert = SpikeAlert(topic=r.topic, window_start=r.window_start.astimezone(UTC),
                                   window_seconds=r.window_seconds,
                                   model_version=r.model_version, observed=r.observed, expected=r.expected,
                                   score=r.score, n_posts=r.n_posts, n_negative=r.n_negative,
                                   evidence=r.evidence or {}, kind=r.kind)
                out.append((alert, spike_examples(conn, alert)))
        return out

    def _mark(self, alert: SpikeAlert, status: str) -> None:
        with self.engine.begin() as conn:
            mark_delivered(conn, alert, status)
