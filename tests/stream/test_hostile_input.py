"""Nothing stops the stream: hostile messages through a real worker, and arbitrary input through decode → sink.

End to end: every case of tests/connectors/hostile_posts.py goes onto ``posts.raw`` of a real embedded
broker, each followed by a good post, and ONE real ``sentistream worker`` (scoring with the shipped
model, media off) consumes them all.  Per case the message must end stored or dead-lettered with its
reason, every good post must land, and the group's committed offsets must reach the log end.

Property: hypothesis feeds arbitrary bytes and arbitrary JSON documents through ``decode_batch`` and
straight into ``PostgresSink.write`` on real PostgreSQL: no exception, and each ends as a row.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import create_engine, text

from connectors.broker import (
    BrokerTarget,
    ensure_topics,
    kafka_python_consumer_config,
    kafka_python_producer_config,
)
from connectors.post import Post
from stream.embedded import EmbeddedBroker
from stream.pipeline import RawMessage, decode_batch
from stream.sink import PostgresSink, SinkRecord
from tests.conftest import create_database, drop_database
from tests.connectors.hostile_posts import JSON_VALUES, HostileCase, hostile_cases, post_like
from tests.stream.conftest import WorkerProcess, scalar, wait_for

GROUP = "sentistream-worker"
PARTITIONS = 4
CASES = hostile_cases()


@dataclass
class HostileRun:
    """What one worker made of the whole catalogue."""

    offsets: dict[str, tuple[int, int]]  # case name -> (partition, offset) it was written at
    good_ids: list[str]
    posts: dict[str, tuple[str, datetime, str | None, int]]  # post_id -> (text, created_at, unscored_reason,
    #                                                            number of sentiments)
    dead: dict[tuple[int, int], tuple[str, str | None, bytes | None]]  # (partition, offset) -> reason, key, payload
    committed: dict[int, int | None]
    log_end: dict[int, int]
    health_status: int
    health: dict[str, Any]
    worker_log: str


def _committed(target: BrokerTarget) -> dict[int, int | None]:
    """The group's committed offset per partition (read without joining the group)."""
    consumer = KafkaConsumer(**kafka_python_consumer_config(target, GROUP))
    try:
        return {p: consumer.committed(TopicPartition("posts.raw", p)) for p in range(PARTITIONS)}
    finally:
        consumer.close()


