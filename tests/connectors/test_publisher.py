"""KafkaPublisher against a real broker, including one that stops and starts again mid-stream."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.broker import BrokerTarget
from connectors.post import Post
from connectors.publisher import KafkaPublisher, PublishError
from stream.embedded import EmbeddedBroker, free_port
from tests.connectors.conftest import read_topic


def _post(i: int, platform: str = "reddit") -> Post:
    return Post(platform=platform, post_id=f"p{i}", text=f"text {i}", created_at=datetime(2026, 1, 1, tzinfo=UTC))


def test_keys_are_platform_and_id_and_flush_makes_posts_durable(broker_target: BrokerTarget, topic: str) -> None:
    publisher = KafkaPublisher(broker_target, topic)
    for i in range(10):
        publisher.publish(_post(i, "twitter" if i % 2 else "bluesky"))
    publisher.flush()
    assert publisher.unacked == 0
    assert publisher.stats.acknowledged == 10
    publisher.close()
    records = read_topic(broker_target, topic, expect=10)
    assert len(records) == 10
    for key, post in records:
        assert key == f"{post.platform}:{post.post_id}"


def test_broker_that_goes_away_and_comes_back_loses_nothing(tmp_path: Path, topic: str) -> None:
    """Posts published while the broker is down are held and delivered once it is back.

    The embedded Tansu broker keeps its log in memory, so what it held before the restart is gone with
    it; what this test checks is the publisher's part: everything published during and after the outage
    reaches the restarted broker, and flush() does not return before it has.
    """
    port = free_port()
    broker = EmbeddedBroker(tmp_path / "b", port=port).start()
    target = BrokerTarget(broker.bootstrap_servers, embedded=True)
    publisher = KafkaPublisher(target, topic, flush_timeout_s=60, resend_backoff_s=(0.1, 1.0))
    try:
        for i in range(5):
            publisher.publish(_post(i))
        publisher.flush()
        broker.stop()

        for i in range(5, 15):  # broker down: held as unacknowledged
            publisher.publish(_post(i))
        with pytest.raises(PublishError):
            publisher.flush(timeout_s=1.5)
        assert publisher.unacked == 10

        broker = EmbeddedBroker(tmp_path / "b", port=port).start()
        for i in range(15, 20):
            publisher.publish(_post(i))
        publisher.flush(timeout_s=60)
        assert publisher.unacked == 0
        records = read_topic(target, topic, expect=15, timeout_s=20)
        ids = {post.post_id for _, post in records}
        assert ids >= {f"p{i}" for i in range(5, 20)}
    finally:
        publisher.close(timeout_s=5) if publisher.unacked == 0 else None
        broker.stop()


def test_unreachable_broker_fails_with_a_clear_error() -> None:
    target = BrokerTarget(f"127.0.0.1:{free_port()}", embedded=True)
    with pytest.raises(PublishError, match="unreachable"):
        KafkaPublisher(target, "t", flush_timeout_s=1.0, resend_backoff_s=(0.1, 0.2),
                       producer_overrides={"bootstrap_timeout_ms": 300})
