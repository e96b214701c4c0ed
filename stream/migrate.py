"""Schema life cycle: wait for the database, apply Alembic migrations, refuse to run on an old schema.

The worker never creates or alters tables itself; Alembic owns the schema.  A worker started against a
database whose revision is not the code's head stops with a message naming the command that fixes it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import psycopg2
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

import migrations

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


def wait_for_database(engine: Engine, attempts: int = 30, delay_s: float = 1.0) -> None:
    """Bounded wait for a database that is still starting (compose, CI), then give up loudly."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except OperationalError as exc:
            if attempt == attempts:
                raise
            log.info("database not ready (%s), retry %d/%d", str(exc).splitlines()[0], attempt, attempts)
            time.sleep(delay_s)


def make_engine(database_url: str, **kwargs: object) -> Engine:
    return create_engine(database_url, pool_pre_ping=True, future=True, **kwargs)


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
