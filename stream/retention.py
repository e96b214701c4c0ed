"""Retention: what an always-on monitor forgets, and when (`sentistream maintenance retention`).

Why: the monitor runs for years, and the bulk of a post row is the platform's raw payload (``posts.raw``),
which nothing reads after the post was normalised.  So raw payloads go first
(``SENTISTREAM_RETENTION_RAW_DAYS``, default 30), and whole posts with their sentiments and media only when
an operator asks for it (``SENTISTREAM_RETENTION_POSTS_DAYS``, default 0 = keep).  Cached picture features
(``picture_features``, stream/picture_cache.py) go when no worker used them for
``SENTISTREAM_RETENTION_PICTURE_FEATURES_DAYS`` (default 30): they are a cache, recomputed on a miss.  What analysts keep
looking at years later lives elsewhere and is never touched here: ``window_aggregates`` (the per-window
counts, recomputed from rows only while the rows exist), ``alert_incidents`` and ``alerts`` (their
evidence is a JSON copy, not a reference to posts).

Safety rules:

* Nothing newer than the longest window (``SENTISTREAM_WINDOWS``) is ever deleted, whatever the
  setting says: the worker recomputes a window from its rows, and a window that lost some of its rows
  would be rewritten with smaller counts.
* Work goes in bounded batches, each its own short transaction that skips rows a worker holds
  (``FOR UPDATE SKIP LOCKED``), so it runs next to live workers without long locks; a second run finds
  nothing to do (idempotent), and an interrupted run is resumed by the next one.
* Raw payloads are walked in (created_at, id) order with a moving lower bound, so each old row is read
  once per run instead of once per batch.

Partitions (migration 0007, ``stream/partitions.py``): ``posts``, ``sentiments`` and ``post_media`` are
partitioned by month of the post's creation, so a month that ends before the posts cut-off is dropped
whole (its sentiments and media partitions first, then its posts), which costs no WAL per row and leaves
no dead tuples to vacuum.  What remains older than the cut-off (the month the cut-off falls in, rows in
the DEFAULT partitions) goes with the batched delete, through ``post_keys``: deleting a key cascades to
its post, sentiments and media, and the keys of posts in dropped months go the same way.  Each run also
creates the coming months' partitions (``ensure_partitions``), so the daily job keeps them ahead.

The job is not started by the worker: run it daily from cron, a Kubernetes CronJob or the compose file
(README, "Deployment").  A replayed post older than the cut-off is written again by the worker and is
removed again by the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Engine

from stream.partitions import drop_month, ensure_partitions, months_before

if TYPE_CHECKING:
    from stream.settings import Settings

log = logging.getLogger(__name__)

DAY_S = 86400
DEFAULT_BATCH_ROWS = 5000  # one transaction: a few ms to a second of locks, never minutes
PARTITION_LOCK_TIMEOUT_MS = 10_000  # a partition drop waits this long for the tables' lock, then the run fails

_RAW_BATCH_SQL = text("""
WITH batch AS (
    SELECT id, created_at FROM posts
    WHERE created_at < :cutoff AND created_at >= :after_at AND (created_at, id) > (:after_at, :after_id)
      AND raw IS NOT NULL
    ORDER BY created_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE posts p SET raw = NULL FROM batch b WHERE p.id = b.id AND p.created_at = b.created_at
RETURNING p.created_at, p.id
""")

_RAW_COUNT_SQL = text(
    "SELECT count(*) FROM posts WHERE created_at < :cutoff AND created_at >= :after_at AND raw IS NOT NULL")

# Keys are deleted; ON DELETE CASCADE removes their post, its sentiments and media.  Those are counted from
# the statement's snapshot (before the delete).  Keys whose post was in a dropped partition count no post.
_POSTS_BATCH_SQL = text("""
WITH doomed AS (
    SELECT id, created_at FROM post_keys WHERE created_at < :cutoff
    ORDER BY created_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM post_keys k USING doomed d WHERE k.id = d.id RETURNING k.id
)
SELECT (SELECT count(*) FROM gone),
       (SELECT count(*) FROM posts p JOIN doomed d ON p.id = d.id AND p.created_at = d.created_at),
       (SELECT count(*) FROM sentiments s JOIN doomed d ON s.post_pk = d.id AND s.post_created_at = d.created_at),
       (SELECT count(*) FROM post_media m JOIN doomed d ON m.post_pk = d.id AND m.post_created_at = d.created_at)
""")

_POSTS_COUNT_SQL = text("""
SELECT count(*),
       (SELECT count(*) FROM sentiments WHERE post_created_at < :cutoff),
       (SELECT count(*) FROM post_media WHERE post_created_at < :cutoff)
FROM posts WHERE created_at < :cutoff
""")


# Least recently used first; rows a worker is touching are skipped (it just used them).
_PICTURES_BATCH_SQL = text("""
WITH doomed AS (
    SELECT sha256, encoder FROM picture_features WHERE last_used_at < :cutoff
    ORDER BY last_used_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
DELETE FROM picture_features f USING doomed d WHERE f.sha256 = d.sha256 AND f.encoder = d.encoder
""")

_PICTURES_COUNT_SQL = text("SELECT count(*) FROM picture_features WHERE last_used_at < :cutoff")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How many days raw payloads and posts are kept (0 = forever), and the floor no deletion goes below."""

    raw_days: int = 30
    posts_days: int = 0
    floor_s: int = 3600  # the longest window length: rows newer than this are never touched
    picture_features_days: int = 30  # by last use; the floor does not apply (no window is computed from them)

    def __post_init__(self) -> None:
        if self.raw_days < 0 or self.posts_days < 0 or self.floor_s < 0 or self.picture_features_days < 0:
            raise ValueError("retention days and the floor must be >= 0 (0 days = keep)")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        """The policy the settings ask for; the floor is the longest of SENTISTREAM_WINDOWS."""
        return cls(raw_days=settings.retention_raw_days, posts_days=settings.retention_posts_days,
                   floor_s=max(settings.window_lengths_s, default=0),
                   picture_features_days=settings.retention_picture_features_days)

    def _cutoff(self, days: int, now: datetime) -> datetime | None:
        if days == 0:
            return None
        return now - timedelta(seconds=max(days * DAY_S, self.floor_s))

    def raw_cutoff(self, now: datetime) -> datetime | None:
        """Posts created before this lose their raw payload; None = keep them all."""
        return self._cutoff(self.raw_days, now)

    def posts_cutoff(self, now: datetime) -> datetime | None:
        """Posts created before this are deleted with their sentiments and media; None = keep them all."""
        return self._cutoff(self.posts_days, now)

    def picture_features_cutoff(self, now: datetime) -> datetime | None:
        """Cached picture features last used before this are deleted; None = keep them all."""
        return now - timedelta(days=self.picture_features_days) if self.picture_features_days else None


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What a run did, or with ``dry_run`` what it would do."""

    dry_run: bool
    raw_cutoff: datetime | None
    posts_cutoff: datetime | None
    raw_dropped: int = 0
    posts_deleted: int = 0
    sentiments_deleted: int = 0
    media_deleted: int = 0
    picture_features_cutoff: datetime | None = None
    picture_features_deleted: int = 0
    partitions_dropped: tuple[str, ...] = ()  # months dropped whole, 'YYYY-MM' (counted in the numbers above)

    def summary(self) -> str:
        verb = "would drop" if self.dry_run else "dropped"
        verb2 = "would delete" if self.dry_run else "deleted"
        raw = (f"{verb} {self.raw_dropped} raw payloads of posts created before {self.raw_cutoff.isoformat()}"
               if self.raw_cutoff else "raw payloads kept (SENTISTREAM_RETENTION_RAW_DAYS=0)")
        posts = (f"{verb2} {self.posts_deleted} posts, {self.sentiments_deleted} sentiments and "
                 f"{self.media_deleted} media rows created before {self.posts_cutoff.isoformat()}"
                 if self.posts_cutoff else "posts kept (SENTISTREAM_RETENTION_POSTS_DAYS=0)")
        if self.partitions_dropped:
            posts += f" (whole monthly partitions {', '.join(self.partitions_dropped)} dropped)"
        pictures = (f"{verb2} {self.picture_features_deleted} cached picture features unused since "
                    f"{self.picture_features_cutoff.isoformat()}" if self.picture_features_cutoff
                    else "cached picture features kept (SENTISTREAM_RETENTION_PICTURE_FEATURES_DAYS=0)")
        return f"{raw}; {posts}; {pictures}; window aggregates and alerts kept"


def apply_retention(engine: Engine, policy: RetentionPolicy, *, now: datetime | None = None,
                    dry_run: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS,
                    on_progress: Callable[[int], None] | None = None) -> RetentionReport:
    """Drop old raw payloads, then delete old posts, then cached picture features unused for their days, in
    batches of ``batch_rows``; or count with ``dry_run``.

    ``on_progress(rows)`` is called after each batch with the rows that batch changed.  Posts are deleted
    after their payloads were dropped, so an interrupted run has still done the cheaper half.
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be >= 1")
    now = now or datetime.now(UTC)
    raw_cutoff, posts_cutoff = policy.raw_cutoff(now), policy.posts_cutoff(now)
    pictures_cutoff = policy.picture_features_cutoff(now)
    if dry_run:
        raw = posts = sentiments = media = pictures = 0
        with engine.connect() as conn:
            if raw_cutoff is not None:
                # Posts that the deletion removes anyway are counted once, as deleted posts.
                raw = int(conn.execute(_RAW_COUNT_SQL, {"cutoff": raw_cutoff,
                                                        "after_at": _raw_floor(posts_cutoff)}).scalar_one())
            if posts_cutoff is not None:
                posts, sentiments, media = (int(v) for v in conn.execute(
                    _POSTS_COUNT_SQL, {"cutoff": posts_cutoff}).one())
            if pictures_cutoff is not None:
                pictures = int(conn.execute(_PICTURES_COUNT_SQL, {"cutoff": pictures_cutoff}).scalar_one())
        return RetentionReport(True, raw_cutoff, posts_cutoff, raw, posts, sentiments, media,
                               picture_features_cutoff=pictures_cutoff, picture_features_deleted=pictures)

    ensure_partitions(engine, now=now, older_than=posts_cutoff)  # the daily job keeps the months ahead
    raw = _drop_raw(engine, raw_cutoff, posts_cutoff, batch_rows, on_progress) if raw_cutoff else 0
    posts = sentiments = media = 0
    dropped: list[str] = []
    if posts_cutoff is not None:
        with engine.connect() as conn:
            months = months_before(conn, posts_cutoff)
        for month in months:  # one short transaction per month; lock_timeout: never queue writers for long
            with engine.begin() as conn:
                conn.execute(text(f"SET LOCAL lock_timeout = '{PARTITION_LOCK_TIMEOUT_MS}ms'"))
                gone = drop_month(conn, month)
            posts += gone.rows["posts"]
            sentiments += gone.rows["sentiments"]
            media += gone.rows["post_media"]
            dropped.append(month.strftime("%Y-%m"))
            if on_progress is not None and gone.rows["posts"]:
                on_progress(gone.rows["posts"])
        while True:
            with engine.begin() as conn:
                n_keys, n_posts, n_sentiments, n_media = (int(v) for v in conn.execute(
                    _POSTS_BATCH_SQL, {"cutoff": posts_cutoff, "limit": batch_rows}).one())
            posts, sentiments, media = posts + n_posts, sentiments + n_sentiments, media + n_media
            if on_progress is not None and n_posts:
                on_progress(n_posts)
            if n_keys < batch_rows:
                break
    pictures = 0
    while pictures_cutoff is not None:
        with engine.begin() as conn:
            n_pictures = conn.execute(_PICTURES_BATCH_SQL, {"cutoff": pictures_cutoff, "limit": batch_rows}).rowcount
        pictures += n_pictures
        if on_progress is not None and n_pictures:
            on_progress(n_pictures)
        if n_pictures < batch_rows:
            break
    report = RetentionReport(False, raw_cutoff, posts_cutoff, raw, posts, sentiments, media,
                             picture_features_cutoff=pictures_cutoff, picture_features_deleted=pictures)
    report = replace(report, partitions_dropped=tuple(dropped))
    log.info("retention: %s", report.summary())
    return report


def _drop_raw(engine: Engine, raw_cutoff: datetime, posts_cutoff: datetime | None, batch_rows: int,
              on_progress: Callable[[int], None] | None) -> int:
    """NULL the raw payload of posts created before ``raw_cutoff`` that the deletion will not remove anyway."""
    after_at, after_id = _raw_floor(posts_cutoff), -(2**63)
    if after_at >= raw_cutoff:
        return 0
    dropped = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(_RAW_BATCH_SQL, {"cutoff": raw_cutoff, "after_at": after_at, "after_id": after_id,
                                                 "limit": batch_rows}).all()
        if not rows:
            return dropped
        dropped += len(rows)
        after_at, after_id = max((r.created_at, r.id) for r in rows)
        if on_progress is not None:
            on_progress(len(rows))
        if len(rows) < batch_rows:
            return dropped


def _raw_floor(posts_cutoff: datetime | None) -> datetime:
    """Where the raw walk starts: rows the post deletion removes next are not worth rewriting first."""
    return posts_cutoff if posts_cutoff is not None else datetime(1, 1, 1, tzinfo=UTC)
