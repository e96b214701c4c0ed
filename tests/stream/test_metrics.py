"""Metrics registry values and the /health state, including a consumer that stalls with a backlog."""

from __future__ import annotations

from stream import metrics
from stream.metrics import HealthState, sample


def _delta(name: str, labels: dict[str, str] | None, action) -> float:
    before = sample(name, labels) or 0.0
    action()
    return (sample(name, labels) or 0.0) - before


def test_counters_histograms_and_gauges_record_what_they_are_told() -> None:
    assert _delta("sentistream_posts_in_total", None, lambda: metrics.POSTS_IN.inc(64)) == 64
    assert _delta("sentistream_batch_size_count", None,
                  lambda: metrics.observe_batch(64, {"total": 0.3, "score": 0.2})) == 1
    assert _delta("sentistream_batch_seconds_sum", {"stage": "score"},
                  lambda: metrics.observe_batch(8, {"score": 0.25})) == 0.25
    assert _delta("sentistream_media_fetches_total", {"status": "blocked"},
                  lambda: metrics.count_media(["ok", "blocked", "blocked"])) == 2
    metrics.set_consumer_lag({("posts.raw", 0): 12, ("posts.raw", 1): -3})
    assert sample("sentistream_consumer_lag", {"topic": "posts.raw", "partition": "0"}) == 12
    assert sample("sentistream_consumer_lag", {"topic": "posts.raw", "partition": "1"}) == 0
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    text = body.decode()
    for name in ("sentistream_posts_out_total", "sentistream_dead_letters_total", "sentistream_alerts_total",
                 "sentistream_scorer_up", 'sentistream_media_fetches_total{status="timeout"}'):
        assert name in text


def test_health_reports_each_component_and_its_last_error() -> None:
    health = HealthState()
    assert not health.healthy and health.snapshot()["status"] == "degraded"
    for component in ("broker", "database", "model"):
        health.mark_up(component)
    assert health.healthy and health.snapshot()["status"] == "ok"
    assert sample("sentistream_scorer_up") == 1
    health.mark_down("database", ConnectionRefusedError("connection refused on 127.0.0.1:5432"))
    snap = health.snapshot()
    assert snap["status"] == "degraded"
    assert snap["components"]["database"]["up"] is False
    assert "ConnectionRefusedError" in snap["components"]["database"]["last_error"]
    assert sample("sentistream_component_up", {"component": "database"}) == 0
    health.mark_up("database")  # recovery keeps the last error for the operator
    assert health.healthy and "refused" in health.snapshot()["components"]["database"]["last_error"]
    health.mark_down("model", "checkpoint not found")
    assert sample("sentistream_scorer_up") == 0


def test_a_consumer_with_backlog_and_no_progress_is_unhealthy() -> None:
    now = [1000.0]
    health = HealthState(stall_after_s=60, clock=lambda: now[0])
    for component in ("broker", "database", "model"):
        health.mark_up(component)
    health.record_progress(backlog=500)
    now[0] += 30
    assert health.healthy
    now[0] += 31
    assert not health.healthy and health.snapshot()["progress"]["stalled"] is True
    health.record_progress(backlog=400)
    assert health.healthy
    health.record_progress(backlog=0)
    now[0] += 3600  # idle without backlog is fine
    assert health.healthy
