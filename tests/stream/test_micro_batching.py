"""Adaptive micro-batching with the real worker: an idle worker takes a lone post at once, a burst still
fills batches to the size bound (stream/micro_batch.py).

``SENTISTREAM_BATCH_LATENCY_MS`` is set to minutes here: under the old fixed-wait batching a lone post
would sit that long, so a prompt row shows the worker no longer waits when nothing more is coming.
"""

from __future__ import annotations

import re

import pytest
import requests

from connectors.broker import BrokerTarget, ensure_topics
from connectors.post import Post
from connectors.publisher import KafkaPublisher
from connectors.replay import replay_posts
from tests.stream.conftest import make_posts, scalar, wait_for

pytestmark = pytest.mark.slow


def publish(broker: BrokerTarget, posts: list[Post]) -> None:
    ensure_topics(broker, ["posts.raw", "posts.deadletter", "sentiment.alerts"], partitions=4)
    with KafkaPublisher(broker, topic="posts.raw") as pub:
        assert replay_posts(posts, pub).sent == len(posts)


def metric(base: str, name: str) -> float:
    body = requests.get(f"{base}/metrics", timeout=5).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def wait_for_metric(base: str, name: str, at_least: float, on_fail) -> None:
    """The worker counts a batch after its rows are committed, its windows recomputed and its events
    acked, so a test that saw the rows must wait for the counters too (a liveness bound: the exact value
    is asserted after)."""
    seen: list[float] = []
    wait_for(lambda: seen.append(metric(base, name)) or seen[-1] >= at_least, 30, f"{name} >= {at_least}",
             lambda: f"last {seen[-1] if seen else None}\n{on_fail()}")


def health(base: str) -> dict:
    return requests.get(f"{base}/health", timeout=5).json()


def count_posts(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM posts"))


def test_idle_worker_stores_a_lone_post_without_waiting_for_the_batch_to_fill(
        broker, embedded_db, worker_factory) -> None:
    ensure_topics(broker, ["posts.raw", "posts.deadletter", "sentiment.alerts"], partitions=4)
    worker = worker_factory(broker, embedded_db, scoring="false", batch_size="1000",
                            batch_latency_ms=str(10 * 60 * 1000))
    base = f"http://127.0.0.1:{worker.env['SENTISTREAM_WEB_PORT']}"
    # First a warm-up post, so partitions are assigned and the worker is idle, waiting.
    publish(broker, make_posts(1, prefix="warm"))
    wait_for(lambda: count_posts(embedded_db) == 1, 120, "the warm-up post", worker.log)
    for i in range(3):  # one at a time: each is stored alone, long before a 10-minute latency bound
        publish(broker, make_posts(1, prefix=f"lone{i}-"))
        wait_for(lambda i=i: count_posts(embedded_db) == 2 + i, 30, f"lone post {i} stored", worker.log)
    wait_for_metric(base, "sentistream_batch_size_sum", 4, worker.log)
    assert metric(base, "sentistream_batch_size_count") == 4
    assert metric(base, "sentistream_batch_size_sum") == 4
    assert worker.stop() == 0, worker.log()


def test_a_burst_fills_batches_to_the_size_bound(broker, embedded_db, worker_factory) -> None:
    n, size = 600, 50
    publish(broker, make_posts(n, prefix="burst"))
    # Overload mode off: a worker slow to start on a loaded machine found the burst older than its 30 s
    # lag threshold and widened batches to 256 (4 batches); this test is about the normal size bound.
    worker = worker_factory(broker, embedded_db, scoring="false", batch_size=str(size), overload_lag_s="0")
    base = f"http://127.0.0.1:{worker.env['SENTISTREAM_WEB_PORT']}"
    wait_for(lambda: count_posts(embedded_db) == n, 120, f"all {n} posts", worker.log)
    wait_for_metric(base, "sentistream_batch_size_sum", n, worker.log)
    batches = metric(base, "sentistream_batch_size_count")
    assert metric(base, "sentistream_batch_size_sum") == n
    # 12 full batches would do; gathering what is already fetched may start with a partial batch or two
    # while the consumer's first fetches arrive, but a burst must not fall apart into small ones.
    assert n // size <= batches <= n // size + 3, f"{batches:.0f} batches for {n} posts at size {size}"
    assert health(base)["overload"]["active"] is False
    assert worker.stop() == 0, worker.log()


def _jpeg() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 160, 90)).save(out, "JPEG")
    return out.getvalue()


