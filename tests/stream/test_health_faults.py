"""Infrastructure faults, for real: a frozen database, a partition that stops committing, a broker that is
late, and the log storms around them (issue #10 item 5, issue #16 items 2-4).

The database is frozen with a TCP proxy in front of the test's embedded PostgreSQL that stops moving bytes
(connections stay open, nothing is answered: what a SIGSTOPped server or a stuck network path looks like
to the client; TCP keepalives are answered by the proxy's kernel, so only client-side deadlines help).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from connectors.broker import BrokerTarget, ensure_topics
from connectors.dependency_wait import DependencyUnreachableError, wait_until_reachable
from connectors.log_throttle import RepeatedLogThrottle, install
from connectors.publisher import KafkaPublisher
from stream import db_deadline
from stream.db_deadline import DatabaseCallDeadline
from stream.embedded import EmbeddedBroker, free_port
from stream.migrate import DatabaseTimeouts, make_engine
from stream.sink import PostgresSink, SinkRecord
from tests.stream.conftest import make_posts, wait_for

pytestmark = pytest.mark.slow


class FreezableProxy:
    """TCP on 127.0.0.1:port -> a Unix or TCP upstream; ``freeze()`` stops moving bytes both ways and holds
    new connections unanswered, ``thaw()`` carries on where it stopped (nothing is dropped)."""

    def __init__(self, connect_upstream: Callable[[], socket.socket], port: int = 0) -> None:
        self._connect_upstream = connect_upstream
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._frozen = threading.Event()
        self._running = True
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def freeze(self) -> None:
        self._frozen.set()

    def thaw(self) -> None:
        self._frozen.clear()

    def _hold_while_frozen(self) -> None:
        while self._frozen.is_set() and self._running:
            time.sleep(0.05)

    def _accept_loop(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._hold_while_frozen()
        try:
            upstream = self._connect_upstream()
        except OSError:
            client.close()
            return
        self._sockets.append(upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            src.settimeout(0.2)
            while self._running:
                self._hold_while_frozen()
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                self._hold_while_frozen()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._running = False
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


def unix_socket_connector(database_url: str) -> Callable[[], socket.socket]:
    """Connects to the Unix socket of an embedded-PostgreSQL URL (``?host=<socket dir>``)."""
    socket_dir = Path(str(make_url(database_url).query["host"]))
    socket_path = next(p for p in socket_dir.glob(".s.PGSQL.*") if not p.name.endswith(".lock"))

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(socket_path))
        return s

    return connect


def tcp_url(database_url: str, port: int) -> str:
    return make_url(database_url).set(host="127.0.0.1", port=port, query={}).render_as_string(hide_password=False)


@pytest.fixture
def frozen_db_proxy(embedded_db: str) -> Iterator[tuple[FreezableProxy, str]]:
    """A proxy to the test's embedded database (Unix socket) and the TCP URL that goes through it."""
    proxy = FreezableProxy(unix_socket_connector(embedded_db))
    yield proxy, tcp_url(embedded_db, proxy.port)
    proxy.close()


def publish(broker: BrokerTarget, posts: list) -> None:
    ensure_topics(broker, ["posts.raw", "posts.deadletter", "sentiment.alerts"], partitions=4)
    with KafkaPublisher(broker, topic="posts.raw") as pub:
        for p in posts:
            pub.publish(p)


def stored_ids(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(text("SELECT post_id FROM posts"))}
    finally:
        engine.dispose()


def health(worker) -> tuple[int, dict]:
    try:
        r = requests.get(f"http://127.0.0.1:{worker.env['SENTISTREAM_WEB_PORT']}/health", timeout=3)
    except requests.RequestException:
        return 0, {}
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, {}


def wait_for_health(worker, status: int, timeout_s: float) -> dict:
    seen: list[tuple[int, dict]] = []

    def check() -> bool:
        seen.append(health(worker))
        return seen[-1][0] == status

    wait_for(check, timeout_s, f"/health {status}", lambda: f"last: {seen[-1] if seen else None}\n{worker.log()}",
             interval_s=1.0)
    return seen[-1][1]


# -- a frozen database ---------------------------------------------------------------------------------


