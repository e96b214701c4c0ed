"""Migrations upgrade an empty database to head, match the models, and downgrade back to empty."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from stream.db import Base
from stream.migrate import (
    SchemaOutdatedError,
    check_schema,
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    upgrade,
)

TABLES = {"posts", "post_media", "sentiments", "window_aggregates", "alerts", "dead_letters", "source_cursors",
          "picture_features"}


def test_upgrade_from_empty_then_downgrade_to_empty(fresh_db: str) -> None:
    engine = make_engine(fresh_db)
    with pytest.raises(SchemaOutdatedError, match="sentistream db upgrade"):
        check_schema(engine)

    upgrade(fresh_db)
    assert current_revision(engine) == head_revision()
    check_schema(engine)
    insp = inspect(engine)
    assert TABLES <= set(insp.get_table_names())
    assert {"trend_minute", "trend_hour"} <= set(insp.get_view_names())

    downgrade(fresh_db, "base")
    insp = inspect(engine)
    assert not (TABLES & set(insp.get_table_names()))
    assert not ({"trend_minute", "trend_hour"} & set(insp.get_view_names()))
    assert current_revision(engine) is None
    engine.dispose()


def test_migrated_schema_matches_the_models(migrated_db: str) -> None:
    """Autogenerate finds no difference: the hand-written revision and stream/db.py agree."""
    engine = make_engine(migrated_db)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []


def test_unique_keys_make_posts_idempotent(migrated_db: str) -> None:
    engine = make_engine(migrated_db)
    insert = text("INSERT INTO posts (platform, post_id, created_at, text, topic, ingested_at) "
                  "VALUES ('reddit', 'x1', now(), 'hi', 't', now())")
    with engine.begin() as conn:
        conn.execute(insert)
    with pytest.raises(Exception, match="uq_posts_platform_post_id"):
        with engine.begin() as conn:
            conn.execute(insert)
    engine.dispose()
