"""KafkaPublisher: hands normalized posts to Kafka and does not forget one until the broker has it.

Delivery contract (at-least-once; the worker's upserts keyed by ``platform:post_id`` make a repeat
harmless):

1. ``publish(post)`` keeps the serialized post in an *unacknowledged* table and gives it to the
   kafka-python producer (``acks=all``, idempotent where the broker supports it, key ``platform:post_id``).
2. The producer's acknowledgement removes it from the table.  A failure puts it back in a resend queue:
   a retriable failure (broker unreachable, delivery timeout) is resent on the same producer; a
   non-retriable one (e.g. the broker restarted and forgot our idempotent producer id) first replaces the
   producer, because kafka-python leaves a producer in that state unusable.
3. ``flush()`` returns only when the table is empty, or raises :class:`PublishError` after its deadline.
   Connectors save their cursor only after a flush, so a crash can repeat posts but never skip them.

``publish`` blocks (backpressure) while ``max_unacked`` posts are waiting, so a broker outage stops the
connector reading instead of growing memory without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from connectors import backoff
from connectors.broker import BrokerTarget, kafka_python_producer_config
from connectors.post import Post

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "posts.raw"
FAILURE_REPORT_INTERVAL_S = 10.0  # at most one "deliveries failed" warning per this period


class PostPublisher(Protocol):
    """Where a connector sends posts; ``flush`` returns once every published post is durable."""

    def publish(self, post: Post) -> None: ...

    def flush(self, timeout_s: float | None = None) -> None: ...


class PublishError(RuntimeError):
    """The broker did not acknowledge every post before the deadline; the posts are still held."""


@dataclass
class PublisherStats:
    published: int = 0
    acknowledged: int = 0
    resent: int = 0
    producer_restarts: int = 0


@dataclass
class _Unacked:
    key: bytes
    value: bytes
    attempts: int = 0


ProducerFactory = Callable[[dict[str, Any]], KafkaProducer]


class KafkaPublisher:
    """Durable, keyed publishing of :class:`Post` records to one Kafka topic."""

    def __init__(
        self,
        target: BrokerTarget,
        topic: str = DEFAULT_TOPIC,
        *,
        max_unacked: int = 10_000,
        flush_timeout_s: float = 300.0,
        resend_backoff_s: tuple[float, float] = (0.2, 5.0),
        producer_overrides: Mapping[str, Any] | None = None,
        producer_factory: ProducerFactory = lambda config: KafkaProducer(**config),
    ) -> None:
        self.target = target
        self.topic = topic
        self.max_unacked = max_unacked
        self.flush_timeout_s = flush_timeout_s
        self._backoff_schedule = backoff.exponential(*resend_backoff_s)
        self._config = kafka_python_producer_config(target)
        # A broker that answers but is slow or unreachable must surface as a failed future we can
        # resend, not as a send() that blocks the connector for the kafka-python default of 60 s.
        self._config.setdefault("max_block_ms", 10_000)
        self._config.setdefault("bootstrap_timeout_ms", 5_000)
        self._config.update(producer_overrides or {})
        self._factory = producer_factory
        self._lock = threading.Lock()
        self._unacked: dict[int, _Unacked] = {}
        self._resend: deque[int] = deque()
        self._replace_producer = False
        self._next_seq = 0
        self._next_resend_at = 0.0
        self._failures_in_row = 0
        self._closed = False
        self._generation = 0  # bumped when the producer is replaced; late errors of the old one are ignored
        self._failures_unreported = 0  # failed deliveries not yet in a warning (aggregated, see _report_failures)
        self._failures_reported_at: float | None = None
        self._last_failure = ""
        self.stats = PublisherStats()
        self._producer: KafkaProducer | None = None
        self._producer = self._connect(deadline=time.monotonic() + flush_timeout_s)

    # -- public API -------------------------------------------------------------------------------

    def publish(self, post: Post) -> None:
        """Queue one post for delivery; blocks while ``max_unacked`` posts wait for the broker."""
        if self._closed:
            raise PublishError("publisher is closed")
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            self._unacked[seq] = _Unacked(key=post.key.encode("utf-8"), value=post.to_json())
            self.stats.published += 1
        self._send(seq)
        self._service()
        if self.unacked >= self.max_unacked:
            self._drain(target=self.max_unacked // 2, timeout_s=self.flush_timeout_s)

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every published post is acknowledged (``acks=all``) or raise PublishError."""
        self._drain(target=0, timeout_s=self.flush_timeout_s if timeout_s is None else timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, then close the producer.  The producer is closed even when the flush fails."""
        if self._closed:
            return
        try:
            self.flush(timeout_s)
        finally:
            self._report_failures(force=True)
            self._closed = True
            producer, self._producer = self._producer, None
            if producer is not None:
                producer.close(timeout=5)

    @property
    def unacked(self) -> int:
        with self._lock:
            return len(self._unacked)

    def __enter__(self) -> KafkaPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- delivery bookkeeping ---------------------------------------------------------------------

    def _send(self, seq: int) -> None:
        with self._lock:
            item = self._unacked.get(seq)
            if item is None:
                return
            item.attempts += 1
        producer, generation = self._producer, self._generation
        if producer is None or self._replace_producer:
            self._requeue(seq)
            return
        try:
            future = producer.send(self.topic, key=item.key, value=item.value)
        except KafkaError as exc:  # timeout: no metadata, broker unreachable; otherwise a fatal state
            self._on_error(seq, exc, generation)
            return
        future.add_callback(lambda _meta, s=seq: self._on_ack(s))
        future.add_errback(lambda exc, s=seq, g=generation: self._on_error(s, exc, g))

    def _on_ack(self, seq: int) -> None:
        with self._lock:
            if self._unacked.pop(seq, None) is not None:
                self.stats.acknowledged += 1
            self._failures_in_row = 0

    def _on_error(self, seq: int, exc: BaseException, generation: int) -> None:
        retriable = bool(getattr(exc, "retriable", False))
        with self._lock:
            if seq not in self._unacked or generation != self._generation:
                return
            self._resend.append(seq)
            self._failures_in_row += 1
            if not retriable:
                self._replace_producer = True
        self._note_failure(self._unacked_key(seq), exc)

    def _note_failure(self, key: str, exc: BaseException) -> None:
        """Count a failed delivery; the warning is aggregated (see ``_report_failures``)."""
        with self._lock:
            self._failures_unreported += 1
            self._last_failure = f"{key}: {type(exc).__name__}: {exc}"
        self._report_failures()

    def _report_failures(self, force: bool = False) -> None:
        """One warning per ``FAILURE_REPORT_INTERVAL_S`` with the number of failed deliveries, not one per
        post: with the broker down every held post fails on every resend, which would flood the log."""
        now = time.monotonic()
        with self._lock:
            count = self._failures_unreported
            if count == 0 or (not force and self._failures_reported_at is not None
                              and now - self._failures_reported_at < FAILURE_REPORT_INTERVAL_S):
                return
            since = None if self._failures_reported_at is None else now - self._failures_reported_at
            self._failures_unreported = 0
            self._failures_reported_at = now
            last = self._last_failure
            held = len(self._unacked)
        window = f"in the last {since:.0f}s" if since is not None else "so far"
        log.warning("%d post deliveries failed %s (last %s); %d posts held, will resend", count, window, last, held)

    def _requeue(self, seq: int) -> None:
        with self._lock:
            if seq in self._unacked:
                self._resend.append(seq)

    def _unacked_key(self, seq: int) -> str:
        with self._lock:
            item = self._unacked.get(seq)
        return item.key.decode("utf-8", "replace") if item else "?"

    def _backoff_s(self) -> float:
        """Pause before the next resend round (or connect try): doubling with the failures in a row,
        drawn from the upper half so publishers that failed together do not return together."""
        with self._lock:
            n = self._failures_in_row
        return backoff.jittered_below(backoff.wait_before(self._backoff_schedule, n), 0.5)

    def _service(self) -> None:
        """Replace a broken producer and resend failed posts, at most once per backoff period."""
        self._report_failures()
        with self._lock:
            pending = bool(self._resend) or self._replace_producer
        if not pending or time.monotonic() < self._next_resend_at:
            return
        self._next_resend_at = time.monotonic() + self._backoff_s()
        if self._replace_producer or self._producer is None:
            if not self._reconnect():
                return
        with self._lock:
            batch = list(dict.fromkeys(self._resend))  # one resend per post even if it failed twice
            self._resend.clear()
        for seq in batch:
            self.stats.resent += 1
            self._send(seq)

    def _reconnect(self) -> bool:
        old, self._producer = self._producer, None
        with self._lock:
            self._generation += 1
        if old is not None:
            try:
                old.close(timeout=0)
            except Exception:  # noqa: BLE001 - a broken producer may fail to close; we drop it either way
                log.debug("closing the broken producer failed", exc_info=True)
        try:
            self._producer = self._new_producer()
        except KafkaError as exc:
            log.warning("Kafka at %s is unreachable (%s); retrying", self.target.bootstrap_servers, exc)
            return False
        with self._lock:
            self._replace_producer = False
            # The old producer may have dropped in-flight batches without calling back: resend them all.
            self._resend = deque(self._unacked)
        self.stats.producer_restarts += 1
        log.info("Kafka producer replaced; resending %d unacknowledged posts", len(self._resend))
        return True

    def _new_producer(self) -> KafkaProducer:
        return self._factory(dict(self._config))

    def _connect(self, deadline: float) -> KafkaProducer:
        """First connection: retry with backoff until the deadline (the broker may still be starting)."""

        def count_failure(state: RetryCallState) -> None:
            with self._lock:
                self._failures_in_row += 1

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            log.warning("Kafka at %s is unreachable (%s); retrying in %.1fs",
                        self.target.bootstrap_servers, exc, delay)

        retrying = Retrying(retry=retry_if_exception_type(KafkaError),
                            stop=lambda state: time.monotonic() >= deadline,
                            wait=lambda state: self._backoff_s(),
                            after=count_failure, before_sleep=log_retry, reraise=True)
        try:
            return retrying(self._new_producer)
        except KafkaError as exc:
            raise PublishError(f"Kafka at {self.target.bootstrap_servers} is unreachable: {exc}") from exc

    def _drain(self, target: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self._service()
            producer = self._producer
            if producer is not None:
                try:
                    producer.flush(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                except KafkaTimeoutError:
                    pass
                except KafkaError as exc:
                    log.warning("producer flush failed (%s); replacing the producer", exc)
                    self._replace_producer = True
            else:
                time.sleep(0.05)
            if self.unacked <= target:
                return
            if time.monotonic() >= deadline:
                raise PublishError(
                    f"{self.unacked} posts not acknowledged by Kafka at {self.target.bootstrap_servers} "
                    f"within {timeout_s:.0f}s"
                )
            self._service()
            with self._lock:
                waiting_to_resend = bool(self._resend) or self._replace_producer
            if waiting_to_resend:
                time.sleep(max(0.0, min(self._next_resend_at, deadline) - time.monotonic()))
