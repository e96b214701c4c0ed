"""Tumbling-window aggregates per topic, recomputed from the stored rows rather than accumulated.

A window's counts are never incremented in memory: after a batch's sentiments are committed, every window
the batch touched is recomputed from ``posts`` + ``sentiments`` with one INSERT ... SELECT ... ON CONFLICT
DO UPDATE.  So a replayed batch rewrites the same numbers (idempotent), a late post simply makes its own
window be recomputed, and a restart needs no state.  Windows are aligned to the Unix epoch: the window of
``t`` for length ``L`` seconds starts at ``floor(t / L) * L``.

Concurrency: two workers may recompute the same window at once (a topic's posts spread over partitions).
In READ COMMITTED each statement sees what was committed when it *started*, so a slow recompute could
overwrite a newer one.  :func:`recompute_windows` therefore takes a transaction-scoped advisory lock per
window key (in sorted order, so no deadlock) before the statement runs: whichever recompute runs last
started after every earlier writer committed, and sees all of their rows.  Call it in its own
transaction, after the batch's sentiments are committed.

Time range: posts may carry any ``created_at`` that Python and PostgreSQL can hold (years 1 to 9999).  A
window's end is computed by PostgreSQL (``window_start + window_seconds``), never in Python, so the last
window of year 9999 (whose end is in year 10000) is recomputed like any other.  A window that would *start*
before 0001-01-01 UTC cannot be represented at all; :func:`windows_touched` leaves such a post out of that
window (it is still stored) and reports it, so one hostile timestamp can never fail a whole batch's windows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol

from sqlalchemy import (
    DateTime,
    Float,
    Insert,
    Integer,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    func,
    literal,
    or_,
    select,
    text,
    true,
    tuple_,
    values,
)
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine

from stream.db import PostRow, SentimentRow, WindowAggregateRow

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_WINDOW_START = datetime.min.replace(tzinfo=UTC)  # the earliest start a window key can have


class WindowRangeError(ValueError):
    """The window of a timestamp cannot be represented (it would start before year 1)."""


class WindowKey(NamedTuple):
    """One tumbling window of one topic; ``window_start`` is an aware UTC datetime."""

    topic: str
    window_start: datetime
    window_seconds: int

    @property
    def window_end(self) -> datetime:
        """Raises OverflowError for the last windows of year 9999; SQL computes ends itself."""
        return self.window_start + timedelta(seconds=self.window_seconds)


class WindowAggregate(NamedTuple):
    """One stored ``window_aggregates`` row: what the spike detector consumes."""

    topic: str
    window_start: datetime
    window_seconds: int
    model_version: str
    n_posts: int
    n_negative: int
    n_neutral: int
    n_positive: int
    mean_intensity: float | None
    negative_share: float | None

    @property
    def key(self) -> WindowKey:
        return WindowKey(self.topic, self.window_start, self.window_seconds)


AGGREGATE_COLUMNS = WindowAggregate._fields


class TimedTopic(Protocol):
    """What a post must offer to be placed in windows (``connectors.post.Post`` does)."""

    @property
    def topic(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...


def window_start(ts: datetime, window_seconds: int) -> datetime:
    """Start of the epoch-aligned tumbling window of length ``window_seconds`` that contains ``ts``.

    Raises WindowRangeError when that start (or ``ts`` in UTC) falls outside datetime's range.
    """
    if window_seconds <= 0:
        raise ValueError("window_seconds must be positive")
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (naive times are ambiguous across hosts)")
    offset = ts.utcoffset() or timedelta(0)
    # Computed on the naive wall time minus the offset, so 0001-01-01T00:30+01:00 is not an overflow
    # inside astimezone() but a clear "before year 1".
    delta = (ts.replace(tzinfo=None) - EPOCH.replace(tzinfo=None)) - offset
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    step = window_seconds * 1_000_000
    try:
        return EPOCH + timedelta(microseconds=(micros // step) * step)
    except OverflowError as exc:
        raise WindowRangeError(f"the {window_seconds}s window of {ts.isoformat()} is outside years 1-9999") from exc


def windows_touched(posts: Iterable[TimedTopic], window_lengths_s: Iterable[int],
                    out_of_range: Callable[[TimedTopic, int], None] | None = None) -> set[WindowKey]:
    """The windows whose aggregates a batch of posts can have changed: one per post and window length.

    A post whose window cannot be represented (see the module docstring) is left out of that window and
    handed to ``out_of_range`` with the length, so the caller can count it; it never raises for a time.
    """
    lengths = tuple(window_lengths_s)
    keys: set[WindowKey] = set()
    for p in posts:
        for length in lengths:
            try:
                keys.add(WindowKey(p.topic, window_start(p.created_at, length), length))
            except WindowRangeError:
                if out_of_range is not None:
                    out_of_range(p, length)
    return keys


def _keys_values(keys: Iterable[WindowKey]):  # noqa: ANN202 - a SQLAlchemy Values construct
    rows = [(k.topic, k.window_start, k.window_seconds) for k in sorted(set(keys))]
    return values(
        column("topic", Text), column("window_start", DateTime(timezone=True)), column("window_seconds", Integer),
        name="k",
    ).data(rows)


def recompute_statement(keys: Iterable[WindowKey], model_version: str) -> Insert:
    """One INSERT ... SELECT ... ON CONFLICT DO UPDATE that recomputes ``keys`` for ``model_version``.

    Each key is aggregated in a LATERAL subquery, so PostgreSQL reads only that window's posts through
    ``ix_posts_topic_created_at`` (a plain join hashes the whole posts table: 0.7 s at 400k posts).  An
    aggregate without GROUP BY always yields one row, so a window that has lost its rows is written as
    zero counts instead of keeping stale ones.  Unchanged rows are not rewritten (the DO UPDATE has a
    WHERE ... IS DISTINCT FROM).
    """
    k = _keys_values(keys).alias("k")
    p, s = PostRow.__table__, SentimentRow.__table__
    # The end in SQL: PostgreSQL holds year 10000, Python's datetime does not (the year-9999 windows).
    window_end = k.c.window_start + func.make_interval(0, 0, 0, 0, 0, 0, k.c.window_seconds)
    n_posts = func.count(s.c.label)
    n_negative = func.count(s.c.label).filter(s.c.label == "negative")
    counts = (
        select(
            n_posts.label("n_posts"),
            n_negative.label("n_negative"),
            func.count(s.c.label).filter(s.c.label == "neutral").label("n_neutral"),
            func.count(s.c.label).filter(s.c.label == "positive").label("n_positive"),
            func.avg(s.c.intensity).label("mean_intensity"),
            case((n_posts > 0, cast(n_negative, Float) / n_posts), else_=None).label("negative_share"),
        )
        .select_from(p.join(s, and_(s.c.post_pk == p.c.id, s.c.post_created_at == p.c.created_at,
                                    s.c.model_version == bindparam("model_version", model_version))))
        .where(p.c.topic == k.c.topic, p.c.created_at >= k.c.window_start, p.c.created_at < window_end)
        .lateral("counts")
    )
    counted = ("n_posts", "n_negative", "n_neutral", "n_positive", "mean_intensity", "negative_share")
    source = select(
        k.c.topic, k.c.window_start, k.c.window_seconds, literal(model_version, Text).label("model_version"),
        *(counts.c[c] for c in counted), func.now().label("updated_at"),
    ).select_from(k.join(counts, true()))
    w = WindowAggregateRow.__table__
    stmt = pg_insert(w).from_select(
        ["topic", "window_start", "window_seconds", "model_version", *counted, "updated_at"], source)
    return stmt.on_conflict_do_update(
        index_elements=["topic", "window_start", "window_seconds", "model_version"],
        set_={**{c: stmt.excluded[c] for c in counted}, "updated_at": stmt.excluded.updated_at},
        where=or_(*(w.c[c].is_distinct_from(stmt.excluded[c]) for c in counted)),
    ).returning(*(w.c[c] for c in AGGREGATE_COLUMNS))


def window_lock_id(key: WindowKey, model_version: str) -> int:
    """A stable signed 64-bit advisory-lock id for one window (collisions only serialize more)."""
    digest = hashlib.sha256(
        f"{key.topic}\x00{key.window_start.isoformat()}\x00{key.window_seconds}\x00{model_version}".encode()
    ).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_LOCK_SQL = text(
    "SELECT pg_advisory_xact_lock(id) FROM (SELECT unnest(:ids) AS id ORDER BY 1) AS ordered"
).bindparams(bindparam("ids", type_=ARRAY(BIGINT)))


def recompute_windows(conn: Connection, keys: Iterable[WindowKey], model_version: str) -> list[WindowAggregate]:
    """Lock the windows, recompute them, and return every touched window's row as now stored.

    Runs inside the caller's transaction (``with engine.begin() as conn``); the locks end with it.  All
    touched rows are returned, changed or not, so a replayed batch still shows the detector its windows
    (write the resulting alerts in the same transaction and a crash can never leave one unwritten).
    """
    keys = sorted(set(keys))
    if not keys:
        return []
    conn.execute(_LOCK_SQL, {"ids": sorted({window_lock_id(k, model_version) for k in keys})}).all()
    conn.execute(recompute_statement(keys, model_version)).all()
    return load_aggregates(conn, keys, model_version)


def all_window_keys(conn: Connection, window_lengths_s: Iterable[int], model_version: str,
                    since: datetime | None = None, topic: str | None = None) -> set[WindowKey]:
    """Every window that holds a post scored by ``model_version``: for a full rebuild or a rescore."""
    p, s = PostRow.__table__, SentimentRow.__table__
    keys: set[WindowKey] = set()
    for length in window_lengths_s:
        start = func.to_timestamp(func.floor(func.extract("epoch", p.c.created_at) / length) * length)
        query = (select(p.c.topic, start.label("window_start")).distinct()
                 .join(s, and_(s.c.post_pk == p.c.id, s.c.post_created_at == p.c.created_at,
                               s.c.model_version == model_version))
                 .where(start >= FIRST_WINDOW_START))  # a window before year 1 has no Python key
        if since is not None:
            query = query.where(p.c.created_at >= window_start(since, length))
        if topic is not None:
            query = query.where(p.c.topic == topic)
        keys.update(WindowKey(t, ws.astimezone(UTC), length) for t, ws in conn.execute(query))
    return keys


def stored_window_keys(conn: Connection, window_lengths_s: Iterable[int], model_version: str,
                       since: datetime | None = None, topic: str | None = None) -> set[WindowKey]:
    """Every window that has an aggregate row: a rebuild recomputes these too, so a window whose posts
    are gone is rewritten as zero counts instead of keeping numbers no row supports."""
    w = WindowAggregateRow.__table__
    keys: set[WindowKey] = set()
    for length in window_lengths_s:
        query = select(w.c.topic, w.c.window_start).where(w.c.model_version == model_version,
                                                          w.c.window_seconds == length)
        if since is not None:
            query = query.where(w.c.window_start >= window_start(since, length))
        if topic is not None:
            query = query.where(w.c.topic == topic)
        keys.update(WindowKey(t, ws.astimezone(UTC), length) for t, ws in conn.execute(query))
    return keys


def scored_model_versions(conn: Connection, since: datetime | None = None, topic: str | None = None) -> list[str]:
    """Model versions with sentiments on posts in the span, or with aggregate rows in it."""
    p, s, w = PostRow.__table__, SentimentRow.__table__, WindowAggregateRow.__table__
    scored = select(s.c.model_version).join(p, and_(p.c.id == s.c.post_pk, p.c.created_at == s.c.post_created_at))
    stored = select(w.c.model_version)
    if since is not None:
        scored = scored.where(p.c.created_at >= since)
        stored = stored.where(w.c.window_start >= since)
    if topic is not None:
        scored = scored.where(p.c.topic == topic)
        stored = stored.where(w.c.topic == topic)
    return sorted(set(conn.execute(scored.distinct()).scalars()) | set(conn.execute(stored.distinct()).scalars()))


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What ``rebuild_windows`` did: windows recomputed and how many rows it inserted or changed."""

    windows: int
    changed: int
    model_versions: tuple[str, ...]


