"""PostgresSink: batched, idempotent writes of what one Kafka batch produced.

The checkpoint order, stated once: **flush the sink, then ack/commit the Kafka offsets.**  ``write``
puts a whole batch (posts, their media outcomes, their sentiments, dead letters, and the window
aggregates the batch touched) into PostgreSQL in ONE transaction; only when it returns does the caller
ack the batch's messages.  A failure rolls the transaction back and raises, so nothing is acked and
the batch is redelivered.  Every statement is an upsert on a natural key, which makes redelivery
harmless: at-least-once in, exactly-once in effect.

Posts are placed through ``post_keys`` (migration 0007: ``posts`` is partitioned by month of
``created_at`` and cannot hold the (platform, post_id) key itself): the key is upserted first and returns
the post's id and its first-seen created_at, and the post row is upserted at (id, created_at).  A replay
with another created_at therefore rewrites the same row in the same month; a key whose post is gone (a
deleted or truncated post) is placed anew.  Media and sentiments carry the post's created_at
(``post_created_at``) so they sit in the same month's partitions.  Two transactions placing the same new
post with different created_at at the same moment cannot split it: the later one fails on
``fk_posts_id_post_keys`` and its batch is written again, onto the stored row.

Small batches go in with multi-row ``INSERT ... ON CONFLICT`` through psycopg2's ``execute_values``;
batches from ``COPY_MIN_ROWS`` posts up are streamed with COPY into session-local staging tables (created
once per connection) and moved with ``INSERT ... SELECT ... ON CONFLICT``, the same upserts: one statement
places the keys, and while the server runs it the client encodes the posts, media and sentiments; one more
round trip carries their three upserts (same rows, far fewer bytes parsed and round trips; bench/sink.py
measures both against per-row ``executemany``).  Keys repeated inside a batch are collapsed first,
because PostgreSQL refuses to update one row twice in one statement.  Both paths run their foreign-key checks with generic plans
(``_GENERIC_PLANS``, for the transaction only).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from psycopg2.extras import execute_values
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from connectors.post import Post
from stream import db_deadline

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_U = TypeVar("_U")


class SentimentLike(Protocol):
    """What the sink needs from a model result (``model.scorer.SentimentResult`` satisfies it)."""

    label: str
    probabilities: dict[str, float]
    intensity: float
    modality_weights: dict[str, float]
    model_version: str


@dataclass(slots=True)
class MediaOutcome:
    """The recorded outcome of fetching one media URL of a post."""

    url: str
    kind: str
    status: str
    content_type: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    fetched_at: datetime | None = None


@dataclass(slots=True)
class SinkRecord:
    """One decoded post with whatever the pipeline produced for it."""

    post: Post
    media: list[MediaOutcome] = field(default_factory=list)
    sentiment: SentimentLike | None = None
    modalities: tuple[str, ...] = ("text",)
    source: tuple[str, int, int] | None = None  # Kafka (topic, partition, offset) it came from
    unscored_reason: str | None = None  # why it has no sentiment (ignored when ``sentiment`` is set)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be decoded: where it came from, why, and its original bytes."""

    source_topic: str
    source_partition: int
    source_offset: int
    key: str | None
    reason: str
    payload: bytes | None

    def to_json(self) -> bytes:
        """The dead-letter topic's record: any key, reason and payload bytes become valid JSON.

        The payload is shown as text (invalid UTF-8 replaced) and cut at ``DEAD_LETTER_TOPIC_PAYLOAD``
        bytes so the record fits the broker's message size; the full bytes are in PostgreSQL.
        """
        payload = self.payload
        shown = None
        if payload is not None:
            shown = payload[:DEAD_LETTER_TOPIC_PAYLOAD].decode("utf-8", errors="replace")
        return json.dumps({
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "key": safe_text(self.key, MAX_DEAD_LETTER_KEY) if self.key is not None else None,
            "reason": safe_text(self.reason, MAX_DEAD_LETTER_REASON),
            "payload": shown,
            "payload_bytes": len(payload) if payload is not None else None,
            "payload_truncated": payload is not None and len(payload) > DEAD_LETTER_TOPIC_PAYLOAD,
        }, ensure_ascii=False).encode("utf-8")


