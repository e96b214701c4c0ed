"""SpikeDetector on synthetic feeds, the same detector over real PostgreSQL rows across a restart, and
the webhook notifier against a local server that fails twice before accepting."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from stream.alerts import (
    AlertNotifier,
    SpikeConfig,
    SpikeDetector,
    alert_message,
    detect,
    insert_alerts,
    observe_with_history,
    slack_payload,
    spike_examples,
)
from stream.db import AlertRow, PostRow, SentimentRow
from stream.windows import WindowAggregate, recompute_windows, windows_touched
from tests.stream.local_http import LocalServer, send
from tests.stream.pg_module import db_fixture, s4_engine_fixture  # noqa: F401 - fixtures

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
MV = "mv-test"


def _agg(topic: str, i: int, n: int, neg: int, seconds: int = 60) -> WindowAggregate:
    return WindowAggregate(topic, T0 + timedelta(seconds=i * seconds), seconds, MV, n, neg, n - neg, 0, 0.5,
                           neg / n if n else None)


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def _feed(topic: str, windows: int, seed: int, rate=lambda i: 0.2, volume=lambda i: 100,
          snapshots: int = 3) -> list[list[WindowAggregate]]:
    """Per window, growing snapshots of its aggregate, as successive batches would show them."""
    rng = random.Random(seed)
    out = []
    for i in range(windows):
        n = volume(i)
        labels = [rng.random() < rate(i) for _ in range(n)]
        cuts = [n * (k + 1) // snapshots for k in range(snapshots)]
        out.append([_agg(topic, i, c, sum(labels[:c])) for c in cuts if c])
    return out


def _run_live(detector: SpikeDetector, *feeds: list[list[WindowAggregate]]):
    """Interleave topics window by window, each snapshot a batch: what the worker does."""
    alerts = []
    for i in range(max(len(f) for f in feeds)):
        for snap in range(3):
            batch = [f[i][snap] for f in feeds if i < len(f) and snap < len(f[i])]
            alerts += detector.observe(batch)
    return alerts


def test_planted_burst_fires_exactly_one_alert_for_the_right_topic_and_window() -> None:
    steady = _feed("acme", 60, seed=1)
    burst = _feed("globex", 60, seed=2, rate=lambda i: 0.55 if 40 <= i <= 43 else 0.2)
    alerts = _run_live(SpikeDetector(SpikeConfig()), steady, burst)
    assert [(a.topic, a.window_start, a.window_seconds) for a in alerts] == [
        ("globex", T0 + timedelta(minutes=40), 60)]
    a = alerts[0]
    assert a.observed > 0.4 and 0.15 < a.expected < 0.25 and a.score >= 3.0 and a.n_posts >= 20
    assert a.evidence["baseline_windows"] >= 12 and a.evidence["z_binomial"] >= a.score


def test_steady_feeds_fire_nothing() -> None:
    for seed in range(5):
        rng = random.Random(100 + seed)
        wobbly = [0.2 + rng.uniform(-0.04, 0.04) for _ in range(300)]  # a topic whose share naturally swings
        feed = _feed(f"t{seed}", 300, seed=seed, rate=wobbly.__getitem__,
                     volume=lambda i: 40 + (i * 37) % 120)
        assert _run_live(SpikeDetector(SpikeConfig()), feed) == []


def test_three_posts_cannot_fire() -> None:
    base = [_agg("acme", i, 50, 10) for i in range(20)]
    assert detect(base + [_agg("acme", 20, 3, 3)]) == []
    assert detect(base + [_agg("acme", 20, 19, 19)]) == []  # under min_volume=20 too
    assert len(detect(base + [_agg("acme", 20, 20, 20)])) == 1  # the same share at volume fires


def test_no_alert_during_warm_up() -> None:
    feed = [_agg("acme", i, 100, 20) for i in range(5)] + [_agg("acme", 5, 100, 80)]
    assert detect(feed) == []
    # Window 4 is still open (one window of lateness) when window 5 arrives: 4 closed baseline windows.
    assert detect(feed, SpikeConfig(warmup_windows=5)) == []
    assert len(detect(feed, SpikeConfig(warmup_windows=4))) == 1


def test_one_alert_per_spike_then_rearm_and_cooldown() -> None:
    def feed(spikes: set[int]) -> list[WindowAggregate]:
        return [_agg("acme", i, 100, 70 if i in spikes else 20) for i in range(80)]

    long_spike = set(range(30, 40))
    assert [a.window_start for a in detect(feed(long_spike), SpikeConfig(cooldown_s=0))] == [
        T0 + timedelta(minutes=30)]
    two_spikes = {30, 31, 50}
    assert len(detect(feed(two_spikes), SpikeConfig(cooldown_s=0))) == 2  # re-armed in between
    assert len(detect(feed(two_spikes), SpikeConfig(cooldown_s=3600))) == 1  # 20 min apart: cooled down
    # A permanent level shift becomes the new baseline instead of silencing the topic for ever.
    shifted = [_agg("acme", i, 100, 20 if i < 30 else 50) for i in range(120)]
    detector = SpikeDetector(SpikeConfig(cooldown_s=0))
    assert len(detector.observe(shifted)) == 1
    assert detector.observe([_agg("acme", 120, 100, 90)]) != []  # re-armed at the new level


def test_windows_that_keep_filling_after_the_next_one_started_still_alert_once() -> None:
    """Batches from several partitions interleave: window i's last posts arrive after window i+1 began."""
    feed = _feed("globex", 60, seed=3, rate=lambda i: 0.5 if i == 40 else 0.2)
    detector = SpikeDetector(SpikeConfig(open_window_z_margin=10.0))  # decide on complete windows only
    alerts = []
    for i in range(61):
        if i < 60:
            alerts += detector.observe([feed[i][0]])  # partition A's batch: window i begins
        if i > 0:
            alerts += detector.observe([feed[i - 1][2]])  # partition B's batch: the rest of window i-1
    assert [(a.window_start, a.n_posts) for a in alerts] == [(T0 + timedelta(minutes=40), feed[40][2].n_posts)]


