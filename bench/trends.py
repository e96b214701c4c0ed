"""Trend queries at years of data: one topic over one day, as the dashboard and `sentistream trends` ask it.

Fills a throwaway database (migrated to head, so every index is the schema's own) with N posts spread
over a year across 20 topics of Zipf-like popularity (the biggest topic holds about a fifth of all
posts), each scored by one sentiment row but every tenth, every fifth with a media row, in creation
order as a live feed writes them.  Rows are generated inside PostgreSQL (``INSERT ... SELECT
generate_series``, no round trip per row), then VACUUM ANALYZE.  Then it times, on the biggest topic
and on a mid-sized one, for the day that ends now:

* the dashboard's series (``DashboardReader.series``, stream/dashboard/read_model.py), by hour and by minute;
* ``sentistream trends --topic T --since 1d`` (``query_trends``, stream/trends.py), by hour and by minute.

The issue's target is under 200 ms at 10 million posts.

    .venv/bin/python -m bench.trends                           # 1,000,000 posts, 5 repeats
    .venv/bin/python -m bench.trends --posts 10000000          # the issue's size (about 8 GB of disk)
    .venv/bin/python -m bench.trends --retention-raw-days 30   # + one retention run, queries again after it
    .venv/bin/python -m bench.trends --retention-posts-days 180  # + dropping half a year of monthly partitions
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/trends.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from bench.cli import parse_and_log, script_parser  # noqa: E402
from bench.databases import DEFAULT_SERVER, server, server_version, throwaway_database  # noqa: E402
from bench.measure import Timings, time_repeats  # noqa: E402
from bench.results import DEFAULT_RESULTS_FILE, ResultEntry, command_line, markdown_table  # noqa: E402
from stream.dashboard.read_model import DashboardReader  # noqa: E402
from stream.migrate import DatabaseTimeouts, make_engine  # noqa: E402
from stream.partitions import ensure_partitions  # noqa: E402
from stream.retention import RetentionPolicy, apply_retention  # noqa: E402
from stream.trends import query_trends  # noqa: E402

log = logging.getLogger("bench.trends")

TOPICS = 20
SPAN = timedelta(days=365)

# Topic rank k (0-based) with probability ln((k+2)/(k+1)) / ln(21), about 1/(k+1): a few loud topics and
# a long tail.  hashint8 is PostgreSQL's own integer hash: deterministic, so reruns hold the same data.
# Keys first, as the sink writes them (migration 0007): post_keys gives the id, posts goes to its month.
_POSTS_SQL = """
WITH src AS (
SELECT 'bench' AS platform, i::text AS post_id, 'user' || (i % 50000) AS author, c.created_at,
       'post ' || i || ' about ' || t.topic || ': the service was down again this morning, #outage' AS text,
       'en' AS lang, 'https://bench.example/p/' || i AS url, t.topic, ARRAY[t.topic, 'outage'] AS keywords,
       jsonb_build_object('id', i::text, 'text', 'post ' || i, 'account', jsonb_build_object('id', i % 50000))
           AS raw,
       c.created_at + interval '2 seconds' AS ingested_at
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS i
CROSS JOIN LATERAL (SELECT (abs(hashint8(i)) % 1000000)::float8 / 1000000 AS u) h
CROSS JOIN LATERAL (SELECT 'topic-' || lpad((floor(exp(h.u * ln(21))) - 1)::int::text, 2, '0') AS topic) t
CROSS JOIN LATERAL (SELECT CAST(:start AS timestamptz)
                           + make_interval(secs => (i * CAST(:step_s AS float8)) + (abs(hashint8(i + 1)) % 60))
                           AS created_at) c
), keys AS (
    INSERT INTO post_keys (platform, post_id, created_at) SELECT platform, post_id, created_at FROM src
    RETURNING id, post_id
)
INSERT INTO posts (id, platform, post_id, author, created_at, text, lang, url, topic, keywords, raw, ingested_at)
SELECT keys.id, src.* FROM src JOIN keys USING (post_id)
"""

_SENTIMENTS_SQL = """
INSERT INTO sentiments (post_pk, post_created_at, model_version, label, p_negative, p_neutral, p_positive,
                        intensity, modality_weights, modalities, scored_at)
SELECT p.id, p.created_at, 'bench-m1', (ARRAY['negative', 'neutral', 'positive'])[1 + abs(hashint8(p.id)) % 3],
       0.2, 0.3, 0.5, ((abs(hashint8(p.id + 7)) % 400) - 200) / 100.0, '{"text": 1.0}', ARRAY['text'],
       p.created_at + interval '3 seconds'