# Bounds on what one dead letter stores: any bytes are accepted, oversized ones are cut with a note.
MAX_DEAD_LETTER_PAYLOAD = 1024 * 1024  # bytes kept in dead_letters.payload
DEAD_LETTER_TOPIC_PAYLOAD = 64 * 1024  # bytes shown in the dead-letter topic's JSON record
MAX_DEAD_LETTER_KEY = 1024  # characters
MAX_DEAD_LETTER_REASON = 2000  # characters


def safe_text(value: str, limit: int) -> str:
    """``value`` as text PostgreSQL and UTF-8 accept: no NUL, no lone surrogates, at most ``limit`` chars."""
    value = value.replace("\x00", "\ufffd")
    value = value.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates -> '?'
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass(slots=True)
class WriteResult:
    posts: int
    sentiments: int
    media: int
    dead_letters: int
    post_pks: dict[str, int]
    seconds: float


# Called inside the sink's transaction with the psycopg2 cursor and the batch's records, e.g. to
# recompute the window aggregates the batch touched, so aggregates commit atomically with their rows.
TransactionHook = Callable[[Any, Sequence[SinkRecord], dict[str, int]], None]

_POSTS_COLUMNS = ("platform, post_id, author, created_at, text, lang, url, topic, keywords, raw, ingested_at, "
                  "unscored_reason")
# The key first: the stored id and created_at win; a key whose post row is gone takes the new created_at.
_KEYS_UPSERT = """
ON CONFLICT (platform, post_id) DO UPDATE SET created_at = CASE
    WHEN EXISTS (SELECT 1 FROM posts p WHERE p.id = post_keys.id AND p.created_at = post_keys.created_at)
    THEN post_keys.created_at ELSE EXCLUDED.created_at END
RETURNING id, platform, post_id, created_at
"""
_KEYS_SQL = f"INSERT INTO post_keys (platform, post_id, created_at) VALUES %s{_KEYS_UPSERT}"
_POSTS_UPSERT = """
ON CONFLICT (id, created_at) DO UPDATE SET
    author = EXCLUDED.author, text = EXCLUDED.text,
    lang = EXCLUDED.lang, url = EXCLUDED.url, topic = EXCLUDED.topic, keywords = EXCLUDED.keywords,
    raw = COALESCE(EXCLUDED.raw, posts.raw), unscored_reason = EXCLUDED.unscored_reason, updated_at = now()
"""
_POSTS_SQL = f"INSERT INTO posts (id, {_POSTS_COLUMNS}) VALUES %s{_POSTS_UPSERT}"
_POSTS_TEMPLATE = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::text[], %s::jsonb, %s, %s)"

_MEDIA_COLUMNS = ("post_pk, post_created_at, url, kind, status, content_type, bytes, sha256, width, height, error, "
                  "fetched_at")
_MEDIA_UPSERT = """
ON CONFLICT (post_pk, url, post_created_at) DO UPDATE SET
    kind = EXCLUDED.kind, status = EXCLUDED.status, content_type = EXCLUDED.content_type,
    bytes = EXCLUDED.bytes, sha256 = EXCLUDED.sha256, width = EXCLUDED.width, height = EXCLUDED.height,
    error = EXCLUDED.error, fetched_at = EXCLUDED.fetched_at
"""
_MEDIA_SQL = f"INSERT INTO post_media ({_MEDIA_COLUMNS}) VALUES %s{_MEDIA_UPSERT}"

_SENTIMENTS_COLUMNS = ("post_pk, post_created_at, model_version, label, p_negative, p_neutral, p_positive, "
                       "intensity, modality_weights, modalities, scored_at")
