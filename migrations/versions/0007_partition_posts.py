"""posts, sentiments and post_media partitioned by month of the post's creation; post_keys holds the ids.

Why (#12.5): a monitor that runs for years must forget old posts without deleting them row by row, and a
trend query over one day must not walk every month's index.  The three tables become RANGE-partitioned
by month (``posts.created_at``; the children carry it as ``post_created_at`` so their partitions line up
and retention drops a month of each whole), each with a DEFAULT partition so no write ever fails.

A partitioned table cannot hold a unique key without its partition key, so (platform, post_id) moves to
the small unpartitioned ``post_keys`` table (id, platform, post_id, created_at): the sink upserts the key
first and takes the stored id and created_at (first seen wins) to place the post, so a replay, even with
another created_at, lands on the same row.  ``posts (id, created_at)`` references it, so a post cannot
exist without its key nor sit in another month than its key says, and deleting a key deletes the post.

Existing rows are copied with their ids; the sequences are kept (``posts_id_seq`` is renamed
``post_keys_id_seq``).  Partitions are made for every month that has posts and for the current month and
three more; `sentistream maintenance partitions` keeps them ahead (stream/partitions.py).  The trend views
are recreated with the child's ``post_created_at`` in the join so each post's lookup reads one partition.
Downgrade copies everything back into the 0006 tables.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
AHEAD_MONTHS = 3

POST_COLUMNS = ("id, platform, post_id, author, created_at, text, lang, url, topic, keywords, raw, ingested_at, "
                "first_seen_at, updated_at, unscored_reason")
MEDIA_COLUMNS = "id, post_pk, url, kind, status, content_type, bytes, sha256, width, height, error, fetched_at"
SENTIMENT_COLUMNS = ("id, post_pk, model_version, label, p_negative, p_neutral, p_positive, intensity, "
                     "modality_weights, modalities, scored_at")

TREND_VIEW = """
CREATE VIEW {name} AS
SELECT p.topic,
       date_trunc('{unit}', p.created_at) AS bucket,
       count(*)                                        AS n_posts,
       count(s.label)                                  AS n_scored,
       count(*) FILTER (WHERE s.label = 'negative')    AS n_negative,
       count(*) FILTER (WHERE s.label = 'neutral')     AS n_neutral,
       count(*) FILTER (WHERE s.label = 'positive')    AS n_positive,
       avg(s.intensity)                                AS mean_intensity,
       (count(*) FILTER (WHERE s.label = 'negative'))::float / NULLIF(count(s.label), 0) AS negative_share,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM post_media m
                                      WHERE m.post_pk = p.id AND m.post_created_at = p.created_at)) AS n_with_media
FROM posts p
LEFT JOIN LATERAL (
    SELECT label, intensity FROM sentiments x
    WHERE x.post_pk = p.id AND x.post_created_at = p.created_at ORDER BY x.scored_at DESC, x.id DESC LIMIT 1
) s ON true
GROUP BY p.topic, date_trunc('{unit}', p.created_at)
"""

# 0001's views, for the downgrade.
OLD_TREND_VIEW = """
CREATE VIEW {name} AS
SELECT p.topic,
       date_trunc('{unit}', p.created_at) AS bucket,
       count(*)                                        AS n_posts,
       count(s.label)                                  AS n_scored,
       count(*) FILTER (WHERE s.label = 'negative')    AS n_negative,
       count(*) FILTER (WHERE s.label = 'neutral')     AS n_neutral,
       count(*) FILTER (WHERE s.label = 'positive')    AS n_positive,
       avg(s.intensity)                                AS mean_intensity,
       (count(*) FILTER (WHERE s.label = 'negative'))::float / NULLIF(count(s.label), 0) AS negative_share,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM post_media m WHERE m.post_pk = p.id)) AS n_with_media
