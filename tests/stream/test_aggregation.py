"""Event-time watermark: a partition racing ahead in a backfill must not close windows early."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from connectors.post import Post
from model.scorer import SentimentResult
from stream import metrics
from stream.aggregation import HOLD, EventTimeWatermark, WindowAlertStage, WindowRecomputeError
from stream.alerts import SpikeConfig, SpikeDetector
from stream.sink import DeadLetter, PostgresSink, SinkRecord, WriteResult
from stream.windows import WindowAggregate
from tests.stream.pg_module import db_fixture, s4_engine_fixture  # noqa: F401 - fixtures

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
    # The old rule (close by the newest window seen) judged every window from a quarter of its posts
    # (so it missed the negative spike; the quarter-volume baseline even makes the full windows look loud).
    assert [a for a in _backfill(SpikeDetector(config), use_watermark=False) if a.kind == "negative_spike"] == []


def test_a_held_watermark_closes_nothing_even_when_restoring() -> None:
    detector = SpikeDetector(SpikeConfig(min_volume=20, warmup_windows=12))
    detector.restore([_window(m, 6, 0) for m in range(26)], watermark=HOLD)
    full = [_window(m, 24, 24 if m == 20 else 0) for m in range(26)]
    alerts = [a for m in range(26) for a in detector.observe([full[m]], watermark=T0 + timedelta(minutes=m))]
    assert [a.window_start for a in alerts] == [T0 + timedelta(minutes=20)]


# --------------------------------------------------------------------------------------------------
# Dead letters count as read (issue #10): a partition ending in a dead letter does not hold the watermark
# --------------------------------------------------------------------------------------------------

def _dead(partition: int, offset: int) -> DeadLetter:
    return DeadLetter("posts.raw", partition, offset, None, "not JSON", b"\xff")


def test_a_partition_whose_newest_messages_are_dead_letters_does_not_hold_the_watermark() -> None:
    high = {("posts.raw", 0): 100, ("posts.raw", 1): 10}
    wm = EventTimeWatermark(lambda: list(high), high.get)
    wm.update([_record(0, 99, 25)])
    wm.update([_record(1, 7, 5)])  # offsets 8 and 9 of partition 1 are dead letters
    assert wm.current() == T0 + timedelta(minutes=5)  # held: partition 1 looks 2 messages behind
    wm.mark_read([("posts.raw", 1, 8), ("posts.raw", 1, 9)])
    assert wm.current() == T0 + timedelta(minutes=25)
    # A partition holding only dead letters, once read to its end, holds nothing back either.
    high[("posts.raw", 2)] = 3
    assert wm.current() == HOLD
    wm.mark_read([("posts.raw", 2, o) for o in range(3)])
    assert wm.current() == T0 + timedelta(minutes=25)
    # A dead letter of unknown origin (partition -1) moves nothing; new posts behind it still hold.
    wm.mark_read([("posts.raw", -1, -1)])
    high[("posts.raw", 2)] = 5
    assert wm.current() == HOLD


def test_the_window_stage_feeds_dead_letters_to_the_watermark() -> None:
    high = {("posts.raw", 0): 3}
    wm = EventTimeWatermark(lambda: list(high), high.get)
    # No sentiment and no detector: the stage touches no database for this batch.
    stage = WindowAlertStage(engine=None, window_lengths_s=(60,), detector=None, watermark=wm)  # type: ignore[arg-type]
    written = WriteResult(posts=1, sentiments=0, media=0, dead_letters=2, post_pks={}, seconds=0.0)
    asyncio.run(stage(written, [_record(0, 0, 1)], [_dead(0, 1), _dead(0, 2)]))
    assert wm.next_offset[("posts.raw", 0)] == 3
    assert wm.current() == T0 + timedelta(minutes=1)


def test_a_post_from_the_far_future_cannot_close_every_window() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    high = {("posts.raw", 0): 2}
    wm = EventTimeWatermark(lambda: list(high), high.get, max_future_s=300, clock=lambda: now)
    far = Post(platform="reddit", post_id="far", text="x", topic="t",
               created_at=datetime(9999, 12, 31, 23, 59, tzinfo=UTC))
    wm.update([_record(0, 0, 1), SinkRecord(far, source=("posts.raw", 0, 1))])
    assert wm.current() == now + timedelta(seconds=300)


# --------------------------------------------------------------------------------------------------
# A failing recompute is retried and counted, never swallowed (real PostgreSQL, injected by a trigger)
# --------------------------------------------------------------------------------------------------

def _fail_window_writes(db: Engine, times: int) -> None:
    """Make the next ``times`` statements that write window_aggregates fail (a sequence survives rollbacks)."""
    with db.begin() as conn:
        conn.execute(text("DROP TRIGGER IF EXISTS fail_windows ON window_aggregates"))
        conn.execute(text("DROP SEQUENCE IF EXISTS window_failures"))
        conn.execute(text("CREATE SEQUENCE window_failures"))
        conn.execute(text(f"""
            CREATE OR REPLACE FUNCTION fail_window_writes() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('window_failures') <= {int(times)} THEN
                    RAISE EXCEPTION 'injected window failure';
                END IF;
                RETURN NULL;
            END $$"""))
        conn.execute(text("CREATE TRIGGER fail_windows BEFORE INSERT ON window_aggregates "
                          "FOR EACH STATEMENT EXECUTE FUNCTION fail_window_writes()"))


@pytest.fixture
def failing_db(db: Engine) -> Iterator[Engine]:
    yield db
    with db.begin() as conn:
        conn.execute(text("DROP TRIGGER IF EXISTS fail_windows ON window_aggregates"))


def _scored_record(post_id: str, minute: float, pk_offset: int = 0) -> SinkRecord:
    post = Post(platform="replay", post_id=post_id, text="bad service", topic="acme",
                created_at=T0 + timedelta(minutes=minute))
    sentiment = SentimentResult(label="negative", probabilities={"negative": 0.8, "neutral": 0.1, "positive": 0.1},
                                intensity=-2.0, modality_weights={"text": 1.0}, model_version="mv-test")
    return SinkRecord(post, sentiment=sentiment, source=("posts.raw", 0, pk_offset))


def _failures() -> float:
    return metrics.REGISTRY.get_sample_value("sentistream_window_recompute_failures_total") or 0.0


def _windows(db: Engine) -> list[tuple]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT topic, window_start, window_seconds, n_posts, n_negative FROM window_aggregates "
            "ORDER BY window_seconds, window_start"))]


def test_a_recompute_that_fails_twice_is_retried_counted_and_ends_right(failing_db: Engine) -> None:
    db = failing_db
    records = [_scored_record("a", 0.1, 0), _scored_record("b", 0.5, 1)]
    written = PostgresSink(db).write(records)
    _fail_window_writes(db, times=2)
    before = _failures()
    stage = WindowAlertStage(db, (60, 3600), detector=None, attempts=3, retry_wait_s=0.01)
    asyncio.run(stage(written, records))
    assert _failures() - before == 2
    assert _windows(db) == [("acme", T0, 60, 2, 2), ("acme", T0, 3600, 2, 2)]


def test_a_recompute_that_keeps_failing_raises_and_holds_the_batch(failing_db: Engine) -> None:
    db = failing_db
    records = [_scored_record("c", 1.0, 0)]
    written = PostgresSink(db).write(records)
    _fail_window_writes(db, times=1_000)
    before = _failures()
    stage = WindowAlertStage(db, (60,), detector=None, attempts=3, retry_wait_s=0.01)
    with pytest.raises(WindowRecomputeError, match="injected window failure") as raised:
        asyncio.run(stage(written, records))
    assert raised.value.hold_batch  # the pipeline must not bisect it into dead letters
    assert _failures() - before == 3
    assert _windows(db) == []


@pytest.fixture(scope="module")
def shipped_scorer() -> object:
    from model.scorer import Scorer

    return Scorer.from_checkpoint(device="cpu")


def test_a_batch_whose_windows_cannot_be_recomputed_is_held_not_dead_lettered(
        failing_db: Engine, shipped_scorer: object) -> None:
    from stream.pipeline import RawMessage
    from stream.settings import Settings
    from stream.worker import build_processor

    db = failing_db
    processor = build_processor(Settings(windows=("1m",), media_enabled=False),
                                db.url.render_as_string(hide_password=False), scorer=shipped_scorer)
    posts = [Post(platform="replay", post_id=f"h{i}", text=f"held post {i}", topic="acme",
                  created_at=T0 + timedelta(seconds=i)) for i in range(3)]
    messages = [RawMessage("posts.raw", 0, i, p.key.encode(), p.to_json()) for i, p in enumerate(posts)]
    _fail_window_writes(db, times=1_000)
    with pytest.raises(WindowRecomputeError):
        asyncio.run(processor.process(messages))
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM posts")).scalar_one() == 3  # the rows are durable
        assert conn.execute(text("SELECT count(*) FROM dead_letters")).scalar_one() == 0  # nothing bisected away
    assert _windows(db) == []
    # The database recovers; the redelivered batch recomputes the windows it could not before.
    with db.begin() as conn:
        conn.execute(text("DROP TRIGGER fail_windows ON window_aggregates"))
    report = asyncio.run(processor.process(messages))
    assert report.dead_letters == [] and report.scored == 3
    assert [(w[0], w[2], w[3]) for w in _windows(db)] == [("acme", 60, 3)]