_SENTIMENTS_UPSERT = """
ON CONFLICT (post_pk, model_version, post_created_at) DO UPDATE SET
    label = EXCLUDED.label, p_negative = EXCLUDED.p_negative, p_neutral = EXCLUDED.p_neutral,
    p_positive = EXCLUDED.p_positive, intensity = EXCLUDED.intensity,
    modality_weights = EXCLUDED.modality_weights, modalities = EXCLUDED.modalities,
    scored_at = EXCLUDED.scored_at
"""
_SENTIMENTS_SQL = f"INSERT INTO sentiments ({_SENTIMENTS_COLUMNS}) VALUES %s{_SENTIMENTS_UPSERT}"
_SENTIMENTS_TEMPLATE = "(%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::text[], %s)"

# The COPY path (``PostgresSink(bulk=...)``): rows are streamed with COPY into session-local staging tables
# (no per-row parsing of SQL, no per-row round trip) and moved with the upserts above: the keys first (their
# RETURNING gives each post its place), then the posts, media and sentiments, staged at those places, in
# one more round trip.  The staging tables are created once per connection; ON COMMIT DELETE ROWS empties
# them at every commit, and a rollback takes their rows too, so nothing leaks from one batch into the next.
_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS sentistream_stage_keys (
    platform text, post_id text, created_at timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS sentistream_stage_placed_posts (
    id bigint, created_at timestamptz, platform text, post_id text, author text, text text, lang text, url text,
    topic text, keywords text[], raw jsonb, ingested_at timestamptz, unscored_reason text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS sentistream_stage_media (
    post_pk bigint, post_created_at timestamptz, url text, kind text, status text, content_type text, bytes integer, sha256 text,
    width integer, height integer, error text, fetched_at timestamptz
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS sentistream_stage_sentiments (
    post_pk bigint, post_created_at timestamptz, model_version text, label text, p_negative double precision, p_neutral double precision,
    p_positive double precision, intensity double precision, modality_weights jsonb, modalities text[],
    scored_at timestamptz
) ON COMMIT DELETE ROWS;
"""
_STAGED = "sentistream_staging_tables_2"  # key in a pooled connection's ``info``: its staging tables exist
_KEYS_COPY = "COPY sentistream_stage_keys (platform, post_id, created_at) FROM STDIN"
_KEYS_FROM_STAGE = ("INSERT INTO post_keys (platform, post_id, created_at) SELECT platform, post_id, created_at "
                    f"FROM sentistream_stage_keys{_KEYS_UPSERT}")
# A post row's columns after its place (id, created_at), in the order ``_post_row`` gives them.
_POST_TAIL_COLUMNS = [c for c in _POSTS_COLUMNS.split(", ") if c != "created_at"]
_PLACED_POSTS_COPY = (f"COPY sentistream_stage_placed_posts (id, created_at, {', '.join(_POST_TAIL_COLUMNS)}) "
                      "FROM STDIN")
_POSTS_FROM_STAGE = (f"INSERT INTO posts (id, {_POSTS_COLUMNS}) SELECT id, {_POSTS_COLUMNS} "
                     f"FROM sentistream_stage_placed_posts{_POSTS_UPSERT}")
_MEDIA_COPY = f"COPY sentistream_stage_media ({_MEDIA_COLUMNS}) FROM STDIN"
_MEDIA_FROM_STAGE = (f"INSERT INTO post_media ({_MEDIA_COLUMNS}) SELECT {_MEDIA_COLUMNS} FROM sentistream_stage_media"
                     f"{_MEDIA_UPSERT}")
_SENTIMENTS_COPY = f"COPY sentistream_stage_sentiments ({_SENTIMENTS_COLUMNS}) FROM STDIN"
_SENTIMENTS_FROM_STAGE = (f"INSERT INTO sentiments ({_SENTIMENTS_COLUMNS}) SELECT {_SENTIMENTS_COLUMNS} "
                          f"FROM sentistream_stage_sentiments{_SENTIMENTS_UPSERT}")

# Every post, media and sentiment row costs a foreign-key check against ``posts``, and ``posts`` is
# partitioned: PostgreSQL's plan cache judges the check's generic plan (all partitions, pruned when it
# runs) dearer than a custom one (one partition) and so plans the check again for every row, which was
# more than half of a new sentiment row's cost.  The sink's transactions use generic plans; the setting
# touches only cached plans (these checks; the sink's own statements are not prepared) and ends with the
# transaction.  #14 goal 6, one staged INSERT ... SELECT of 1,000 new sentiment rows, server CPU from
# /proc, loaded machine: 41 ms with the default plan cache, 17 ms with generic plans.
_GENERIC_PLANS = "SET LOCAL plan_cache_mode = force_generic_plan"

COPY_MIN_ROWS = 48
"""Batches of at least this many posts take the COPY path (``bulk="auto"``).  bench/sink.py, one quiet run
after the COPY path began overlapping encoding with the server's work (#14 goal 6): VALUES wins at 4 and 16
posts a batch (the staging round trips), the two tie at 32, COPY wins from 64 (1.2x at the worker's
default batch of 64, 2.2x at 1,000)."""

_DEAD_SQL = """
INSERT INTO dead_letters (source_topic, source_partition, source_offset, key, reason, payload, payload_sha256)
VALUES %s
ON CONFLICT (source_topic, source_partition, source_offset, payload_sha256) DO NOTHING
RETURNING id, source_topic, source_partition, source_offset, key, reason
"""


class PostgresSink:
    """Buffers records with ``add`` and writes them in one transaction with ``flush``/``write``."""

    def __init__(self, engine: Engine, hooks: Sequence[TransactionHook] = (), page_size: int = 1000,
                 bulk: str = "auto") -> None:
        """``bulk``: "copy" (COPY into staging tables, then INSERT ... SELECT ... ON CONFLICT), "values"
        (multi-row INSERT ... ON CONFLICT), or "auto" (copy from ``COPY_MIN_ROWS`` posts up).  Both give
        the same rows; they differ only in speed."""
        if bulk not in {"auto", "copy", "values"}:
            raise ValueError(f"bulk must be auto, copy or values, not {bulk!r}")
        self.engine = engine
        self.hooks = list(hooks)
        self.page_size = page_size
        self.bulk = bulk
        self._records: list[SinkRecord] = []
        self._dead: list[DeadLetter] = []

    def add(self, record: SinkRecord) -> None:
        self._records.append(record)

    def add_dead_letter(self, dead: DeadLetter) -> None:
        self._dead.append(dead)

    def flush(self) -> WriteResult:
        """Write what was added; the buffers are cleared whatever happens (the caller redelivers)."""
        records, dead = self._records, self._dead
        self._records, self._dead = [], []
        return self.write(records, dead)

    def write(self, records: Sequence[SinkRecord], dead_letters: Sequence[DeadLetter] = ()) -> WriteResult:
        """Upsert one batch atomically; raises on failure after rolling back."""
        started = time.perf_counter()
        records = _last_per_key(records)
        copy = self.bulk == "copy" or (self.bulk == "auto" and len(records) >= COPY_MIN_ROWS)
        raw = self.engine.raw_connection()
        # The raw connection's round trips bypass the dialect: registered here, a frozen server cuts them
        # at the engine's deadline like every other call (stream/db_deadline.py).
        guard = db_deadline.raw_call_guard(self.engine, raw.dbapi_connection)
        try:
            with db_deadline.GuardedCursor(raw.cursor(), guard) as cur:
                if copy and records:
                    placed, n_media, n_sent = self._write_staged(cur, raw.info, records)
                else:
                    placed = self._write_posts(cur, records)
                    n_media = self._write_media(cur, records, placed)
                    n_sent = self._write_sentiments(cur, records, placed)
                post_pks = {key: pk for key, (pk, _) in placed.items()}
                new_dead = self._write_dead_letters(cur, dead_letters)
                for hook in self.hooks:
                    hook(cur, records, post_pks)
            with guard("commit"):
                raw.commit()
            if copy and records:
                raw.info[_STAGED] = True  # created in a committed transaction: they stay for the session
        except BaseException as exc:
            if isinstance(exc, Exception) and is_transient(exc):
                # cut by the deadline, or the server went away: the pool must not hand this one out again
                raw.invalidate(exc)
                raise
            try:
                with guard("rollback"):
                    raw.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone; the original error matters
                log.debug("rollback failed", exc_info=True)
            raise
        finally:
            raw.close()
        _log_dead_letters(new_dead)
        return WriteResult(posts=len(records), sentiments=n_sent, media=n_media, dead_letters=len(dead_letters),
                           post_pks=post_pks, seconds=time.perf_counter() - started)

    def _write_staged(self, cur: Any, connection_info: dict[str, Any],
                      records: Sequence[SinkRecord]) -> tuple[dict[str, tuple[int, datetime]], int, int]:
        """The COPY path: stage and upsert the keys, then stage posts, media and sentiments at the places
        the keys returned and upsert all three; returns key -> (id, created_at), and the numbers of media
        and sentiment rows.

        Encoding rows is the client's main cost, the upserts the server's.  While the server places the
        keys, this thread encodes the posts without the two placing columns, which are put in front of
        each encoded row once the keys are back; while the server upserts the posts, it encodes the media
        and sentiments the same way.  The two sides overlap instead of taking turns."""
        keys = _copy_body([(r.post.platform, r.post.post_id, r.post.created_at) for r in records])
        if not connection_info.get(_STAGED):
            cur.execute(_STAGING_DDL)
        cur.copy_expert(_KEYS_COPY, io.BytesIO(keys))
        placed, post_tails = _overlapped(cur, _place_staged_keys, lambda: _copy_lines(
            [_post_tail(r.post, None if r.sentiment is not None else r.unscored_reason) for r in records]))
        places = {key: b"%d\t%s\t" % (pk, at.isoformat().encode()) for key, (pk, at) in placed.items()}
        cur.copy_expert(_PLACED_POSTS_COPY, io.BytesIO(b"".join(
            [places[r.post.key] + tail for r, tail in zip(records, post_tails, strict=True)])))
        # the posts go in while the media and sentiments are encoded
        _, (media_keys, media_tails, sentiment_keys, sentiment_tails) = _overlapped(
            cur, lambda c: c.execute(_POSTS_FROM_STAGE), lambda: _unplaced_lines(records))
        upserts = []
        if media_tails:
            body = b"".join([places[key] + tail for key, tail in zip(media_keys, media_tails, strict=True)])
            cur.copy_expert(_MEDIA_COPY, io.BytesIO(body))
            upserts.append(_MEDIA_FROM_STAGE)
        if sentiment_tails:
            body = b"".join([places[key] + tail for key, tail in zip(sentiment_keys, sentiment_tails, strict=True)])
            cur.copy_expert(_SENTIMENTS_COPY, io.BytesIO(body))
            upserts.append(_SENTIMENTS_FROM_STAGE)
        if upserts:
            cur.execute(";".join(upserts))  # one round trip, one statement each
        return placed, len(media_tails), len(sentiment_tails)

    def _write_posts(self, cur: Any, records: Sequence[SinkRecord]) -> dict[str, tuple[int, datetime]]:
        """Upsert the keys, then the posts where the keys place them; returns key -> (id, created_at)."""
        if not records:
            return {}
        rows = [_post_row(r.post, None if r.sentiment is not None else r.unscored_reason) for r in records]
        cur.execute(_GENERIC_PLANS)
        keys = execute_values(cur, _KEYS_SQL, [row[:2] + (row[3],) for row in rows], page_size=self.page_size,
                              fetch=True)
        placed = {f"{platform}:{post_id}": (pk, at) for pk, platform, post_id, at in keys}
        posts = []
        for row in rows:
            pk, at = placed[f"{row[0]}:{row[1]}"]
            posts.append((pk,) + row[:3] + (at,) + row[4:])
        execute_values(cur, _POSTS_SQL, posts, template=_POSTS_TEMPLATE, page_size=self.page_size)
        return placed

    def _write_media(self, cur: Any, records: Sequence[SinkRecord],
                     placed: dict[str, tuple[int, datetime]]) -> int:
        rows = {}
        for r in records:
            pk, at = placed[r.post.key]
            for m in r.media:
                rows[(pk, m.url)] = (pk, at, m.url, m.kind, m.status, m.content_type, m.bytes, m.sha256,
                                     m.width, m.height, m.error, m.fetched_at)
        if rows:
            execute_values(cur, _MEDIA_SQL, list(rows.values()), page_size=self.page_size)
        return len(rows)

    def _write_sentiments(self, cur: Any, records: Sequence[SinkRecord],
                          placed: dict[str, tuple[int, datetime]]) -> int:
        now = datetime.now(UTC)
        rows = [_sentiment_row(r.sentiment, r.modalities, placed[r.post.key], now)
                for r in records if r.sentiment is not None]
        if rows:
            execute_values(cur, _SENTIMENTS_SQL, rows, template=_SENTIMENTS_TEMPLATE, page_size=self.page_size)
        return len(rows)

    def _write_dead_letters(self, cur: Any, dead: Sequence[DeadLetter]) -> list[tuple[Any, ...]]:
        """Insert the dead letters; returns the rows that are new (a redelivered one is already there)."""
        if not dead:
            return []
        rows = [_dead_letter_row(d) for d in dead]
        return list(execute_values(cur, _DEAD_SQL, rows, page_size=self.page_size, fetch=True))


# One thread per concurrent COPY-path write, to run a statement while the writer's own thread encodes the
# rest of the batch (``PostgresSink._write_staged``).
_PLACER = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="sink-place")


def _place_staged_keys(cur: Any) -> dict[str, tuple[int, datetime]]:
    """Upsert the staged keys; key -> the post's place (id, created_at)."""
    cur.execute(f"{_GENERIC_PLANS};{_KEYS_FROM_STAGE}")  # one round trip; the rows are the last result
    return {f"{platform}:{post_id}": (pk, at) for pk, platform, post_id, at in cur.fetchall()}


def _post_tail(post: Post, unscored_reason: str | None) -> tuple[Any, ...]:
    """A posts row after its place: ``_post_row`` without created_at (the key's, which may be older)."""
    row = _post_row(post, unscored_reason)
    return row[:3] + row[4:]


def _overlapped(cur: Any, statement: Callable[[Any], _T], encode: Callable[[], _U]) -> tuple[_T, _U]:
    """``statement(cur)`` on a placer thread while this thread runs ``encode()`` (psycopg2 lets go of the
    GIL while the server works); both results, or the first error once the statement is done with the
    cursor (the caller then rolls back)."""
    started = threading.Event()

    def run() -> _T:
        started.set()
        return statement(cur)

    running = _PLACER.submit(run)
    # Wait until the placer runs: a thread woken while this one encodes would wait for the GIL (up to the
    # 5 ms switch interval) before it could send anything, and the two sides would take turns after all.
    started.wait()
    try:
        encoded = encode()
    except BaseException:
        futures.wait([running])
        raise
    return running.result(), encoded


def _unplaced_lines(records: Sequence[SinkRecord]) -> tuple[list[str], list[bytes], list[str], list[bytes]]:
    """The batch's media and sentiment rows in COPY text without their two placing columns, each with its
    post's key.  A media URL repeated on one post is one row (the last outcome), as the VALUES path keeps
    it."""
    media: dict[tuple[str, str], tuple[Any, ...]] = {}
    sentiment_keys, sentiments = [], []
    scored_at = datetime.now(UTC).isoformat()  # one value for the batch, as the VALUES path binds
    for r in records:
        key = r.post.key
        for m in r.media:
            media[(key, m.url)] = (m.url, m.kind, m.status, m.content_type, m.bytes, m.sha256, m.width, m.height,
                                   m.error, m.fetched_at)
        if r.sentiment is not None:
            sentiment_keys.append(key)
            sentiments.append(_sentiment_row(r.sentiment, r.modalities, (), scored_at))
    return [key for key, _ in media], _copy_lines(list(media.values())), sentiment_keys, _copy_lines(sentiments)


def _copy_lines(rows: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """Each row in COPY text format with its line end; COPY escapes newlines inside fields, so the body's
    lines are the rows."""
    if not rows:
        return []
    lines = _copy_body(rows).split(b"\n")
    lines.pop()  # after the last line end
    return [line + b"\n" for line in lines]


# Placeholders while a batch is joined: a field's end, a row's end, NULL.  Escaping then runs once over
# the whole body (a few str.replace calls, in C) rather than once per field, which was most of the COPY
# path's time in Python.  A body whose text holds one of them itself (it would pass for structure: the
# counts tell) is encoded field by field instead, by ``_copy_field``, the reference form.
_FIELD_END, _ROW_END, _NULL = "\x00", "\x01", "\x02"


def _copy_body(rows: Sequence[tuple[Any, ...]]) -> bytes:
    """``rows`` (the tuples the VALUES path binds) in COPY text format, UTF-8: the bytes a COPY streams."""
    body = "".join([_FIELD_END.join([v if v.__class__ is str else _copy_raw(v) for v in row]) + _ROW_END
                    for row in rows])
    fields = sum(map(len, rows))
    nulls = sum(row.count(None) for row in rows)
    if (body.count(_ROW_END) == len(rows) and body.count(_FIELD_END) == fields - len(rows)
            and body.count(_NULL) == nulls):
        body = (body.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
                .replace(_FIELD_END, "\t").replace(_ROW_END, "\n").replace(_NULL, "\\N"))
    else:
        body = "".join("\t".join(map(_copy_field, row)) + "\n" for row in rows)
    return body.encode("utf-8")


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_NEEDS_ESCAPE = re.compile(r"[\\\n\r\t]")


_NOT_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _copy_float(value: float) -> str:
    text = float.__repr__(value)  # every digit; a finite float's repr ends in one
    return text if text[-1].isdigit() else _NOT_FINITE[text]


# A value's text before COPY escaping, as psycopg2 would bind it: a list is an array literal, floats keep
# every digit (repr), datetimes are ISO 8601 with their offset.  Exact types first, one dict lookup.
_RAW_FORMS: dict[type, Callable[[Any], str]] = {
    str: str.__str__, float: _copy_float, int: str, bool: lambda v: "t" if v else "f",
    datetime: datetime.isoformat, list: lambda v: _array_literal(v), tuple: lambda v: _array_literal(v),
}


def _copy_raw(value: Any) -> str:
    """``value``'s text before COPY escaping; None is the ``_NULL`` placeholder."""
    if value is None:
        return _NULL
    form = _RAW_FORMS.get(type(value))
    if form is not None:
        return form(value)
    for kind in (bool, str, float, int, datetime, list, tuple):  # subclasses (bool before int)
        if isinstance(value, kind):
            return _RAW_FORMS[kind](value)
    raise TypeError(f"no COPY form for {type(value).__name__}")


def _copy_field(value: Any) -> str:
    """One value in COPY text format: None is \\N, everything else its text with backslash, newline,
    carriage return and tab escaped."""
    if value is None:
        return "\\N"
    text = _copy_raw(value)
    return text.translate(_COPY_ESCAPES) if _NEEDS_ESCAPE.search(text) else text


def _array_literal(items: Sequence[Any]) -> str:
    """A text[] literal: every element double-quoted, backslash and quote escaped, None as NULL."""
    parts = []
    for item in items:
        if item is None:
            parts.append("NULL")
        else:
            parts.append('"' + str(item).replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


def _post_row(post: Post, unscored_reason: str | None = None) -> tuple[Any, ...]:
    author = _clean(post.author) if post.author is not None else None
    return (post.platform, post.post_id, author, post.created_at, _clean(post.text), post.lang, post.url,
            post.topic, list(post.keywords), _jsonb(post.raw) if post.raw is not None else None,
            post.ingested_at, _clean(unscored_reason) if unscored_reason is not None else None)


def _sentiment_row(s: SentimentLike, modalities: Sequence[str], post: tuple[Any, Any],
                   scored_at: datetime | str) -> tuple[Any, ...]:
    """A sentiments row after the post's two placing columns (id and created_at, or platform and post_id)."""
    p = s.probabilities
    return (*post, s.model_version, s.label, float(p.get("negative", 0.0)), float(p.get("neutral", 0.0)),
            float(p.get("positive", 0.0)), float(s.intensity), json.dumps(s.modality_weights or {}),
            list(modalities), scored_at)


def _log_dead_letters(new_rows: Sequence[tuple[Any, ...]]) -> None:
    """One WARNING per dead letter, once it is committed and only when it is new, so a redelivered batch
    does not repeat it; key and reason come from the input, so they are quoted (no forged log lines)."""
    for dead_id, topic, partition, offset, key, reason in new_rows:
        log.warning("dead letter #%d from %s[%d]@%d, key %r: %r", dead_id, topic, partition, offset,
                    key, reason[:300])


def _dead_letter_row(dead: DeadLetter) -> tuple[Any, ...]:
    """Any dead letter fits its row: text columns cleaned and bounded, an oversized payload cut with a note."""
    reason = safe_text(dead.reason, MAX_DEAD_LETTER_REASON)
    payload = dead.payload
    if payload is not None and len(payload) > MAX_DEAD_LETTER_PAYLOAD:
        reason = f"{reason} (payload truncated from {len(payload)} to {MAX_DEAD_LETTER_PAYLOAD} bytes)"
        payload = payload[:MAX_DEAD_LETTER_PAYLOAD]
    key = safe_text(dead.key, MAX_DEAD_LETTER_KEY) if dead.key is not None else None
    # The payload hash is part of the key (migration 0003): a replay lands on its row, a new message at
    # offsets a restarted broker reused gets its own.
    digest = hashlib.sha256(payload or b"").hexdigest()
    return (safe_text(dead.source_topic, 256), dead.source_partition, dead.source_offset, key, reason, payload,
            digest)


_JSON_TEXT = json.JSONEncoder(ensure_ascii=False)  # json.dumps(..., ensure_ascii=False) builds one per call


def _jsonb(value: Any) -> str:
    # jsonb rejects the \u0000 escape that json.dumps writes for NUL characters: replace NUL in every
    # string and key first (a textual replace would also rewrite an escaped backslash followed by u0000).
    # The encoder writes a NUL only as that escape, so a text without "\u0000" had none: encoded as it
    # is, without the walk (a backslash before "u0000" in the data also shows it, and takes the walk).
    try:
        text = _JSON_TEXT.encode(value)
    except TypeError:  # a key json does not take (the walk makes every key a string)
        text = "\\u0000"
    return text if "\\u0000" not in text else _JSON_TEXT.encode(_without_nul(value))


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, Mapping):
        return {_clean(str(k)): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL; a post containing one is still a post.
    return text.replace("\x00", "\ufffd")


def _last_per_key(records: Sequence[SinkRecord]) -> list[SinkRecord]:
    latest: dict[str, SinkRecord] = {}
    for r in records:
        latest[r.post.key] = r
    return list(latest.values())


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying with backoff (the database is down or restarting), vs bugs and bad data."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    import psycopg2

    return isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
