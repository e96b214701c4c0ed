"""Two `sentistream worker` processes in turn share picture features through PostgreSQL (#14 goal 2).

The second worker starts with empty memory; every picture its posts carry was encoded by the first, so
its ``sentistream_pictures_encoded_total`` stays 0 while all its posts are scored with their pictures.
Real broker, real PostgreSQL (both back ends), real media over HTTP, the shipped checkpoint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from connectors.broker import BrokerTarget, ensure_topics
from connectors.post import MediaRef, Post
from connectors.publisher import KafkaPublisher
from connectors.replay import replay_posts
from model.checkpoint import DEFAULT_CHECKPOINT
from tests.fixtures.mini_data import picture_jpeg
from tests.stream.conftest import make_posts, scalar, wait_for
from tests.stream.local_http import LocalServer, send

pytestmark = pytest.mark.slow

SMALL = (160, 120)  # pictures as small as a thumbnail: quick to serve and to encode
NAMES = ("sun", "rain", "fog")


@pytest.fixture
def pictures() -> Iterator[LocalServer]:
    bodies = {name: picture_jpeg(label, 40 + i, SMALL) for i, (name, label) in enumerate(zip(NAMES, ("positive", "negative",
                                                                                      "neutral"), strict=True))}
    def serve(body: bytes):
        return lambda handler, n: send(handler, 200, body, "image/jpeg")

    routes = {f"/{name}.jpg": serve(body) for name, body in bodies.items()}
    with LocalServer(routes) as server:
        yield server


def metric(base: str, name: str, labels: str = "") -> float:
    body = requests.get(f"{base}/metrics", timeout=5).text
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", body, re.MULTILINE)
    assert found, f"{name}{labels} not in /metrics"
    return float(found.group(1))


def posts_with_pictures(server: LocalServer, prefix: str) -> list[Post]:
    return make_posts(9, topic="pics", prefix=prefix,
                      images=lambda i: [MediaRef(server.url(f"/{NAMES[i % 3]}.jpg"))])


def publish(broker: BrokerTarget, posts: list[Post]) -> None:
    ensure_topics(broker, ["posts.raw", "posts.deadletter", "sentiment.alerts"], partitions=4)
    with KafkaPublisher(broker, topic="posts.raw") as pub:
        assert replay_posts(posts, pub).sent == len(posts)


def run_worker_until_scored(worker_factory, broker: BrokerTarget, db: str, server: LocalServer, name: str,
                            scored: int) -> dict[str, float]:
    """Start a worker, wait until ``scored`` posts carry an image sentiment, return its picture counters."""
    checkpoint = Path(os.environ.get("SENTISTREAM_TEST_CHECKPOINT", DEFAULT_CHECKPOINT))
    worker = worker_factory(broker, db, name=name, checkpoint=str(checkpoint), overload_lag_s="0",
                            media_allow_hosts=f"127.0.0.1:{server.port}")
    base = f"http://127.0.0.1:{worker.env['SENTISTREAM_WEB_PORT']}"
    wait_for(lambda: scalar(db, "SELECT count(*) FROM sentiments WHERE 'image' = ANY(modalities)") == scored,
             300, f"{scored} posts scored with their picture", worker.log)
    wait_for(lambda: metric(base, "sentistream_posts_out_total") >= 9, 30, "the batch counted", worker.log)
    counts = {
        "encoded": metric(base, "sentistream_pictures_encoded_total"),
        "postgres_hit": metric(base, "sentistream_picture_cache_total", '{level="postgres",result="hit"}'),
        "postgres_miss": metric(base, "sentistream_picture_cache_total", '{level="postgres",result="miss"}'),
        "errors": sum(metric(base, "sentistream_picture_cache_errors_total", f'{{operation="{op}"}}')
                      for op in ("read", "write")),
    }
    assert worker.stop() == 0, worker.log()
    return counts


def test_a_second_worker_encodes_none_of_the_pictures_the_first_one_encoded(
        broker, migrated_db, worker_factory, pictures) -> None:
    publish(broker, posts_with_pictures(pictures, "first"))
    first = run_worker_until_scored(worker_factory, broker, migrated_db, pictures, "worker-1", 9)

    assert first["encoded"] == 3 and first["postgres_miss"] == 3 and first["errors"] == 0, first
    assert scalar(migrated_db, "SELECT count(*) FROM picture_features") == 3

    publish(broker, posts_with_pictures(pictures, "second"))
    second = run_worker_until_scored(worker_factory, broker, migrated_db, pictures, "worker-2", 18)

    assert second["encoded"] == 0, f"the second worker encoded pictures the first had stored: {second}"
    assert second["postgres_hit"] == 3 and second["errors"] == 0, second
    assert pictures.hits == {f"/{name}.jpg": 2 for name in NAMES}, "each worker fetched each picture once"
