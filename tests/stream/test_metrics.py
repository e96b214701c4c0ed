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


def _all_up(health: HealthState) -> HealthState:
    for component in ("broker", "database", "model"):
        health.mark_up(component)
    return health


def test_a_partition_whose_committed_offset_stands_still_while_behind_is_stalled() -> None:
    now = [0.0]
    health = _all_up(HealthState(stall_after_s=45, clock=lambda: now[0]))
    p0, p1 = ("posts.raw", 0), ("posts.raw", 1)
    health.observe_partitions({p0: (100, 100), p1: (None, 0)})  # caught up; empty, nothing committed
    now[0] = 1000.0
    assert health.healthy and health.backlog == 0  # idle for long without lag is fine
    health.observe_partitions({p0: (100, 160), p1: (None, 7)})  # log ends move, commits do not
    assert sample("sentistream_consumer_lag", {"topic": "posts.raw", "partition": "0"}) == 60
    assert sample("sentistream_consumer_lag", {"topic": "posts.raw", "partition": "1"}) == 7
    now[0] += 30
    health.observe_partitions({p0: (130, 170), p1: (None, 7)})  # p0 commits: its clock restarts
    now[0] += 20
    assert health.stalled_partitions() == [p1] and not health.healthy
    snap = health.snapshot()
    assert snap["progress"]["stalled_partitions"] == ["posts.raw:1"]
    assert snap["progress"]["partitions"]["posts.raw:1"] == {
        "committed": None, "log_end": 7, "lag": 7, "stalled": True, "seconds_behind_without_commit": 50.0}
    assert snap["progress"]["backlog"] == 47 and snap["status"] == "degraded"
    now[0] += 30
    assert health.stalled_partitions() == [p0, p1]
    health.observe_partitions({p0: (170, 170)})  # p0 caught up; p1 revoked (another worker has it)
    assert health.stalled_partitions() == [] and health.healthy
    assert sample("sentistream_consumer_lag", {"topic": "posts.raw", "partition": "1"}) is None


def test_a_component_down_within_its_grace_stays_green_and_a_hang_counts_from_its_start() -> None:
    now = [0.0]
    health = _all_up(HealthState(clock=lambda: now[0], down_grace_s={"database": 20}))
    health.mark_down("database", "connection refused")
    now[0] += 15
    assert health.healthy and health.snapshot()["components"]["database"]["ok"] is True
    health.mark_down("database", "connection refused")  # repeated failures keep the first start
    now[0] += 6
    snap = health.snapshot()
    assert not health.healthy and snap["components"]["database"]["down_for_s"] == 21.0
    health.mark_up("database")
    assert health.healthy
    health.mark_down("database", "a database call has not answered for 25s", since=now[0] - 25)
    assert not health.healthy
    health.mark_up("database")
    health.mark_down("model", "scoring failed")  # no grace: red at once
    assert not health.healthy


def test_the_periodic_summary_reports_rates_dead_letters_backlog_and_median_batch_time() -> None:
    now = [0.0]
    summary = metrics.PeriodicSummary(clock=lambda: now[0])
    metrics.POSTS_IN.inc(600)
    metrics.POSTS_OUT.inc(540)
    metrics.DEAD_LETTERS.inc(3)
    for seconds in (0.1, 0.3, 0.2):
        summary.observe_batch(seconds)
    now[0] = 60.0
    line = summary.line(backlog=42, stalled=["posts.raw:2"])
    assert line == ("last 60s: 10.0 posts/s in, 9.0 posts/s stored, 3 dead letters, backlog 42, 3 batches, "
                    "p50 200 ms; STALLED partitions: posts.raw:2")
    now[0] = 120.0
    assert summary.line(backlog=0) == ("last 60s: 0.0 posts/s in, 0.0 posts/s stored, 0 dead letters, backlog 0, "
                                       "0 batches, p50 n/a")


def test_the_periodic_summary_counts_pictures_encoded_and_cache_hits_when_there_were_any() -> None:
    now = [0.0]
    summary = metrics.PeriodicSummary(clock=lambda: now[0])
    metrics.count_pictures({"memory_hit": 5, "memory_miss": 4, "encoded": 1})
    metrics.count_picture_cache("postgres", hit=3, miss=1)
    now[0] = 60.0
    assert summary.line(backlog=0).endswith("; pictures 1 encoded, 5 from memory, 3 from PostgreSQL")
    now[0] = 120.0
    assert "pictures" not in summary.line(backlog=0)
    assert metrics.sample("sentistream_picture_cache_total", {"level": "postgres", "result": "rejected"}) is not None