def _log_end(target: BrokerTarget) -> dict[int, int]:
    consumer = KafkaConsumer(**kafka_python_consumer_config(target, None))
    try:
        ends = consumer.end_offsets([TopicPartition("posts.raw", p) for p in range(PARTITIONS)])
    finally:
        consumer.close()
    return {tp.partition: offset for tp, offset in ends.items()}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory, embedded_postgres: Any) -> Iterator[HostileRun]:
    home: Path = tmp_path_factory.mktemp("hostile")
    url = create_database(embedded_postgres.sqlalchemy_url("postgres"))
    from stream.migrate import upgrade

    upgrade(url)
    try:
        with EmbeddedBroker(home / "broker") as b:
            target = BrokerTarget(b.bootstrap_servers, embedded=True)
            ensure_topics(target, ["posts.raw", "posts.deadletter"], partitions=PARTITIONS)
            producer = KafkaProducer(**kafka_python_producer_config(target), max_request_size=4 * 1024 * 1024)
            offsets: dict[str, tuple[int, int]] = {}
            good_ids: list[str] = []
            start = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
            for i, case in enumerate(CASES):
                key = case.key if case.key is not None else f"replay:{case.post_id}".encode()
                meta = producer.send("posts.raw", key=key, value=case.value).get(timeout=30)
                offsets[case.name] = (meta.partition, meta.offset)
                good = Post(platform="replay", post_id=f"good-{i}", text=f"a good post next to {case.name}",
                            topic="hostile", created_at=start + timedelta(seconds=i))
                producer.send("posts.raw", key=good.key.encode(), value=good.to_json()).get(timeout=30)
                good_ids.append(good.post_id)
            producer.flush()
            producer.close()

            n_dead = sum(c.expect == "dead" for c in CASES)
            n_posts = sum(c.expect == "stored" for c in CASES) + len(good_ids)
            worker = WorkerProcess(target, url, home / "worker", media_enabled="false").start()
            engine = create_engine(url)
            try:
                def count(table: str) -> int:
                    with engine.connect() as conn:
                        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608

                wait_for(lambda: count("posts") >= n_posts and count("dead_letters") >= n_dead, 300,
                         f"{n_posts} posts and {n_dead} dead letters", worker.log)
                log_end = _log_end(target)
                wait_for(lambda: _committed(target) == log_end, 120,
                         f"committed offsets to reach the log end {log_end}",
                         lambda: f"committed {_committed(target)}\n{worker.log()}")
                # /health reads committed offsets on a 5 s timer: wait until it has seen these (its
                # backlog is 0), then take what it says; a red left from the slow start is then gone.
                answers: list[requests.Response] = []

                def health_caught_up() -> bool:
                    answers.append(requests.get(f"http://127.0.0.1:{worker.env['SENTISTREAM_WEB_PORT']}/health",
                                                timeout=10))
                    return answers[-1].json()["progress"]["backlog"] == 0

                wait_for(health_caught_up, 60, "/health to see the committed offsets",
                         lambda: f"last: {answers[-1].text if answers else None}\n{worker.log()}", interval_s=1.0)
                health = answers[-1]
                with engine.connect() as conn:
                    posts = {r[0]: (r[1], r[2], r[3], r[4]) for r in conn.execute(
                        text("SELECT p.post_id, p.text, p.created_at, p.unscored_reason, count(s.post_pk) "
                             "FROM posts p LEFT JOIN sentiments s ON s.post_pk = p.id GROUP BY p.id, p.created_at"))}
                    dead = {(r[0], r[1]): (r[2], r[3], bytes(r[4]) if r[4] is not None else None)
                            for r in conn.execute(text("SELECT source_partition, source_offset, reason, key, payload "
                                                       "FROM dead_letters WHERE source_topic = 'posts.raw'"))}
                committed = _committed(target)
            finally:
                engine.dispose()
                rc = worker.stop(60)
            assert rc == 0, worker.log()
            yield HostileRun(offsets, good_ids, posts, dead, committed, log_end, health.status_code,
                             health.json(), worker.log())
    finally:
        drop_database(url)


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_hostile_message_is_stored_or_dead_lettered_with_its_reason(hostile_run: HostileRun,
                                                                         case: HostileCase) -> None:
    where = hostile_run.offsets[case.name]
    if case.expect == "dead":
        assert where in hostile_run.dead, f"{case.name}: no dead letter at {where}"
        reason, key, payload = hostile_run.dead[where]
        assert case.fragment in reason, reason
        assert payload == (case.value[:1024 * 1024] if case.value is not None else None)
        assert case.post_id not in hostile_run.posts
    else:
        assert where not in hostile_run.dead, hostile_run.dead.get(where)
        stored_text, created_at, unscored, sentiments = hostile_run.posts[case.post_id]
        assert case.fragment in stored_text
        assert created_at == datetime.fromisoformat(case.created_at)
        # the worker scores with the shipped model: every stored hostile post was scored
        assert unscored is None and sentiments == 1


def test_every_good_post_around_the_hostile_ones_lands(hostile_run: HostileRun) -> None:
    missing = [i for i in hostile_run.good_ids if i not in hostile_run.posts]
    assert missing == []
    assert all(hostile_run.posts[i][3] == 1 for i in hostile_run.good_ids)  # and each was scored
    assert len(hostile_run.dead) == sum(c.expect == "dead" for c in CASES)  # and nothing else was dead-lettered


def test_committed_offsets_reach_the_log_end(hostile_run: HostileRun) -> None:
    assert sum(hostile_run.log_end.values()) == 2 * len(CASES)
    assert hostile_run.committed == hostile_run.log_end


def test_health_stays_green_and_nothing_was_logged_as_unexpected(hostile_run: HostileRun) -> None:
    assert hostile_run.health_status == 200, hostile_run.health
    assert "failed unexpectedly" not in hostile_run.worker_log
    assert "worker stopping" not in hostile_run.worker_log


# -- property: arbitrary input through decode -> sink ----------------------------------------------------

_offsets = itertools.count()


