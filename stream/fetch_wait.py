"""How long the worker's Kafka fetch may wait on the broker for new records: 100 ms, not Faust's 1.5 s.

Why: faust-streaming builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` written into the call
(``AIOKafkaConsumerThread._create_worker_consumer``; no setting reaches it).  Apache Kafka answers a fetch as
soon as ``fetch_min_bytes`` (1) have arrived, so there the wait only bounds an idle poll.  The embedded Tansu
broker does not wake a waiting fetch when a record arrives: the fetch sleeps its whole wait.  Measured with a
bare aiokafka consumer at 100 records/s on embedded Tansu (one run, quiet 2-core machine), produce-to-consume
latency was p50 403 / p99 746 ms at 1,500 ms and p50 26 / p99 51 ms at 100 ms; in the worker it was most of
the 0.8 s median produce-to-row latency at half load (bench/pipeline.py's rate scenario, #14 goal 3).

100 ms costs an idle worker ten small fetch requests a second per broker, which neither broker notices.
The bound is applied by wrapping Faust's factory once per process, so every consumer Faust creates (the
first one and those after a rebalance or restart of its consumer thread) gets it.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

FETCH_MAX_WAIT_MS = 100


def bound_fetch_wait(max_wait_ms: int = FETCH_MAX_WAIT_MS) -> bool:
    """Make every aiokafka consumer Faust creates from now on wait at most ``max_wait_ms`` per fetch.

    Returns False (with one warning) when this Faust has no such factory, so the worker still runs with
    Faust's own wait; tests/stream/test_fetch_wait.py fails on that Faust instead."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_class = faust_aiokafka.AIOKafkaConsumerThread
    create = getattr(thread_class, "_create_worker_consumer", None)
    if create is None:
        log.warning("this faust has no AIOKafkaConsumerThread._create_worker_consumer: fetches keep faust's wait")
        return False
    original = getattr(create, "__sentistream_original__", create)

    @functools.wraps(original)
    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        # aiokafka hands this to its Fetcher in start(), which Faust calls after this factory returns.
        consumer._fetch_max_wait_ms = max_wait_ms  # noqa: SLF001 - no public setter; see the module docstring
        return consumer

    create_worker_consumer.__sentistream_original__ = original  # type: ignore[attr-defined]
    thread_class._create_worker_consumer = create_worker_consumer  # noqa: SLF001
    return True
