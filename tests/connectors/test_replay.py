"""JSONL replay into a real (embedded) Kafka topic: bad lines skipped with line numbers, pacing honoured."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.broker import BrokerTarget
from connectors.post import Post
from connectors.publisher import KafkaPublisher
from connectors.replay import Pacer, parse_rate, replay_file, replay_posts
from tests.connectors.conftest import read_topic

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _post_line(i: int, *, seconds: float = 0.0, **extra: object) -> str:
    data = {"platform": "replay", "post_id": f"r{i}", "text": f"post number {i}",
            "created_at": (T0 + timedelta(seconds=seconds)).isoformat(), "topic": "demo"}
    data.update(extra)
    return json.dumps(data)


class _Collector:
    """Records when each post is published; stands in for Kafka only in the pacing tests."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.times: list[float] = []
        self.flushes = 0

    def publish(self, post: Post) -> None:
        self.posts.append(post)
        self.times.append(time.monotonic())

    def flush(self, timeout_s: float | None = None) -> None:
        self.flushes += 1


def test_replay_publishes_valid_lines_and_reports_invalid_ones(
        tmp_path: Path, broker_target: BrokerTarget, topic: str) -> None:
    path = tmp_path / "posts.jsonl"
    lines = [
        _post_line(1, media=[{"url": "http://127.0.0.1/a.jpg", "kind": "image"}]).encode(),
        b"{not json",
        _post_line(2).encode(),
        b"",
        json.dumps({"platform": "myspace", "post_id": "x", "text": "t", "created_at": "2026-01-01T00:00:00Z"}).encode(),
        _post_line(3, unknown_field="kept out").encode(),
        b'{"platform": "replay", "post_id": "\xff\xfe", "text": "bad utf8"}',
        json.dumps({"platform": "replay", "post_id": "r4", "text": "no timestamp"}).encode(),
        _post_line(5, topic=None).encode(),
        _post_line(6)[:25].encode(),  # truncated line
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")

    with KafkaPublisher(broker_target, topic) as publisher:
        report = replay_file(path, publisher)

    assert report.sent == 4
    assert [n for n, _ in report.invalid] == [2, 5, 7, 8, 10]
    reasons = dict(report.invalid)
    assert "not valid JSON" in reasons[2]
    assert "platform" in reasons[5]
    assert "created_at" in reasons[8]

    records = read_topic(broker_target, topic, expect=4)
    assert sorted(key for key, _ in records) == ["replay:r1", "replay:r2", "replay:r3", "replay:r5"]
    by_id = {post.post_id: post for _, post in records}
    assert by_id["r1"].media[0].url == "http://127.0.0.1/a.jpg"
    assert by_id["r1"].topic == "demo"
    assert by_id["r5"].topic == "unassigned"


def test_topic_override_is_applied_to_every_post(tmp_path: Path, broker_target: BrokerTarget, topic: str) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(_post_line(i) for i in range(3)) + "\n")
    with KafkaPublisher(broker_target, topic) as publisher:
        report = replay_file(path, publisher, topic="load-test")
    assert report.sent == 3
    assert {post.topic for _, post in read_topic(broker_target, topic, expect=3)} == {"load-test"}


def test_rate_limits_throughput() -> None:
    posts = [Post.from_json(_post_line(i)) for i in range(21)]
    sink = _Collector()
    started = time.monotonic()
    replay_posts(posts, sink, rate="100/s")
    elapsed = time.monotonic() - started
    assert len(sink.posts) == 21
    assert elapsed >= 0.19  # 20 intervals of 10 ms
    assert elapsed < 1.5
    assert sink.flushes == 1


def test_speedup_keeps_original_gaps_divided() -> None:
    # Gaps of 10 s, 0 s, 20 s, and one timestamp going backwards (must not wait).
    offsets = [0, 10, 10, 30, 5]
    posts = [Post.from_json(_post_line(i, seconds=s)) for i, s in enumerate(offsets)]
    sink = _Collector()
    replay_posts(posts, sink, speedup=100)
    t = [x - sink.times[0] for x in sink.times]
    assert t[1] == pytest.approx(0.1, abs=0.05)
    assert t[2] == pytest.approx(0.1, abs=0.05)
    assert t[3] == pytest.approx(0.3, abs=0.05)
    assert t[4] - t[3] < 0.05


def test_pacer_with_injected_clock_combines_rate_and_speedup() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(rate=1.0, speedup=10.0, clock=lambda: now[0], sleep=sleep)
    for seconds in (0, 100, 101):  # speedup gives 10 s then 0.1 s; the rate keeps 1 s minimum
        pacer.wait(Post.from_json(_post_line(0, seconds=seconds)))
    assert slept == pytest.approx([10.0, 1.0])


@pytest.mark.parametrize("spec,expected", [("100/s", 100.0), ("600/m", 10.0), ("25", 25.0),
                                           ("7200/h", 2.0), (None, None)])
def test_parse_rate(spec: str | None, expected: float | None) -> None:
    assert parse_rate(spec) == expected


@pytest.mark.parametrize("spec", ["fast", "0/s", "-3", "10/day"])
def test_parse_rate_rejects_nonsense(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(spec)
