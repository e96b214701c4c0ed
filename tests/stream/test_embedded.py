"""Embedded services start, are used for real, and leave nothing running; configured ones start nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.broker import (
    BrokerTarget,
    ensure_topics,
    kafka_python_consumer_config,
    kafka_python_producer_config,
)
from stream.embedded import EmbeddedBroker, EmbeddedPostgres, services
from stream.settings import Settings


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is gone for our purposes
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_embedded_broker_round_trip_and_clean_stop(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path).start()
    pid = broker.process.pid
    target = BrokerTarget(broker.bootstrap_servers, embedded=True)
    ensure_topics(target, ["roundtrip"], partitions=2)
    producer = KafkaProducer(**kafka_python_producer_config(target))
    for i in range(5):
        producer.send("roundtrip", key=b"k", value=f"v{i}".encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(**kafka_python_consumer_config(target, None))
    tps = [TopicPartition("roundtrip", p) for p in range(2)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    values: list[bytes] = []
    deadline = time.monotonic() + 15
    while len(values) < 5 and time.monotonic() < deadline:
        for msgs in consumer.poll(timeout_ms=200).values():
            values.extend(m.value for m in msgs)
    consumer.close()
    assert sorted(values) == [f"v{i}".encode() for i in range(5)]
    assert (tmp_path / "broker.log").exists()

    broker.stop()
    assert not _alive(pid)


def test_embedded_postgres_is_reused_between_runs_and_stops(server_tmp: Path) -> None:
    pgdata = server_tmp / "pgdata"  # not under tmp_path: the server runs as its own OS user when we are root
    with EmbeddedPostgres(pgdata) as pg:
        conn = psycopg2.connect(pg.url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (v int)")
            cur.execute("INSERT INTO kept VALUES (42)")
        conn.close()
    assert _postmaster_pids(pgdata) == []
    with EmbeddedPostgres(pgdata) as pg:  # same data directory: the row is still there
        conn = psycopg2.connect(pg.url)
        with conn.cursor() as cur:
            cur.execute("SELECT v FROM kept")
            assert cur.fetchone() == (42,)
        conn.close()
    assert _postmaster_pids(pgdata) == []


def _postmaster_pids(pgdata: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"-D {pgdata}"], capture_output=True, text=True).stdout.split()
    return [pid for pid in out if pid != str(os.getpid())]


def test_configured_services_start_nothing(tmp_path: Path) -> None:
    settings = Settings(kafka="127.0.0.1:1", database_url="postgresql://u@127.0.0.1:1/db", home=tmp_path)
    with services(settings) as resolved:
        assert resolved.started == ()
        assert resolved.broker == BrokerTarget("127.0.0.1:1", embedded=False)
        assert resolved.database_url == "postgresql+psycopg2://u@127.0.0.1:1/db"
    assert not (tmp_path / "pgdata").exists() and not (tmp_path / "run").exists()


def test_a_second_process_reuses_the_running_embedded_broker(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql://unused@127.0.0.1:1/x")
    with services(settings, need_database=False) as first:
        assert first.started == ("broker",)
        probe = ("from stream.embedded import services; from stream.settings import Settings; "
                 f"import pathlib; s = Settings(home=pathlib.Path({str(tmp_path)!r}));\n"
                 "with services(s, need_database=False) as r: print(r.broker.bootstrap_servers, r.started)")
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[0] == first.broker.bootstrap_servers
        assert "broker" not in out.stdout
    assert not (tmp_path / "run" / "broker.json").exists()


@pytest.mark.parametrize("value", ["2", "abc"])
def test_bad_settings_fail_fast_with_the_variable_name(value: str) -> None:
    from stream.settings import SettingsError

    env = {"SENTISTREAM_BATCH_SIZE": value} if value == "abc" else {"SENTISTREAM_DEVICE": "tpu"}
    with pytest.raises(SettingsError, match="SENTISTREAM_(BATCH_SIZE|DEVICE)"):
        Settings.from_env(env)
