"""The thin path for real: replay -> Kafka (embedded Tansu) -> `sentistream worker` -> PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests
from kafka import KafkaConsumer, TopicPartition

from connectors.broker import BrokerTarget, ensure_topics, kafka_python_consumer_config
from connectors.publisher import KafkaPublisher
from connectors.replay import replay_file
from tests.stream.conftest import make_posts, scalar, wait_for, write_jsonl

pytestmark = pytest.mark.slow


def replay(broker: BrokerTarget, path: Path, topic: str = "posts.raw") -> int:
    ensure_topics(broker, [topic, "posts.deadletter"], partitions=4)
    with KafkaPublisher(broker, topic=topic) as pub:
        report = replay_file(path, pub)
    return report.sent


def count(url: str, table: str) -> int:
    return int(scalar(url, f"SELECT count(*) FROM {table}"))  # noqa: S608 - fixed table names


def test_replay_to_postgres_is_idempotent(broker, embedded_db, worker_factory, tmp_path) -> None:
    posts = make_posts(120, topic="acme")
    path = write_jsonl(tmp_path / "posts.jsonl", posts)
    assert replay(broker, path) == 120

    worker = worker_factory(broker, embedded_db, scoring="false")
    wait_for(lambda: count(embedded_db, "posts") == 120, 60, "120 posts in PostgreSQL", worker.log)
    first = scalar(embedded_db, "SELECT string_agg(platform || ':' || post_id || ':' || text, ',' "
                                "ORDER BY post_id) FROM posts")

    # The same file again: the rows are rewritten in place, never added.
    assert replay(broker, path) == 120
    wait_for(lambda: scalar(embedded_db, "SELECT count(*) FROM posts WHERE updated_at > first_seen_at") == 120,
             60, "the replayed posts to be upserted", worker.log)
    assert count(embedded_db, "posts") == 120
    assert scalar(embedded_db, "SELECT string_agg(platform || ':' || post_id || ':' || text, ',' "
                               "ORDER BY post_id) FROM posts") == first
    # The analyst view counts each post once.
    assert scalar(embedded_db, "SELECT sum(n_posts) FROM trend_minute WHERE topic = 'acme'") == 120

    # Operators see the same through /health and /metrics on the worker's web port.  A batch is counted
    # after its rows are committed, its windows recomputed and its events acked: wait for the count.
    base = f"http://127.0.0.1:{worker.env['SENTISTREAM_WEB_PORT']}"
    wait_for(lambda: requests.get(f"{base}/health", timeout=5).json()["counts"]["posts_written"] >= 240, 30,
             "/health to count every written post", worker.log)
    health = requests.get(f"{base}/health", timeout=5)
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["status"] == "ok" and body["components"]["database"]["up"] is True
    assert body["counts"]["posts_written"] == 240
    exposition = requests.get(f"{base}/metrics", timeout=5).text
    assert "sentistream_posts_out_total 240.0" in exposition
    assert 'sentistream_consumer_lag{partition="' in exposition
    assert worker.stop() == 0, worker.log()


def test_malformed_messages_go_to_dead_letter_topic_and_stream_goes_on(broker, embedded_db, worker_factory,
                                                                        tmp_path) -> None:
    ensure_topics(broker, ["posts.raw", "posts.deadletter"], partitions=4)
    good = make_posts(10, topic="acme")
    from kafka import KafkaProducer

    from connectors.broker import kafka_python_producer_config

    producer = KafkaProducer(**kafka_python_producer_config(broker))
    bad_values = [b"{not json", b'{"platform": "myspace", "post_id": "1", "text": "x", "created_at": "2026-01-01"}',
                  b'{"platform": "reddit", "post_id": "2", "created_at": "2026-01-01"}', b"\xff\xfe"]
    for i, post in enumerate(good):
        producer.send("posts.raw", key=post.key.encode(), value=post.to_json())
        if i < len(bad_values):
            producer.send("posts.raw", key=f"bad{i}".encode(), value=bad_values[i])
    producer.flush()
    producer.close()

    worker = worker_factory(broker, embedded_db, scoring="false")
    wait_for(lambda: count(embedded_db, "posts") == 10 and count(embedded_db, "dead_letters") == 4, 60,
             "10 posts and 4 dead letters", worker.log)
    reasons = scalar(embedded_db, "SELECT string_agg(reason, ' | ' ORDER BY key) FROM dead_letters")
    assert "not valid JSON" in reasons and "platform 'myspace'" in reasons and "text is missing" in reasons

    # The dead-letter topic holds the same four, each with its reason and the original bytes.
    consumer = KafkaConsumer(**kafka_python_consumer_config(broker, None))
    tps = [TopicPartition("posts.deadletter", p) for p in range(4)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    records = []
    deadline = time.monotonic() + 60  # a liveness bound; 30 polls of 300 ms gave a fresh consumer only 9 s
    while len(records) < 4 and time.monotonic() < deadline:
        for msgs in consumer.poll(timeout_ms=300).values():
            records.extend(json.loads(m.value) for m in msgs)
    consumer.close()
    assert sorted(r["key"] for r in records) == ["bad0", "bad1", "bad2", "bad3"]
    assert {r["payload"] for r in records} >= {"{not json"}
    assert all(r["reason"] for r in records)
    assert worker.stop() == 0, worker.log()


def test_worker_sigkilled_mid_replay_loses_nothing(broker, embedded_db, worker_factory, tmp_path) -> None:
    n = 3000
    path = write_jsonl(tmp_path / "big.jsonl", make_posts(n, topic="load"))
    assert replay(broker, path) == n

    first = worker_factory(broker, embedded_db, name="w1", scoring="false", batch_size="50")
    wait_for(lambda: count(embedded_db, "posts") >= 300, 90, "the first worker to be mid-way", first.log,
             interval_s=0.05)
    first.kill()
    saved_before_restart = count(embedded_db, "posts")
    assert saved_before_restart < n, "the worker finished before it was killed; the test proves nothing"

    second = worker_factory(broker, embedded_db, name="w2", scoring="false")
    wait_for(lambda: count(embedded_db, "posts") == n, 120, f"all {n} posts after restart", second.log)
    assert scalar(embedded_db, "SELECT count(DISTINCT (platform, post_id)) FROM posts") == n
    assert scalar(embedded_db, "SELECT count(*) FROM posts WHERE post_id NOT LIKE 'p%'") == 0
    assert second.stop() == 0, second.log()
