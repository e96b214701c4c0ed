"""Initial schema: posts, media, sentiments, window aggregates, alerts, dead letters, cursors, trend views.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)

# The analyst views read each post with its most recent sentiment (any model version), so a re-score
# with a new checkpoint shows up without double counting.  Posts not scored yet still count in n_posts.
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
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM post_media m WHERE m.post_pk = p.id)) AS n_with_media
FROM posts p
LEFT JOIN LATERAL (
    SELECT label, intensity FROM sentiments x
    WHERE x.post_pk = p.id ORDER BY x.scored_at DESC, x.id DESC LIMIT 1
) s ON true
GROUP BY p.topic, date_trunc('{unit}', p.created_at)
"""


def upgrade() -> None:
    op.create_table(
        "posts",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
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
        sa.PrimaryKeyConstraint("id", name="pk_posts"),
        sa.UniqueConstraint("platform", "post_id", name="uq_posts_platform_post_id"),
    )
    op.create_index("ix_posts_topic_created_at", "posts", ["topic", "created_at"])
    op.create_index("ix_posts_created_at", "posts", ["created_at"])

    op.create_table(
        "post_media",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("post_pk", sa.BigInteger(), nullable=False),
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
        sa.PrimaryKeyConstraint("id", name="pk_post_media"),
        sa.ForeignKeyConstraint(["post_pk"], ["posts.id"], ondelete="CASCADE", name="fk_post_media_post_pk_posts"),
        sa.UniqueConstraint("post_pk", "url", name="uq_post_media_post_pk_url"),
    )
    op.create_index("ix_post_media_post_pk", "post_media", ["post_pk"])

    op.create_table(
        "sentiments",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("post_pk", sa.BigInteger(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("p_negative", sa.Float(), nullable=False),
        sa.Column("p_neutral", sa.Float(), nullable=False),
        sa.Column("p_positive", sa.Float(), nullable=False),
        sa.Column("intensity", sa.Float(), nullable=False),
        sa.Column("modality_weights", postgresql.JSONB()),
        sa.Column("modalities", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("scored_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sentiments"),
        sa.ForeignKeyConstraint(["post_pk"], ["posts.id"], ondelete="CASCADE", name="fk_sentiments_post_pk_posts"),
        sa.UniqueConstraint("post_pk", "model_version", name="uq_sentiments_post_pk_model_version"),
    )
    op.create_index("ix_sentiments_model_version_scored_at", "sentiments", ["model_version", "scored_at"])

    op.create_table(
        "window_aggregates",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("n_posts", sa.Integer(), nullable=False),
        sa.Column("n_negative", sa.Integer(), nullable=False),
        sa.Column("n_neutral", sa.Integer(), nullable=False),
        sa.Column("n_positive", sa.Integer(), nullable=False),
        sa.Column("mean_intensity", sa.Float()),
        sa.Column("negative_share", sa.Float()),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_window_aggregates"),
        sa.UniqueConstraint("topic", "window_start", "window_seconds", "model_version",
                            name="uq_window_aggregates_key"),
    )
    op.create_index("ix_window_aggregates_topic_window_seconds_window_start", "window_aggregates",
                    ["topic", "window_seconds", "window_start"])

    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), server_default="negative_spike", nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("observed", sa.Float(), nullable=False),
        sa.Column("expected", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("n_posts", sa.Integer(), nullable=False),
        sa.Column("n_negative", sa.Integer(), nullable=False),
        sa.Column("evidence", postgresql.JSONB()),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("published_at", TS),
        sa.Column("webhook_status", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("topic", "kind", "window_start", "window_seconds",
                            name="uq_alerts_key"),
    )
    op.create_index("ix_alerts_topic_created_at", "alerts", ["topic", "created_at"])

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("source_topic", sa.Text(), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text()),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary()),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
        sa.UniqueConstraint("source_topic", "source_partition", "source_offset",
                            name="uq_dead_letters_source"),
    )

    op.create_table(
        "source_cursors",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("source", name="pk_source_cursors"),
    )

    op.execute(TREND_VIEW.format(name="trend_minute", unit="minute"))
    op.execute(TREND_VIEW.format(name="trend_hour", unit="hour"))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS trend_hour")
    op.execute("DROP VIEW IF EXISTS trend_minute")
    for table in ("source_cursors", "dead_letters", "alerts", "window_aggregates", "sentiments",
                  "post_media", "posts"):
        op.drop_table(table)
