"""The Connector base: backoff schedules, de-dup window, rate budget, and the checkpoint order.

The checkpoint-order test records calls on a stand-in publisher (our own seam, not Kafka): what it checks
is the order of "flush" and "save cursor", which no broker can show.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from connectors.base import (
    BackoffPolicy,
    BadPayload,
    Connector,
    DedupWindow,
    Item,
    RateBudget,
    Retry,
    TransientError,
)
from connectors.cursor import CursorStoreError
from connectors.post import Post
from connectors.topics import parse_topics

TOPICS = parse_topics({"topics": {"t": {"keywords": ["x"]}}})


def test_schedules_follow_the_platform_guidance() -> None:
    policy = BackoffPolicy()
    assert [policy.network.delay(i) for i in (0, 1, 3, 100)] == [0.25, 0.5, 1.0, 16.0]  # linear, capped
    assert [policy.http.delay(i) for i in (0, 1, 2, 6, 7)] == [5, 10, 20, 320, 320]  # doubling, capped
    assert policy.rate_limit.delay(0) == 60
    for attempt in range(10):
        wait = policy.wait_s("http", attempt)
        assert policy.http.delay(attempt) * 0.75 <= wait <= policy.http.delay(attempt)  # jittered below
    assert BackoffPolicy(max_wait_s=0.5).wait_s("rate_limit", 3) <= 0.5
    assert Retry(1, 4, mode="linear", step_s=1).delay(10) == 4


def test_dedup_window_is_bounded_and_forgets_the_oldest() -> None:
    window = DedupWindow(capacity=3)
    assert [window.seen(k) for k in "abca"] == [False, False, False, True]
    window.seen("d")  # evicts b (a was refreshed)
    assert len(window) == 3
    assert window.seen("b") is False and window.seen("a") is True


def test_rate_budget_waits_for_the_reset_when_spent() -> None:
    now = [1000.0]
    budget = RateBudget(min_interval_s=1.0, clock=lambda: now[0])
    assert budget.seconds_until_allowed() == 0
    budget.mark_request()
    assert budget.seconds_until_allowed() == pytest.approx(1.0)
    budget.note(remaining=0, reset_at=1030.0)
    assert budget.seconds_until_allowed() == pytest.approx(30.0)
    now[0] = 1031.0
    assert budget.seconds_until_allowed() == 0


class _Journal:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.fail_saves = 0

    # publisher
    def publish(self, post: Post) -> None:
        self.events.append(f"publish {post.post_id}")

    def flush(self, timeout_s: float | None = None) -> None:
        self.events.append("flush")

    # cursor store
    def load(self, source: str) -> str | None:
        return None

    def save(self, source: str, cursor: str) -> None:
        if self.fail_saves:
            self.fail_saves -= 1
            raise CursorStoreError("database is restarting")
        self.events.append(f"save {cursor}")


class _Scripted(Connector):
    platform = "replay"
    polling = True

    def __init__(self, journal: _Journal, script: list[Any], **kw: Any) -> None:
        super().__init__(journal, journal, TOPICS, backoff=BackoffPolicy(max_wait_s=0.01), poll_interval_s=0.01, **kw)
        self.script = script
        self.prepares = 0

    def prepare(self) -> None:
        self.prepares += 1
        if self.prepares == 1:
            raise TransientError("rules endpoint 503", kind="http", status=503)

    def fetch(self, cursor: str | None) -> Iterator[Item | BadPayload | None]:
        if not self.script:
            self.stop()
            return
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step

    def to_post(self, payload: Any) -> Post | None:
        if payload == "skip":
            return None
        return Post(platform="replay", post_id=str(payload), text="x", created_at=datetime(2026, 1, 1, tzinfo=UTC))


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"source": "replay"}) or 0.0


def test_flush_comes_before_every_cursor_save_and_failures_are_retried() -> None:
    published_before = _metric("sentistream_connector_posts_published_total")
    bad_before = _metric("sentistream_connector_payloads_bad_total")
    journal = _Journal()
    journal.fail_saves = 1
    connector = _Scripted(journal, [
        [Item("1", "c1"), Item("1", "c1"), BadPayload("broken", "{"), Item("skip", "c2")],
        OSError("connection reset"),
        [None, Item("2", "c3")],
    ], checkpoint_interval_s=3600)
    stats = connector.run()

    assert connector.prepares == 2  # a transient error while preparing is retried, not fatal
    assert stats.published == 2 and stats.duplicates == 1 and stats.bad_payloads == 1 and stats.skipped == 1
    assert stats.reconnects == {"http": 1, "network": 1}
    saves = [i for i, e in enumerate(journal.events) if e.startswith("save")]
    assert [journal.events[i] for i in saves] == ["save c2", "save c3"]  # the failed save was retried later
    for i in saves:
        assert journal.events[i - 1] == "flush"  # flushed right before the cursor moved
    assert journal.events.index("publish 2") < saves[-1]
    assert _metric("sentistream_connector_posts_published_total") - published_before == 2
    assert _metric("sentistream_connector_payloads_bad_total") - bad_before == 1
