"""Schema life cycle: wait for the database, apply Alembic migrations, refuse to run on an old schema.

The worker never creates or alters tables itself; Alembic owns the schema.  A worker started against a
database whose revision is not the code's head stops with a message naming the command that fixes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg2
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import OperationalError

import migrations
from connectors.dependency_wait import wait_until_reachable
from stream import db_deadline
from stream.settings import Settings

log = logging.getLogger(__name__)


class SchemaOutdatedError(RuntimeError):
    """The database schema is not at the revision this code needs."""


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
    log.info("database schema upgraded to %s", revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
    log.info("database schema downgraded to %s", revision)


def check_schema(engine: Engine) -> None:
    """Raise SchemaOutdatedError unless the database is exactly at the code's head revision."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutdatedError(
            f"database schema is at revision {current or 'none (empty database)'}, this sentistream needs "
            f"{head}: run `sentistream db upgrade` first"
        )


def wait_for_database(engine: Engine, wait_s: float = 0.0, *, backoff_cap_s: float = 15.0,
                      on_waiting: Callable[[str], None] | None = None) -> None:
    """Wait for a database that is still starting (compose, a restart policy) with capped backoff and one
    line per try; ``wait_s`` 0 waits forever, else DependencyUnreachableError after it."""

    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    wait_until_reachable("database", database_location(engine.url), ping, retry_on=(OperationalError,),
                         wait_s=wait_s, backoff_cap_s=backoff_cap_s, on_waiting=on_waiting)


def database_location(url: URL | str) -> str:
    """HOST:PORT (or the socket directory) of a database URL, for log lines; never the password."""
    url = make_url(url)
    if url.query.get("host"):
        host = url.query["host"]
        return str(host[0] if isinstance(host, tuple) else host)
    return f"{url.host or 'localhost'}:{url.port or 5432}"


@dataclass(frozen=True)
class DatabaseTimeouts:
    """Connection timeouts applied to every engine (see ``make_engine``); the defaults are the settings'."""

    connect_s: int = 10
    statement_s: float = 30.0  # 0 = no statement timeout and no client-side deadline
    keepalives_idle_s: int = 10
    keepalives_interval_s: int = 5
    keepalives_count: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> DatabaseTimeouts:
        return cls(connect_s=settings.db_connect_timeout_s, statement_s=settings.db_statement_timeout_s,
                   keepalives_idle_s=settings.db_keepalives_idle_s,
                   keepalives_interval_s=settings.db_keepalives_interval_s,
                   keepalives_count=settings.db_keepalives_count)

    def without_statement_timeout(self) -> DatabaseTimeouts:
        """For legitimately long work (migrations, rebuilds): connect and keepalive limits stay."""
        return replace(self, statement_s=0.0)

    @property
    def call_deadline_s(self) -> float | None:
        """Client-side limit per server round trip: the server's own statement timeout gets the first
        chance to cancel (a clean error), the connect timeout covers the network on top."""
        return self.statement_s + self.connect_s if self.statement_s > 0 else None

    def connect_args(self, url: URL) -> dict[str, Any]:
        args: dict[str, Any] = {
            "connect_timeout": max(2, int(self.connect_s)),  # libpq treats 1 as 2
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle_s,
            "keepalives_interval": self.keepalives_interval_s,
            "keepalives_count": self.keepalives_count,
        }
        if self.statement_s > 0:
            options = f"-c statement_timeout={int(self.statement_s * 1000)}"
            existing = url.query.get("options")
            args["options"] = f"{existing} {options}" if existing else options
        return args


def make_engine(database_url: str, *, timeouts: DatabaseTimeouts | None = None, **kwargs: Any) -> Engine:
    """An engine with connect, statement and TCP keepalive timeouts and a client-side deadline per call,
    so a frozen server (SIGSTOP, a proxy that never answers) becomes an error the callers already retry.

    ``timeouts`` None reads this process's SENTISTREAM_DB_* settings.  Long statements (migrations,
    ``windows rebuild``) pass ``timeouts.without_statement_timeout()``.
    """
    if timeouts is None:
        timeouts = DatabaseTimeouts.from_settings(Settings.from_env())
    url = make_url(database_url)
    connect_args = dict(timeouts.connect_args(url)) if url.get_backend_name() == "postgresql" else {}
    connect_args.update(kwargs.pop("connect_args", {}))
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)
    return db_deadline.install(engine, timeouts.call_deadline_s)


def admin_connection(database_url: str) -> Any:
    """An autocommit psycopg2 connection to the server of ``database_url`` (TCP or Unix socket), for
    statements that cannot run in a transaction: CREATE/DROP DATABASE."""
    url = make_url(database_url)
    kwargs: dict[str, Any] = {"dbname": url.database or "postgres", "user": url.username or "postgres"}
    if url.query.get("host"):
        kwargs["host"] = url.query["host"]
    else:
        kwargs.update(host=url.host or "127.0.0.1", port=url.port or 5432)
    if url.password:
        kwargs["password"] = url.password
    conn = psycopg2.connect(**kwargs)
    conn.autocommit = True
    return conn


def create_database(server_url: str, name: str, *, replace: bool = False) -> str:
    """Create database ``name`` on the server of ``server_url`` (``replace`` drops it first if present);
    returns its SQLAlchemy URL."""
    conn = admin_connection(server_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            exists = cur.fetchone() is not None
            if exists and replace:
                cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            if not exists or replace:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(database_url: str) -> None:
    """Drop the database of ``database_url`` (closing its sessions), connecting to ``postgres`` to do it."""
    url = make_url(database_url)
    conn = admin_connection(url.set(database="postgres").render_as_string(hide_password=False))
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    finally:
        conn.close()
