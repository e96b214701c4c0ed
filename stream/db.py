"""The PostgreSQL schema as SQLAlchemy 2 models.  Alembic (``migrations/``) owns the live schema.

Every table that the stream writes has a natural unique key, so every write is an upsert and a Kafka
replay rewrites the same rows instead of adding new ones:

* ``post_keys``         (platform, post_id) — the post's id and first-seen created_at (migration 0007)
* ``posts``             (id, created_at), placed by ``post_keys``
* ``post_media``        (post_pk, url, post_created_at)
* ``sentiments``        (post_pk, model_version, post_created_at) — a new checkpoint adds rows, never
  rewrites old ones
* ``window_aggregates`` (topic, window_start, window_seconds, model_version) — recomputed from rows
* ``alert_incidents``   (topic, kind, model_version, started_at) — one open per topic and kind
* ``alerts``            (topic, kind, model_version, window_start, window_seconds, event)
* ``alert_deliveries``  (alert_id, destination) — the delivery outbox; ``alert_mutes`` (topic)
* ``dead_letters``      (source_topic, source_partition, source_offset)
* ``source_cursors``    (source) — connectors resume from here after a restart
* ``picture_features``  (sha256, encoder) — the picture-feature cache; rows are never rewritten

Data for years (migration 0007, ``stream/partitions.py``): ``posts``, ``sentiments`` and ``post_media`` are
RANGE-partitioned by month of the post's creation (``created_at``; the children carry it as
``post_created_at`` and reference ``posts (id, created_at)``), with a DEFAULT partition each so no write
fails.  A partitioned table cannot hold a unique key without its partition key, so the idempotency key
(platform, post_id) lives in the unpartitioned ``post_keys``: the sink upserts it first and places the
post at the stored id and created_at (first seen wins: a replay with another created_at rewrites the same
row, in the same month).  Retention drops old months whole (``stream/retention.py``).  Partitions are not
modelled here (autogenerate ignores them); ``sentistream maintenance partitions`` keeps them ahead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class PostKeyRow(Base):
    """The idempotency key of a post and where it lives: unpartitioned, so (platform, post_id) is unique (0007)."""

    __tablename__ = "post_keys"
    __table_args__ = (
        UniqueConstraint("platform", "post_id"),
        UniqueConstraint("id", "created_at"),  # what posts (id, created_at) references
        Index("ix_post_keys_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(Text)
    post_id: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # first seen: the post's month


class PostRow(Base):
    __tablename__ = "posts"
    __table_args__ = (
        ForeignKeyConstraint(["id", "created_at"], ["post_keys.id", "post_keys.created_at"], ondelete="CASCADE"),
        Index("ix_posts_topic_created_at", "topic", "created_at"),
        Index("ix_posts_created_at", "created_at"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # post_keys.id
    platform: Mapped[str] = mapped_column(Text)
    post_id: Mapped[str] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    lang: Mapped[str | None] = mapped_column(Text)
    # NULL once scored; otherwise why the model gave this post no sentiment (see migration 0002).
    unscored_reason: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    topic: Mapped[str] = mapped_column(Text)
    keywords: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PostMediaRow(Base):
    __tablename__ = "post_media"
    __table_args__ = (
        UniqueConstraint("post_pk", "url", "post_created_at"),
        ForeignKeyConstraint(["post_pk", "post_created_at"], ["posts.id", "posts.created_at"], ondelete="CASCADE"),
        {"postgresql_partition_by": "RANGE (post_created_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    post_pk: Mapped[int] = mapped_column(BigInteger, index=True)
    post_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    # pending | ok | too_large | bad_type | timeout | blocked | http_error | skipped
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    content_type: Mapped[str | None] = mapped_column(Text)
    bytes: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SentimentRow(Base):
    __tablename__ = "sentiments"
    __table_args__ = (
        UniqueConstraint("post_pk", "model_version", "post_created_at"),
        ForeignKeyConstraint(["post_pk", "post_created_at"], ["posts.id", "posts.created_at"], ondelete="CASCADE"),
        Index("ix_sentiments_model_version_scored_at", "model_version", "scored_at"),
        {"postgresql_partition_by": "RANGE (post_created_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    post_pk: Mapped[int] = mapped_column(BigInteger)
    post_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    model_version: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(Text, comment=(
        "3-class verdict: negative, neutral or positive (the argmax of p_negative, p_neutral, p_positive)"))
    p_negative: Mapped[float] = mapped_column(Float)
    p_neutral: Mapped[float] = mapped_column(Float)
    p_positive: Mapped[float] = mapped_column(Float)
    intensity: Mapped[float] = mapped_column(Float, comment=(
        "signed strength of feeling on -3..+3; models trained with SemEval-2016 Task 4C learn it from five-point "
        "labels -2..+2 times 1.5 (-2 -> -3, -1 -> -1.5, 0 -> 0, +1 -> +1.5, +2 -> +3); older models gave a "
        "label-derived proxy (-1.5 / 0 / +1.5); see the model card of model_version"))
    modality_weights: Mapped[dict[str, float] | None] = mapped_column(JSONB, comment=(
        "share of the verdict each modality drove (text, visual, audio), from the model's fusion gate; uniform "
        "over the present modalities for a model without a gate"))
    modalities: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WindowAggregateRow(Base):
    __tablename__ = "window_aggregates"
    __table_args__ = (
        UniqueConstraint("topic", "window_start", "window_seconds", "model_version", name="uq_window_aggregates_key"),
        Index("ix_window_aggregates_topic_window_seconds_window_start", "topic", "window_seconds", "window_start"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_seconds: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(Text)
    n_posts: Mapped[int] = mapped_column(Integer)
    n_negative: Mapped[int] = mapped_column(Integer)
    n_neutral: Mapped[int] = mapped_column(Integer)
    n_positive: Mapped[int] = mapped_column(Integer)
    mean_intensity: Mapped[float | None] = mapped_column(Float, comment=(
        "mean of sentiments.intensity (-3..+3) over the window's posts, each post counted once with its latest "
        "sentiment of model_version"))
    negative_share: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AlertIncidentRow(Base):
    """One incident per topic, kind and model version, across window lengths (migration 0004)."""

    __tablename__ = "alert_incidents"
    __table_args__ = (
        UniqueConstraint("topic", "kind", "model_version", "started_at", name="uq_alert_incidents_key"),
        Index("ix_alert_incidents_topic_status", "topic", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="open")  # open | resolved
    window_seconds: Mapped[int] = mapped_column(Integer)  # the window length it was detected on
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # start of the first firing window
    last_window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # event time, not wall time
    observed: Mapped[float] = mapped_column(Float)
    expected: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)  # the strongest look so far
    n_posts: Mapped[int] = mapped_column(Integer)
    n_negative: Mapped[int] = mapped_column(Integer)
    n_windows: Mapped[int] = mapped_column(Integer, server_default="1")
    historical: Mapped[bool] = mapped_column(Boolean, server_default=false())
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # `sentistream alerts ack`: an acknowledged incident's later events are not delivered (0005).
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acked_by: Mapped[str | None] = mapped_column(Text)


class AlertRow(Base):
    """An incident's event (opened / updated / resolved): what delivery sends (migration 0004)."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("topic", "kind", "model_version", "window_start", "window_seconds", "event",
                         name="uq_alerts_event_key"),
        Index("ix_alerts_topic_created_at", "topic", "created_at"),
        Index("ix_alerts_incident_id", "incident_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text, server_default="negative_spike")
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_seconds: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(Text)
    observed: Mapped[float] = mapped_column(Float)
    expected: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    n_posts: Mapped[int] = mapped_column(Integer)
    n_negative: Mapped[int] = mapped_column(Integer)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    webhook_status: Mapped[str | None] = mapped_column(Text)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("alert_incidents.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(Text, server_default="opened")  # opened | updated | resolved
    historical: Mapped[bool] = mapped_column(Boolean, server_default=false())  # stored, never delivered


class AlertDeliveryRow(Base):
    """The outbox: one row per alert and destination, claimed with a lease (stream/alert_delivery.py, 0005)."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        UniqueConstraint("alert_id", "destination", name="uq_alert_deliveries_alert_id_destination"),
        Index("ix_alert_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    destination: Mapped[str] = mapped_column(Text)  # kafka | webhook
    state: Mapped[str] = mapped_column(Text, server_default="pending")  # pending|delivered|failed|suppressed|skipped
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claim_token: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AlertDeliveryAttemptRow(Base):
    """Every delivery attempt, kept for `sentistream alerts show` (0005)."""

    __tablename__ = "alert_delivery_attempts"
    __table_args__ = (Index("ix_alert_delivery_attempts_delivery_id", "delivery_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("alert_deliveries.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(Text)  # delivered | failed | expired
    status: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float | None] = mapped_column(Float)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AlertMuteRow(Base):
    """`sentistream alerts mute TOPIC --for 2h`: the topic's alerts are stored but not delivered until then (0005)."""

    __tablename__ = "alert_mutes"

    topic: Mapped[str] = mapped_column(Text, primary_key=True)
    muted_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    muted_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeadLetterRow(Base):
    __tablename__ = "dead_letters"
    # The payload's hash is in the key: after a broker restart a new message can reuse old coordinates (0003).
    __table_args__ = (UniqueConstraint("source_topic", "source_partition", "source_offset", "payload_sha256",
                                       name="uq_dead_letters_source_payload"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    source_topic: Mapped[str] = mapped_column(Text)
    source_partition: Mapped[int] = mapped_column(Integer)
    source_offset: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    payload_sha256: Mapped[str] = mapped_column(Text)  # hex SHA-256 of the stored payload (NULL hashes as empty)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SourceCursorRow(Base):
    __tablename__ = "source_cursors"

    source: Mapped[str] = mapped_column(Text, primary_key=True)
    cursor: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PictureFeatureRow(Base):
    """The picture-feature cache shared by workers (stream/picture_cache.py, 0006).

    ``encoder`` names the image encoder and its preprocessing version, so a new encoder never reads old
    vectors; ``feature`` is ``dim`` little-endian ``dtype`` values (float16 or float32), checked on read.
    """

    __tablename__ = "picture_features"
    __table_args__ = (Index("ix_picture_features_last_used_at", "last_used_at"),)

    sha256: Mapped[str] = mapped_column(Text, primary_key=True)
    encoder: Mapped[str] = mapped_column(Text, primary_key=True)
    dtype: Mapped[str] = mapped_column(Text)  # float16 | float32
    dim: Mapped[int] = mapped_column(Integer)
    feature: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


__all__ = [
    "AlertDeliveryAttemptRow", "AlertDeliveryRow", "AlertIncidentRow", "AlertMuteRow", "AlertRow", "Base", "DeadLetterRow", "PictureFeatureRow", "PostKeyRow", "PostMediaRow", "PostRow",
    "SentimentRow",
    "SourceCursorRow", "WindowAggregateRow",
]
