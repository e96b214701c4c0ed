"""The Faust worker: App -> topics -> the one agent -> run.

The agent reads ``posts.raw`` in adaptive micro-batches (stream/micro_batch.py: what is waiting as soon
as the model is free, bounded by size, no fixed wait when idle) and hands each batch to
``BatchProcessor`` (stream/pipeline.py).  It acks a batch's messages itself, only after the batch is
committed in PostgreSQL: Faust's plain ``take`` acks a batch even when the loop body raises or is
cancelled at shutdown, which would commit offsets of posts that were never saved.  Each batch's lag
feeds the overload controller (stream/overload.py), which sheds pictures while the worker is behind.
Concurrency stays 1 per worker process (``concurrency > 1`` can commit past a message still in flight,
faust-streaming #606); scale out with more processes, up to one per partition.

No windowed Faust tables: windows and alerts are recomputed from PostgreSQL rows (stream/windows.py),
which survives restarts and replays without a changelog topic (the embedded broker has no compaction).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP
from tenacity import AsyncRetrying, RetryCallState, retry_if_not_exception_type, wait_exponential

from connectors.broker import BrokerTarget, ensure_topics, faust_broker_settings
from stream import db_deadline, metrics
from stream.batch_yield import batch_must_yield, release_unacked
from stream.broker_epochs import BrokerEpochWatch, kafka_cluster_id
from stream.fetch_wait import bound_fetch_wait
from stream.metrics import HealthState, PeriodicSummary
from stream.micro_batch import adaptive_take
from stream.overload import OverloadController
from stream.pipeline import BatchProcessor, RawMessage, unscored_label
from stream.settings import Settings
from stream.sink import DeadLetter, is_transient

log = logging.getLogger(__name__)


@dataclass
class WorkerState:
    """What /health reports and what the agent built at start-up."""

    health: HealthState = field(default_factory=HealthState)
    processor: BatchProcessor | None = None
    model_version: str | None = None
    batches: int = 0
    posts_written: int = 0
    dead_letters: int = 0
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    summary: PeriodicSummary = field(default_factory=PeriodicSummary)
    database_probe: Callable[[], None] | None = None  # one cheap round trip (SELECT 1), run off the loop
    probe_task: asyncio.Future[None] | None = None
    broker_epoch_resets: int = 0
    overload: OverloadController | None = None  # built by create_app from the settings when not given


ProcessorFactory = Any  # Callable[[faust.App, WorkerState], Awaitable[BatchProcessor]]


def create_app(settings: Settings, broker: BrokerTarget, processor_factory: ProcessorFactory,
               state: WorkerState | None = None) -> faust.App:
    """Build the Faust app for one worker process; ``processor_factory`` wires the pipeline parts."""
    bound_fetch_wait()  # Faust's 1.5 s fetch wait is a 1.5 s delay on Tansu: see stream/fetch_wait.py
    app = faust.App(
        settings.consumer_group,
        **faust_broker_settings(broker),
        datadir=str(settings.home / "faust"),
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_in_thread=False,
    )
    raw_topic = app.topic(settings.topic_raw, key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw",
                          partitions=settings.topic_partitions)
    dead_topic = app.topic(settings.topic_deadletter, key_type=bytes, value_type=bytes,
                           key_serializer="raw", value_serializer="raw",
                           partitions=settings.topic_partitions)
    state = state or WorkerState()
    if state.overload is None:
        state.overload = OverloadController(settings.overload_lag_s, settings.batch_size,
                                            settings.overload_batch_size,
                                            on_change=lambda active: metrics.OVERLOAD.set(int(active)))
    overload = state.overload
    app.sentistream_state = state  # type: ignore[attr-defined]

    async def publish_dead_letters(dead: Sequence[DeadLetter]) -> None:
        for d in dead:
            await dead_topic.send(key=d.key.encode() if d.key else None, value=d.to_json())

    app.sentistream_publish_dead_letters = publish_dead_letters  # type: ignore[attr-defined]

    alerts_topic = app.topic(settings.topic_alerts, key_type=bytes, value_type=bytes,
                             key_serializer="raw", value_serializer="raw",
                             partitions=settings.topic_partitions)

    async def publish_alert(key: bytes, value: bytes) -> None:
        """Returns once the broker has the record: the alert outbox marks it delivered only then."""
        sent = await alerts_topic.send(key=key, value=value)
        await sent

    app.sentistream_publish_alert = publish_alert  # type: ignore[attr-defined]

    @app.agent(raw_topic, concurrency=1)
    async def score_posts(stream: faust.StreamT) -> None:
        if state.processor is None:
            state.processor = await processor_factory(app, state)
        processor = state.processor
        # Adaptive micro-batches: what is waiting as soon as the model is free, at most batch_size posts
        # (overload_batch_size in overload mode); never a fixed wait on an idle stream.
        async for events in adaptive_take(stream, lambda: overload.batch_size, settings.batch_latency_ms / 1000.0):
            messages = [
                RawMessage(e.message.topic, e.message.partition, e.message.offset,
                           e.message.key, e.message.value, e.message.timestamp)
                for e in events
            ]
            overload.observe(m.timestamp for m in messages)  # the mode this batch runs in (pipeline asks it)
            if overload.last_lag_s is not None:
                metrics.LAG_SECONDS.set(overload.last_lag_s)
            report = await _process_until_saved(app, state, processor, messages, events)
            if report is None:
                continue  # given back unacked: the worker is stopping or its partitions are moving
            for e in events:
                await stream.ack(e)
            _record(app, state, messages, report)

    # The epoch in force when the worker starts, read now: a first probe left to the timer could first
    # answer after a restart and take the new broker's id for the old one, missing the change.
    cluster_id_probe = kafka_cluster_id(broker.bootstrap_servers)
    epoch_watch = BrokerEpochWatch(settings.topic_raw, cluster_id_probe, cluster_id=cluster_id_probe())

    @app.timer(settings.epoch_check_interval_s)
    async def watch_broker_epochs() -> None:
        """A broker that restarted with a new log: re-read it instead of skipping its first offsets."""
        for tp in await epoch_watch.check(app):
            state.broker_epoch_resets += 1
            state.next_offsets.pop((tp.topic, tp.partition), None)

    @app.timer(HEALTH_CHECK_INTERVAL_S)
    async def watch_progress() -> None:
        """Lag and stalls from *committed* offsets, and hung database calls, every few seconds: a worker
        stuck inside a batch still shows its backlog growing and turns /health red."""
        await observe_committed_progress(app, state, settings.topic_raw)
        check_database(state, settings.db_down_unhealthy_s)

    if settings.summary_interval_s > 0:
        @app.timer(settings.summary_interval_s)
        async def log_summary() -> None:
            log.info("%s", state.summary.line(state.health.backlog,
                                              [f"{t}:{p}" for t, p in state.health.stalled_partitions()]))

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        snapshot = state.health.snapshot()
        snapshot["model_version"] = state.model_version
        snapshot["overload"] = overload.snapshot().as_dict()  # degraded, not down: it never makes /health red
        snapshot["counts"] = {"batches": state.batches, "posts_written": state.posts_written,
                              "dead_letters": state.dead_letters,
                              "broker_epoch_resets": state.broker_epoch_resets}
        return web.json(snapshot, status=200 if state.health.healthy else 503)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        body, content_type = metrics.render()
        return web.bytes(body, content_type=content_type.split(";")[0])

    app.sentistream_agent = score_posts  # type: ignore[attr-defined]
    return app


UNEXPECTED_RETRY_MAX_S = 60.0  # cap of the backoff between in-place retries of a batch that failed unexpectedly


class BatchGivenBack(Exception):
    """The batch was released unacked: the worker is stopping or its partitions are being revoked."""


async def _process_until_saved(app: faust.App, state: WorkerState, processor: BatchProcessor,
                               messages: Sequence[RawMessage], events: Sequence[Any]) -> Any | None:
    """Process one batch until it is durable; None when it must be given back unacked instead.

    ``BatchProcessor.process`` absorbs bad data (bisection, dead letters) and waits out a database that
    is down, so an exception here is not the data's fault: a bug, or a fault the processor does not know
    to be transient.  Such a batch is never skipped and never acked: the failure is logged with its
    traceback, ``/health`` turns red (component ``pipeline``), and the same batch is retried in place
    with capped exponential backoff — so a passing fault heals without a restart, and a lasting one
    keeps the partition's committed offset where it is, visible as a stall.  While the worker is
    stopping or its partitions are being revoked, the batch is released from Faust's in-flight set
    unacked instead, and redelivered from the committed offset to whichever worker owns the partition next.
    """

    def failed(retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        n = retry_state.attempt_number
        state.health.mark_down("pipeline", f"a batch failed unexpectedly {n} time(s): {type(exc).__name__}: {exc}")
        if n == 1 or n % 10 == 0:
            log.error("batch of %d (%s) failed unexpectedly (failure %d); not acked, retrying it in place "
                      "every <= %.0fs", len(messages), _offsets(messages), n, UNEXPECTED_RETRY_MAX_S,
                      exc_info=exc)

    async def sleep_unless_yielding(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not batch_must_yield(app):
            await asyncio.sleep(0.25)

    async def attempt() -> Any:
        try:
            return await processor.process(messages)
        except Exception as exc:
            if not batch_must_yield(app):
                raise
            release_unacked(app.consumer, events)
            reason = "worker stopping" if app.should_stop else "partitions rebalancing"
            if is_transient(exc):
                log.warning("batch of %d not saved (%s with the database down); not acked, it will be "
                            "redelivered", len(messages), reason)
            else:
                log.error("batch of %d (%s) failed unexpectedly (%s); not acked, it will be redelivered",
                          len(messages), _offsets(messages), reason, exc_info=exc)
            raise BatchGivenBack from exc

    retrying = AsyncRetrying(retry=retry_if_not_exception_type(BatchGivenBack),
                             wait=wait_exponential(multiplier=1, min=2, max=UNEXPECTED_RETRY_MAX_S),
                             sleep=sleep_unless_yielding, before_sleep=failed, reraise=True)
    try:
        report = await retrying(attempt)
    except BatchGivenBack:
        return None
    failures = retrying.statistics.get("attempt_number", 1) - 1
    if failures:
        log.warning("batch of %d (%s) saved after %d failed attempt(s)", len(messages), _offsets(messages),
                    failures)
        state.health.mark_up("pipeline")
    return report


def _offsets(messages: Sequence[RawMessage]) -> str:
    """'posts.raw[0]@10-73, posts.raw[2]@5-9': where a failed batch sits, for the operator."""
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for m in messages:
        low, high = spans.get((m.topic, m.partition), (m.offset, m.offset))
        spans[(m.topic, m.partition)] = (min(low, m.offset), max(high, m.offset))
    return ", ".join(f"{t}[{p}]@{lo}-{hi}" for (t, p), (lo, hi) in sorted(spans.items()))


def _record(app: faust.App, state: WorkerState, messages: Sequence[RawMessage], report: Any) -> None:
    """Counters, histograms, lag and the progress heartbeat after a committed batch."""
    state.batches += 1
    written = report.written.posts if report.written else 0
    state.posts_written += written
    state.dead_letters += len(report.dead_letters)
    metrics.POSTS_IN.inc(len(messages))
    metrics.POSTS_OUT.inc(written)
    metrics.DEAD_LETTERS.inc(len(report.dead_letters))
    metrics.observe_batch(len(messages), report.stage_seconds)
    metrics.count_media(report.media_statuses)
    metrics.count_unscored(unscored_label(r) for r in report.unscored_reasons)
    for m in messages:
        key = (m.topic, m.partition)
        state.next_offsets[key] = max(state.next_offsets.get(key, 0), m.offset + 1)
    state.summary.observe_batch(report.seconds)
    if messages:
        observe_fetched_progress(app, state, messages[0].topic)
    state.health.mark_up("broker")
    state.health.record_progress()  # lag and backlog come from committed offsets: see watch_progress
    log.debug("batch of %d saved in %.3fs", len(messages), report.seconds)


HEALTH_CHECK_INTERVAL_S = 5.0
LOG_END_QUERY_TIMEOUT_S = 3.0  # below the check interval, so a dead broker does not make the timer overlap


async def observe_committed_progress(app: faust.App, state: WorkerState, topic: str) -> None:
    """Feed HealthState (and the lag gauge) with each assigned partition's committed offset and log end.

    Committed offsets are Faust's record of what it committed to the broker (what a restart resumes
    from), not what the agent has read, so a partition whose commits are stuck shows its lag.  Log ends
    are asked of the broker (ListOffsets) so they grow even while the agent is stuck and not fetching;
    if the broker does not answer in time, the last fetched high-water marks stand in.
    """
    assigned = _assigned(app, topic)
    if assigned is None:
        return
    log_ends: Mapping[TP, int | None] | None = None
    if assigned:
        try:
            log_ends = await asyncio.wait_for(app.consumer.highwaters(*assigned), LOG_END_QUERY_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - broker slow or down: fall back to fetched high-waters
            log.debug("log end query failed (%s); using fetched high-water marks", exc)
            state.health.mark_down("broker", f"no answer to a log end query ({type(exc).__name__}: {exc})"
                                   if str(exc) else f"no answer to a log end query in {LOG_END_QUERY_TIMEOUT_S:.0f}s")
        else:
            state.health.mark_up("broker")
    _observe(app, state, assigned, log_ends)


def observe_fetched_progress(app: faust.App, state: WorkerState, topic: str) -> None:
    """Same as ``observe_committed_progress`` without asking the broker (after each batch)."""
    assigned = _assigned(app, topic)
    if assigned is not None:
        _observe(app, state, assigned, None)


def _assigned(app: faust.App, topic: str) -> list[TP] | None:
    try:
        return [tp for tp in app.consumer.assignment() if tp.topic == topic]
    except Exception:  # noqa: BLE001 - consumer not started yet: nothing known
        return None


def _observe(app: faust.App, state: WorkerState, assigned: list[TP],
             log_ends: Mapping[TP, int | None] | None) -> None:
    consumer = app.consumer
    committed: Mapping[TP, int | None] = getattr(consumer, "_committed_offset", {})
    ends: dict[TP, int | None] = dict(log_ends or {})
    for tp in assigned:
        if ends.get(tp) is None:
            try:
                ends[tp] = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - not fetched yet
                ends[tp] = None
    state.health.observe_partitions({(tp.topic, tp.partition): (committed.get(tp), ends.get(tp))
                                     for tp in assigned})


def check_database(state: WorkerState, down_after_s: float,
                   calls: db_deadline.DatabaseCallDeadline = db_deadline.DATABASE_CALLS) -> None:
    """A call that has waited longer than ``down_after_s`` means the database is down (frozen, or a
    network path that swallows packets) even before the call's deadline cuts it; an idle worker probes."""
    age = calls.oldest_in_flight_s()
    if age is not None and age > down_after_s:
        state.health.mark_down("database", f"a database call has not answered for {age:.0f}s",
                               since=time.monotonic() - age)
    if state.database_probe is not None and (state.probe_task is None or state.probe_task.done()):
        state.probe_task = asyncio.ensure_future(_probe_database(state, state.database_probe))


