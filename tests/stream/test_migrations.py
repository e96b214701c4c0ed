"""Migrations upgrade an empty database to head, match the models, and downgrade back to empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

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
from stream.partitions import include_object

TABLES = {"posts", "post_keys", "post_media", "sentiments", "window_aggregates", "alerts", "dead_letters",
          "source_cursors", "picture_features"}


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
        # Partitions are made by the migrations and `maintenance partitions`, not modelled (stream/partitions.py).
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": include_object})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_unique_keys_make_posts_idempotent(migrated_db: str) -> None:
    """(platform, post_id) is unique in post_keys; a post needs its key and sits where the key says."""
    engine = make_engine(migrated_db)
    key = text("INSERT INTO post_keys (platform, post_id, created_at) VALUES ('reddit', 'x1', :at) RETURNING id")
    post = text("INSERT INTO posts (id, platform, post_id, created_at, text, topic, ingested_at) "
                "VALUES (:id, 'reddit', 'x1', :at, 'hi', 't', now())")
    at = datetime(2026, 11, 30, 12, tzinfo=UTC)
    with engine.begin() as conn:
        pk = conn.execute(key, {"at": at}).scalar_one()
        conn.execute(post, {"id": pk, "at": at})
    with pytest.raises(Exception, match="uq_post_keys_platform_post_id"):
        with engine.begin() as conn:
            conn.execute(key, {"at": at})
    with pytest.raises(Exception, match="fk_posts_id_post_keys"):  # a second row of the post in another month
        with engine.begin() as conn:
            conn.execute(post, {"id": pk, "at": at - timedelta(days=40)})
    with pytest.raises(Exception, match="fk_posts_id_post_keys"):  # a post without a key
        with engine.begin() as conn:
            conn.execute(post, {"id": pk + 1, "at": at})
    engine.dispose()


# A populated 0006 database: posts over several months (one far in the past, one in the future), with
# media and two model versions of sentiments, and a dead letter elsewhere.
_SEED_0006 = """
INSERT INTO posts (platform, post_id, author, created_at, text, lang, url, topic, keywords, raw, ingested_at,
                   unscored_reason)
SELECT 'replay', 'p' || i, 'a' || i, TIMESTAMPTZ '2026-09-15 00:00+00' + i * INTERVAL '7 hours', 'post ' || i,
       'en', 'https://x/' || i, CASE WHEN i % 2 = 0 THEN 'acme' ELSE 'globex' END, ARRAY['k' || i],
       jsonb_build_object('i', i), TIMESTAMPTZ '2026-12-01 00:00+00', CASE WHEN i % 7 = 0 THEN 'language' END
FROM generate_series(1, 400) AS i;
INSERT INTO posts (platform, post_id, created_at, text, topic, ingested_at)
VALUES ('replay', 'old', '2019-03-02 10:00+00', 'old post', 'acme', now()),
       ('replay', 'future', '2031-01-01 00:00+00', 'future post', 'acme', now());