def rebuild_windows(engine: Engine, window_lengths_s: Sequence[int], since: datetime, *,
                    model_version: str | None = None, topic: str | None = None, chunk: int = 500,
                    on_progress: Callable[[int, int], None] | None = None) -> RebuildReport:
    """Recompute every window of every length from ``since`` on from the stored rows (`windows rebuild`).

    For repairs: windows left stale by an outage or an old bug, a changed SENTISTREAM_WINDOWS.  Each chunk
    of windows is its own transaction, locked like the worker's recompute, so it can run next to a live
    worker; a second run finds nothing to change (the upsert skips rows whose numbers are equal).
    ``on_progress(done, total)`` is called after each chunk with windows done so far and planned.
    """
    with engine.connect() as conn:
        versions = [model_version] if model_version is not None else scored_model_versions(conn, since, topic)
        plan = [(v, sorted(all_window_keys(conn, window_lengths_s, v, since, topic)
                           | stored_window_keys(conn, window_lengths_s, v, since, topic))) for v in versions]
    windows = changed = 0
    total = sum(len(keys) for _, keys in plan)
    for version, keys in plan:
        for i in range(0, len(keys), max(1, chunk)):
            part = keys[i:i + chunk]
            with engine.begin() as conn:
                conn.execute(_LOCK_SQL, {"ids": sorted({window_lock_id(k, version) for k in part})}).all()
                changed += len(conn.execute(recompute_statement(part, version)).all())
            windows += len(part)
            if on_progress is not None:
                on_progress(windows, total)
    return RebuildReport(windows=windows, changed=changed, model_versions=tuple(versions))


def load_aggregates(conn: Connection, keys: Iterable[WindowKey], model_version: str) -> list[WindowAggregate]:
    """The stored aggregate rows for ``keys``, ordered by topic, length and start."""
    keys = list(set(keys))
    if not keys:
        return []
    w = WindowAggregateRow.__table__
    query = (select(*(w.c[c] for c in AGGREGATE_COLUMNS)).where(w.c.model_version == model_version)
             .where(tuple_(w.c.topic, w.c.window_start, w.c.window_seconds).in_(
                 [(k.topic, k.window_start, k.window_seconds) for k in keys]))
             .order_by(w.c.topic, w.c.window_seconds, w.c.window_start))
    return [_aggregate(row) for row in conn.execute(query)]


def _aggregate(row: object) -> WindowAggregate:
    agg = WindowAggregate(*row)  # type: ignore[misc]
    return agg._replace(window_start=agg.window_start.astimezone(UTC))
