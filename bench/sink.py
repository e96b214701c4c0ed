"""Rows/s of the PostgreSQL sink's batch write vs naive per-row INSERT ... ON CONFLICT, same data.

Every method writes the same posts, each with its sentiment row and, for every third post, one
media outcome (the shape of a scored batch), into a throwaway database migrated by Alembic:

* ``PostgresSink.write`` — the worker's real sink, one call (one transaction) per batch, on each of its
  two bulk paths: COPY into staging tables then ``INSERT ... SELECT ... ON CONFLICT`` ("copy", what
  batches from ``stream.sink.COPY_MIN_ROWS`` posts take) and multi-row upserts via ``execute_values`` ("values");
* per-row, one commit per batch — the sink's own statements executed one row at a time;
* per-row, one commit per row — what a sink without batching does.

Two cases: new rows (tables emptied before each repeat) and a replay (every row already there, so
every statement is an ON CONFLICT update, which is what redelivery after a crash costs).

    .venv/bin/python -m bench.sink                       # 5,000 rows, 3 repeats, local PostgreSQL
    .venv/bin/python -m bench.sink --rows 100000 --backend both
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/sink.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from bench.cli import parse_and_log, script_parser
from bench.databases import DEFAULT_SERVER, server, server_version, throwaway_database  # noqa: E402
from bench.feed import make_posts, tweet_texts  # noqa: E402
from bench.measure import Timings, fmt_rate, time_repeats  # noqa: E402
from bench.results import DEFAULT_RESULTS_FILE, ResultEntry, command_line, markdown_table  # noqa: E402
from stream import sink as sink_module  # noqa: E402
from stream.migrate import make_engine  # noqa: E402
from stream.sink import MediaOutcome, PostgresSink, SinkRecord  # noqa: E402

log = logging.getLogger("bench.sink")

TABLES = "sentiments, post_media, posts, post_keys"


@dataclass(frozen=True)
class BenchSentiment:
    """A model result as the sink sees it (``SentimentLike``); values vary so rows are not identical."""

    label: str
    probabilities: dict[str, float]
    intensity: float
    modality_weights: dict[str, float]
    model_version: str = "bench-0000"


def make_records(n: int) -> list[SinkRecord]:
    texts, _ = tweet_texts()
    now = datetime.now(UTC)
    records = []
    for i, post in enumerate(make_posts(n, texts, prefix="sink")):
        p_neg = (i % 7) / 10
        media = [MediaOutcome(url=f"http://img.example/{i}.jpg", kind="image", status="ok",
                              content_type="image/jpeg", bytes=40_000 + i, sha256=f"{i:064x}", width=512,
                              height=384, fetched_at=now)] if i % 3 == 0 else []
        sentiment = BenchSentiment(
            label=("negative", "neutral", "positive")[i % 3],
            probabilities={"negative": p_neg, "neutral": 0.3, "positive": 0.7 - p_neg},
            intensity=(i % 13) / 4 - 1.5,
            modality_weights={"text": 0.8, "visual": 0.2 if media else 0.0, "audio": 0.0},
        )
        records.append(SinkRecord(post=post, media=media, sentiment=sentiment,
                                  modalities=("text", "visual") if media else ("text",)))
    return records


# ---------------------------------------------------------------------------------------------
# the methods
# ---------------------------------------------------------------------------------------------

def batches(records: Sequence[SinkRecord], size: int) -> Iterator[Sequence[SinkRecord]]:
    for start in range(0, len(records), size):
        yield records[start:start + size]


def write_with_sink(engine: Engine, records: Sequence[SinkRecord], batch_size: int, bulk: str = "auto") -> None:
    sink = PostgresSink(engine, bulk=bulk)
    for batch in batches(records, batch_size):
        sink.write(batch)


# The sink's own statements, one row per execute: same SQL, same values, no batching.
_KEY_ROW_SQL = sink_module._KEYS_SQL.replace("VALUES %s", "VALUES (%s, %s, %s)")
_POST_ROW_SQL = sink_module._POSTS_SQL.replace("VALUES %s", "VALUES " + sink_module._POSTS_TEMPLATE)
_MEDIA_ROW_SQL = sink_module._MEDIA_SQL.replace("VALUES %s", "VALUES (" + ", ".join(["%s"] * 12) + ")")
_SENTIMENT_ROW_SQL = sink_module._SENTIMENTS_SQL.replace("VALUES %s", "VALUES " + sink_module._SENTIMENTS_TEMPLATE)


def _write_row(cur: object, record: SinkRecord) -> None:
    import json

    row = sink_module._post_row(record.post)
    cur.execute(_KEY_ROW_SQL, (row[0], row[1], row[3]))
    pk, _, _, at = cur.fetchone()
    cur.execute(_POST_ROW_SQL, (pk, *row[:3], at, *row[4:]))
    for m in record.media:
        cur.execute(_MEDIA_ROW_SQL, (pk, at, m.url, m.kind, m.status, m.content_type, m.bytes, m.sha256,
                                     m.width, m.height, m.error, m.fetched_at))
    s = record.sentiment
    p = s.probabilities
    cur.execute(_SENTIMENT_ROW_SQL, (pk, at, s.model_version, s.label, p["negative"], p["neutral"], p["positive"],
                                     s.intensity, json.dumps(s.modality_weights), list(record.modalities),
                                     datetime.now(UTC)))


def write_per_row(engine: Engine, records: Sequence[SinkRecord], commit_every: int) -> None:
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            # The sink's foreign-key checks run with generic plans (stream/sink.py, _GENERIC_PLANS): so do
            # these, for the whole session rather than per transaction (no extra statement per commit).
            cur.execute(sink_module._GENERIC_PLANS.replace("SET LOCAL", "SET"))
            for i, record in enumerate(records, start=1):
                _write_row(cur, record)
                if i % commit_every == 0:
                    raw.commit()
            raw.commit()
            cur.execute("RESET plan_cache_mode")
        raw.commit()
    finally:
        raw.close()


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------

@dataclass
class Row:
    backend: str
    case: str
    method: str
    timings: Timings


def bench_backend(url: str, records: list[SinkRecord], batch_sizes: Sequence[int], repeats: int,
                  per_row_commit_rows: int) -> tuple[list[Row], str]:
    engine = make_engine(url)
    version = server_version(engine)

    def truncate() -> None:
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))

    def preload() -> None:
        truncate()
        write_with_sink(engine, records, 1000)

    methods: list[tuple[str, Callable[[], None], int]] = []
    for size in batch_sizes:
        for bulk in ("copy", "values"):
            methods.append((f"PostgresSink.write ({bulk}), batches of {size}",
                            lambda size=size, bulk=bulk: write_with_sink(engine, records, size, bulk),
                            len(records)))
        methods.append((f"per-row INSERT ... ON CONFLICT, commit per {size}",
                        lambda size=size: write_per_row(engine, records, size), len(records)))
    if per_row_commit_rows > 0:
        # The slowest method runs on the first rows only (its rate per row does not depend on N).
        subset = records[:per_row_commit_rows]
        methods.append(("per-row INSERT ... ON CONFLICT, commit per row",
                        lambda: write_per_row(engine, subset, 1), len(subset)))
    rows = []
    try:
        for case, before in (("new rows", truncate), ("replay (all conflicts)", preload)):
            for name, work, items in methods:
                log.info("%s / %s ...", case, name)
                timings = time_repeats(work, items, repeats, before_each=before)
                rows.append(Row("", case, name, timings))
                log.info("  %s rows/s (median)", fmt_rate(timings.rate_median))
    finally:
        engine.dispose()
    return rows, version


def render(rows: list[Row], repeats: int) -> str:
    # Ratio against the per-row method with the same commit grouping, from the same run.
    header = ["back end", "case", "method", "posts", "posts/s median", "posts/s best", "spread",
              "× vs per-row, same commits", "× vs commit per row"]

    def ratio(row: Row, method: str) -> str:
        twin = next((r for r in rows if r.backend == row.backend and r.case == row.case and r.method == method),
                    None)
        return "" if twin is None or twin is row else f"{row.timings.rate_median / twin.timings.rate_median:.1f}×"

    out = []
    for row in rows:
        same_commits = ""
        if row.method.startswith("PostgresSink.write"):
            size = row.method.rsplit(" ", 1)[-1]
            same_commits = ratio(row, f"per-row INSERT ... ON CONFLICT, commit per {size}")
        out.append([row.backend, row.case, row.method, row.timings.items, fmt_rate(row.timings.rate_median),
                    fmt_rate(row.timings.rate_best), f"{row.timings.spread:.0%}", same_commits,
                    ratio(row, "per-row INSERT ... ON CONFLICT, commit per row")])
    return (markdown_table(header, out)
            + f"\nposts/s = posts written per second, each with its sentiment row and every third with a "
              f"media row; median and best of {repeats} repeats; spread = (slowest − fastest) / fastest.\n")


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser("sink", __doc__)
    parser.add_argument("--rows", type=int, default=5000, help="posts per run (issue size: 100000)")
    parser.add_argument("--batch-sizes", default="64,1000",
                        help="comma-separated batch sizes (64 = the worker's default SENTISTREAM_BATCH_SIZE)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", choices=("configured", "embedded", "both"), default="configured")
    parser.add_argument("--database-url", default=DEFAULT_SERVER,
                        help="server of the configured back end (a throwaway database is created on it)")
    parser.add_argument("--per-row-commit-rows", type=int, default=500,
                        help="rows for the slowest method, a commit per row (0 skips it)")
    parser.add_argument("--results-file", type=Path, default=DEFAULT_RESULTS_FILE)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, argv = parse_and_log(get_args_parser(), argv)
    entry = ResultEntry("bench/sink.py: PostgreSQL sink, batch vs per-row",
                        command_line("bench.sink", argv), packages=("psycopg2-binary", "sqlalchemy"))
    batch_sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    records = make_records(args.rows)
    backends = ("configured", "embedded") if args.backend == "both" else (args.backend,)
    rows: list[Row] = []
    for backend in backends:
        with server(backend, args.database_url) as (server_url, description), \
                throwaway_database(server_url) as url:
            backend_rows, version = bench_backend(url, records, batch_sizes, args.repeats,
                                                  args.per_row_commit_rows)
            for row in backend_rows:
                row.backend = backend
            rows += backend_rows
            entry.fact(f"{backend} back end", f"{description}, server {version}")
    entry.fact("data", f"{args.rows} posts (TweetEval tweet texts), 1 sentiment row each, a media row for "
                       "every third; one throwaway database per back end, migrated to head")
    entry.section(render(rows, args.repeats))
    sys.stdout.write(entry.write(args.results_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