FROM posts p
LEFT JOIN LATERAL (
    SELECT label, intensity FROM sentiments x
    WHERE x.post_pk = p.id ORDER BY x.scored_at DESC, x.id DESC LIMIT 1
) s ON true
GROUP BY p.topic, date_trunc('{unit}', p.created_at)
"""


def _add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def _drop_views() -> None:
    op.execute("DROP VIEW IF EXISTS trend_hour")
    op.execute("DROP VIEW IF EXISTS trend_minute")


def _post_columns() -> list[sa.Column]:
    return [
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("post_id", sa.Text(), nullable=False),
        sa.Column("author", sa.Text()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("lang", sa.Text()),
        sa.Column("url", sa.Text()),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("keywords", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("raw", postgresql.JSONB()),
        sa.Column("ingested_at", TS, nullable=False),
        sa.Column("first_seen_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("unscored_reason", sa.Text()),
    ]


def _media_columns() -> list[sa.Column]:
    return [
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("content_type", sa.Text()),
        sa.Column("bytes", sa.Integer()),
        sa.Column("sha256", sa.Text()),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("fetched_at", TS),
    ]


def _sentiment_columns() -> list[sa.Column]:
    return [
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("p_negative", sa.Float(), nullable=False),
        sa.Column("p_neutral", sa.Float(), nullable=False),
        sa.Column("p_positive", sa.Float(), nullable=False),
        sa.Column("intensity", sa.Float(), nullable=False),
        sa.Column("modality_weights", postgresql.JSONB()),
        sa.Column("modalities", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("scored_at", TS, server_default=sa.func.now(), nullable=False),
    ]


def _nextval(sequence: str) -> sa.TextClause:
    return sa.text(f"nextval('{sequence}'::regclass)")


def upgrade() -> None:
    bind = op.get_bind()
    _drop_views()
    # The 0006 tables step aside under *_0006 without their constraints and indexes (whose names the new
    # tables take); their sequences are kept for the new tables, so ids continue where they were.
    op.drop_constraint("fk_post_media_post_pk_posts", "post_media", type_="foreignkey")
    op.drop_constraint("fk_sentiments_post_pk_posts", "sentiments", type_="foreignkey")
    for table, constraints, indexes in (
        ("posts", ("pk_posts", "uq_posts_platform_post_id"), ("ix_posts_topic_created_at", "ix_posts_created_at")),
        ("post_media", ("pk_post_media", "uq_post_media_post_pk_url"), ("ix_post_media_post_pk",)),
        ("sentiments", ("pk_sentiments", "uq_sentiments_post_pk_model_version"),
         ("ix_sentiments_model_version_scored_at",)),
    ):
        op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY NONE")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT")
        op.rename_table(table, f"{table}_0006")
        for index in indexes:
            op.drop_index(index, table_name=f"{table}_0006")
        for constraint in constraints:
            op.drop_constraint(constraint, f"{table}_0006")
    op.execute("ALTER SEQUENCE posts_id_seq RENAME TO post_keys_id_seq")

    op.create_table(
        "post_keys",
        sa.Column("id", sa.BigInteger(), server_default=_nextval("post_keys_id_seq"), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("post_id", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_post_keys"),
        sa.UniqueConstraint("platform", "post_id", name="uq_post_keys_platform_post_id"),
        sa.UniqueConstraint("id", "created_at", name="uq_post_keys_id_created_at"),
    )
    op.create_index("ix_post_keys_created_at", "post_keys", ["created_at"])
    op.execute("ALTER SEQUENCE post_keys_id_seq OWNED BY post_keys.id")

    op.create_table(
        "posts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        *_post_columns(),
        sa.PrimaryKeyConstraint("id", "created_at", name="pk_posts"),
        sa.ForeignKeyConstraint(["id", "created_at"], ["post_keys.id", "post_keys.created_at"], ondelete="CASCADE",
                                name="fk_posts_id_post_keys"),
        postgresql_partition_by="RANGE (created_at)",
    )
    op.create_index("ix_posts_topic_created_at", "posts", ["topic", "created_at"])
    op.create_index("ix_posts_created_at", "posts", ["created_at"])

    op.create_table(
        "post_media",
        sa.Column("id", sa.BigInteger(), server_default=_nextval("post_media_id_seq"), nullable=False),
        sa.Column("post_pk", sa.BigInteger(), nullable=False),
        sa.Column("post_created_at", TS, nullable=False),
        *_media_columns(),
        sa.PrimaryKeyConstraint("id", "post_created_at", name="pk_post_media"),
        sa.ForeignKeyConstraint(["post_pk", "post_created_at"], ["posts.id", "posts.created_at"], ondelete="CASCADE",
                                name="fk_post_media_post_pk_posts"),
        sa.UniqueConstraint("post_pk", "url", "post_created_at", name="uq_post_media_post_pk_url_post_created_at"),
        postgresql_partition_by="RANGE (post_created_at)",
    )
    op.create_index("ix_post_media_post_pk", "post_media", ["post_pk"])

    op.create_table(
        "sentiments",
        sa.Column("id", sa.BigInteger(), server_default=_nextval("sentiments_id_seq"), nullable=False),
        sa.Column("post_pk", sa.BigInteger(), nullable=False),
        sa.Column("post_created_at", TS, nullable=False),
        *_sentiment_columns(),
        sa.PrimaryKeyConstraint("id", "post_created_at", name="pk_sentiments"),
        sa.ForeignKeyConstraint(["post_pk", "post_created_at"], ["posts.id", "posts.created_at"], ondelete="CASCADE",
                                name="fk_sentiments_post_pk_posts"),
        sa.UniqueConstraint("post_pk", "model_version", "post_created_at",
                            name="uq_sentiments_post_pk_model_version_post_created_at"),
        postgresql_partition_by="RANGE (post_created_at)",
    )
    op.create_index("ix_sentiments_model_version_scored_at", "sentiments", ["model_version", "scored_at"])
    op.execute("ALTER SEQUENCE post_media_id_seq OWNED BY post_media.id")
    op.execute("ALTER SEQUENCE sentiments_id_seq OWNED BY sentiments.id")

    # Partitions: DEFAULT, every month that has posts, and the current month with AHEAD_MONTHS more.
    now = datetime.now(UTC)
    months = {_add_months(datetime(now.year, now.month, 1, tzinfo=UTC), i) for i in range(AHEAD_MONTHS + 1)}
    months |= {m.astimezone(UTC) for m in bind.execute(sa.text(
        "SELECT DISTINCT date_trunc('month', created_at, 'UTC') FROM posts_0006")).scalars()}
    for table in ("posts", "post_media", "sentiments"):
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        for month in sorted(months):
            op.execute(f"CREATE TABLE {table}_p{month.year:04d}_{month.month:02d} PARTITION OF {table} "
                       f"FOR VALUES FROM ('{month.isoformat()}') TO ('{_add_months(month, 1).isoformat()}')")

    op.execute("INSERT INTO post_keys (id, platform, post_id, created_at) "
               "SELECT id, platform, post_id, created_at FROM posts_0006")
    op.execute(f"INSERT INTO posts ({POST_COLUMNS}) SELECT {POST_COLUMNS} FROM posts_0006")
    media = ", ".join(f"m.{c}" for c in MEDIA_COLUMNS.split(", "))
    op.execute(f"INSERT INTO post_media ({MEDIA_COLUMNS}, post_created_at) SELECT {media}, p.created_at "
               "FROM post_media_0006 m JOIN posts_0006 p ON p.id = m.post_pk")
    sentiments = ", ".join(f"s.{c}" for c in SENTIMENT_COLUMNS.split(", "))
    op.execute(f"INSERT INTO sentiments ({SENTIMENT_COLUMNS}, post_created_at) SELECT {sentiments}, p.created_at "
               "FROM sentiments_0006 s JOIN posts_0006 p ON p.id = s.post_pk")
    for table in ("sentiments", "post_media", "posts"):
        op.drop_table(f"{table}_0006")
    op.execute(TREND_VIEW.format(name="trend_minute", unit="minute"))
    op.execute(TREND_VIEW.format(name="trend_hour", unit="hour"))
    for table in ("post_keys", "posts", "post_media", "sentiments"):
        op.execute(f"ANALYZE {table}")


def downgrade() -> None:
    _drop_views()
    # Copy out, drop the partitioned tables (keeping the sequences), recreate the 0006 tables, copy back.
    op.execute(f"CREATE TEMP TABLE down_posts AS SELECT {POST_COLUMNS} FROM posts")
    op.execute(f"CREATE TEMP TABLE down_post_media AS SELECT {MEDIA_COLUMNS} FROM post_media")
    op.execute(f"CREATE TEMP TABLE down_sentiments AS SELECT {SENTIMENT_COLUMNS} FROM sentiments")
    for table in ("post_keys", "post_media", "sentiments"):
        op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY NONE")
    op.execute("ALTER TABLE post_keys ALTER COLUMN id DROP DEFAULT")
    op.execute("ALTER TABLE post_media ALTER COLUMN id DROP DEFAULT")
    op.execute("ALTER TABLE sentiments ALTER COLUMN id DROP DEFAULT")
    for table in ("sentiments", "post_media", "posts", "post_keys"):
        op.execute(f"DROP TABLE {table} CASCADE")
    op.execute("ALTER SEQUENCE post_keys_id_seq RENAME TO posts_id_seq")

    op.create_table(
        "posts",
        sa.Column("id", sa.BigInteger(), server_default=_nextval("posts_id_seq"), nullable=False),
        *_post_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_posts"),
        sa.UniqueConstraint("platform", "post_id", name="uq_posts_platform_post_id"),
    )
    op.create_index("ix_posts_topic_created_at", "posts", ["topic", "created_at"])
    op.create_index("ix_posts_created_at", "posts", ["created_at"])
    op.create_table(
        "post_media",
        sa.Column("id", sa.BigInteger(), server_default=_nextval("post_media_id_seq"), nullable=False),
        sa.Column("post_pk", sa.BigInteger(), nullable=False),
        *_media_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_post_media"),
        sa.ForeignKeyConstraint(["post_pk"], ["posts.id"], ondelete="CASCADE", name="fk_post_media_post_pk_posts"),
        sa.UniqueConstraint("post_pk", "url", name="uq_post_media_post_pk_url"),
    )
    op.create_index("ix_post_media_post_pk", "post_media", ["post_pk"])
    op.create_table(
        "sentiments",
        sa.Column("id", sa.BigInteger(), server_default=_nextval("sentiments_id_seq"), nullable=False),
        sa.Column("post_pk", sa.BigInteger(), nullable=False),
        *_sentiment_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_sentiments"),
        sa.ForeignKeyConstraint(["post_pk"], ["posts.id"], ondelete="CASCADE", name="fk_sentiments_post_pk_posts"),
        sa.UniqueConstraint("post_pk", "model_version", name="uq_sentiments_post_pk_model_version"),
    )
    op.create_index("ix_sentiments_model_version_scored_at", "sentiments", ["model_version", "scored_at"])
    for table in ("posts", "post_media", "sentiments"):
        op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
    op.execute(f"INSERT INTO posts ({POST_COLUMNS}) SELECT {POST_COLUMNS} FROM down_posts")
    op.execute(f"INSERT INTO post_media ({MEDIA_COLUMNS}) SELECT {MEDIA_COLUMNS} FROM down_post_media")
    op.execute(f"INSERT INTO sentiments ({SENTIMENT_COLUMNS}) SELECT {SENTIMENT_COLUMNS} FROM down_sentiments")
    for table in ("posts", "post_media", "sentiments"):
        op.execute(f"DROP TABLE down_{table}")
    op.execute(OLD_TREND_VIEW.format(name="trend_minute", unit="minute"))
    op.execute(OLD_TREND_VIEW.format(name="trend_hour", unit="hour"))
