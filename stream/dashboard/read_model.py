"""What the dashboard reads, each query in its own READ ONLY transaction in UTC.

Why read-only at the transaction level: the page is served to whoever can reach its port, and its
queries take parameters from the URL.  ``SET TRANSACTION READ ONLY`` makes PostgreSQL itself refuse any
write a bug or a crafted parameter might cause, even when the dashboard connects with a role that could
write (the embedded default); README shows the read-only role to use on a configured server.

The numbers are the trend views' (migration 0001): every post counts in the volume, the share is over
posts with a sentiment, and a post's sentiment is its newest one (any model version), so the page and
``sentistream trends`` agree.  Unlike the views, the series reads only the posts in the requested span
(``ix_posts_created_at``) and fills empty buckets with ``generate_series``: a quiet hour is a zero on
the chart, not a missing point the line jumps over.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from stream.dashboard.confidence import wilson_interval
from stream.settings import window_seconds
from stream.trends import THIN_BUCKET_SCORED

BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}
MAX_BUCKETS = 2000  # per topic and request: a year of minutes would be half a million points per line
MAX_POSTS = 200  # posts listed in one drill-down (the total is reported beside them)
MAX_ALERTS = 500  # alert events in one timeline
MAX_TOPIC_CHARS = 500  # a topic named in a request (PostgreSQL text holds no NUL either)


class QueryError(ValueError):
    """A request the dashboard will not run (an unknown bucket, a span too fine for its length)."""


@dataclass(frozen=True, slots=True)
class Span:
    """The buckets a series covers: from the bucket holding ``now - since`` to the one holding ``now``."""

    bucket: str
    first: datetime
    last: datetime

    @property
    def step(self) -> timedelta:
        return timedelta(seconds=BUCKETS[self.bucket])

    @property
    def end(self) -> datetime:
        return self.last + self.step

    @classmethod
    def ending_at(cls, now: datetime, since: str, bucket: str) -> Span:
        if bucket not in BUCKETS:
            raise QueryError(f"bucket must be one of {', '.join(BUCKETS)}, got {bucket!r}")
        seconds = span_seconds(since)
        first, last = _truncate(now - timedelta(seconds=seconds), bucket), _truncate(now, bucket)
        n = (last - first) // timedelta(seconds=BUCKETS[bucket]) + 1
        if n > MAX_BUCKETS:
            raise QueryError(f"{since} of {bucket} buckets is {n} points per topic; at most {MAX_BUCKETS}: "
                             "choose a coarser bucket")
        return cls(bucket, first, last)


def span_seconds(since: str) -> int:
    """A span like '24h' or '7d' from a URL, in seconds; at most ten years."""
    try:
        seconds = window_seconds(since)
    except ValueError as exc:
        raise QueryError(f"since: {exc}") from None
    if seconds > 3660 * 86400:
        raise QueryError("since: at most ten years")
    return seconds


def checked_topic(topic: str | None) -> str | None:
    """A topic from a URL as a query parameter: refused when no stored topic could be it."""
    if topic is None:
        return None
    if "\x00" in topic or len(topic) > MAX_TOPIC_CHARS:
        raise QueryError(f"topic must be text of at most {MAX_TOPIC_CHARS} characters without NUL")
    return topic


def _truncate(moment: datetime, bucket: str) -> datetime:
    moment = moment.astimezone(UTC)
    if bucket == "minute":
        return moment.replace(second=0, microsecond=0)
    if bucket == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


_SERIES_SQL = """
WITH counts AS (
    SELECT p.topic, date_trunc(:unit, p.created_at) AS bucket,
           count(*)                                     AS n_posts,
           count(s.label)                               AS n_scored,
           count(*) FILTER (WHERE s.label = 'negative') AS n_negative,
           avg(s.intensity)                             AS mean_intensity
    FROM posts p
    LEFT JOIN LATERAL (
        SELECT label, intensity FROM sentiments x
        WHERE x.post_pk = p.id AND x.post_created_at = p.created_at ORDER BY x.scored_at DESC, x.id DESC LIMIT 1
    ) s ON true
    WHERE p.created_at >= :first AND p.created_at < :end AND (CAST(:topic AS text) IS NULL OR p.topic = :topic)
    GROUP BY 1, 2
), topics AS (SELECT DISTINCT topic FROM counts)
SELECT t.topic, g.bucket, coalesce(c.n_posts, 0), coalesce(c.n_scored, 0), coalesce(c.n_negative, 0),
       c.mean_intensity
