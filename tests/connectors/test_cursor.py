"""Cursor persistence in the real source_cursors table (PostgreSQL), and the in-memory store."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from connectors.cursor import CursorStoreError, InMemoryCursorStore, PostgresCursorStore


def test_postgres_store_survives_a_restart_and_overwrites(cursor_db: str) -> None:
    first = PostgresCursorStore(cursor_db)
    assert first.load("twitter-test") is None
    first.save("twitter-test", '{"*": "1001"}')
    first.save("reddit-test", "t3_abc")
    first.close()

    restarted = PostgresCursorStore(cursor_db)  # a new process: a new engine, nothing cached
    assert restarted.load("twitter-test") == '{"*": "1001"}'
    engine = create_engine(cursor_db)
    with engine.connect() as conn:
        before = conn.execute(text("SELECT updated_at FROM source_cursors WHERE source = 'twitter-test'")).scalar_one()
    time.sleep(0.01)
    restarted.save("twitter-test", '{"*": "1002"}')
    assert restarted.load("twitter-test") == '{"*": "1002"}'
    assert restarted.load("reddit-test") == "t3_abc"
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT source, cursor, updated_at FROM source_cursors "
                                 "WHERE source LIKE '%-test' ORDER BY source")).all()
    engine.dispose()
    restarted.close()
    assert [(r.source, r.cursor) for r in rows] == [("reddit-test", "t3_abc"), ("twitter-test", '{"*": "1002"}')]
    assert rows[1].updated_at > before


def test_postgres_store_reports_a_missing_table_clearly(cursor_db: str) -> None:
    url = cursor_db.rsplit("/", 1)[0] + "/postgres"  # the maintenance database has no source_cursors
    store = PostgresCursorStore(url)
    with pytest.raises(CursorStoreError, match="cannot read the cursor of 'x'"):
        store.load("x")
    store.close()


def test_in_memory_store() -> None:
    store = InMemoryCursorStore({"a": "1"})
    assert store.load("a") == "1" and store.load("b") is None
    store.save("b", "2")
    assert store.load("b") == "2" and store.saves == 1
