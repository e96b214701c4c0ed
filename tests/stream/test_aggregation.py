"""Event-time watermark: a partition racing ahead in a backfill must not close windows early."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectors.post import Post
from stream.aggregation import HOLD, EventTimeWatermark
from stream.alerts import SpikeConfig, SpikeDetector
from stream.sink import SinkRecord
from stream.windows import WindowAggregate

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def _record(partition: int, offset: int, minute: float) -> SinkRecord:
    post = Post(platform="reddit", post_id=f"{partition}-{offset}", text="x", topic="t",
                created_at=T0 + timedelta(minutes=minute))
    return SinkRecord(post, source=("posts.raw", partition, offset))


def test_watermark_is_held_by_partitions_with_backlog_only() -> None:
    high = {("posts.raw", 0): 100, ("posts.raw", 1): 100}
    wm = EventTimeWatermark(lambda: list(high), high.get)
    assert wm.current() == HOLD  # nothing read yet from partitions that hold posts

    wm.update([_record(0, 99, 25)])  # partition 0 read to its end (minute 25)
    assert wm.current() == HOLD  # partition 1 has posts we have not seen
    wm.update([_record(1, 9, 5)])  # partition 1 at minute 5, 90 messages behind
    assert wm.current() == T0 + timedelta(minutes=5)
    wm.update([_record(1, 99, 24)])  # partition 1 caught up
    assert wm.current() == T0 + timedelta(minutes=25)

    high[("posts.raw", 2)] = 0  # an empty partition never holds anything back
    assert wm.current() == T0 + timedelta(minutes=25)
    high[("posts.raw", 3)] = None  # assigned but not fetched yet: it might hold older posts
    assert wm.current() == HOLD


def _window(minute: int, n: int, neg: int) -> WindowAggregate:
    return WindowAggregate("t", T0 + timedelta(minutes=minute), 60, "v", n, neg, 0, n - neg, 0.0, neg / n)


def _backfill(detector: SpikeDetector, use_watermark: bool) -> list:
    """Partition A (a quarter of each window) is read to the end first, then the rest arrives."""
    alerts = []
    quarter = [_window(m, 6, 6 if m == 20 else 0) for m in range(26)]
    alerts += detector.observe(quarter, watermark=T0 if use_watermark else None)
    for m in range(26):
        full = _window(m, 24, 24 if m == 20 else 0)
        alerts += detector.observe([full], watermark=T0 + timedelta(minutes=m) if use_watermark else None)
    return alerts


def test_backfill_spike_is_found_with_the_watermark_and_missed_without_it() -> None:
    config = SpikeConfig(min_volume=20, warmup_windows=12)
    with_wm = _backfill(SpikeDetector(config), use_watermark=True)
    assert [(a.topic, a.window_start) for a in with_wm] == [("t", T0 + timedelta(minutes=20))]
    # The old rule (close by the newest window seen) judged every window from a quarter of its posts.
    assert _backfill(SpikeDetector(config), use_watermark=False) == []


def test_a_held_watermark_closes_nothing_even_when_restoring() -> None:
    detector = SpikeDetector(SpikeConfig(min_volume=20, warmup_windows=12))
    detector.restore([_window(m, 6, 0) for m in range(26)], watermark=HOLD)
    full = [_window(m, 24, 24 if m == 20 else 0) for m in range(26)]
    alerts = [a for m in range(26) for a in detector.observe([full[m]], watermark=T0 + timedelta(minutes=m))]
    assert [a.window_start for a in alerts] == [T0 + timedelta(minutes=20)]