def test_a_call_to_a_frozen_server_is_cut_at_its_deadline_and_reported_in_flight(frozen_db_proxy) -> None:
    proxy, url = frozen_db_proxy
    calls = DatabaseCallDeadline(poll_s=0.2)  # its own register, so the test reads only its own calls
    timeouts = DatabaseTimeouts(connect_s=2, statement_s=1.0)
    assert timeouts.call_deadline_s == 3.0
    engine = db_deadline.install(
        create_engine(url, connect_args=timeouts.connect_args(make_url(url))), timeouts.call_deadline_s, calls)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "1s"
        proxy.freeze()
        ages: list[float | None] = []
        sampler = threading.Timer(1.5, lambda: ages.append(calls.oldest_in_flight_s()))
        sampler.start()
        started = time.monotonic()
        with pytest.raises(OperationalError):
            conn.execute(text("SELECT 1"))
        waited = time.monotonic() - started
    assert 2.5 < waited < 15, waited  # cut by the 3 s deadline (the frozen server never cancels itself)
    assert ages and ages[0] is not None and ages[0] >= 1.0
    assert calls.cut_count >= 1 and calls.oldest_in_flight_s() is None
    proxy.thaw()
    with engine.connect() as conn:  # the cut connection was dropped; a new one works after the thaw
        assert conn.execute(text("SELECT 41 + 1")).scalar() == 42
    engine.dispose()


@pytest.mark.parametrize("bulk", ["copy", "values"])
def test_a_sink_write_to_a_server_frozen_mid_batch_is_cut_and_leaves_nothing_behind(
        frozen_db_proxy, embedded_db, bulk: str) -> None:
    """The sink talks to the server on a raw connection, past the dialect: its statements, COPYs and
    commit are registered too, so a server that freezes after the connection was checked out (no ping
    stands between them here) is cut at the deadline instead of hanging the worker's batch forever."""
    proxy, url = frozen_db_proxy
    calls = DatabaseCallDeadline(poll_s=0.2)
    timeouts = DatabaseTimeouts(connect_s=2, statement_s=1.0)
    engine = db_deadline.install(
        create_engine(url, connect_args=timeouts.connect_args(make_url(url)), pool_size=1, max_overflow=0),
        timeouts.call_deadline_s, calls)
    records = [SinkRecord(post=p) for p in make_posts(300, prefix=f"frozen-{bulk}-")]
    sink = PostgresSink(engine, bulk=bulk)
    with engine.connect() as conn:  # the pool's one connection exists before the freeze
        conn.execute(text("SELECT 1"))
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(psycopg2.OperationalError, match="server closed the connection"):
        sink.write(records)
    waited = time.monotonic() - started
    assert 2.5 < waited < 20, waited  # the 3 s deadline; the frozen server never cancels anything itself
    assert calls.cut_count >= 1 and calls.oldest_in_flight_s() is None
    proxy.thaw()
    assert not stored_ids(embedded_db) & {r.post.post_id for r in records}  # nothing of the cut batch
    assert sink.write(records).posts == 300  # the cut connection was dropped; the batch goes in again
    assert {r.post.post_id for r in records} <= stored_ids(embedded_db)
    engine.dispose()


def test_a_connectors_cursor_save_to_a_frozen_server_is_cut_and_the_connector_can_go_on(
        frozen_db_proxy, monkeypatch) -> None:
    """`sentistream ingest <platform>` saves its cursor through the engine stream/ hands it, with this
    process's timeouts and per-call deadline: a frozen server fails the save (the connector logs it and
    keeps polling; its posts are already in Kafka) instead of hanging the connector in libpq forever."""
    from connectors.cursor import CursorStoreError, PostgresCursorStore
    from stream import cli as stream_cli

    proxy, url = frozen_db_proxy
    monkeypatch.setenv("SENTISTREAM_DB_STATEMENT_TIMEOUT_S", "1")
    monkeypatch.setenv("SENTISTREAM_DB_CONNECT_TIMEOUT_S", "2")
    args = stream_cli.build_parser().parse_args(["ingest", "mastodon", "--topics", "topics.yaml"])
    assert args.cursor_engine is stream_cli.cursor_store_engine  # what cmd_platform builds its store with
    store = PostgresCursorStore(engine=args.cursor_engine(url))
    store.save("mastodon-frozen", "100")
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(CursorStoreError, match="cannot save the cursor of 'mastodon-frozen'"):
        store.save("mastodon-frozen", "101")
    waited = time.monotonic() - started
    assert 2.5 < waited < 20, waited  # statement 1 s + connect 2 s; the frozen server cancels nothing itself
    proxy.thaw()
    store.save("mastodon-frozen", "102")  # the cut connection was dropped; the next save gets a new one
    assert store.load("mastodon-frozen") == "102"
    store.close()