FROM posts p WHERE p.id BETWEEN :first_id AND :last_id AND p.id % 10 <> 0
"""

_MEDIA_SQL = """
INSERT INTO post_media (post_pk, post_created_at, url, kind, status, content_type, bytes, width, height,
                        fetched_at)
SELECT p.id, p.created_at, 'https://bench.example/m/' || p.id || '.jpg', 'image', 'ok', 'image/jpeg', 40000, 512, 384,
       p.created_at + interval '3 seconds'
FROM posts p WHERE p.id BETWEEN :first_id AND :last_id AND p.id % 5 = 0
"""


def fill(engine: Engine, n_posts: int, end: datetime, chunk: int = 250_000) -> None:
    """Write ``n_posts`` posts ending at ``end``, chunk by chunk (one transaction each), then VACUUM ANALYZE."""
    start = end - SPAN
    step_s = SPAN.total_seconds() / n_posts
    started = time.perf_counter()
    ensure_partitions(engine, now=start, ahead=(end.year - start.year) * 12 + end.month - start.month + 1)
    for first in range(0, n_posts, chunk):
        last = min(n_posts, first + chunk) - 1
        with engine.begin() as conn:
            ids = conn.execute(text(_POSTS_SQL + " RETURNING id"),
                               {"first": first, "last": last, "start": start, "step_s": step_s}).scalars().all()
            bounds = {"first_id": min(ids), "last_id": max(ids)}
            conn.execute(text(_SENTIMENTS_SQL), bounds)
            conn.execute(text(_MEDIA_SQL), bounds)
        log.info("%d / %d posts written (%.0f s)", last + 1, n_posts, time.perf_counter() - started)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE post_keys, posts, sentiments, post_media")
    log.info("filled and analysed in %.0f s", time.perf_counter() - started)


def topics_by_size(engine: Engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [(r[0], int(r[1])) for r in conn.execute(text(
            "SELECT topic, count(*) FROM posts GROUP BY topic ORDER BY count(*) DESC, topic"))]


def posts_in_day(engine: Engine, topic: str, end: datetime) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM posts WHERE topic = :t AND created_at >= :s "
                                     "AND created_at < :e"), {"t": topic, "s": end - timedelta(days=1),
                                                              "e": end}).scalar_one())


def queries(engine: Engine, topic: str, now: datetime) -> dict[str, Callable[[], object]]:
    reader = DashboardReader(engine)
    return {
        "dashboard series, 24h by hour": lambda: reader.series(since="24h", bucket="hour", topic=topic, now=now),
        "dashboard series, 24h by minute": lambda: reader.series(since="24h", bucket="minute", topic=topic, now=now),
        "sentistream trends --since 1d --bucket hour": lambda: query_trends(engine, topic=topic, since="1d",
                                                                            bucket="hour", now=now),
        "sentistream trends --since 1d --bucket minute": lambda: query_trends(engine, topic=topic, since="1d",
                                                                              bucket="minute", now=now),
    }


def timed_queries(engine: Engine, topic: str, now: datetime, when: str, repeats: int,
                  target_ms: float) -> list[list[str]]:
    """The topic's queries timed again after a retention run, as table rows named '<query>, <when>'."""
    rows = []
    for name, work in queries(engine, topic, now).items():
        timings = time_repeats(work, items=1, repeats=repeats)
        rows.append([f"{name}, {when}", topic, f"{1000 * timings.seconds[0]:.1f}",
                     f"{1000 * timings.median:.1f}", f"{1000 * timings.best:.1f}",
                     "yes" if 1000 * timings.median < target_ms else "**no**"])
    return rows


def time_retention(engine: Engine, raw_days: int, now: datetime, topic: str, repeats: int,
                   target_ms: float) -> list[list[str]]:
    """One retention run (raw payloads only) and the biggest topic's queries after it, as table rows."""
    policy = RetentionPolicy(raw_days=raw_days, posts_days=0, floor_s=3600)
    started = time.perf_counter()
    report = apply_retention(engine, policy, now=now)
    seconds = time.perf_counter() - started
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE posts")
    started = time.perf_counter()
    again = apply_retention(engine, policy, now=now)  # the next day's run: walks the old rows, changes none
    again_s = time.perf_counter() - started
    out = [[f"maintenance retention, raw older than {raw_days} d", f"{report.raw_dropped:,} payloads dropped",
            f"{1000 * seconds:,.0f}", "", "", f"{report.raw_dropped / seconds:,.0f} rows/s"],
           ["maintenance retention again (nothing left to drop)", f"{again.raw_dropped:,} payloads dropped",
            f"{1000 * again_s:,.0f}", "", "", ""]]
    return out + timed_queries(engine, topic, now, "after retention", repeats, target_ms)


