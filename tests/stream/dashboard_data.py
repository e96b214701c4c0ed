"""Rows for the dashboard tests, written through the product's PostgresSink, and the dashboard served
from a background thread on a free port (the same aiohttp app ``sentistream dashboard`` runs).

The expected numbers are counted here from what was written, never read back from the code under test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import requests
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.engine import Engine

from connectors.post import MediaRef, Post
from stream.dashboard.read_model import DashboardReader
from stream.dashboard.server import create_app
from stream.embedded import free_port
from stream.sink import MediaOutcome, PostgresSink, SinkRecord
from tests.stream.verdicts import Verdict as BaseVerdict

HOSTILE_TEXT = '<img src=x onerror="window.__pwned=1"><script id="evil">window.__pwned=2</script> refund now'


@dataclass
class Verdict(BaseVerdict):
    """A text+picture verdict: the dashboard shows which modality counted."""

    modality_weights: dict[str, float] = field(default_factory=lambda: {"text": 0.7, "image": 0.3})


@dataclass
class Seeded:
    """What was written: hour bucket -> (posts, scored, negative) per topic, and the alert's posts."""

    hours: dict[str, dict[datetime, tuple[int, int, int]]]
    alert_id: int
    incident_post_ids: set[str]
    window_start: datetime
    outside_post_ids: set[str]


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def seed(engine: Engine, now: datetime | None = None) -> Seeded:
    """Two topics over the last hours, one hour left empty, and one alert incident on ``skyways``.

    Posts sit 1-5 hours back, so a 6-hour span holds them all even if the hour turns during a test.
    """
    now = now or datetime.now(UTC)
    base = hour_of(now) - timedelta(hours=4)  # buckets base, base+1h (empty for acme), base+2h, base+3h
    sink = PostgresSink(engine)
    records: list[SinkRecord] = []
    counts: dict[str, Counter[tuple[datetime, str]]] = {"acme-phone": Counter(), "skyways": Counter()}

    def add(topic: str, pid: str, at: datetime, label: str | None, **kw: object) -> None:
        post = Post(platform="mastodon", post_id=pid, text=kw.pop("body", f"post {pid} about {topic}"),
                    topic=topic, created_at=at, url=kw.pop("url", f"https://social.example/@a/{pid}"), **kw)
        media = [MediaOutcome(m.url, "image", "ok", width=4, height=4) for m in post.media]
        records.append(SinkRecord(post, media=media, modalities=("text", "image") if media else ("text",),
                                  sentiment=Verdict(label, -1.5 if label == "negative" else 0.5)
                                  if label else None,
                                  unscored_reason=None if label else "language de not scored for this topic"))
        bucket = hour_of(at)
        counts[topic][(bucket, "posts")] += 1
        if label:
            counts[topic][(bucket, "scored")] += 1
            counts[topic][(bucket, "negative")] += label == "negative"

    # acme-phone: a thick bucket (30 posts, 6 negative), nothing the next hour, then a thin one (3 posts).
    for i in range(30):
        add("acme-phone", f"a{i}", base + timedelta(minutes=i), "negative" if i % 5 == 0 else "positive")
    for i in range(3):
        add("acme-phone", f"b{i}", base + timedelta(hours=2, minutes=10 + i), "negative" if i == 0 else "neutral")
    add("acme-phone", "c0", base + timedelta(hours=2, minutes=20), None, lang="de")  # counts in volume only
    # skyways: a calm hour, then an outage burst in one 5-minute window the alert points at.
    for i in range(12):
        add("skyways", f"s{i}", base + timedelta(minutes=5 * i), "neutral" if i % 3 else "negative")
    window_start = base + timedelta(hours=3, minutes=10)
    incident_ids = set()
    for i in range(8):
        body = HOSTILE_TEXT if i == 0 else f"check-in down again #{i}"
        media = (MediaRef(f"https://img.example/{i}.jpg"),) if i == 1 else ()
        add("skyways", f"x{i}", window_start + timedelta(seconds=30 * i), "negative" if i < 7 else "neutral",
            body=body, media=media)
        incident_ids.add(f"x{i}")
    add("skyways", "late", window_start + timedelta(minutes=30), "positive")
    sink.write(records)

    hours = {topic: {} for topic in counts}
    for topic, c in counts.items():
        for bucket in {b for b, _ in c}:
            hours[topic][bucket] = (c[(bucket, "posts")], c[(bucket, "scored")], c[(bucket, "negative")])
    alert_id = insert_alert(engine, "skyways", window_start, 300, n_posts=8, n_negative=7)
    return Seeded(hours=hours, alert_id=alert_id, incident_post_ids=incident_ids, window_start=window_start,
                  outside_post_ids={"late", "s0"})


def insert_alert(engine: Engine, topic: str, window_start: datetime, seconds: int, *, n_posts: int,
                 n_negative: int) -> int:
    """An incident and its 'opened' event, as the detector stores them (migration 0004's columns)."""
    evidence = {"window_seconds": seconds, "z_binomial": 5.2, "z_ewma": 4.8, "lift": 0.6, "p_value": 1e-6,
                "baseline_windows": 12, "note_from_a_newer_detector": {"nested": [1, 2]},
                "explanation": {"terms": [{"term": "check-in", "z": 4.1, "incident_count": 7, "baseline_count": 0}],
                                "hashtags": [{"term": "#skywaysdown", "z": 2.5, "incident_count": 3,
                                              "baseline_count": 0}]}}
    observed = n_negative / n_posts
    with engine.begin() as conn:
        incident_id = conn.execute(text("""
            INSERT INTO alert_incidents (topic, kind, model_version, status, window_seconds, started_at,
                                         last_window_start, observed, expected, score, n_posts, n_negative, evidence)
            VALUES (:topic, 'negative_spike', 'm1', 'open', :seconds, :start, :start, :observed, 0.25, 4.8,
                    :n_posts, :n_negative, CAST(:evidence AS jsonb)) RETURNING id"""),
            {"topic": topic, "seconds": seconds, "start": window_start, "observed": observed,
             "n_posts": n_posts, "n_negative": n_negative, "evidence": json.dumps(evidence)}).scalar_one()
        return conn.execute(text("""
            INSERT INTO alerts (topic, kind, window_start, window_seconds, model_version, observed, expected,
                                score, n_posts, n_negative, evidence, incident_id, event)
            VALUES (:topic, 'negative_spike', :start, :seconds, 'm1', :observed, 0.25, 4.8, :n_posts,
                    :n_negative, CAST(:evidence AS jsonb), :incident, 'opened') RETURNING id"""),
            {"topic": topic, "seconds": seconds, "start": window_start, "observed": observed,
             "n_posts": n_posts, "n_negative": n_negative, "evidence": json.dumps(evidence),
             "incident": incident_id}).scalar_one()


@contextmanager
def served(reader: DashboardReader, refresh_s: float = 2.0) -> Iterator[str]:
    """The dashboard app on a free loopback port in a background thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(reader, refresh_s), access_log=None)
    port = free_port()
    ready = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="dashboard-test-server", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise failure[0]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def first_answer(process: subprocess.Popen[str], url: str, timeout_s: float = 120.0) -> requests.Response:
    """GET ``url`` as soon as the ``sentistream dashboard`` child listens; its stderr if it exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return requests.get(url, timeout=10)
        except requests.ConnectionError:
            assert process.poll() is None, process.stderr.read() if process.stderr else "dashboard exited"
            assert time.monotonic() < deadline, "the dashboard did not start listening"
            time.sleep(0.3)