def test_long_statements_can_opt_out_of_the_statement_timeout(embedded_db) -> None:
    short = make_engine(embedded_db, timeouts=DatabaseTimeouts(statement_s=0.5))
    long = make_engine(embedded_db, timeouts=DatabaseTimeouts(statement_s=0.5).without_statement_timeout())
    try:
        with short.connect() as conn, pytest.raises(OperationalError, match="statement timeout"):
            conn.execute(text("SELECT pg_sleep(1.5)"))
        with long.connect() as conn:
            conn.execute(text("SELECT pg_sleep(1.5)"))
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
    finally:
        short.dispose()
        long.dispose()


def test_a_frozen_database_turns_health_red_and_everything_lands_after_the_thaw(
        broker, frozen_db_proxy, embedded_db, worker_factory) -> None:
    proxy, proxied_url = frozen_db_proxy
    first, second = make_posts(40, prefix="before"), make_posts(60, prefix="during")
    publish(broker, first)
    worker = worker_factory(broker, proxied_url, scoring="false", db_statement_timeout_s="4",
                            db_connect_timeout_s="3", db_down_unhealthy_s="10", summary_interval_s="5")
    wait_for(lambda: len(stored_ids(embedded_db)) == 40, 90, "the first 40 posts", worker.log)
    wait_for_health(worker, 200, 30)

    proxy.freeze()
    frozen_at = time.monotonic()
    publish(broker, second)
    body = wait_for_health(worker, 503, 60)
    assert time.monotonic() - frozen_at < 60
    assert body["components"]["database"]["ok"] is False, body
    # Offsets held: nothing of the second lot is stored (checked beside the proxy) while it is frozen.
    assert stored_ids(embedded_db) == {p.post_id for p in first}
    assert body["progress"]["backlog"] > 0, body

    proxy.thaw()
    want = {p.post_id for p in first + second}
    wait_for(lambda: stored_ids(embedded_db) == want, 120, "every post after the thaw", worker.log)
    wait_for_health(worker, 200, 60)
    log = worker.log()
    assert "has not answered" in log  # the deadline cut the hung call and said so
    assert "posts/s in" in log  # the periodic summary line
    assert worker.stop() == 0


def test_a_partition_that_stops_committing_turns_health_red(broker, frozen_db_proxy, embedded_db,
                                                           worker_factory) -> None:
    """No database alarm here (no deadline, a long grace): only the committed offsets can tell."""
    proxy, proxied_url = frozen_db_proxy
    publish(broker, make_posts(8, prefix="warm"))
    worker = worker_factory(broker, proxied_url, scoring="false", db_statement_timeout_s="0",
                            db_down_unhealthy_s="3600", stall_after_s="10")
    wait_for(lambda: len(stored_ids(embedded_db)) == 8, 90, "the first posts", worker.log)
    wait_for_health(worker, 200, 30)

    proxy.freeze()
    frozen_at = time.monotonic()
    later = make_posts(30, prefix="stuck")
    publish(broker, later)
    seen: list[dict] = []

    def partition_stalled() -> bool:
        status, body = health(worker)
        seen.append(body)
        return status == 503 and bool(body.get("progress", {}).get("stalled_partitions"))

    wait_for(partition_stalled, 60, "a stalled partition on /health",
             lambda: f"last: {seen[-1] if seen else None}\n{worker.log()}", interval_s=1.0)
    assert time.monotonic() - frozen_at < 60
    body = seen[-1]
    progress = body["progress"]
    assert progress["stalled"] is True, body
    stalled = progress["partitions"][progress["stalled_partitions"][0]]
    assert stalled["log_end"] > (stalled["committed"] or 0) and stalled["lag"] > 0
    assert all(c["ok"] for c in body["components"].values()), body  # the database never looked down

    proxy.thaw()
    want = {p.post_id for p in make_posts(8, prefix="warm") + later}
    wait_for(lambda: stored_ids(embedded_db) == want, 120, "every post after the thaw", worker.log)
    # Green comes back as soon as a committed offset moves, and the backlog is read from commits that
    # follow the rows (Faust's commit interval, the 5 s progress timer): wait for the caught-up state.
    seen.clear()

    def caught_up() -> bool:
        status, body = health(worker)
        seen.append(body)
        return (status == 200 and body["progress"]["backlog"] == 0
                and not body["progress"]["stalled_partitions"])

    wait_for(caught_up, 60, "/health 200 with no backlog and no stalled partition",
             lambda: f"last: {seen[-1] if seen else None}\n{worker.log()}", interval_s=1.0)


