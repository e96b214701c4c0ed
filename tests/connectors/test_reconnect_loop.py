"""The connector's reconnect loop on tenacity: per-kind schedules, the platform's reset, stop() mid-wait."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.backoff import exponential, linear, wait_before
from connectors.base import (
    AuthError,
    BackoffPolicy,
    BadPayload,
    Connector,
    Item,
    RateLimitedError,
    Retry,
    TransientError,
)
from connectors.post import Post
from connectors.topics import parse_topics

TOPICS = parse_topics({"topics": {"t": {"keywords": ["x"]}}})


class _NoOp:
    def publish(self, post: Post) -> None: ...

    def flush(self, timeout_s: float | None = None) -> None: ...

    def load(self, source: str) -> str | None:
        return None

    def save(self, source: str, cursor: str) -> None: ...


class _Failing(Connector):
    """A stream whose connections fail as scripted, then stops itself."""

    platform = "replay"

    def __init__(self, failures: list[BaseException], backoff: BackoffPolicy) -> None:
        super().__init__(_NoOp(), _NoOp(), TOPICS, backoff=backoff, source="scripted")
        self.failures = failures
        self.connects = 0

    def fetch(self, cursor: str | None) -> Iterator[Item | BadPayload | None]:
        self.connects += 1
        if not self.failures:
            self.stop()
            return
        raise self.failures.pop(0)
        yield  # a generator, like every fetch

    def to_post(self, payload: Any) -> Post | None:
        return None


class _RecordingStop(threading.Event):
    """The connector's stop event, remembering how long each backoff asked to wait."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0.0))
        return super().wait(timeout)


def _run_recording(connector: _Failing, caplog: pytest.LogCaptureFixture) -> list[tuple[str, float]]:
    """Run; returns (kind from the log line, seconds actually asked of the stop event) per backoff."""
    connector._stop = _RecordingStop()
    with caplog.at_level(logging.INFO, logger="connectors.base"):
        connector.run()
    kinds = [m.group(1) for r in caplog.records
             if (m := re.search(r"retrying in [\d.]+s \((\w+), attempt", r.getMessage()))]
    return list(zip(kinds, connector._stop.waits, strict=True))


def test_tenacity_schedules_match_the_documented_steps() -> None:
    assert [wait_before(linear(0.25, 0.25, 16.0), n) for n in (0, 1, 3, 100)] == [0.25, 0.5, 1.0, 16.0]
    assert [wait_before(exponential(5.0, 320.0), n) for n in (0, 1, 2, 6, 7, 10_000)] == [5, 10, 20, 320, 320, 320]
    assert wait_before(exponential(1.0, 100.0, factor=3.0), 2) == 9.0


def test_each_kind_counts_its_own_attempts(caplog: pytest.LogCaptureFixture) -> None:
    policy = BackoffPolicy(network=Retry(0.01, 0.05, mode="linear", step_s=0.01), http=Retry(0.02, 1.0),
                           rate_limit=Retry(0.03, 1.0), jitter=0.0, healthy_after_s=60)
    failures: list[BaseException] = [OSError("reset"), OSError("reset"), OSError("reset"),
                                     TransientError("HTTP 503", kind="http", status=503),
                                     RateLimitedError("429"), OSError("reset")]
    connector = _Failing(failures, policy)
    waits = _run_recording(connector, caplog)
    assert connector.stats.reconnects == {"network": 4, "http": 1, "rate_limit": 1}
    assert [kind for kind, _ in waits] == ["network"] * 3 + ["http", "rate_limit", "network"]
    assert [w for _, w in waits[:3]] == pytest.approx([0.01, 0.02, 0.03], abs=0.002)  # linear steps
    assert waits[3][1] == pytest.approx(0.02, abs=0.002)  # http's first step, not its fourth
    assert waits[4][1] == pytest.approx(0.03, abs=0.002)  # rate limit's first step
    assert waits[5][1] == pytest.approx(0.04, abs=0.002)  # network resumes at its fourth step


def test_the_platform_reset_wins_over_the_schedule(caplog: pytest.LogCaptureFixture) -> None:
    policy = BackoffPolicy(rate_limit=Retry(30.0, 60.0), jitter=0.0)
    connector = _Failing([RateLimitedError("429", retry_after_s=0.05)], policy)
    assert _run_recording(connector, caplog) == [("rate_limit", pytest.approx(0.05))]


def test_stop_cuts_a_long_backoff_short() -> None:
    policy = BackoffPolicy(http=Retry(300.0, 300.0), jitter=0.0)
    connector = _Failing([TransientError("HTTP 500", kind="http", status=500)] * 5, policy)
    runner = threading.Thread(target=connector.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 10
    while connector.stats.reconnects.get("http", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert connector.stats.reconnects.get("http") == 1  # now inside the 300 s wait
    started = time.monotonic()
    connector.stop()
    runner.join(10)
    assert not runner.is_alive() and time.monotonic() - started < 5
    assert connector.connects == 1  # no reconnect after stop()


def test_a_fatal_error_leaves_the_loop_as_itself() -> None:
    connector = _Failing([OSError("reset"), AuthError("bad token")], BackoffPolicy(max_wait_s=0.01))
    with pytest.raises(AuthError, match="bad token"):
        connector.run()
    assert connector.stats.reconnects == {"network": 1}
