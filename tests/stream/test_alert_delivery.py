"""Webhook delivery of alerts: tenacity's retries keep the old contract, and each outcome is logged once."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from stream.alerts import AlertNotifier, SpikeAlert
from tests.stream.local_http import LocalServer, send

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def an_alert(topic: str = "acme") -> SpikeAlert:
    return SpikeAlert(topic=topic, window_start=T0 + timedelta(minutes=15), window_seconds=60,
                      model_version="mv-test", observed=0.7, expected=0.2, score=9.0, n_posts=100,
                      n_negative=70, evidence={})


def delivery_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "stream.alerts" and r.levelno >= logging.INFO]


def test_a_sent_alert_is_logged_once_at_info_with_its_key(caplog: pytest.LogCaptureFixture) -> None:
    alert = an_alert()
    routes = {"/hook": lambda h, n: send(h, 503 if n == 1 else 200, b"ok", "text/plain")}
    with LocalServer(routes) as server, caplog.at_level(logging.DEBUG, logger="stream.alerts"):
        status = asyncio.run(AlertNotifier(server.url("/hook"), backoff_s=0.01).notify(alert))
        assert status == "sent" and server.hits["/hook"] == 2
    (record,) = delivery_records(caplog)
    assert record.levelno == logging.INFO and alert.key in record.getMessage()
    assert "attempt 2" in record.getMessage()


def test_a_server_that_keeps_failing_is_tried_attempts_times_then_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    alert = an_alert()
    routes = {"/down": lambda h, n: send(h, 502, b"bad gateway", "text/plain")}
    with LocalServer(routes) as server, caplog.at_level(logging.DEBUG, logger="stream.alerts"):
        status = asyncio.run(AlertNotifier(server.url("/down"), attempts=3, backoff_s=0.01).notify(alert))
        assert server.hits["/down"] == 3
    assert status.startswith("failed: HTTP 502")
    (record,) = delivery_records(caplog)
    assert record.levelno == logging.WARNING and alert.key in record.getMessage()
    assert "3 attempt" in record.getMessage()


def test_an_unreachable_webhook_fails_without_raising() -> None:
    with LocalServer() as server:
        url = server.url("/x")
    status = asyncio.run(AlertNotifier(url, attempts=2, backoff_s=0.01, timeout_s=2).notify(an_alert()))
    assert status.startswith("failed: Client")  # aiohttp's connection error, named


def test_a_429_waits_what_retry_after_asks_capped() -> None:
    routes = {"/limited": lambda h, n: send(h, 429, b"slow down", "text/plain", headers={"Retry-After": "1"})
              if n == 1 else send(h, 200, b"ok", "text/plain")}
    with LocalServer(routes) as server:
        notifier = AlertNotifier(server.url("/limited"), backoff_s=0.01)
        started = time.monotonic()
        assert asyncio.run(notifier.notify(an_alert())) == "sent"
        waited = time.monotonic() - started
        assert server.hits["/limited"] == 2
    assert waited >= 0.9  # the schedule alone would have waited about 0.01-0.02 s

    routes = {"/greedy": lambda h, n: send(h, 429, b"", "text/plain", headers={"Retry-After": "3600"})
              if n == 1 else send(h, 200, b"ok", "text/plain")}
    with LocalServer(routes) as server:
        notifier = AlertNotifier(server.url("/greedy"), backoff_s=0.01, max_retry_after_s=0.2)
        assert asyncio.run(notifier.notify(an_alert())) == "sent" and server.hits["/greedy"] == 2
