"""Schema life cycle: wait for the database, apply Alembic migrations, refuse to run on an old schema.

The worker never creates or alters tables itself; Alembic owns the schema.  A worker started against a
database whose revision is not the code's head stops with a message naming the command that fixes it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
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
