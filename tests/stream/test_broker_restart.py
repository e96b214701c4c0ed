"""Broker epochs: the broker restarts (empty, offsets from 0) under a running worker; nothing acked is lost.

This is the README's own setup: a second process reuses the embedded broker, and when the broker's owner
restarts, the broker restarts under the worker.  The worker's fetch positions from the old log are then
beyond the new log's end; it must notice and re-read the new log instead of skipping its first offsets.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import requests

from connectors.broker import BrokerTarget, ensure_topics
from connectors.post import Post
from connectors.publisher import KafkaPublisher
from stream.embedded import EmbeddedBroker, free_port
from tests.stream.conftest import make_posts, scalar, wait_for

pytestmark = pytest.mark.slow


def publish(target: BrokerTarget, posts: list[Post]) -> None:
    """Send and wait for the broker's acknowledgement of every post (flush raises otherwise)."""
    ensure_topics(target, ["posts.raw", "posts.deadletter", "posts.alerts"], partitions=4)
    with KafkaPublisher(target, topic="posts.raw") as pub:
        for p in posts:
            pub.publish(p)
        pub.flush(120)


def stale_commit(target: BrokerTarget, group: str, offset: int) -> None:
    """Commit old-log offsets to the new broker, as an ack of the old generation in flight at the restart does.

    The new broker accepts a commit from outside the group (generation -1), so the worker's rebalance then
    seeks to offsets beyond the new log's end: the state the issue's run ended in.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from connectors.broker import kafka_python_consumer_config

    ensure_topics(target, ["posts.raw", "posts.deadletter", "posts.alerts"], partitions=4)
    consumer = KafkaConsumer(**kafka_python_consumer_config(target, group))
    try:
        tps = [TopicPartition("posts.raw", p) for p in range(4)]
        consumer.assign(tps)
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp in tps})
        assert all(consumer.committed(tp) == offset for tp in tps)
    finally:
        consumer.close()


def committed_lag(target: BrokerTarget, group: str) -> int:
    """Messages of posts.raw past the group's committed offsets (Tansu's end offsets are exact here:
    one record per produce batch)."""
    from kafka import KafkaConsumer, TopicPartition

    from connectors.broker import kafka_python_consumer_config

    consumer = KafkaConsumer(**kafka_python_consumer_config(target, group))
    try:
        tps = [TopicPartition("posts.raw", p) for p in range(4)]
        ends = consumer.end_offsets(tps)
        return sum(ends[tp] - (consumer.committed(tp) or 0) for tp in tps)
    finally:
        consumer.close()


def stored_ids(url: str, prefix: str) -> set[str]:
    ids = scalar(url, "SELECT coalesce(string_agg(post_id, ','), '') FROM posts WHERE post_id LIKE :p",
                 p=f"{prefix}%")
    return set(str(ids).split(",")) - {""}


def test_broker_restarted_under_a_running_worker_loses_no_acknowledged_post(
        embedded_db, worker_factory, tmp_path: Path) -> None:
    port = free_port()
    first = EmbeddedBroker(tmp_path / "broker1", port=port).start()
    target = BrokerTarget(first.bootstrap_servers, embedded=True)
    try:
        before = make_posts(800, topic="epoch", prefix="before")
        publish(target, before)
        worker = worker_factory(target, embedded_db, scoring="false", batch_size="20")
        wait_for(lambda: stored_ids(embedded_db, "before") == {p.post_id for p in before}, 120,
                 "the first 800 posts", worker.log)
        # The worker is frozen across the restart (a pause, or simply slower than the broker's restart), so
        # the old generation's commit reaches the new broker before the worker rejoins.
        worker.proc.send_signal(signal.SIGSTOP)
    finally:
        first.stop()

    # Same address, new empty log: offsets restart at 0, below the worker's positions (~200 per partition).
    second = EmbeddedBroker(tmp_path / "broker2", port=port).start()
    try:
        stale_commit(target, "sentistream-worker", 200)
        after = make_posts(400, topic="epoch", prefix="after")
        publish(target, after)
        worker.proc.send_signal(signal.SIGCONT)
        later = make_posts(400, topic="epoch", prefix="later")
        publish(target, later)
        want = {p.post_id for p in after} | {p.post_id for p in later}
        wait_for(lambda: stored_ids(embedded_db, "after") | stored_ids(embedded_db, "later") == want, 120,
                 "every post acknowledged by the restarted broker",
                 lambda: f"missing {len(want - stored_ids(embedded_db, 'after') - stored_ids(embedded_db, 'later'))}"
                         f"\n{worker.log()[-6000:]}")
        assert "broker epoch changed" in worker.log(), "the reset is not logged"
        # Commits resume in the new log: the group's committed offsets reach its end.
        wait_for(lambda: committed_lag(target, "sentistream-worker") == 0, 60,
                 "committed offsets at the new log's end", lambda: str(committed_lag(target, "sentistream-worker")))
        health = requests.get(f"http://127.0.0.1:{worker.env['SENTISTREAM_WEB_PORT']}/health", timeout=5)
        assert health.status_code == 200, health.text
        assert worker.stop() == 0, worker.log()
    finally:
        worker.proc.send_signal(signal.SIGCONT)
        second.stop()
