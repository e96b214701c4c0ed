"""OverloadController decisions (stream/overload.py), with an injected clock: enter above the lag
threshold, stay inside the hysteresis band, leave once caught up; and the pipeline's picture skipping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from connectors.post import MediaRef, Post
from stream.overload import EXIT_FRACTION, SKIPPED_OVERLOAD, OverloadController
from stream.pipeline import BatchProcessor, FetchedMedia


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def controller(threshold: float = 10.0, clock: Clock | None = None, changes: list[bool] | None = None
               ) -> OverloadController:
    return OverloadController(threshold, 64, 256, clock=clock or Clock(),
                              on_change=(changes.append if changes is not None else lambda active: None))


def test_enters_above_threshold_widens_batches_and_leaves_only_when_caught_up() -> None:
    clock, changes = Clock(), []
    c = controller(10.0, clock, changes)
    assert c.batch_size == 64 and not c.observe_lag(9.9)
    assert c.observe_lag(10.5) and c.batch_size == 256 and changes == [True]
    # inside the band (2.5 s .. 10 s): still overloaded, no flapping
    for lag in (9.0, 5.0, 2.6, 11.0, 3.0):
        assert c.observe_lag(lag)
    assert changes == [True]
    clock.now += 42
    assert c.snapshot().since_s == 42 and c.snapshot().as_dict()["active"] is True
    assert not c.observe_lag(2.4) and c.batch_size == 64 and changes == [True, False]
    assert c.snapshot().episodes == 1 and c.snapshot().since_s is None


def test_lag_comes_from_the_oldest_broker_timestamp_and_unknown_timestamps_change_nothing() -> None:
    clock = Clock(5000.0)
    c = controller(10.0, clock)
    assert c.observe([4995.0, 4980.0, None]) and c.last_lag_s == 20.0
    assert c.observe([None, None]) and c.last_lag_s == 20.0  # no information: the mode stands
    assert c.observe([]) is True
    assert not c.observe([4999.0]) and c.last_lag_s == 1.0
    # a clock behind the broker's never gives a negative lag
    assert not c.observe([5100.0]) and c.last_lag_s == 0.0


def test_zero_threshold_never_enters_overload() -> None:
    c = controller(0.0)
    assert not c.observe_lag(1e9) and c.batch_size == 64 and c.last_lag_s == 1e9


@given(st.lists(st.floats(0, 1000, allow_nan=False), max_size=60), st.floats(0.1, 100))
def test_the_mode_follows_the_hysteresis_rule_for_any_lag_sequence(lags: list[float], threshold: float) -> None:
    c = controller(threshold)
    active = False
    for lag in lags:
        if lag > threshold:
            active = True
        elif lag < threshold * EXIT_FRACTION:
            active = False
        assert c.observe_lag(lag) is active
        assert c.batch_size == (256 if active else 64)


class Sink:
    def __init__(self) -> None:
        self.records: list = []

    def write(self, records, dead=()):  # noqa: ANN001, ANN201 - the PostgresSink.write shape
        from stream.sink import WriteResult

        self.records.extend(records)
        return WriteResult(len(records), 0, sum(len(r.media) for r in records), len(dead),
                           {r.post.key: i for i, r in enumerate(records)}, 0.0)


def test_pipeline_skips_pictures_in_overload_mode_and_records_why() -> None:
    fetched: list[list[str]] = []

    async def media(posts):  # noqa: ANN001, ANN202 - a MediaStage that records what it was asked
        fetched.append([u for p in posts for u in p.image_urls])
        return [FetchedMedia() for _ in posts]

    overloaded = [True]
    sink = Sink()
    processor = BatchProcessor(sink, media=media, media_paused=lambda: overloaded[0])  # type: ignore[arg-type]
    post = Post(platform="reddit", post_id="1", text="look", created_at=datetime(2026, 1, 1, tzinfo=UTC),
                media=(MediaRef("http://img.example/a.jpg"), MediaRef("http://img.example/b.mp4", kind="video")))
    from stream.pipeline import RawMessage

    message = RawMessage("posts.raw", 0, 0, b"reddit:1", post.to_json())
    asyncio.run(processor.process([message]))
    assert fetched == []  # nothing fetched
    assert [(m.url, m.status) for m in sink.records[0].media] == [
        ("http://img.example/a.jpg", SKIPPED_OVERLOAD), ("http://img.example/b.mp4", SKIPPED_OVERLOAD)]
    assert all(m.error and "overloaded" in m.error for m in sink.records[0].media)

    overloaded[0] = False
    asyncio.run(processor.process([message]))
    assert fetched == [["http://img.example/a.jpg"]]