def _through_decode_and_sink(sink: PostgresSink, engine: Any, value: bytes) -> None:
    offset = next(_offsets)
    message = RawMessage("prop.raw", 0, offset, b"k", value)
    decoded, dead = decode_batch([message])
    records = [SinkRecord(post=p, source=(m.topic, m.partition, m.offset)) for p, m in decoded]
    sink.write(records, dead)  # must not raise: the decoder lets through only what the sink can store
    with engine.connect() as conn:
        if decoded:
            p = decoded[0][0]
            row = conn.execute(text("SELECT text FROM posts WHERE platform = :pl AND post_id = :id"),
                               {"pl": p.platform, "id": p.post_id}).scalar_one()
            assert row == p.text.replace("\x00", "\ufffd")
        else:
            reason = conn.execute(text("SELECT reason FROM dead_letters WHERE source_topic = 'prop.raw' "
                                       "AND source_offset = :o"), {"o": offset}).scalar_one()
            assert reason.strip()


@pytest.fixture
def sink_and_engine(migrated_db: str) -> Iterator[tuple[PostgresSink, Any]]:
    engine = create_engine(migrated_db)
    yield PostgresSink(engine), engine
    engine.dispose()


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(value=st.binary(max_size=3000))
def test_arbitrary_bytes_end_stored_or_dead_lettered(sink_and_engine: tuple[PostgresSink, Any], value: bytes) -> None:
    _through_decode_and_sink(*sink_and_engine, value)


@PROPERTY_SETTINGS
@given(value=st.one_of(post_like(), JSON_VALUES.map(lambda v: json.dumps(v).encode())))
def test_arbitrary_json_documents_end_stored_or_dead_lettered(sink_and_engine: tuple[PostgresSink, Any],
                                                              value: bytes) -> None:
    _through_decode_and_sink(*sink_and_engine, value)


# -- the agent never skips an ack silently -------------------------------------------------------------


def test_a_batch_that_cannot_be_saved_at_all_turns_health_red_and_is_not_acked(broker, embedded_db,
                                                                               worker_factory) -> None:
    """A database that refuses every dead letter (a trigger standing in for a revoked grant): the
    batch with a bad message can be neither stored nor dead-lettered, so the agent must say so loudly,
    turn /health red and leave the batch unacked; it must not claim the worker is stopping."""
    engine = create_engine(embedded_db)
    with engine.begin() as conn:
        conn.execute(text("CREATE FUNCTION refuse_dead_letters() RETURNS trigger AS $$ BEGIN "
                          "RAISE EXCEPTION 'dead letters refused (test)'; END $$ LANGUAGE plpgsql"))
        conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON dead_letters FOR EACH ROW "
                          "EXECUTE FUNCTION refuse_dead_letters()"))
    engine.dispose()
    ensure_topics(broker, ["posts.raw", "posts.deadletter"], partitions=PARTITIONS)
    producer = KafkaProducer(**kafka_python_producer_config(broker))
    bad = producer.send("posts.raw", key=b"replay:bad", value=b"{not json").get(timeout=30)
    producer.close()

    worker = worker_factory(broker, embedded_db, scoring="false")
    base = f"http://127.0.0.1:{worker.env['SENTISTREAM_WEB_PORT']}"

    def pipeline_red() -> bool:
        try:
            body = requests.get(f"{base}/health", timeout=5)
        except requests.RequestException:
            return False
        if body.status_code != 503 or "json" not in body.headers.get("content-type", ""):
            return False
        return body.json().get("components", {}).get("pipeline", {}).get("up") is False

    wait_for(pipeline_red, 120, "/health to report the pipeline down", worker.log)
    log_text = worker.log()
    assert "failed unexpectedly" in log_text and "dead letters refused (test)" in log_text
    assert "Traceback" in log_text
    assert "worker stopping" not in log_text
    assert _committed(broker)[bad.partition] in (None, 0)  # the unsaved message was not acked

    # The fault passes (the grant is restored): the same batch is retried in place and lands, without a
    # restart; its offset is committed and /health turns green again.
    engine = create_engine(embedded_db)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER refuse ON dead_letters"))
    engine.dispose()

    def pipeline_green() -> bool:
        try:
            body = requests.get(f"{base}/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        return body.get("components", {}).get("pipeline", {}).get("up") is True

    wait_for(lambda: scalar(embedded_db, "SELECT count(*) FROM dead_letters") == 1, 150,
             "the retried batch's dead letter", worker.log)
    assert bytes(scalar(embedded_db, "SELECT payload FROM dead_letters")) == b"{not json"
    wait_for(pipeline_green, 60, "/health to report the pipeline up again", worker.log)
    wait_for(lambda: (_committed(broker)[bad.partition] or 0) == bad.offset + 1, 60,
             "the retried batch's offset to be committed", worker.log)
    assert "saved after" in worker.log()
    assert worker.stop() == 0, worker.log()