FROM topics t
CROSS JOIN generate_series(CAST(:first AS timestamptz), CAST(:last AS timestamptz), CAST(:step AS interval)) AS g(bucket)
LEFT JOIN counts c ON c.topic = t.topic AND c.bucket = g.bucket
ORDER BY t.topic, g.bucket
"""

_ALERTS_SQL = """
SELECT to_jsonb(a) AS alert, to_jsonb(i) AS incident
FROM alerts a LEFT JOIN alert_incidents i ON i.id = a.incident_id
WHERE a.window_start >= :first AND (CAST(:topic AS text) IS NULL OR a.topic = :topic)
ORDER BY a.window_start DESC, a.id DESC
LIMIT :limit
"""

_ALERT_SQL = """
SELECT to_jsonb(a) AS alert, to_jsonb(i) AS incident
FROM alerts a LEFT JOIN alert_incidents i ON i.id = a.incident_id
WHERE a.id = :id
"""

# One model's sentiment (an alert's) or, without one, the newest of any model as in the trend views.
_POSTS_SQL = """
SELECT p.id, p.platform, p.post_id, p.author, p.created_at, p.text, p.url, p.lang, p.unscored_reason,
       s.model_version, s.label, s.p_negative, s.intensity, s.modalities, s.modality_weights,
       coalesce((SELECT jsonb_agg(jsonb_build_object('url', m.url, 'kind', m.kind, 'status', m.status)
                                  ORDER BY m.id)
                 FROM post_media m WHERE m.post_pk = p.id AND m.post_created_at = p.created_at), '[]'::jsonb) AS media,
       count(*) OVER () AS total
