"""The worker's consumer fetches with a short broker wait (stream/fetch_wait.py).

Faust writes ``fetch_max_wait_ms=1500`` into its aiokafka consumer; on the embedded Tansu broker a fetch
sleeps its whole wait, which was most of the worker's produce-to-row latency.  These tests build the
consumer through Faust's own factory (what the worker's consumer thread calls) and read what aiokafka will
hand its fetcher; bench/pipeline.py's rate scenario measures the latency itself."""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream.fetch_wait import FETCH_MAX_WAIT_MS, bound_fetch_wait


def fetch_wait_of_a_new_consumer() -> int:
    async def build() -> int:
        app = faust.App("fetch-wait-probe", broker="kafka://127.0.0.1:1", web_enabled=False, store="memory://")
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # noqa: SLF001 - Faust's factory
        try:
            return consumer._fetch_max_wait_ms  # noqa: SLF001 - what aiokafka's Fetcher receives in start()
        finally:
            await consumer.stop()

    return asyncio.run(build())


@pytest.fixture
def restore_faust_factory():
    """Each test starts from Faust's own factory (an earlier test in this process may have built a worker
    app, which wraps it) and leaves the factory as it found it."""
    thread_class = faust_aiokafka.AIOKafkaConsumerThread
    found = thread_class._create_worker_consumer  # noqa: SLF001
    thread_class._create_worker_consumer = getattr(found, "__sentistream_original__", found)  # noqa: SLF001
    yield
    thread_class._create_worker_consumer = found  # noqa: SLF001


def test_faust_alone_waits_1500_ms_and_the_bound_makes_it_100(restore_faust_factory) -> None:
    assert fetch_wait_of_a_new_consumer() == 1500  # fails when Faust changes its own: revisit the bound
    assert bound_fetch_wait() is True
    assert fetch_wait_of_a_new_consumer() == FETCH_MAX_WAIT_MS == 100


def test_bounding_twice_wraps_faust_once_and_the_last_bound_wins(restore_faust_factory) -> None:
    bound_fetch_wait(250)
    bound_fetch_wait(100)
    wrapped = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer  # noqa: SLF001
    assert not hasattr(wrapped.__sentistream_original__, "__sentistream_original__")
    assert fetch_wait_of_a_new_consumer() == 100


def test_the_worker_app_applies_the_bound(restore_faust_factory, tmp_path, monkeypatch) -> None:
    from connectors.broker import BrokerTarget
    from stream.app import create_app
    from stream.settings import Settings

    monkeypatch.setenv("SENTISTREAM_HOME", str(tmp_path))
    create_app(Settings(), BrokerTarget("127.0.0.1:1", embedded=True), processor_factory=None)
    assert fetch_wait_of_a_new_consumer() == FETCH_MAX_WAIT_MS
