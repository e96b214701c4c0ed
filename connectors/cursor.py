"""Where each source's resume point (cursor / since-id / time_us) survives a restart.

Why PostgreSQL and not a file: the ingest service runs in a container beside the worker, the database is
already the durable state of the deployment, and one ``INSERT ... ON CONFLICT`` is atomic, so a crash
leaves either the old or the new cursor, never half of one.  The table (``source_cursors``) belongs to
the Alembic migrations; this module only reads and upserts rows.

Ordering rule (see ``connectors.base``): a cursor is saved only after the publisher has flushed every
post up to it, so after a crash a source repeats posts (harmless: the worker upserts) but never skips.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)


def later_cursor(current: str | None, new: str) -> str:
    """For platforms whose cursors are increasing integers (Mastodon status ids, Jetstream ``time_us``):
    keep the larger, so an out-of-order item never moves a resume point backwards."""
    if current and current.isdigit() and new.isdigit() and int(current) > int(new):
        return current
    return new


class CursorStoreError(RuntimeError):
    """The cursor could not be read or written (database down, table missing)."""


class CursorStore(Protocol):
    def load(self, source: str) -> str | None: ...

    def save(self, source: str, cursor: str) -> None: ...


class InMemoryCursorStore:
    """A process-local store, for unit tests and for sources that need no resume (replay)."""

    def __init__(self, initial: dict[str, str] | None = None) -> None:
        self._cursors = dict(initial or {})
        self._lock = threading.Lock()
        self.saves = 0

    def load(self, source: str) -> str | None:
        with self._lock:
            return self._cursors.get(source)

    def save(self, source: str, cursor: str) -> None:
        with self._lock:
            self._cursors[source] = cursor
            self.saves += 1


def _sqlalchemy_url(url: str) -> str:
    """Accept libpq-style URLs (``postgresql://``, ``postgres://``) and name the psycopg2 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


class PostgresCursorStore:
    """Cursors in the ``source_cursors`` table (source text primary key, cursor text, updated_at)."""

    _LOAD = text("SELECT cursor FROM source_cursors WHERE source = :source")
    _SAVE = text(
        "INSERT INTO source_cursors (source, cursor, updated_at) VALUES (:source, :cursor, now()) "
        "ON CONFLICT (source) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = EXCLUDED.updated_at"
    )

    def __init__(self, database_url: str | None = None, *, engine: Engine | None = None) -> None:
        if engine is None:
            if not database_url:
                raise ValueError("PostgresCursorStore needs a database URL or an engine")
            engine = create_engine(_sqlalchemy_url(database_url), pool_pre_ping=True, pool_size=1,
                                   max_overflow=1)
        self.engine = engine

    def load(self, source: str) -> str | None:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(self._LOAD, {"source": source}).first()
        except SQLAlchemyError as exc:
            raise CursorStoreError(f"cannot read the cursor of {source!r}: {_short(exc)}") from exc
        return None if row is None else str(row[0])

    def save(self, source: str, cursor: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(self._SAVE, {"source": source, "cursor": cursor})
        except SQLAlchemyError as exc:
            raise CursorStoreError(f"cannot save the cursor of {source!r}: {_short(exc)}") from exc

    def close(self) -> None:
        self.engine.dispose()


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300]