FROM posts p
LEFT JOIN LATERAL (
    SELECT model_version, label, p_negative, intensity, modalities, modality_weights FROM sentiments x
    WHERE x.post_pk = p.id AND x.post_created_at = p.created_at
      AND (CAST(:model_version AS text) IS NULL OR x.model_version = :model_version)
    ORDER BY x.scored_at DESC, x.id DESC LIMIT 1
) s ON true
WHERE p.topic = :topic AND p.created_at >= :start AND p.created_at < :end
ORDER BY (s.label = 'negative') DESC NULLS LAST, s.p_negative DESC NULLS LAST, p.created_at, p.id
LIMIT :limit
"""


class DashboardReader:
    """The dashboard's queries over one engine; every method is one READ ONLY transaction."""

    def __init__(self, engine: Engine, thin_below: int = THIN_BUCKET_SCORED) -> None:
        self.engine = engine
        self.thin_below = thin_below

    @contextlib.contextmanager
    def read_only(self) -> Iterator[Connection]:
        """A connection inside a READ ONLY transaction with the session in UTC, rolled back at the end."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")  # the first statement of the transaction
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # date_trunc buckets on UTC boundaries
            # Compiling these short queries took 550 of 720 ms (14k posts, 24 h by hour): JIT only pays
            # for long analytic scans.
            conn.exec_driver_sql("SET LOCAL jit = off")
            try:
                yield conn
            finally:
                conn.rollback()

    def series(self, *, since: str = "24h", bucket: str = "hour", topic: str | None = None,
               now: datetime | None = None) -> dict[str, Any]:
        """Per topic, column arrays for the charts: volume, share with its Wilson band, thin flags."""
        span = Span.ending_at(now or datetime.now(UTC), since, bucket)
        params = {"unit": bucket, "first": span.first, "last": span.last, "end": span.end,
                  "step": f"{BUCKETS[bucket]} seconds", "topic": checked_topic(topic or None)}
        with self.read_only() as conn:
            rows = conn.execute(text(_SERIES_SQL), params).all()
        topics: dict[str, dict[str, list[Any]]] = {}
        for name, moment, n_posts, n_scored, n_negative, mean_intensity in rows:
            columns = topics.setdefault(name, {key: [] for key in (
                "t", "n_posts", "n_scored", "n_negative", "negative_share", "low", "high", "mean_intensity",
                "thin")})
            band = wilson_interval(n_negative, n_scored)
            columns["t"].append(int(moment.timestamp()))
            columns["n_posts"].append(n_posts)
            columns["n_scored"].append(n_scored)
            columns["n_negative"].append(n_negative)
            columns["negative_share"].append(n_negative / n_scored if n_scored else None)
            columns["low"].append(band[0] if band else None)
            columns["high"].append(band[1] if band else None)
            columns["mean_intensity"].append(_finite(mean_intensity))
            columns["thin"].append(0 < n_scored < self.thin_below)
        return {"bucket": bucket, "since": since, "first": span.first.isoformat(), "last": span.last.isoformat(),
                "thin_below": self.thin_below,
                "topics": [{"topic": name, **columns, **_totals(columns)} for name, columns in topics.items()]}

    def alerts(self, *, since: str = "24h", topic: str | None = None, now: datetime | None = None,
               limit: int = MAX_ALERTS) -> dict[str, Any]:
        """Alert events newest first, every column as stored (evidence included), with their incident."""
        first = (now or datetime.now(UTC)) - timedelta(seconds=span_seconds(since))
        with self.read_only() as conn:
            rows = conn.execute(text(_ALERTS_SQL), {"first": first, "topic": checked_topic(topic or None),
                                                    "limit": max(1, min(limit, MAX_ALERTS))}).all()
        return {"alerts": [_alert_json(alert, incident) for alert, incident in rows]}

    def alert(self, alert_id: int, *, limit: int = MAX_POSTS) -> dict[str, Any] | None:
        """One alert event with its incident and the posts behind it (its window, or its incident's span)."""
        with self.read_only() as conn:
            row = conn.execute(text(_ALERT_SQL), {"id": alert_id}).first()
            if row is None:
                return None
            alert = _alert_json(row.alert, row.incident)
            start, end = _evidence_span(row.alert, row.incident)
            posts, total = _posts(conn, topic=row.alert["topic"], start=start, end=end,
                                  model_version=row.alert.get("model_version"), limit=limit)
        return {"alert": alert, "posts_start": start.isoformat(), "posts_end": end.isoformat(),
                "posts": posts, "posts_total": total}

    def posts(self, *, topic: str, start: datetime, end: datetime, limit: int = MAX_POSTS) -> dict[str, Any]:
        """The posts of one topic in [start, end): what a click on a bucket of a chart lists."""
        if end <= start:
            raise QueryError("end must be after start")
        topic = checked_topic(topic) or ""
        with self.read_only() as conn:
            posts, total = _posts(conn, topic=topic, start=start, end=end, model_version=None, limit=limit)
        return {"topic": topic, "start": start.isoformat(), "end": end.isoformat(), "posts": posts,
                "posts_total": total}


def _posts(conn: Connection, *, topic: str, start: datetime, end: datetime, model_version: str | None,
           limit: int) -> tuple[list[dict[str, Any]], int]:
    rows = conn.execute(text(_POSTS_SQL), {"topic": topic, "start": start, "end": end,
                                           "model_version": model_version,
                                           "limit": max(1, min(limit, MAX_POSTS))}).mappings().all()
    total = int(rows[0]["total"]) if rows else 0
    posts = []
    for r in rows:
        post = {k: v for k, v in r.items() if k != "total"}
        post["created_at"] = r["created_at"].isoformat()
        post["p_negative"], post["intensity"] = _finite(r["p_negative"]), _finite(r["intensity"])
        post["modalities"] = list(r["modalities"] or [])
        posts.append(post)
    return posts, total


def _evidence_span(alert: dict[str, Any], incident: dict[str, Any] | None) -> tuple[datetime, datetime]:
    """The alert's window, widened to its incident's windows when it belongs to one."""
    start = datetime.fromisoformat(alert["window_start"])
    end = start + timedelta(seconds=int(alert["window_seconds"]))
    if incident:
        start = min(start, datetime.fromisoformat(incident["started_at"]))
        last = datetime.fromisoformat(incident["last_window_start"])
        end = max(end, last + timedelta(seconds=int(incident["window_seconds"])))
    return start, end


def _alert_json(alert: dict[str, Any], incident: dict[str, Any] | None) -> dict[str, Any]:
    """The stored row as it is (columns other helpers add show up too), plus where its window ends."""
    out = dict(alert)
    start = datetime.fromisoformat(alert["window_start"])
    out["window_end"] = (start + timedelta(seconds=int(alert["window_seconds"]))).isoformat()
    out["t"] = int(start.timestamp())
    out["incident"] = incident
    return out


def _totals(columns: dict[str, list[Any]]) -> dict[str, Any]:
    """The whole span's numbers for a topic's card: volume, share and its band over every bucket."""
    posts, scored, negative = sum(columns["n_posts"]), sum(columns["n_scored"]), sum(columns["n_negative"])
    band = wilson_interval(negative, scored)
    return {"total_posts": posts, "total_scored": scored, "total_negative": negative,
            "total_share": negative / scored if scored else None,
            "total_low": band[0] if band else None, "total_high": band[1] if band else None}


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: a non-finite number (never expected from the model) is shown as missing."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
