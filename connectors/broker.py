"""Kafka client settings, kept in one place for every client library the project uses.

Why these numbers: a consumer-group join waits about ``session_timeout / 2`` on the embedded Tansu
broker, so the Kafka defaults (10-45 s) make every worker start and every test wait half a minute.  A
3 s session with a 0.5 s heartbeat joins in about 1.5 s and still tolerates a busy event loop.  A real
Kafka keeps 10 s / 3 s: it rejects sessions below its ``group.min.session.timeout.ms`` (6 s default).

Tansu (the embedded broker) answers ListOffsets "latest" with the last *batch's* base offset + 1, so
end offsets and lag are wrong when a producer batches.  On the embedded broker only, producers send one
record per batch; a real Kafka keeps normal batching.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.dependency_wait import wait_until_reachable

SESSION_TIMEOUT_S = 3.0
HEARTBEAT_INTERVAL_S = 0.5
REBALANCE_TIMEOUT_S = 10.0
# Apache Kafka refuses sessions shorter than group.min.session.timeout.ms (6 s by default), so a
# configured broker gets the clients' usual 10 s / 3 s unless the operator lowered that minimum.
KAFKA_SESSION_TIMEOUT_S = 10.0
KAFKA_HEARTBEAT_INTERVAL_S = 3.0
EMBEDDED_MAX_BATCH_BYTES = 1  # forces one record per produce batch on kafka-python/aiokafka


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    """Where the broker is and whether it is the embedded Tansu (which needs the batching workaround)."""

    bootstrap_servers: str
    embedded: bool = False

    @property
    def faust_url(self) -> str:
        return ",".join(f"kafka://{s.strip()}" for s in self.bootstrap_servers.split(",") if s.strip())


def session_timeout_s(target: BrokerTarget) -> float:
    return SESSION_TIMEOUT_S if target.embedded else KAFKA_SESSION_TIMEOUT_S


def heartbeat_interval_s(target: BrokerTarget) -> float:
    return HEARTBEAT_INTERVAL_S if target.embedded else KAFKA_HEARTBEAT_INTERVAL_S


def kafka_python_producer_config(target: BrokerTarget) -> dict[str, Any]:
    """kafka-python KafkaProducer kwargs: durable (acks=all, retries) and idempotent where supported."""
    config: dict[str, Any] = {
        "bootstrap_servers": target.bootstrap_servers.split(","),
        "acks": "all",
        "retries": 10,
        "retry_backoff_ms": 200,
        "request_timeout_ms": 15_000,
        "max_in_flight_requests_per_connection": 1,
        "linger_ms": 5,
    }
    if target.embedded:
        config["batch_size"] = 0  # one record per batch: see module docstring
        config["linger_ms"] = 0
    else:
        config["enable_idempotence"] = True
    return config


def kafka_python_consumer_config(target: BrokerTarget, group_id: str | None) -> dict[str, Any]:
    """kafka-python KafkaConsumer kwargs with the fast group-join timings."""
    return {
        "bootstrap_servers": target.bootstrap_servers.split(","),
        "group_id": group_id,
        "session_timeout_ms": int(session_timeout_s(target) * 1000),
        "heartbeat_interval_ms": int(heartbeat_interval_s(target) * 1000),
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
    }


def faust_broker_settings(target: BrokerTarget) -> dict[str, Any]:
    """faust.App settings for the broker connection (group timing and, on Tansu, batch size 1)."""
    settings: dict[str, Any] = {
        "broker": target.faust_url,
        "broker_session_timeout": session_timeout_s(target),
        "broker_heartbeat_interval": heartbeat_interval_s(target),
        "broker_rebalance_timeout": REBALANCE_TIMEOUT_S,
        "producer_acks": -1,
    }
    if target.embedded:
        settings["producer_max_batch_size"] = EMBEDDED_MAX_BATCH_BYTES
        settings["producer_linger"] = 0.0
    return settings


BROKER_ANSWER_TIMEOUT_S = 5.0  # one bootstrap try; kafka-python's default waits 30 s before saying no


def _admin_client(target: BrokerTarget) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=target.bootstrap_servers.split(","), request_timeout_ms=10_000,
                            bootstrap_timeout_ms=int(BROKER_ANSWER_TIMEOUT_S * 1000))


def wait_for_broker(target: BrokerTarget, wait_s: float = 0.0, *, backoff_cap_s: float = 15.0,
                    on_waiting: Callable[[str], None] | None = None) -> None:
    """Block until the broker answers (bootstrap and metadata), with capped backoff and one line per try:
    "cannot reach broker at HOST:PORT (reason), retrying in Ns".  ``wait_s`` 0 waits forever (a restart
    policy's choice), else DependencyUnreachableError after it."""
    from kafka.errors import KafkaError

    def attempt() -> None:
        admin = _admin_client(target)
        try:
            admin.list_topics()
        finally:
            admin.close()

    wait_until_reachable("broker", target.bootstrap_servers, attempt, retry_on=(KafkaError, OSError),
                         wait_s=wait_s, backoff_cap_s=backoff_cap_s, on_waiting=on_waiting)


def ensure_topics(target: BrokerTarget, names: list[str], partitions: int, replication: int = 1,
                  timeout_s: float = 30.0, on_waiting: Callable[[str], None] | None = None) -> None:
    """Create missing topics (idempotent), waiting for a broker that is still starting.

    Topics are created explicitly, not by auto-create, so the partition count (the ceiling on worker
    processes) is the configured one everywhere.  ``timeout_s`` 0 waits for the broker forever.
    """
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    admin = wait_until_reachable("broker", target.bootstrap_servers, lambda: _admin_client(target),
                                 retry_on=(KafkaError, OSError), wait_s=timeout_s, on_waiting=on_waiting)
    try:
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(n, partitions, replication) for n in missing])
            except TopicAlreadyExistsError:
                pass  # a concurrent process created it first
    finally:
        admin.close()
