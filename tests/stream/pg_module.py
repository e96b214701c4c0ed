"""One migrated throwaway database per test module and back end (embedded, and configured when there is one).

Module-scoped because these tests only need tables, not a fresh server; each test truncates what it
wrote.  The back ends come from tests/conftest.py's ``pg_server``: the embedded server always (so a
fresh clone with no PostgreSQL runs these tests), the configured one when SENTISTREAM_TEST_DATABASE_URL
is set or a server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from tests.conftest import create_database, drop_database

TABLES = "alert_incidents, alerts, window_aggregates, sentiments, post_media, posts, post_keys"


@pytest.fixture(scope="module", name="s4_engine")
def s4_engine_fixture(pg_server: str) -> Iterator[Engine]:
    from stream.migrate import upgrade

    url = create_database(pg_server, prefix="s4")
    try:
        upgrade(url)
        eng = create_engine(url)
        yield eng
        eng.dispose()
    finally:
        drop_database(url)


@pytest.fixture(name="db")
def db_fixture(s4_engine: Engine) -> Iterator[Engine]:
    """The module's database, emptied; import both ``*_fixture`` names into the test module."""
    with s4_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    yield s4_engine
