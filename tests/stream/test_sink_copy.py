"""The sink's COPY path (staging tables + INSERT ... SELECT ... ON CONFLICT) stores exactly what the VALUES
path stores, for hostile input too, on both back ends (embedded and configured PostgreSQL)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from connectors.post import Post
from stream.sink import COPY_MIN_ROWS, MediaOutcome, PostgresSink, SinkRecord, _copy_body, _copy_field


@dataclass
class Verdict:
    label: str
    probabilities: dict[str, float]
    intensity: float
    modality_weights: dict[str, float] = field(default_factory=dict)
    model_version: str = "m-1"


# Text the decoder lets through: anything but lone surrogates; NUL only where the sink cleans it (text,
# author, raw, unscored reason), the other columns get tabs, newlines, backslashes, quotes and braces.
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
NO_NUL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
# \x01 and \x02 are also the COPY encoder's placeholders for a row's end and NULL (stream/sink.py).
TRICKY = st.sampled_from(["", "\\", "\\N", "\t", "\n", "\r\n", '"', "{a,b}", "NULL", "\\.", "é😂", "a\\\"b",
                          "\x01", "a\x02", "\x02\x01\t"])
WORD = st.one_of(TRICKY, NO_NUL)
JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-10**20, 10**20) | ANY_TEXT
                          | st.floats(allow_nan=False, allow_infinity=False),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
                          max_leaves=8)
PROBABILITY = st.floats(0, 1, allow_nan=False) | st.sampled_from([0.1 + 0.2, 1e-300, 5e-324])
# double precision columns take NaN and infinities (jsonb does not: modality weights stay PROBABILITY)
ANY_FLOAT = PROBABILITY | st.floats()
START = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def records(draw: st.DrawFn) -> list[SinkRecord]:
    n = draw(st.integers(1, 12))
    out = []
    for i in range(n):
        post = Post(platform="twitter", post_id=f"{i}{draw(WORD)}"[:80], text=draw(ANY_TEXT),
                    created_at=START + timedelta(microseconds=draw(st.integers(0, 10**12))),
                    author=draw(st.none() | ANY_TEXT), lang=draw(st.none() | WORD), url=draw(st.none() | WORD),
                    topic=draw(WORD), keywords=tuple(draw(st.lists(WORD, max_size=4))),
                    raw=draw(st.none() | st.dictionaries(ANY_TEXT, JSON_VALUE, max_size=3)))
        media = [MediaOutcome(url=f"http://x/{j}{draw(WORD)}", kind="image", status=draw(WORD),
                              content_type=draw(st.none() | WORD), bytes=draw(st.none() | st.integers(0, 2**31 - 1)),
                              sha256=draw(st.none() | WORD), width=draw(st.none() | st.integers(0, 10**5)),
                              height=draw(st.none() | st.integers(0, 10**5)), error=draw(st.none() | WORD),
                              fetched_at=draw(st.none() | st.just(START)))
                 for j in range(draw(st.integers(0, 2)))]
        scored = draw(st.booleans())
        sentiment = Verdict(label=draw(WORD), intensity=draw(ANY_FLOAT),
                            probabilities={"negative": draw(ANY_FLOAT), "neutral": draw(PROBABILITY),
                                           "positive": draw(ANY_FLOAT)},
                            modality_weights={"text": draw(PROBABILITY)}) if scored else None
        out.append(SinkRecord(post=post, media=media, sentiment=sentiment,
                              modalities=tuple(draw(st.lists(WORD, min_size=1, max_size=2))),
                              unscored_reason=None if scored else draw(st.none() | ANY_TEXT)))
    return out


# Any value a staged row holds, hostile ones included: the placeholders \x00-\x02, lone surrogates (which
# UTF-8 refuses), huge ints, NaN and infinities, nested text arrays with NULLs.
SURROGATE = st.sampled_from(["\ud800", "a\udfffb"])
FIELD = st.one_of(st.none(), st.text(), TRICKY, SURROGATE, st.integers(), st.floats(), st.booleans(),
                  st.datetimes(timezones=st.just(UTC)), st.lists(st.none() | st.text() | TRICKY, max_size=3))


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(FIELD, min_size=1, max_size=6).map(tuple), max_size=5))
def test_copy_body_is_the_field_by_field_copy_text_of_any_rows(rows: list[tuple]) -> None:
    """The batch encoder (escaping once over the whole body) gives exactly the bytes of the per-field
    reference encoder, or fails as it does (a lone surrogate is not UTF-8)."""
    try:
        expected = "".join("\t".join(map(_copy_field, row)) + "\n" for row in rows).encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            _copy_body(rows)
        return
    assert _copy_body(rows) == expected


def test_copy_body_escapes_text_and_writes_null_arrays_and_floats_as_postgresql_reads_them() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    row = ("a\\b\tc\nd\re", None, ["x\"y", None, "z\\"], float("nan"), float("-inf"), 0.1 + 0.2, 10**30, True, when, "")
    assert _copy_body([row, ("\x01", "\x02")]) == (
        b'a\\\\b\\tc\\nd\\re\t\\N\t{"x\\\\"y",NULL,"z\\\\\\\\"}\tNaN\t-Infinity\t0.30000000000000004\t'
        b"1000000000000000000000000000000\tt\t2026-01-02T03:04:05.000006+00:00\t\n\x01\t\x02\n")


def renamed(batch: list[SinkRecord], prefix: str) -> list[SinkRecord]:
    """The same records under other post ids, so both paths can write into one database."""
    from dataclasses import replace

    return [replace(r, post=replace(r.post, post_id=prefix + r.post.post_id)) for r in batch]


ROWS_SQL = {
    "posts": "SELECT post_id, author, created_at, text, lang, url, topic, keywords, raw, ingested_at, "
             "unscored_reason FROM posts WHERE post_id LIKE :p",
    "post_media": "SELECT p.post_id, m.url, m.kind, m.status, m.content_type, m.bytes, m.sha256, m.width, "
                  "m.height, m.error, m.fetched_at FROM post_media m JOIN posts p ON p.id = m.post_pk "
                  "WHERE p.post_id LIKE :p",
    "sentiments": "SELECT p.post_id, s.model_version, s.label, s.p_negative, s.p_neutral, s.p_positive, "
                  "s.intensity, s.modality_weights, s.modalities FROM sentiments s JOIN posts p "
                  "ON p.id = s.post_pk WHERE p.post_id LIKE :p",
}


def stored(engine, prefix: str) -> dict[str, list[tuple]]:
    """Every row written under ``prefix``, with the prefix cut off, in a canonical order."""
    out = {}
    with engine.connect() as conn:
        for table, sql in ROWS_SQL.items():
            rows = [(row[0][len(prefix):], *row[1:]) for row in conn.execute(text(sql), {"p": prefix + "%"})]
            out[table] = sorted(rows, key=repr)
    return out


_examples = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=records(), replay=records())
def test_copy_and_values_paths_store_identical_rows(migrated_db: str, batch: list[SinkRecord],
                                                    replay: list[SinkRecord]) -> None:
    engine = create_engine(migrated_db)
    try:
        run = next(_examples)
        results = {}
        for bulk in ("values", "copy"):
            prefix = f"{run}{bulk[0]}/"
            sink = PostgresSink(engine, bulk=bulk)
            first = sink.write(renamed(batch, prefix))
            # a second batch over the same keys (and some new ones): every upsert path taken
            second = sink.write(renamed(batch[: len(batch) // 2] + replay, prefix))
            results[bulk] = (stored(engine, prefix), first.posts, first.sentiments, first.media,
                             second.posts, second.sentiments, second.media, sorted(first.post_pks))
        values, copy = results["values"], results["copy"]
        assert copy[1:7] == values[1:7]
        assert [k.split("/", 1)[1] for k in copy[7]] == [k.split("/", 1)[1] for k in values[7]]
        assert _canonical(copy[0]) == _canonical(values[0])
    finally:
        engine.dispose()


def _canonical(rows: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """NaN never equals itself: compare it as a marker."""
    def fix(v: object) -> object:
        return "NaN" if isinstance(v, float) and math.isnan(v) else v
    return {t: [tuple(fix(v) for v in row) for row in rows] for t, rows in rows.items()}


def test_auto_takes_the_copy_path_from_the_threshold_and_a_failed_batch_leaves_no_staged_rows(
        migrated_db: str) -> None:
    engine = create_engine(migrated_db, pool_size=1, max_overflow=0)  # one connection: staging tables shared
    try:
        sink = PostgresSink(engine)  # bulk="auto"
        good = [SinkRecord(post=Post(platform="reddit", post_id=f"g{i}", text="fine", created_at=START),
                           sentiment=Verdict("neutral", {"neutral": 1.0}, 0.0)) for i in range(COPY_MIN_ROWS)]
        bad = [SinkRecord(post=Post(platform="reddit", post_id=f"b{i}", text="x", created_at=START,
                                    topic="nul\x00here" if i == 3 else "t")) for i in range(COPY_MIN_ROWS)]
        with pytest.raises(Exception):  # noqa: B017 - the database refuses NUL in an uncleaned column
            sink.write(bad)
        result = sink.write(good)
        assert result.posts == COPY_MIN_ROWS and result.sentiments == COPY_MIN_ROWS
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM posts")).scalar() == COPY_MIN_ROWS
            assert conn.execute(text("SELECT count(*) FROM posts WHERE post_id LIKE 'b%'")).scalar() == 0
            # the staging tables exist on this (pooled) connection, so auto did take the COPY path
            staged = conn.execute(text("SELECT count(*) FROM pg_class WHERE relname LIKE 'sentistream_stage_%' "
                                       "AND relpersistence = 't'")).scalar()
            assert staged == 4
            for table in ("keys", "placed_posts", "media", "sentiments"):
                assert conn.execute(text(f"SELECT count(*) FROM sentistream_stage_{table}")).scalar() == 0
            # the sink's generic plans for foreign-key checks ended with its transaction
            assert conn.execute(text("SHOW plan_cache_mode")).scalar() == "auto"
        # the staging tables, created once per connection, take the next batches too
        assert sink.write(good).posts == COPY_MIN_ROWS
    finally:
        engine.dispose()


def test_a_row_that_cannot_be_encoded_while_the_posts_are_placed_rolls_the_whole_batch_back(
        migrated_db: str) -> None:
    """The COPY path encodes media and sentiments while another thread places the posts on the same
    connection: an error there must wait for the placing, roll everything back and leave the connection
    fit for the next batch."""
    engine = create_engine(migrated_db, pool_size=1, max_overflow=0)
    try:
        sink = PostgresSink(engine, bulk="copy")

        def batch(prefix: str, broken: int | None) -> list[SinkRecord]:
            return [SinkRecord(post=Post(platform="reddit", post_id=f"{prefix}{i}", text="fine", created_at=START),
                               media=[MediaOutcome(url=f"http://x/{i}", kind="image", status="ok",
                                                   bytes=object() if i == broken else 10)],  # type: ignore[arg-type]
                               sentiment=Verdict("neutral", {"neutral": 1.0}, 0.0)) for i in range(300)]

        with pytest.raises(TypeError, match="no COPY form for object"):
            sink.write(batch("bad", broken=299))
        result = sink.write(batch("good", broken=None))
        assert (result.posts, result.media, result.sentiments) == (300, 300, 300)
        with engine.connect() as conn:
            counts = conn.execute(text(
                "SELECT (SELECT count(*) FROM posts WHERE post_id LIKE 'bad%'), "
                "(SELECT count(*) FROM post_keys WHERE post_id LIKE 'bad%'), "
                "(SELECT count(*) FROM posts), (SELECT count(*) FROM post_media), "
                "(SELECT count(*) FROM sentiments)")).one()
        assert tuple(counts) == (0, 0, 300, 300, 300)
    finally:
        engine.dispose()