def test_a_post_from_the_future_does_not_close_the_real_windows() -> None:
    detector = SpikeDetector(SpikeConfig())
    now = T0 + timedelta(minutes=20, seconds=30)
    normal = [_agg("acme", i, 100, 20) for i in range(20)]
    assert detector.observe(normal, now=now) == []
    year_2030 = WindowAggregate("acme", datetime(2030, 1, 1, tzinfo=UTC), 60, MV, 1, 0, 1, 0, 0.5, 0.0)
    assert detector.observe([year_2030], now=now) == []
    assert len(detector.observe([_agg("acme", 20, 100, 70)], now=now)) == 1


# ---------------------------------------------------------------- the same, through PostgreSQL


def _posts_for_window(topic: str, i: int, n: int, rate: float, rng: random.Random) -> list[dict]:
    start = T0 + timedelta(minutes=i)
    return [{"post_id": f"{topic}-{i}-{j}", "topic": topic, "created_at": start + timedelta(seconds=j * 59 / n),
             "label": "negative" if rng.random() < rate else rng.choice(["neutral", "positive"])}
            for j in range(n)]


def _write_batch(conn, posts: list[dict]) -> None:
    rows = [{"platform": "replay", "post_id": p["post_id"], "text": f"text of {p['post_id']}",
             "created_at": p["created_at"], "topic": p["topic"], "ingested_at": p["created_at"]} for p in posts]
    conn.execute(pg_insert(PostRow).on_conflict_do_nothing(), rows)
    ids = dict(conn.execute(select(PostRow.post_id, PostRow.id).where(
        PostRow.post_id.in_([p["post_id"] for p in posts]))).all())
    conn.execute(pg_insert(SentimentRow).on_conflict_do_nothing(), [
        {"post_pk": ids[p["post_id"]], "model_version": MV, "label": p["label"],
         "p_negative": 0.9 if p["label"] == "negative" else 0.1, "p_neutral": 0.05, "p_positive": 0.05,
         "intensity": 0.5} for p in posts])


class _Post:
    def __init__(self, d: dict) -> None:
        self.topic, self.created_at = d["topic"], d["created_at"]


def _process(db: Engine, detector: SpikeDetector, posts: list[dict]) -> list:
    """What the worker does per batch: store, then recompute windows + detect + store alerts in one tx."""
    with db.begin() as conn:
        _write_batch(conn, posts)
    with db.begin() as conn:
        aggs = recompute_windows(conn, windows_touched([_Post(p) for p in posts], (60,)), MV)
        return insert_alerts(conn, observe_with_history(conn, detector, aggs))