# -- a broker that is late -----------------------------------------------------------------------------


def test_a_worker_started_before_its_broker_waits_answers_health_then_processes(
        tmp_path, embedded_db, worker_factory) -> None:
    port = free_port()
    target = BrokerTarget(f"127.0.0.1:{port}", embedded=True)
    worker = worker_factory(target, embedded_db, scoring="false")
    body = wait_for_health(worker, 503, 60)
    assert body["status"] == "starting" and body["waiting_for"] == "broker", body
    wait_for(lambda: f"cannot reach broker at 127.0.0.1:{port}" in worker.log(), 60, "the waiting line",
             worker.log)
    assert worker.proc is not None and worker.proc.poll() is None  # waiting, not crashed

    with EmbeddedBroker(tmp_path / "late-broker", port=port):
        posts = make_posts(25, prefix="late")
        publish(target, posts)
        wait_for(lambda: stored_ids(embedded_db) == {p.post_id for p in posts}, 120, "the posts", worker.log)
        wait_for_health(worker, 200, 60)
        assert worker.stop() == 0
    log = worker.log()
    assert "Traceback" not in log
    # The reconnect storm of the kafka clients is collapsed: far fewer lines than attempts.
    assert log.count("cannot reach broker") < 40


def test_a_broker_gone_under_a_running_worker_turns_health_red_and_its_reconnect_storm_stays_quiet(
        tmp_path, embedded_db, worker_factory) -> None:
    broker = EmbeddedBroker(tmp_path / "broker").start()
    try:
        target = BrokerTarget(broker.bootstrap_servers, embedded=True)
        posts = make_posts(10, prefix="b")
        publish(target, posts)
        worker = worker_factory(target, embedded_db, scoring="false", broker_down_unhealthy_s="5")
        wait_for(lambda: stored_ids(embedded_db) == {p.post_id for p in posts}, 90, "the posts", worker.log)
        wait_for_health(worker, 200, 30)
        lines_before = len(worker.log().splitlines())
    finally:
        broker.stop()
    stopped_at = time.monotonic()
    body = wait_for_health(worker, 503, 60)
    assert body["components"]["broker"]["ok"] is False, body
    # Past the 30 s throttle window, so the collapsed lines have reported their counts.
    time.sleep(max(0.0, 40 - (time.monotonic() - stopped_at)))
    storm = worker.log().splitlines()[lines_before:]
    assert any("similar lines suppressed" in line for line in storm), "\n".join(storm)
    assert len(storm) < 120, f"{len(storm)} lines in 40 s:\n" + "\n".join(storm[:200])
    worker.kill()  # a clean stop with the broker gone is not what this test is about