async def _probe_database(state: WorkerState, probe: Callable[[], None]) -> None:
    try:
        await asyncio.get_running_loop().run_in_executor(None, probe)
    except Exception as exc:  # noqa: BLE001 - classified below; a probe never stops the worker
        if is_transient(exc):
            state.health.mark_down("database", exc)
        else:
            log.warning("database probe failed: %s", exc)
        return
    state.health.mark_up("database")


def run_worker(settings: Settings, broker: BrokerTarget, processor_factory: ProcessorFactory,
               state: WorkerState | None = None) -> int:
    """Create topics, build the app, and run it until SIGTERM/SIGINT; returns the exit code."""
    ensure_topics(broker, [settings.topic_raw, settings.topic_deadletter, settings.topic_alerts],
                  settings.topic_partitions, timeout_s=settings.startup_wait_s)
    app = create_app(settings, broker, processor_factory, state)
    from faust.worker import Worker

    worker = Worker(app, loglevel=settings.log_level.upper() if settings.log_level != "warning" else "WARN",
                    quiet=True, redirect_stdouts=False, override_logging=False)
    worker.spinner = None  # its backspaces and cursor escapes land in log files; our log lines tell start-up
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def default_executor() -> ThreadPoolExecutor:
    """Blocking work (tokenization, inference, psycopg2) runs here so Kafka heartbeats keep flowing."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="sentistream")