def test_burst_through_postgres_survives_restart_and_replay_without_duplicates(db: Engine) -> None:
    rng = random.Random(7)
    batches = []
    for i in range(30):
        for topic, rate in (("acme", 0.2), ("globex", 0.6 if i in (22, 23) else 0.2)):
            posts = _posts_for_window(topic, i, 40, rate, rng)
            batches += [posts[:20], posts[20:]]  # two batches per window: the window is seen open, then full
    config = SpikeConfig(min_volume=20, warmup_windows=12)
    first = SpikeDetector(config)
    new_alerts = []
    restart_at = 18 * 4  # before the burst: the baseline must come back from PostgreSQL
    for b in batches[:restart_at]:
        new_alerts += _process(db, first, b)
    restarted = SpikeDetector(config)
    for b in batches[restart_at:]:
        new_alerts += _process(db, restarted, b)
    assert [(a.topic, a.window_start) for a in new_alerts] == [("globex", T0 + timedelta(minutes=22))]
    # A crash after the burst: a fresh worker replays the last ten batches (at-least-once delivery).
    replayer = SpikeDetector(config)
    replayed = [a for b in batches[-10 - 4 * 7:] for a in _process(db, replayer, b)]
    assert replayed == []
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AlertRow)).scalar_one() == 1
        row = conn.execute(select(AlertRow.__table__)).one()
        assert (row.topic, row.window_seconds, row.model_version) == ("globex", 60, MV)
        assert row.evidence["n_posts"] in (20, 40) and row.observed == pytest.approx(row.evidence["observed"])
        examples = spike_examples(conn, new_alerts[0], limit=3)
    assert len(examples) == 3 and all(e["post_id"].startswith("globex-22-") for e in examples)


def test_an_alert_rolled_back_with_its_transaction_fires_again_after_forget(db: Engine) -> None:
    rng = random.Random(11)
    config = SpikeConfig(min_volume=20, warmup_windows=12)
    detector = SpikeDetector(config)
    for i in range(16):
        _process(db, detector, _posts_for_window("acme", i, 40, 0.2, rng))
    burst = _posts_for_window("acme", 16, 40, 0.7, rng)
    with db.begin() as conn:
        _write_batch(conn, burst)
    with pytest.raises(RuntimeError), db.begin() as conn:
        aggs = recompute_windows(conn, windows_touched([_Post(p) for p in burst], (60,)), MV)
        assert len(insert_alerts(conn, observe_with_history(conn, detector, aggs))) == 1
        raise RuntimeError("the database went away before COMMIT")
    # Without forget() the detector would stay disarmed for an alert that does not exist.
    detector.forget()
    with db.begin() as conn:
        aggs = recompute_windows(conn, windows_touched([_Post(p) for p in burst], (60,)), MV)
        again = insert_alerts(conn, observe_with_history(conn, detector, aggs))
    assert [(a.topic, a.window_start) for a in again] == [("acme", T0 + timedelta(minutes=16))]


# ---------------------------------------------------------------- delivery


def _an_alert():
    feed = [_agg("acme", i, 100, 20) for i in range(15)] + [_agg("acme", 15, 100, 70)]
    (alert,) = detect(feed)
    return alert


def test_kafka_message_carries_the_alert_and_a_stable_key() -> None:
    alert = _an_alert()
    key, value = alert_message(alert)
    assert key == f"acme:negative_spike:{(T0 + timedelta(minutes=15)).isoformat()}:60".encode()
    body = json.loads(value)
    assert body["topic"] == "acme" and body["n_negative"] == 70 and body["window_seconds"] == 60
    assert body["evidence"]["z_binomial"] == pytest.approx(alert.evidence["z_binomial"])
    assert alert_message(alert) == (key, value)  # deterministic


def test_webhook_is_retried_until_the_server_accepts() -> None:
    alert = _an_alert()
    routes = {
        "/hook": lambda h, n: send(h, 500 if n == 1 else 503 if n == 2 else 200, b"ok", "text/plain"),
        "/bad": lambda h, n: send(h, 400, b"invalid_payload", "text/plain"),
    }
    with LocalServer(routes) as server:
        sent = asyncio.run(AlertNotifier(server.url("/hook"), backoff_s=0.01).notify(alert))
        bad = asyncio.run(AlertNotifier(server.url("/bad"), backoff_s=0.01).notify(alert))
        disabled = asyncio.run(AlertNotifier(None).notify(alert))
        assert sent == "sent" and server.hits["/hook"] == 3
        assert bad.startswith("failed: HTTP 400") and server.hits["/bad"] == 1  # 4xx: not retried
        assert disabled == "disabled"
        payload = server.json_bodies()[2]
    assert payload == slack_payload(alert)
    assert "acme" in payload["text"] and payload["blocks"][0]["type"] == "header"
