"""Alembic environment: the URL comes from the caller (``stream.migrate``) or SENTISTREAM_DATABASE_URL;
the target metadata from ``stream.db`` so autogenerate compares against the models."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import pool

from stream.db import Base
from stream.embedded import to_sqlalchemy_url
from stream.partitions import include_object

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("SENTISTREAM_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: use `sentistream db upgrade` or set SENTISTREAM_DATABASE_URL")
    return to_sqlalchemy_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, compare_type=True,
                      include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=target_metadata, compare_type=True,
                      include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
        return
    # Connect and keepalive timeouts like every engine, but no statement timeout: a migration may
    # legitimately run long (stream.migrate.DatabaseTimeouts).
    from stream.migrate import DatabaseTimeouts, make_engine
    from stream.settings import Settings

    timeouts = DatabaseTimeouts.from_settings(Settings.from_env()).without_statement_timeout()
    engine = make_engine(_url(), timeouts=timeouts, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True,
                      include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
