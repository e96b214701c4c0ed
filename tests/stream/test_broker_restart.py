"""Broker epochs: the broker restarts (empty, offsets from 0) under a running worker; nothing acked is lost.

This is the README's own setup: a second process reuses the embedded broker, and when the broker's owner
restarts, the broker restarts under the worker.  The worker's fetch positions from the old log are then
beyond the new log's end; it must notice and re-read the new log instead of skipping its first offsets.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
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
        assert health.json()["counts"]["broker_epoch_resets"] >= 4, health.text  # every partition re-read
        assert worker.stop() == 0, worker.log()
    finally:
        worker.proc.send_signal(signal.SIGCONT)
        second.stop()


HOLDER = """
import pathlib, sys
from stream.embedded import services
from stream.settings import Settings
settings = Settings(home=pathlib.Path(sys.argv[1]), database_url="postgresql://unused@127.0.0.1:1/x")
with services(settings, need_database=False) as resolved:
    print(resolved.broker.bootstrap_servers, ",".join(resolved.started) or "-", flush=True)
    sys.stdin.read()  # hold the broker until the test closes our stdin
"""


class BrokerUser:
    """A sentistream process using the embedded broker (what `services()` does for a worker)."""

    def __init__(self, home: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(home)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        assert line, self.proc.stderr.read()
        self.address, self.started = line[0], line[1]

    def exit(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0, self.proc.stderr.read()


def read_all_values(address: str, topic: str) -> list[bytes]:
    from kafka import KafkaConsumer, TopicPartition

    from connectors.broker import kafka_python_consumer_config

    consumer = KafkaConsumer(**kafka_python_consumer_config(BrokerTarget(address, embedded=True), None))
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        values: list[bytes] = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(r.value for r in records)
        return values
    finally:
        consumer.close()


def test_embedded_broker_keeps_its_posts_across_a_restart_of_the_process_that_started_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    owner = BrokerUser(home)
    assert owner.started == "broker"
    other = BrokerUser(home)  # a worker or ingest in another terminal
    assert (other.address, other.started) == (owner.address, "-")
    posts = make_posts(40, topic="kept", prefix="kept")
    publish(BrokerTarget(owner.address, embedded=True), posts)
    info = json.loads((home / "run" / "broker.json").read_text())

    owner.exit()  # the owner restarts while the other process still uses the broker
    restarted = BrokerUser(home)
    assert (restarted.address, restarted.started) == (owner.address, "-"), "a new, empty broker was started"
    values = read_all_values(restarted.address, "posts.raw")
    assert sorted(json.loads(v)["post_id"] for v in values) == sorted(p.post_id for p in posts)
    assert json.loads((home / "run" / "broker.json").read_text())["cluster_id"] == info["cluster_id"]

    other.exit()
    assert Path(f"/proc/{info['pid']}").exists(), "the broker stopped while a process still used it"
    restarted.exit()  # the last user: the broker stops and is no longer advertised
    deadline = time.monotonic() + 10
    while Path(f"/proc/{info['pid']}").exists() and "zombie" not in Path(f"/proc/{info['pid']}/status").read_text():
        assert time.monotonic() < deadline, "the last user did not stop the broker"
        time.sleep(0.1)
    assert not (home / "run" / "broker.json").exists()


def test_a_killed_user_does_not_keep_the_broker_forever(tmp_path: Path) -> None:
    home = tmp_path / "home"
    owner = BrokerUser(home)
    killed = BrokerUser(home)
    pid = json.loads((home / "run" / "broker.json").read_text())["pid"]
    killed.proc.kill()
    killed.proc.wait(10)
    owner.exit()  # the killed user's registration is stale: the owner is the last live user
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text():
        assert time.monotonic() < deadline, "a dead user's registration kept the broker running"
        time.sleep(0.1)
    assert not (home / "run" / "broker.json").exists()
