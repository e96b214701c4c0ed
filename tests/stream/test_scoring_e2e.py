"""Sentiment in the stream, through a real `sentistream worker` with the shipped model checkpoint.

Media comes from local HTTP servers; the broker is the embedded Tansu and the database the embedded
PostgreSQL.  A second local server plays the part of an internal address the worker must never reach:
it is on loopback but NOT on the allow-list, and the test asserts it received no request at all.
"""

from __future__ import annotations

import io
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from connectors.broker import BrokerTarget, ensure_topics
from connectors.post import MediaRef, Post
from connectors.publisher import KafkaPublisher
from connectors.replay import replay_posts
from model.checkpoint import DEFAULT_CHECKPOINT
from tests.stream.conftest import make_posts, scalar, wait_for
from tests.stream.local_http import LocalServer, send

pytestmark = pytest.mark.slow


def _jpeg(size: tuple[int, int] = (96, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, "JPEG")
    return out.getvalue()


def _bomb_png() -> bytes:
    """A tiny PNG whose header declares 40000 x 40000 pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def media_servers() -> Iterator[tuple[LocalServer, LocalServer]]:
    good = _jpeg()
    routes = {
        "/good.jpg": lambda h, n: send(h, 200, good, "image/jpeg"),
        "/missing.jpg": lambda h, n: send(h, 404, b"nope", "text/plain"),
        "/huge.jpg": lambda h, n: send(h, 200, b"\xff\xd8" + b"0" * (3 * 1024 * 1024), "image/jpeg"),
        "/page.jpg": lambda h, n: send(h, 200, b"<html>not an image</html>", "image/jpeg"),
        "/bomb.png": lambda h, n: send(h, 200, _bomb_png(), "image/png"),
    }
    internal_routes = {"/secret.jpg": lambda h, n: send(h, 200, good, "image/jpeg")}
    with LocalServer(routes) as public, LocalServer(internal_routes) as internal:
        yield public, internal


@pytest.fixture
def checkpoint() -> Path:
    path = Path(os.environ.get("SENTISTREAM_TEST_CHECKPOINT", DEFAULT_CHECKPOINT))
    assert path.exists(), f"the checkpoint {path} is missing"
    return path


def publish(broker: BrokerTarget, posts: list[Post]) -> None:
    ensure_topics(broker, ["posts.raw", "posts.deadletter", "sentiment.alerts"], partitions=4)
    with KafkaPublisher(broker, topic="posts.raw") as pub:
        assert replay_posts(posts, pub).sent == len(posts)


def test_posts_with_and_without_images_are_all_scored_and_media_outcomes_recorded(
        broker, embedded_db, worker_factory, media_servers, checkpoint) -> None:
    public, internal = media_servers
    urls = {
        "ok": public.url("/good.jpg"),
        "http_error": public.url("/missing.jpg"),
        "too_large": public.url("/huge.jpg"),
        "bad_type": public.url("/page.jpg"),
        "bomb": public.url("/bomb.png"),
        "blocked": internal.url("/secret.jpg"),
        "blocked_name": f"http://localhost:{internal.port}/secret.jpg",
        "blocked_scheme": "file:///etc/passwd",
    }
    posts = make_posts(6, topic="plain", prefix="text")
    for i, (case, url) in enumerate(urls.items()):
        posts.append(Post(platform="twitter", post_id=f"media-{case}", text=f"look at this picture {i}",
                          created_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC), topic="pics",
                          media=(MediaRef(url),)))
    publish(broker, posts)

    # Overload mode off: the posts wait in Kafka while the worker loads its model, which on a loaded machine
    # can pass the 30 s lag threshold (50 s seen), and then every picture is skipped (skipped_overload).
    worker = worker_factory(broker, embedded_db, checkpoint=str(checkpoint), media_max_bytes=str(1024 * 1024),
                            media_allow_hosts=f"127.0.0.1:{public.port}", overload_lag_s="0")
    wait_for(lambda: scalar(embedded_db, "SELECT count(*) FROM sentiments") == len(posts), 120,
             "every post scored", worker.log)

    statuses = dict(scalar(embedded_db, "SELECT json_object_agg(p.post_id, m.status) FROM post_media m "
                                        "JOIN posts p ON p.id = m.post_pk").items())
    assert statuses == {
        "media-ok": "ok", "media-http_error": "http_error", "media-too_large": "too_large",
        "media-bad_type": "bad_type", "media-bomb": "too_large", "media-blocked": "blocked", "media-blocked_name": "blocked",
        "media-blocked_scheme": "blocked",
    }
    assert internal.hits["/secret.jpg"] == 0, "the worker reached an address it must refuse"
    # Only the good picture is used by the model; every other post is scored on its text.
    modalities = dict(scalar(embedded_db, "SELECT json_object_agg(p.post_id, s.modalities) FROM sentiments s "
                                          "JOIN posts p ON p.id = s.post_pk").items())
    assert modalities["media-ok"] == ["text", "image"]
    assert all(v == ["text"] for k, v in modalities.items() if k != "media-ok")
    ok_row = scalar(embedded_db, "SELECT json_build_object('w', width, 'h', height, 'sha', sha256) "
                                 "FROM post_media WHERE status = 'ok'")
    assert ok_row["w"] == 96 and ok_row["h"] == 64 and len(ok_row["sha"]) == 64
    assert worker.stop() == 0, worker.log()


def test_lone_post_is_scored_by_the_latency_bound_and_full_batches_by_the_size_bound(
        broker, embedded_db, worker_factory, checkpoint) -> None:
    # Size bound 1000, latency bound 0.3 s: only the latency bound can flush a lone post.
    worker = worker_factory(broker, embedded_db, name="lat", checkpoint=str(checkpoint), batch_size="1000",
                            batch_latency_ms="300", media_enabled="false")
    publish(broker, make_posts(1, topic="lone", prefix="lone"))
    wait_for(lambda: scalar(embedded_db, "SELECT count(*) FROM sentiments") == 1, 90,
             "the lone post to be scored", worker.log)
    assert worker.stop() == 0, worker.log()


def test_size_bound_flushes_full_batches_before_the_latency_bound(
        broker, embedded_db, worker_factory, checkpoint) -> None:
    # Latency bound 10 minutes, size bound 40: a backlog of 100 is written 40, 40, then the 20 left.
    # Overload mode off: a worker slow to start on a loaded machine found the backlog older than its
    # 30 s lag threshold and widened batches to 256 ([60, 40]); this test is about the normal size bound.
    publish(broker, make_posts(100, topic="size", prefix="size"))
    worker = worker_factory(broker, embedded_db, name="size", checkpoint=str(checkpoint), batch_size="40",
                            batch_latency_ms="600000", media_enabled="false", overload_lag_s="0")
    wait_for(lambda: int(scalar(embedded_db, "SELECT count(*) FROM posts")) == 100, 120, "the 100 posts",
             worker.log)
    # Each batch is one transaction: its rows share an xmin.  (Sampling the row count instead missed a
    # batch whenever two landed between two samples on a loaded machine: [0, 40, 100].)
    sizes = scalar(embedded_db, "SELECT json_agg(n ORDER BY n DESC) FROM "
                                "(SELECT count(*) AS n FROM posts GROUP BY xmin::text) b")
    assert sizes == [40, 40, 20], f"posts were written in batches of {sizes}"
    worker.kill()


def _aggregates(url: str) -> list:
    return scalar(url, "SELECT json_agg(json_build_array(topic, window_start, window_seconds, model_version, "
                       "n_posts, n_negative, n_neutral, n_positive, round(mean_intensity::numeric, 6)) "
                       "ORDER BY topic, window_seconds, window_start) FROM window_aggregates")


def test_sigkill_mid_stream_leaves_one_sentiment_per_post_and_exact_aggregates(
        broker, embedded_db, worker_factory, checkpoint) -> None:
    n = 600
    start = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    posts = [Post(platform="reddit", post_id=f"k{i}", topic=("alpha", "beta")[i % 2],
                  text=("I love it, brilliant!", "This is awful and broken.", "It arrived on Tuesday.")[i % 3],
                  created_at=start + timedelta(seconds=7 * i)) for i in range(n)]
    publish(broker, posts)
    first = worker_factory(broker, embedded_db, name="k1", checkpoint=str(checkpoint), batch_size="32",
                           media_enabled="false")
    wait_for(lambda: int(scalar(embedded_db, "SELECT count(*) FROM sentiments")) >= 100, 120,
             "the first worker to be mid-way", first.log, interval_s=0.05)
    first.kill()
    assert int(scalar(embedded_db, "SELECT count(*) FROM sentiments")) < n

    second = worker_factory(broker, embedded_db, name="k2", checkpoint=str(checkpoint), media_enabled="false")
    wait_for(lambda: int(scalar(embedded_db, "SELECT count(*) FROM sentiments")) == n, 180,
             "every post scored after the restart", second.log)
    assert second.stop() == 0, second.log()
    assert scalar(embedded_db, "SELECT count(*) FROM (SELECT post_pk, model_version FROM sentiments "
                               "GROUP BY 1, 2 HAVING count(*) > 1) d") == 0
    stored = _aggregates(embedded_db)
    # From scratch: delete the aggregates and recompute every window from the rows.
    from sqlalchemy import create_engine

    from stream.settings import Settings
    from stream.windows import all_window_keys, recompute_windows

    engine = create_engine(embedded_db)
    with engine.begin() as conn:
        version = conn.exec_driver_sql("SELECT DISTINCT model_version FROM sentiments").scalar_one()
        conn.exec_driver_sql("DELETE FROM window_aggregates")
        recompute_windows(conn, all_window_keys(conn, Settings().window_lengths_s, version), version)
    engine.dispose()
    assert _aggregates(embedded_db) == stored
    assert sum(row[4] for row in stored if row[2] == 3600) == n


class PausableProxy:
    """A TCP proxy to PostgreSQL that the test can take down (refuse + cut connections) and bring back."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect_target(self) -> socket.socket:
        if isinstance(self.target, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(self.target)
        return s

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            upstream = self._connect_target()
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        self.up.clear()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.down()
        self.listener.close()


def test_database_outage_holds_offsets_and_catches_up_with_nothing_lost(
        broker, embedded_postgres, embedded_db, worker_factory, tmp_path) -> None:
    from sqlalchemy.engine import make_url

    socket_path = str(Path(make_url(embedded_postgres.url).query["host"]) / ".s.PGSQL.5432")
    proxy = PausableProxy(socket_path)
    db = make_url(embedded_db)
    via_proxy = f"postgresql+psycopg2://postgres@127.0.0.1:{proxy.port}/{db.database}"
    try:
        publish(broker, make_posts(50, topic="outage", prefix="before"))
        worker = worker_factory(broker, via_proxy, name="outage", scoring="false", batch_size="10")
        wait_for(lambda: scalar(embedded_db, "SELECT count(*) FROM posts") == 50, 60, "the first 50", worker.log)

        proxy.down()
        publish(broker, make_posts(200, topic="outage", prefix="during"))
        wait_for(lambda: "database unavailable" in worker.log(), 60, "the worker to notice the outage",
                 worker.log)
        assert scalar(embedded_db, "SELECT count(*) FROM posts") == 50
        assert worker.proc.poll() is None, "the worker died instead of waiting out the outage"

        proxy.restore()
        wait_for(lambda: scalar(embedded_db, "SELECT count(*) FROM posts") == 250, 120,
                 "all 250 posts after the database came back", worker.log)
        assert worker.stop() == 0, worker.log()
    finally:
        proxy.close()


POSITIVE = ["Absolutely love the new update, great job team!", "Best experience I've had in years, thank you",
            "So happy with this, works perfectly", "Brilliant service today, really impressed"]
NEGATIVE = ["Completely broken again, this is a disgrace", "Worst service ever, I am furious and done with them",
            "Terrible outage, nothing works, absolutely awful", "I hate this, total failure, refund me now"]


def test_planted_negative_burst_fires_exactly_one_alert_and_a_steady_feed_none(
        broker, embedded_db, worker_factory, checkpoint) -> None:
    # Recent, so the alert is live (not historical) and goes out; the worker stops once it has.
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=27)
    posts: list[Post] = []
    burst_minute = 20
    for minute in range(26):
        for j in range(24):
            at = start + timedelta(minutes=minute, seconds=2 * j)
            posts.append(Post(platform="bluesky", post_id=f"calm-{minute}-{j}", topic="calm",
                              text=POSITIVE[j % 4], created_at=at))
            text = NEGATIVE[j % 4] if minute == burst_minute else POSITIVE[(j + 1) % 4]
            posts.append(Post(platform="bluesky", post_id=f"spiky-{minute}-{j}", topic="spiky",
                              text=text, created_at=at))
    publish(broker, posts)
    worker = worker_factory(broker, embedded_db, name="alerts", checkpoint=str(checkpoint), media_enabled="false",
                            windows="1m,1h", alert_min_volume="20")
    wait_for(lambda: int(scalar(embedded_db, "SELECT count(*) FROM sentiments")) == len(posts), 240,
             "every post scored", worker.log)
    wait_for(lambda: int(scalar(embedded_db, "SELECT count(*) FROM alerts WHERE published_at IS NOT NULL")) >= 1,
             60, "the alert published on Kafka (by the outbox's deliverer)", worker.log)
    assert worker.stop() == 0, worker.log()
    alerts = scalar(embedded_db, "SELECT json_agg(json_build_array(topic, window_start, window_seconds, "
                                 "published_at IS NOT NULL)) FROM alerts WHERE event = 'opened'")
    burst_start = (start + timedelta(minutes=burst_minute)).isoformat().replace("+00:00", "")
    assert alerts is not None and len(alerts) == 1, alerts
    topic, window_start, window_seconds, published = alerts[0]
    assert (topic, window_seconds, published) == ("spiky", 60, True)
    assert window_start.startswith(burst_start), (window_start, burst_start)
