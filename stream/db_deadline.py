"""A client-side deadline on every database call, so a frozen server becomes an error instead of a hang.

Why not only server settings: ``statement_timeout`` is enforced by the server, and TCP keepalives are
answered by the server's kernel, so neither fires when the PostgreSQL process is stopped (SIGSTOP, a
stuck host) or when a proxy accepts bytes and never answers.  libpq then waits forever inside ``recv``,
the batch never finishes, and ``/health`` would still say the database is up.

What this does: the engine's dialect calls that talk to the server (execute, executemany, commit,
rollback, the pool's ping) are registered as *in flight* with their start time.  One watchdog thread
shuts down the socket of a call older than its deadline; libpq's ``recv`` then returns, psycopg2 raises
``OperationalError`` ("server closed the connection unexpectedly"), SQLAlchemy invalidates the
connection, and the pipeline's retry loop sees a transient error: database down, offsets held.

The same register tells ``/health`` how long the oldest call has been waiting (``oldest_in_flight_s``),
so a hang is visible before the deadline cuts it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


@dataclass
class _Call:
    started: float
    deadline_s: float
    dbapi_connection: Any
    what: str
    cut: bool = False


class DatabaseCallDeadline:
    """In-flight database calls of this process, and the watchdog that cuts the ones past their deadline."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, poll_s: float = 0.5) -> None:
        self._clock = clock
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._calls: dict[int, _Call] = {}
        self._next_id = 0
        self._watchdog: threading.Thread | None = None
        self.cut_count = 0

    @contextlib.contextmanager
    def call(self, dbapi_connection: Any, deadline_s: float | None, what: str) -> Iterator[None]:
        """Register one call for its duration; ``deadline_s`` None or <= 0 tracks it without a deadline."""
        with self._lock:
            call_id = self._next_id
            self._next_id += 1
            self._calls[call_id] = _Call(self._clock(), deadline_s or 0.0, dbapi_connection, what)
            if deadline_s and self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="db-deadline", daemon=True)
                self._watchdog.start()
        try:
            yield
        finally:
            with self._lock:
                self._calls.pop(call_id, None)

    def oldest_in_flight_s(self) -> float | None:
        """Seconds the longest-waiting call has been in flight, or None when nothing is."""
        with self._lock:
            if not self._calls:
                return None
            oldest = min(c.started for c in self._calls.values())
        return self._clock() - oldest

    def cut_expired(self) -> int:
        """Shut down the socket of every call past its deadline; returns how many were cut (the watchdog
        calls this; tests may too)."""
        now = self._clock()
        with self._lock:
            expired = [c for c in self._calls.values()
                       if c.deadline_s > 0 and not c.cut and now - c.started > c.deadline_s]
            for c in expired:
                c.cut = True
            # Counted before the socket is shut: the cut call wakes the moment it is, and whoever reads
            # the count after its error must see it.
            self.cut_count += len(expired)
        for c in expired:
            log.warning("database %s has not answered for %.0fs (deadline %.0fs); dropping its connection",
                        c.what, now - c.started, c.deadline_s)
            _shutdown_socket(c.dbapi_connection)
        return len(expired)

    def _watch(self) -> None:
        while True:
            time.sleep(self._poll_s)
            try:
                self.cut_expired()
            except Exception:  # noqa: BLE001 - the watchdog must outlive any one bad connection
                log.exception("database deadline watchdog failed to cut a call")


def _shutdown_socket(dbapi_connection: Any) -> None:
    """Make a blocked libpq ``recv`` return: shut the connection's socket down (through a duplicate
    descriptor, so the connection object still owns and later closes the original)."""
    try:
        fd = dbapi_connection.fileno()
    except Exception:  # noqa: BLE001 - already closed: nothing is blocked on it
        return
    dup = os.dup(fd)
    try:
        with socket.socket(fileno=dup) as sock:
            dup = -1
            sock.shutdown(socket.SHUT_RDWR)
    except OSError as exc:
        log.debug("shutting down a database socket failed: %s", exc)
    finally:
        if dup >= 0:
            os.close(dup)


DATABASE_CALLS = DatabaseCallDeadline()
"""The process's register; every engine made by ``stream.migrate.make_engine`` reports to it."""


# Engines ``install`` has seen, with their register and deadline, for the code that talks to the server on
# a raw DBAPI connection and so bypasses the dialect (``guarded_cursor``).
_INSTALLED: weakref.WeakKeyDictionary[Engine, tuple[DatabaseCallDeadline, float | None]] = weakref.WeakKeyDictionary()


def install(engine: Engine, deadline_s: float | None, calls: DatabaseCallDeadline = DATABASE_CALLS) -> Engine:
    """Route the engine's server round trips through ``calls`` with ``deadline_s`` (None: track only)."""
    _INSTALLED[engine] = (calls, deadline_s)
    dialect = engine.dialect

    def wrap(name: str, connection_of: Callable[[Any], Any]) -> None:
        original = getattr(dialect, name)

        def guarded(first: Any, *args: Any, **kwargs: Any) -> Any:
            with calls.call(connection_of(first), deadline_s, name.removeprefix("do_")):
                return original(first, *args, **kwargs)

        setattr(dialect, name, guarded)

    for name in ("do_execute", "do_executemany", "do_execute_no_params"):
        wrap(name, lambda cursor: cursor.connection)
    for name in ("do_commit", "do_rollback", "do_ping"):
        wrap(name, lambda dbapi_connection: dbapi_connection)
    return engine


class GuardedCursor:
    """A psycopg2 cursor of a raw pooled connection whose server round trips (``execute``,
    ``copy_expert``) are registered like the dialect's, so a frozen server cuts them too; everything
    else is the cursor's own."""

    def __init__(self, cursor: Any, call: Callable[[str], contextlib.AbstractContextManager[None]]) -> None:
        self._cursor = cursor
        self._call = call

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        with self._call("execute"):
            return self._cursor.execute(*args, **kwargs)

    def copy_expert(self, *args: Any, **kwargs: Any) -> Any:
        with self._call("copy"):
            return self._cursor.copy_expert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __enter__(self) -> GuardedCursor:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self._cursor.close()
            return
        with contextlib.suppress(Exception):  # the connection may be gone: the error on its way matters
            self._cursor.close()


def raw_call_guard(engine: Engine, dbapi_connection: Any) -> Callable[[str], contextlib.AbstractContextManager[None]]:
    """``guard(what)``: a context that registers one round trip of ``dbapi_connection`` (a raw connection of
    ``engine``) with the engine's register and deadline; tracks nothing for an engine ``install`` never saw."""
    installed = _INSTALLED.get(engine)
    if installed is None:
        return lambda what: contextlib.nullcontext()
    calls, deadline_s = installed
    return lambda what: calls.call(dbapi_connection, deadline_s, what)