INSERT INTO post_media (post_pk, url, kind, status, bytes)
SELECT id, 'https://img/' || id, 'image', 'ok', 100 FROM posts WHERE id % 3 = 0;
INSERT INTO sentiments (post_pk, model_version, label, p_negative, p_neutral, p_positive, intensity, modalities)
SELECT id, v, CASE WHEN id % 3 = 0 THEN 'negative' ELSE 'positive' END, 0.2, 0.3, 0.5, 0.4, ARRAY['text']
FROM posts, unnest(ARRAY['m1', 'm2']) AS v WHERE id % 5 <> 0;
"""

_SNAPSHOT = {
    "posts": "SELECT id, platform, post_id, author, created_at, text, lang, url, topic, keywords, raw::text, "
             "ingested_at, first_seen_at, updated_at, unscored_reason FROM posts ORDER BY id",
    "post_media": "SELECT id, post_pk, url, kind, status, bytes FROM post_media ORDER BY id",
    "sentiments": "SELECT id, post_pk, model_version, label, p_negative, intensity, modalities, scored_at "
                  "FROM sentiments ORDER BY id",
    "trend_hour": "SELECT * FROM trend_hour ORDER BY topic, bucket",
}


def _snapshot(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as conn:
        return {name: [tuple(r) for r in conn.execute(text(sql))] for name, sql in _SNAPSHOT.items()}


def test_upgrade_keeps_every_row_of_a_populated_database_and_downgrade_too(fresh_db: str) -> None:
    """0006 -> 0007 copies every post, medium and sentiment with its id; sequences go on from there; the
    trend views give the same numbers; a replay still upserts; 0007 -> 0006 gives the rows back."""
    from connectors.post import Post
    from stream.sink import PostgresSink, SinkRecord

    upgrade(fresh_db, "0006")
    engine = make_engine(fresh_db)
    with engine.begin() as conn:
        conn.execute(text(_SEED_0006))
    before = _snapshot(engine)
    assert len(before["posts"]) == 402 and len(before["sentiments"]) > 600 and before["post_media"]

    upgrade(fresh_db, "0007")
    assert _snapshot(engine) == before
    with engine.connect() as conn:
        placed = conn.execute(text("SELECT count(*) FROM posts p JOIN post_keys k USING (id, created_at, platform, "
                                   "post_id)")).scalar_one()
        in_default = conn.execute(text("SELECT count(*) FROM posts_default")).scalar_one()
        partitions = set(conn.execute(text("SELECT tableoid::regclass::text FROM posts")).scalars())
        aligned = conn.execute(text("SELECT count(*) FROM sentiments s JOIN posts p "
                                    "ON p.id = s.post_pk AND p.created_at = s.post_created_at")).scalar_one()
    assert placed == 402 and in_default == 0 and aligned == len(before["sentiments"])
    assert {"posts_p2019_03", "posts_p2026_09", "posts_p2026_12", "posts_p2031_01"} <= partitions

    # A replay of p1 with another created_at lands on its row; a new post takes the next id.
    old = next(r for r in before["posts"] if r[2] == "p1")
    replay = Post(platform="replay", post_id="p1", text="edited", created_at=datetime(2026, 11, 20, tzinfo=UTC),
                  topic="acme")
    new = Post(platform="replay", post_id="brand-new", text="new", created_at=datetime(2026, 11, 20, tzinfo=UTC),
               topic="acme")
    for bulk in ("values", "copy"):
        written = PostgresSink(engine, bulk=bulk).write([SinkRecord(replay), SinkRecord(new)])
        assert written.post_pks["replay:p1"] == old[0]
        assert written.post_pks["replay:brand-new"] > max(r[0] for r in before["posts"])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM posts")).scalar_one() == 403
        row = conn.execute(text("SELECT created_at, text FROM posts WHERE post_id = 'p1'")).one()
    assert row == (old[4], "edited")  # first seen created_at wins: the row stays in its month

    downgrade(fresh_db, "0006")
    after = _snapshot(engine)
    assert len(after["posts"]) == 403 and after["sentiments"] == before["sentiments"]
    assert after["post_media"] == before["post_media"]
    with engine.begin() as conn:  # the sequence goes on after the highest id, the unique key is back
        nxt = conn.execute(text("INSERT INTO posts (platform, post_id, created_at, text, topic, ingested_at) "
                                "VALUES ('replay', 'after', now(), 't', 'acme', now()) RETURNING id")).scalar_one()
        assert nxt > max(r[0] for r in after["posts"])
    with pytest.raises(Exception, match="uq_posts_platform_post_id"):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO posts (platform, post_id, created_at, text, topic, ingested_at) "
                              "VALUES ('replay', 'p1', now(), 't', 'acme', now())"))
    engine.dispose()


def test_sentiment_columns_say_their_scale_in_the_schema(fresh_db: str) -> None:
    """0008: psql's \\d+ tells an analyst what intensity means (the five-point mapping) without the card;
    downgrading to 0007 takes the comments away again."""
    engine = make_engine(fresh_db)
    upgrade(fresh_db)
    columns = {c["name"]: c.get("comment") for c in inspect(engine).get_columns("sentiments")}
    assert "-2..+2 times 1.5" in columns["intensity"] and "-3..+3" in columns["intensity"]
    assert "gate" in columns["modality_weights"] and "negative, neutral or positive" in columns["label"]
    means = {c["name"]: c.get("comment") for c in inspect(engine).get_columns("window_aggregates")}
    assert "-3..+3" in means["mean_intensity"]
    downgrade(fresh_db, "0007")
    engine.dispose()
    engine = make_engine(fresh_db)
    assert {c["name"]: c.get("comment") for c in inspect(engine).get_columns("sentiments")}["intensity"] is None
    engine.dispose()