def test_a_backlog_older_than_the_overload_lag_is_scored_text_only_then_pictures_come_back(
        broker, embedded_db, worker_factory) -> None:
    import time
    from datetime import UTC, datetime
    from pathlib import Path

    from connectors.post import MediaRef
    from model.checkpoint import DEFAULT_CHECKPOINT
    from tests.stream.local_http import LocalServer, send

    picture = _jpeg()
    lag_s = 8.0
    with LocalServer({"/pic.jpg": lambda h, n: send(h, 200, picture, "image/jpeg")}) as pictures:
        backlog = [Post(platform="twitter", post_id=f"old{i}", text=f"an old post with a picture {i}",
                        created_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
                        media=(MediaRef(pictures.url(f"/pic.jpg?i={i}")),)) for i in range(10)]
        publish(broker, backlog)
        time.sleep(lag_s + 1)  # the backlog is now older than the overload threshold
        worker = worker_factory(broker, embedded_db, checkpoint=str(Path(DEFAULT_CHECKPOINT)),
                                media_allow_hosts=f"127.0.0.1:{pictures.port}", overload_lag_s=str(lag_s))
        base = f"http://127.0.0.1:{worker.env['SENTISTREAM_WEB_PORT']}"
        wait_for(lambda: int(scalar(embedded_db, "SELECT count(*) FROM sentiments")) == 10, 180,
                 "the backlog scored", worker.log)
        statuses = scalar(embedded_db, "SELECT json_agg(DISTINCT status) FROM post_media")
        assert statuses == ["skipped_overload"]
        assert scalar(embedded_db, "SELECT json_agg(DISTINCT modalities) FROM sentiments") == [["text"]]
        assert pictures.hits["/pic.jpg"] == 0, "pictures were fetched in overload mode"
        state = health(base)
        assert state["status"] == "ok" and state["overload"]["active"] is True, state  # degraded, not down
        assert state["overload"]["episodes"] == 1 and state["overload"]["lag_s"] > lag_s
        assert metric(base, "sentistream_overload") == 1
        wait_for_metric(base, 'sentistream_media_fetches_total{status="skipped_overload"}', 10, worker.log)
        assert metric(base, 'sentistream_media_fetches_total{status="skipped_overload"}') == 10

        # Caught up: a fresh post waits far less than a quarter of the threshold, so its picture is used.
        publish(broker, [Post(platform="twitter", post_id="fresh", text="a fresh post with a picture",
                              created_at=datetime(2026, 11, 25, 12, 1, tzinfo=UTC),
                              media=(MediaRef(pictures.url("/pic.jpg?i=fresh")),))])
        wait_for(lambda: int(scalar(embedded_db, "SELECT count(*) FROM sentiments")) == 11, 60,
                 "the fresh post scored", worker.log)
        assert scalar(embedded_db, "SELECT m.status FROM post_media m JOIN posts p ON p.id = m.post_pk "
                                   "WHERE p.post_id = 'fresh'") == "ok"
        assert scalar(embedded_db, "SELECT s.modalities FROM sentiments s JOIN posts p ON p.id = s.post_pk "
                                   "WHERE p.post_id = 'fresh'") == ["text", "image"]
        assert health(base)["overload"]["active"] is False and metric(base, "sentistream_overload") == 0
        assert worker.stop() == 0, worker.log()