def time_posts_retention(engine: Engine, posts_days: int, now: datetime, topic: str, repeats: int,
                         target_ms: float) -> list[list[str]]:
    """One posts retention run (whole months dropped, the edge deleted through post_keys) and the biggest
    topic's queries after it, as table rows."""
    policy = RetentionPolicy(raw_days=0, posts_days=posts_days, floor_s=3600)
    started = time.perf_counter()
    report = apply_retention(engine, policy, now=now)
    seconds = time.perf_counter() - started
    months = f"{len(report.partitions_dropped)} months dropped whole" if report.partitions_dropped else "no month"
    out = [[f"maintenance retention, posts older than {posts_days} d",
            f"{report.posts_deleted:,} posts deleted ({months})", f"{1000 * seconds:,.0f}", "", "",
            f"{report.posts_deleted / seconds:,.0f} posts/s"]]
    return out + timed_queries(engine, topic, now, "after posts retention", repeats, target_ms)


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser("trends", __doc__)
    parser.add_argument("--posts", type=int, default=1_000_000, help="posts over the year (issue size: 10000000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", choices=("configured", "embedded"), default="configured")
    parser.add_argument("--database-url", default=DEFAULT_SERVER,
                        help="server of the configured back end (a throwaway database is created on it)")
    parser.add_argument("--target-ms", type=float, default=200.0)
    parser.add_argument("--retention-raw-days", type=int, default=0,
                        help="afterwards, time `maintenance retention` dropping raw payloads older than this "
                             "(0 = skip); then the queries are timed again")
    parser.add_argument("--retention-posts-days", type=int, default=0,
                        help="afterwards, time `maintenance retention` deleting posts older than this (months "
                             "dropped whole, 0 = skip); then the queries are timed again")
    parser.add_argument("--results-file", type=Path, default=DEFAULT_RESULTS_FILE)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, argv = parse_and_log(get_args_parser(), argv)
    entry = ResultEntry("bench/trends.py: one topic over one day at years of posts",
                        command_line("bench.trends", argv), packages=("psycopg2-binary", "sqlalchemy"))
    now = datetime.now(UTC).replace(microsecond=0)
    rows = []
    with server(args.backend, args.database_url) as (server_url, description), \
            throwaway_database(server_url) as url:
        # No statement timeout: VACUUM ANALYZE of 10 million posts outlasts the worker's 30 s.
        engine = make_engine(url, timeouts=DatabaseTimeouts().without_statement_timeout())
        fill_started = time.perf_counter()
        fill(engine, args.posts, now)
        fill_s = time.perf_counter() - fill_started
        sizes = topics_by_size(engine)
        with engine.connect() as conn:
            db_size = conn.execute(text("SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar()
        entry.fact("back end", f"{description}, server {server_version(engine)}")
        picked = [sizes[0], sizes[len(sizes) // 2]]
        for topic, total in picked:
            in_day = posts_in_day(engine, topic, now)
            for name, work in queries(engine, topic, now).items():
                timings: Timings = time_repeats(work, items=1, repeats=args.repeats)
                best_ms, median_ms = 1000 * timings.best, 1000 * timings.median
                rows.append([name, f"{topic} ({total:,} posts, {in_day:,} that day)",
                             f"{1000 * timings.seconds[0]:.1f}", f"{median_ms:.1f}", f"{best_ms:.1f}",
                             "yes" if median_ms < args.target_ms else "**no**"])
                log.info("%s on %s: median %.1f ms", name, topic, median_ms)
        if args.retention_raw_days:
            rows += time_retention(engine, args.retention_raw_days, now, picked[0][0], args.repeats,
                                   args.target_ms)
        if args.retention_posts_days:
            rows += time_posts_retention(engine, args.retention_posts_days, now, picked[0][0], args.repeats,
                                         args.target_ms)
        engine.dispose()
    entry.fact("data", f"{args.posts:,} posts over 365 days ending at the run's start, {TOPICS} topics "
                       f"(largest {sizes[0][1]:,}, smallest {sizes[-1][1]:,}), 90% scored, 20% with a media "
                       f"row, in creation order; database {db_size}; filled in {fill_s:.0f} s")
    entry.section(markdown_table(["query", "topic", "first ms", "median ms", "best ms",
                                  f"< {args.target_ms:.0f} ms"], rows)
                  + f"\nThe day ending at the run's start; first = the first of {args.repeats} runs (caches "
                    "warmed only by the fill), median and best over all of them; a retention row has its one "
                    "run's wall time in the first ms column and its rate in the last.\n")
    sys.stdout.write(entry.write(args.results_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
