"""Shared fixtures: one real embedded Kafka (Tansu) broker per test session, a fresh topic per test."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from connectors.broker import BrokerTarget, kafka_python_consumer_config
from connectors.post import Post
from stream.embedded import EmbeddedBroker


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as broker:
        yield broker


@pytest.fixture
def broker_target(embedded_broker: EmbeddedBroker) -> BrokerTarget:
    return BrokerTarget(embedded_broker.bootstrap_servers, embedded=True)


@pytest.fixture
def topic() -> str:
    return f"posts.test.{uuid.uuid4().hex[:10]}"


def read_topic(target: BrokerTarget, topic: str, *, expect: int | None = None,
               timeout_s: float = 30.0, settle_s: float = 1.0) -> list[tuple[str, Post]]:
    """Every (key, Post) on ``topic`` from the beginning.

    Reads until ``expect`` records arrived (then ``settle_s`` more, to catch duplicates) or until the
    topic has been quiet for ``settle_s`` when no count is expected; never longer than ``timeout_s`` (a
    liveness bound, 30 s for a fresh consumer on a loaded machine: once the count is there it returns).
    """
    consumer = KafkaConsumer(**kafka_python_consumer_config(target, None))
    try:
        deadline = time.monotonic() + timeout_s
        partitions: set[int] | None = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.1)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[tuple[str, Post]] = []
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            got = [m for msgs in batch.values() for m in msgs]
            for message in got:
                records.append((message.key.decode(), Post.from_json(message.value)))
            now = time.monotonic()
            if got:
                quiet_since = now
            if expect is not None and len(records) >= expect and now - quiet_since >= settle_s:
                break
            if expect is None and now - quiet_since >= settle_s:
                break
        return records
    finally:
        consumer.close()


@pytest.fixture
def sample_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "connectors" / "samples"


@pytest.fixture(scope="module")
def cursor_db(pg_server: str) -> Iterator[str]:
    """A throwaway, migrated database on each back end (tests/conftest.py ``pg_server``), dropped afterwards."""
    from stream.migrate import upgrade
    from tests.conftest import create_database, drop_database

    url = create_database(pg_server, prefix="conn")
    try:
        upgrade(url)
        yield url
    finally:
        drop_database(url)
