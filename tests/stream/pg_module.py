"""One migrated throwaway database per test module on the configured PostgreSQL (127.0.0.1:5432).

Module-scoped because these tests only need tables, not a fresh server; each test truncates what it
wrote.  The per-test, both-back-ends fixtures live in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from stream.embedded import to_sqlalchemy_url
from tests.conftest import _configured_url, create_database, drop_database

TABLES = "alerts, window_aggregates, sentiments, post_media, posts"


@pytest.fixture(scope="module", name="s4_engine")
def s4_engine_fixture() -> Iterator[Engine]:
    server = _configured_url()
    if server is None:
        pytest.skip("no configured PostgreSQL (set SENTISTREAM_TEST_DATABASE_URL)")
    from stream.migrate import upgrade

    url = create_database(to_sqlalchemy_url(server), prefix="s4")
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