def test_ingest_waits_for_a_broker_that_comes_up_late(tmp_path, repo_root) -> None:
    import os
    import subprocess
    import sys

    from tests.connectors.conftest import read_topic
    from tests.stream.conftest import write_jsonl

    port = free_port()
    posts = make_posts(5, prefix="i")
    feed = write_jsonl(tmp_path / "feed.jsonl", posts)
    env = dict(os.environ, SENTISTREAM_KAFKA=f"127.0.0.1:{port}", SENTISTREAM_KAFKA_IS_TANSU="1",
               SENTISTREAM_HOME=str(tmp_path / "home"), SENTISTREAM_DATABASE_URL="postgresql://unused@127.0.0.1:1/x")
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "ingest", "replay", str(feed)], cwd=repo_root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines: list[str] = []

        def waiting_line() -> bool:
            lines.append(proc.stdout.readline())  # blocks until the next line: the wait logs one a try
            return f"cannot reach broker at 127.0.0.1:{port}" in lines[-1]

        wait_for(waiting_line, 60, "the waiting line", lambda: "".join(lines))
        assert proc.poll() is None
        with EmbeddedBroker(tmp_path / "late-broker", port=port):
            out, _ = proc.communicate(timeout=120)
            target = BrokerTarget(f"127.0.0.1:{port}", embedded=True)
            assert proc.returncode == 0, "".join(lines) + out
            assert sorted(k for k, _ in read_topic(target, "posts.raw", expect=5)) == sorted(p.key for p in posts)
        assert "Traceback" not in "".join(lines) + out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_a_command_waits_for_a_database_that_comes_up_late(tmp_path, embedded_db, repo_root) -> None:
    import os
    import subprocess
    import sys

    port = free_port()
    env = dict(os.environ, SENTISTREAM_DATABASE_URL=tcp_url(embedded_db, port), SENTISTREAM_HOME=str(tmp_path),
               SENTISTREAM_DB_CONNECT_TIMEOUT_S="2")
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "db", "current"], cwd=repo_root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proxy = None
    try:
        errors: list[str] = []

        def waiting_line() -> bool:
            errors.append(proc.stderr.readline())
            return f"cannot reach database at 127.0.0.1:{port}" in errors[-1]

        wait_for(waiting_line, 60, "the waiting line", lambda: "".join(errors))
        proxy = FreezableProxy(unix_socket_connector(embedded_db), port=port)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, "".join(errors) + err
        assert out.startswith("current ") and "up to date" in out
        assert "Traceback" not in "".join(errors) + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proxy is not None:
            proxy.close()

    # With a limit, an unreachable database is one clear line and exit 2, not a traceback.
    env["SENTISTREAM_STARTUP_WAIT_S"] = "2"
    done = subprocess.run([sys.executable, "-m", "stream.cli", "db", "current"], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"cannot reach database at 127.0.0.1:{port}" in done.stderr and "gave up after 2s" in done.stderr


def test_sigterm_ends_a_waiting_start_up_cleanly(embedded_db, worker_factory) -> None:
    port = free_port()
    worker = worker_factory(BrokerTarget(f"127.0.0.1:{port}", embedded=True), embedded_db, scoring="false")
    wait_for(lambda: f"cannot reach broker at 127.0.0.1:{port}" in worker.log(), 60, "the waiting line", worker.log)
    started = time.monotonic()
    assert worker.stop(timeout_s=20) == 0
    assert time.monotonic() - started < 20
    log = worker.log()
    assert "SIGTERM while starting (waiting for broker): stopping" in log and "Traceback" not in log
    assert health(worker)[0] == 0  # the port is free again


def test_the_connector_reports_undelivered_posts_as_one_counted_warning_not_one_per_post(tmp_path, caplog) -> None:
    from connectors.publisher import PublishError

    broker = EmbeddedBroker(tmp_path / "broker").start()
    target = BrokerTarget(broker.bootstrap_servers, embedded=True)
    ensure_topics(target, ["posts.raw"], partitions=2)
    publisher = KafkaPublisher(target, topic="posts.raw", flush_timeout_s=5,
                               producer_overrides={"max_block_ms": 200, "request_timeout_ms": 500,
                                                   "delivery_timeout_ms": 1000, "retries": 0})
    posts = make_posts(60, prefix="u")
    try:
        publisher.publish(posts[0])
        publisher.flush()
        broker.stop()
        with caplog.at_level(logging.WARNING, logger="connectors.publisher"):
            for p in posts[1:]:
                publisher.publish(p)
            with pytest.raises(PublishError):
                publisher.flush(timeout_s=4)
    finally:
        broker.stop()
        with contextlib.suppress(PublishError):
            publisher.close(timeout_s=0)
    reports = [r.getMessage() for r in caplog.records if "post deliveries failed" in r.getMessage()]
    assert publisher.unacked == 59
    assert 1 <= len(reports) <= 3, reports  # one per 10 s window at most, plus the closing one
    counted = sum(int(r.split()[0]) for r in reports)
    assert counted >= 59, reports  # every post's failure is counted, none is logged alone


# -- start-up waits and log storms (units) --------------------------------------------------------------


def test_wait_until_reachable_retries_with_one_line_per_try_then_gives_up(caplog) -> None:
    failures = [ConnectionRefusedError("refused"), OSError("no route")]
    lines: list[str] = []
    sleeps: list[float] = []

    def attempt() -> str:
        if failures:
            raise failures.pop(0)
        return "up"

    with caplog.at_level(logging.WARNING, logger="connectors.dependency_wait"):
        assert wait_until_reachable("database", "db:5432", attempt, retry_on=(OSError,), on_waiting=lines.append,
                                    sleep=sleeps.append) == "up"
    assert len(lines) == 2 and len(caplog.records) == 2
    assert lines[0].startswith("cannot reach database at db:5432 (ConnectionRefusedError: refused), retrying in")
    assert sleeps[0] < sleeps[1] <= 15

    with pytest.raises(DependencyUnreachableError, match="cannot reach broker at b:9092"):
        wait_until_reachable("broker", "b:9092", lambda: (_ for _ in ()).throw(OSError("down")),
                             retry_on=(OSError,), wait_s=0.3)
    with pytest.raises(ValueError):  # not a reachability error: no waiting, no wrapping
        wait_until_reachable("broker", "b:9092", lambda: int("x"), retry_on=(OSError,))


@pytest.fixture
def scratch_logger() -> Iterator[Callable[[str], logging.Logger]]:
    """``logging.getLogger`` for a test that rewires the logger (handlers, propagate, level); its state is
    put back afterwards (left as it was, 'stream.app' stayed silenced for every later test of the session)."""
    saved: list[tuple[logging.Logger, list[logging.Handler], bool, int]] = []

    def get(name: str) -> logging.Logger:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
        return logger

    yield get
    for logger, handlers, propagate, level in reversed(saved):
        logger.handlers = handlers
        logger.propagate = propagate
        logger.setLevel(level)


def _throttled_logger(name: str, throttle: RepeatedLogThrottle, get_logger: Callable[[str], logging.Logger]
                      ) -> tuple[logging.Logger, list[str]]:
    out: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            out.append(f"{record.name} {record.getMessage()}")

    handler = Collect()
    install([handler], throttle)
    logger = get_logger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_log_throttle_collapses_a_reconnect_storm_into_one_line_per_interval_with_a_count(scratch_logger) -> None:
    now = [0.0]
    throttle = RepeatedLogThrottle(prefixes=("aiokafka",), interval_s=10, clock=lambda: now[0])
    conn, out = _throttled_logger("aiokafka.conn", throttle, scratch_logger)
    other, other_out = _throttled_logger("stream.app", throttle, scratch_logger)
    for i in range(500):
        now[0] = i * 0.01  # 500 errors in 5 s
        conn.error("Unable connect to node with id %s: %s", i % 3, "refused")
    conn.error("Unable to update metadata from %s", 1)  # another kind passes at once
    assert out == ["aiokafka.conn Unable connect to node with id 0: refused",
                   "aiokafka.conn Unable to update metadata from 1"]
    now[0] = 12.0
    conn.error("Unable connect to node with id %s: %s", 2, "refused")
    assert out[-1] == "aiokafka.conn Unable connect to node with id 2: refused [499 similar lines suppressed in the last 12s]"
    assert throttle.suppressed_total == 499
    for _ in range(20):  # loggers outside the prefixes are never throttled
        other.error("batch failed")
    assert len(other_out) == 20 and throttle.suppressed_total == 499


def test_log_throttle_decides_once_per_record_when_several_handlers_print_it(scratch_logger) -> None:
    throttle = RepeatedLogThrottle(prefixes=("kafka",), interval_s=60)
    first, second = [], []

    class Collect(logging.Handler):
        def __init__(self, out: list[str]) -> None:
            super().__init__()
            self.out = out

        def emit(self, record: logging.LogRecord) -> None:
            self.out.append(record.getMessage())

    logger = scratch_logger("kafka.net.manager.test")
    logger.handlers = [Collect(first), Collect(second)]
    install(logger.handlers, throttle)
    logger.propagate = False
    for _ in range(3):
        logger.warning("Bootstrap connection failed")
    assert first == second == ["Bootstrap connection failed"]
    assert throttle.suppressed_total == 2
