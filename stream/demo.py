"""`sentistream demo`: the whole product on one machine in about a minute, with nothing configured.

It starts the embedded broker and PostgreSQL (or uses configured ones), migrates the database every
other command uses, serves the sample posts' pictures from a loopback media server, runs a real
`sentistream worker` process, replays the bundled sample feed into Kafka with its timestamps moved to end
now, waits until every post is in PostgreSQL (and scored, when a model checkpoint is present), stops the
worker with SIGTERM and prints what an analyst would look at first.

The demo ends where an analyst starts: its rows stay in that database ($SENTISTREAM_HOME/pgdata when
nothing is configured), so `sentistream dashboard` and `sentistream trends` run afterwards show them.  A
new run replaces the previous run's rows of the sample's (fictional) topics, unless ``--keep-data``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from connectors.broker import ensure_topics
from connectors.post import Post, PostDecodeError
from connectors.publisher import KafkaPublisher
from connectors.replay import replay_posts
from stream import migrate, trends
from stream.demo_media import DemoMediaServer
from stream.embedded import free_port, services
from stream.settings import Settings

log = logging.getLogger(__name__)

def sample_lines() -> list[str]:
    """The bundled sample feed (connectors/samples/sample_posts.jsonl), one JSON post per line."""
    path = resources.files("connectors") / "samples" / "sample_posts.jsonl"
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def rebased_posts(lines: list[str], media: DemoMediaServer, now: datetime) -> list[Post]:
    """Decode the sample, point its images at the media server and shift it to end within the last hour."""
    posts = []
    for number, line in enumerate(lines, 1):
        try:
            posts.append(Post.from_json(media.substitute(line)))
        except PostDecodeError as exc:
            log.warning("sample line %d skipped: %s", number, exc.reason)
    if not posts:
        return posts
    # Shift by whole hours so windows fall on the same boundaries as in the sample (results repeat).
    shift = timedelta(hours=(now - max(p.created_at for p in posts)) // timedelta(hours=1))
    return sorted((dataclasses.replace(p, created_at=p.created_at + shift) for p in posts),
                  key=lambda p: p.created_at)


def forget_previous_run(engine: Engine, posts: list[Post]) -> None:
    """Delete an earlier demo's rows: the sample's posts (sentiments and media go with them) and the
    windows and alerts of the sample's topics, so a rerun shows one run, not stale windows of the last.

    Only the sample's own topics are touched; they are fictional, so an analyst's data stays.
    """
    topics = sorted({p.topic for p in posts})
    with engine.begin() as conn:
        # The keys: their posts, sentiments and media go with them (ON DELETE CASCADE, migration 0007).
        conn.execute(text("DELETE FROM post_keys WHERE (platform, post_id) IN "
                          "(SELECT * FROM unnest(CAST(:platforms AS text[]), CAST(:ids AS text[])))"),
                     {"platforms": [p.platform for p in posts], "ids": [p.post_id for p in posts]})
        conn.execute(text("DELETE FROM window_aggregates WHERE topic = ANY(:topics)"), {"topics": topics})
        conn.execute(text("DELETE FROM alert_incidents WHERE topic = ANY(:topics)"), {"topics": topics})
        conn.execute(text("DELETE FROM alerts WHERE topic = ANY(:topics)"), {"topics": topics})


def model_available(settings: Settings) -> bool:
    if not settings.scoring:
        return False
    if settings.checkpoint is not None:
        return settings.checkpoint.exists()
    try:
        from model.checkpoint import DEFAULT_CHECKPOINT
    except ImportError:
        return False
    return Path(DEFAULT_CHECKPOINT).exists()


def _counts(engine: Engine, since: datetime) -> dict[str, int]:
    """What this run has written so far (the database may hold other data: count rows since its start)."""
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT (SELECT count(*) FROM posts WHERE updated_at >= :since), "
            "(SELECT count(*) FROM sentiments s JOIN posts p ON p.id = s.post_pk WHERE p.updated_at >= :since), "
            "(SELECT count(*) FROM dead_letters WHERE created_at >= :since), "
            "(SELECT count(*) FROM post_media m JOIN posts p ON p.id = m.post_pk "
            " WHERE m.status <> 'pending' AND p.updated_at >= :since), "
            "(SELECT count(*) FROM posts WHERE unscored_reason IS NOT NULL AND updated_at >= :since)"),
            {"since": since}).one()
    # "unscored": stored without sentiment on purpose (another language, a post the model cannot take)
    return {"posts": row[0], "sentiments": row[1], "dead_letters": row[2], "media": row[3], "unscored": row[4]}


def run_demo(settings: Settings, timeout_s: float = 600.0, keep_data: bool = False) -> int:
    started = time.monotonic()
    scoring = model_available(settings)
    if not scoring:
        log.warning("no model checkpoint found: the demo stores and counts posts without sentiment")
    with services(settings, share_broker=False) as resolved, DemoMediaServer() as media:
        database_url = resolved.database_url  # the one `trends` and `dashboard` read afterwards
        migrate.upgrade(database_url)
        posts = rebased_posts(sample_lines(), media, datetime.now(UTC))
        engine = migrate.make_engine(database_url)
        if not keep_data:
            forget_previous_run(engine, posts)
        with engine.connect() as conn:
            run_started = conn.execute(text("SELECT now()")).scalar_one()  # the server's clock stamps rows
        ensure_topics(resolved.broker, [settings.topic_raw, settings.topic_deadletter, settings.topic_alerts],
                      settings.topic_partitions)

        home = settings.home / "demo"
        home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update({
            "SENTISTREAM_KAFKA": resolved.broker.bootstrap_servers,
            "SENTISTREAM_KAFKA_IS_TANSU": "1" if resolved.broker.embedded else "0",
            "SENTISTREAM_DATABASE_URL": database_url,
            "SENTISTREAM_HOME": str(home),
            "SENTISTREAM_WEB_PORT": str(free_port()),
            "SENTISTREAM_MEDIA_ALLOW_HOSTS": ",".join([*settings.media_allow_hosts, media.host_port]),
            "SENTISTREAM_SCORING": "true" if scoring else "false",
        })
        # No alert overrides: the defaults catch the sample's outage (tests/stream/test_incidents.py).
        worker_log = home / "worker.log"
        log.info("starting the worker%s (log: %s)",
                 ": it loads the model first (about 20 s), posts are stored after that" if scoring else "",
                 worker_log)
        with open(worker_log, "wb") as out:
            worker = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=env,
                                      stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for_worker_start(worker, worker_log, started + timeout_s)
            with KafkaPublisher(resolved.broker, topic=settings.topic_raw) as publisher:
                report = replay_posts(posts, publisher)
            log.info("replayed %d sample posts into %s", report.sent, settings.topic_raw)
            done = _wait_until_consumed(engine, report.sent, scoring, worker, started + timeout_s, worker_log,
                                        run_started)
        finally:
            _stop(worker)
        if not done:
            return 1
        _print_summary(engine, scoring, time.monotonic() - started, home)
        engine.dispose()
        _print_where_the_data_is(settings, "postgres" in resolved.started, database_url)
    return 0


def _wait_for_worker_start(worker: subprocess.Popen[bytes], worker_log: Path, deadline: float) -> None:
    """Replay only once the worker has its model and joins the stream.  Posts published before would wait
    in Kafka through the model load (20 s, more on a busy machine), and a backlog older than
    SENTISTREAM_OVERLOAD_LAG_S (30 s) is scored without its pictures: overload mode, not what a demo shows.
    A worker that exits or never starts is reported by ``_wait_until_consumed``."""
    while time.monotonic() < deadline and worker.poll() is None:
        if worker_log.exists() and b"worker consuming" in worker_log.read_bytes():
            return
        time.sleep(0.2)


def _wait_until_consumed(engine: Engine, sent: int, scoring: bool, worker: subprocess.Popen[bytes],
                         deadline: float, worker_log: Path, since: datetime) -> bool:
    last = None
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            log.error("the worker exited with %s; its log:\n%s", worker.returncode,
                      worker_log.read_text(errors="replace")[-4000:])
            return False
        counts = _counts(engine, since)
        if counts != last:
            log.info("posts %(posts)d, scored %(sentiments)d, not scored %(unscored)d, media fetched "
                     "%(media)d, dead letters %(dead_letters)d", counts)
            if scoring and last is None and counts["posts"] == 0:
                log.info("the worker is loading the model (about 20 s); the counts move after that")
            last = counts
        if counts["posts"] >= sent and (not scoring or counts["sentiments"] + counts["unscored"] >= counts["posts"]):
            return True
        time.sleep(0.5)
    log.error("timed out waiting for the worker; its log is %s", worker_log)
    return False


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        log.warning("worker did not stop on SIGTERM in 30 s; killing it")
        worker.kill()
        worker.wait(5)


def _print_summary(engine: Engine, scoring: bool, seconds: float, plot_dir: Path) -> None:
    out = sys.stdout
    summary = trends.summarize_topics(engine)
    out.write(f"\nsentistream demo: {sum(int(r['posts']) for r in summary)} posts in {seconds:.0f} s\n\n")
    if scoring:
        headers = ["topic", "posts", "neg", "neu", "pos", "neg share", "mean intensity", "with media"]
        rows = [[r["topic"], r["posts"], r["neg"], r["neu"], r["pos"],
                 "-" if r["neg_share"] is None else f"{100 * r['neg_share']:.0f}%", r["intensity"], r["media"]]
                for r in summary]
    else:
        headers = ["topic", "posts", "with media"]
        rows = [[r["topic"], r["posts"], r["media"]] for r in summary]
    out.write(trends.format_table(headers, rows) + "\n")

    with engine.connect() as conn:
        media = conn.execute(text("SELECT status, count(*) FROM post_media GROUP BY status ORDER BY status")).all()
        alerts = conn.execute(text(
            "SELECT topic, started_at, kind, status, n_windows, score, "
            "coalesce(evidence #> '{explanation,terms}', '[]'::jsonb) FROM alert_incidents "
            "ORDER BY started_at")).all()
    if media:
        out.write("\nmedia: " + ", ".join(f"{status} {n}" for status, n in media) + "\n")
    hourly = trends.query_trends(engine, topic=None, since="4h", bucket="hour")
    if hourly:
        out.write("\nhourly trend, all topics (sentistream trends --bucket hour --since 4h):\n")
        out.write(trends.render_trends(hourly) + "\n")
    if alerts:
        out.write("\nalert incidents (sentistream alerts list):\n")
        for topic, start, kind, status, n_windows, score, terms in alerts:
            words = ", ".join(t["term"] for t in terms[:6]) or "none"
            out.write(f"  {topic}: {kind.replace('_', ' ')} from {start:%H:%M} UTC, {status} after {n_windows} "
                      f"window(s), peak z = {score:.1f}; over-represented terms: {words}\n")
        topic, start = alerts[0][0], alerts[0][1]
        rows = [r for r in trends.query_trends(engine, topic=topic, since="1d", bucket="minute")
                if abs((r.bucket - start).total_seconds()) <= 20 * 60]
        if rows:
            out.write(f"\nminute trend around the first alert (sentistream trends --topic {topic}):\n")
            out.write(trends.render_trends(rows) + "\n")
        png = trends.plot_trends(trends.query_trends(engine, topic=topic, since="1d", bucket="minute"),
                                 plot_dir / f"trend-{topic}.png",
                                 f"{topic}: posts and negative share per minute", "minute")
        out.write(f"\ntrend plot: {png}\n")
    elif scoring:
        out.write("\nalerts: none\n")
    out.write("\nquery it yourself: SELECT * FROM trend_hour ORDER BY topic, bucket;\n")
    out.flush()


def _print_where_the_data_is(settings: Settings, embedded: bool, database_url: str) -> None:
    """The demo's last words: where its rows are and the commands that show them."""
    prefix = f"SENTISTREAM_HOME={settings.home} " if "SENTISTREAM_HOME" in os.environ else ""
    if embedded:
        pgdata = settings.home / "pgdata"
        where = f"the embedded PostgreSQL in {pgdata} (database postgres)"
        connection = (f"postgresql://postgres@/postgres?host={pgdata}\n"
                      f"  (psql \"host={pgdata} user=postgres dbname=postgres\" while a sentistream command, e.g. "
                      "the dashboard, runs the embedded server)")
    else:
        from sqlalchemy.engine import make_url

        where = "the configured database (SENTISTREAM_DATABASE_URL)"
        connection = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=True)
    sys.stdout.write(
        f"\nthe demo's data stays in {where}; look at it with:\n"
        f"  {prefix}sentistream dashboard      # then open http://localhost:8050/\n"
        f"  {prefix}sentistream trends --since 4h --bucket hour\n"
        f"connection string: {connection}\n")
    sys.stdout.flush()
