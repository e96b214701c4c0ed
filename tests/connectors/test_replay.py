"""JSONL replay into a real (embedded) Kafka topic: bad lines kept in a rejects file with line numbers,
the run goes on, pacing honoured."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.broker import BrokerTarget
from connectors.post import Post
from connectors.publisher import KafkaPublisher
from connectors.replay import (
    MAX_RECORD_BYTES,
    Pacer,
    RejectsFile,
    ReplayReport,
    parse_rate,
    read_posts,
    replay_file,
    replay_posts,
)
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


def test_bad_lines_go_to_the_rejects_file_with_line_numbers_and_the_run_goes_on(
        tmp_path: Path, broker_target: BrokerTarget, topic: str) -> None:
    path = tmp_path / "posts.jsonl"
    hostile = [
        b"[" * 100_000,  # nesting deep enough to break a recursive decoder
        _post_line(90, created_at=1e400).encode(),  # a number no timestamp can hold
        _post_line(91, text="x" * (MAX_RECORD_BYTES + 10)).encode(),  # over a Kafka record
        b'{"platform": "replay", "post_id": "\xff", "text": "bad utf8", "created_at": "2026-03-01T12:00:00Z"}',
    ]
    lines = [_post_line(1).encode(), *hostile, _post_line(2).encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "out" / "posts.rejects"
    rejects.parent.mkdir()

    with KafkaPublisher(broker_target, topic) as publisher:
        report = replay_file(path, publisher, rejects=rejects)

    assert report.sent == 2  # the post after the bad lines was sent too
    assert sorted(key for key, _ in read_topic(broker_target, topic, expect=2)) == ["replay:r1", "replay:r2"]
    assert report.rejects_path == rejects
    kept = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert [k["line"] for k in kept] == [2, 3, 4, 5] == [n for n, _ in report.invalid]
    assert all(k["reason"] for k in kept)
    assert "Kafka record limit" in kept[2]["reason"]
    assert kept[0]["raw"] == "[" * 100_000
    assert kept[3]["raw"].startswith('{"platform": "replay", "post_id": "\\xff"')  # bytes kept as escapes


def test_no_rejects_file_when_every_line_is_a_post_and_a_stale_one_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    rejects = tmp_path / "posts.jsonl.rejects"
    rejects.write_text('{"line": 9, "reason": "from an older run", "raw": "?"}\n')
    path.write_text(_post_line(1) + "\n")
    report = replay_file(path, _Collector(), rejects=rejects)
    assert report.sent == 1 and report.rejects_path is None
    assert not rejects.exists()  # an older run's rejects never pass for this run's


_line_bytes = st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" "))
_json_lines = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
).map(lambda v: json.dumps(v).encode())
_post_fields = st.fixed_dictionaries(
    {"platform": st.sampled_from(["replay", "reddit", "myspace", ""]), "post_id": st.text(max_size=8),
     "text": st.text(max_size=30), "created_at": st.sampled_from(["2026-03-01T12:00:00Z", "yesterday", ""])},
    optional={"media": st.lists(st.fixed_dictionaries({"url": st.text(max_size=20)}), max_size=2),
              "topic": st.text(max_size=8) | st.none(), "keywords": st.lists(st.text(max_size=5), max_size=3)},
).map(lambda d: json.dumps(d).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line_bytes | _json_lines | _post_fields, max_size=12))
def test_every_line_is_either_a_post_or_a_reject_with_its_number(tmp_path: Path, lines: list[bytes]) -> None:
    rejects = tmp_path / "rejects"
    report = ReplayReport()
    with RejectsFile(rejects) as reject:
        posts = list(read_posts(lines, report, reject))
    numbered = [n for n, line in enumerate(lines, start=1) if line.strip()]
    rejected = [n for n, _ in report.invalid]
    assert len(posts) + len(rejected) == len(numbered)
    assert set(rejected) <= set(numbered)
    written = [json.loads(x) for x in rejects.read_text(encoding="utf-8").splitlines()] if rejects.exists() else []
    assert [w["line"] for w in written] == rejected
    for w in written:
        original = lines[w["line"] - 1]
        assert w["raw"] == original.decode("utf-8", "backslashreplace")
