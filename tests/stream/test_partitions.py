"""Monthly partitions on real PostgreSQL: rows in DEFAULT move to their new month, retention drops old months
whole and deletes the rest through post_keys, replays keep landing on their row (migration 0007)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.engine import Engine

from connectors.post import MediaRef, Post
from stream.migrate import make_engine
from stream.partitions import ensure_partitions, existing_months
from stream.retention import RetentionPolicy, apply_retention
from stream.sink import MediaOutcome, PostgresSink, SinkRecord
from tests.stream.verdicts import Verdict

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _write(engine: Engine, posts: dict[str, datetime], bulk: str = "values") -> dict[str, int]:
    records = []
    for i, (name, at) in enumerate(sorted(posts.items())):
        url = f"http://media.example/{name}.jpg"
        post = Post(platform="mastodon", post_id=name, text=f"text {name}", topic="acme", created_at=at,
                    raw={"id": name}, media=(MediaRef(url),))
        records.append(SinkRecord(post, sentiment=Verdict(("negative", "neutral", "positive")[i % 3], 0.5),
                                  media=[MediaOutcome(url, "image", "ok", width=4, height=4)]))
    return PostgresSink(engine, bulk=bulk).write(records).post_pks


def _where(engine: Engine) -> dict[str, tuple[int, str, str, str]]:
    """post_id -> (id, posts partition, sentiments partition, media partition)."""
    with engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(text(
            "SELECT p.post_id, p.id, p.tableoid::regclass::text, s.tableoid::regclass::text, m.tableoid::regclass::text "
            "FROM posts p JOIN sentiments s ON s.post_pk = p.id AND s.post_created_at = p.created_at "
            "JOIN post_media m ON m.post_pk = p.id AND m.post_created_at = p.created_at"))}


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def test_rows_in_default_move_to_their_month_when_it_is_created(migrated_db: str) -> None:
    engine = make_engine(migrated_db)
    old = {"a": datetime(2019, 3, 2, tzinfo=UTC), "b": datetime(2019, 3, 30, tzinfo=UTC),
           "c": datetime(2019, 5, 1, tzinfo=UTC)}
    ids = _write(engine, old, bulk="copy")
    before = _where(engine)
    assert {w[1:] for w in before.values()} == {("posts_default", "sentiments_default", "post_media_default")}

    report = ensure_partitions(engine, now=NOW, ahead=1)
    assert {"2019-03", "2019-05", "2026-06", "2026-07"} <= set(report.created)
    assert report.moved_rows == {"posts": 3, "sentiments": 3, "post_media": 3} and report.default_rows == 0
    after = _where(engine)
    assert after["a"] == after["a"][:1] + ("posts_p2019_03", "sentiments_p2019_03", "post_media_p2019_03")
    assert after["c"][1] == "posts_p2019_05"
    assert {k: v[0] for k, v in after.items()} == {k.split(":")[1]: v for k, v in ids.items()}  # ids kept
    assert ensure_partitions(engine, now=NOW, ahead=1).created == []  # idempotent

    # A replay with another created_at lands on the same row, in its first month; a new post goes on.
    again = _write(engine, {"a": datetime(2026, 5, 20, tzinfo=UTC), "d": datetime(2026, 5, 20, tzinfo=UTC)})
    assert again["mastodon:a"] == ids["mastodon:a"]
    assert _count(engine, "SELECT count(*) FROM posts") == 4
    assert _where(engine)["a"][1] == "posts_p2019_03"
    engine.dispose()


def test_retention_drops_old_months_whole_and_deletes_the_edge_through_the_keys(migrated_db: str) -> None:
    engine = make_engine(migrated_db)
    posts = {"jan": datetime(2026, 1, 10, tzinfo=UTC), "feb": datetime(2026, 2, 10, tzinfo=UTC),
             "mar1": datetime(2026, 3, 1, tzinfo=UTC), "mar2": datetime(2026, 3, 31, 23, tzinfo=UTC),
             "apr-old": datetime(2026, 4, 1, 6, tzinfo=UTC), "apr-new": datetime(2026, 4, 10, tzinfo=UTC),
             "may": datetime(2026, 5, 30, tzinfo=UTC)}
    _write(engine, posts)
    ensure_partitions(engine, now=NOW)
    with engine.begin() as conn:  # an aggregate of a dropped month: kept
        conn.execute(text("INSERT INTO window_aggregates (topic, window_start, window_seconds, model_version, n_posts, "
                          "n_negative, n_neutral, n_positive) VALUES ('acme', '2026-01-10', 3600, 'm', 1, 1, 0, 0)"))
    policy = RetentionPolicy(raw_days=0, posts_days=60, floor_s=3600)  # cut-off 2026-04-02 12:00
    predicted = apply_retention(engine, policy, now=NOW, dry_run=True)
    done = apply_retention(engine, policy, now=NOW, batch_rows=1)

    assert done.partitions_dropped == ("2026-01", "2026-02", "2026-03")  # a dry run counts their rows
    assert predicted.posts_deleted == done.posts_deleted == 5
    assert done.sentiments_deleted == done.media_deleted == 5
    assert "whole monthly partitions 2026-01, 2026-02, 2026-03 dropped" in done.summary()
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT post_id FROM posts")).scalars()) == ["apr-new", "may"]
        assert sorted(conn.execute(text("SELECT post_id FROM post_keys")).scalars()) == ["apr-new", "may"]
        assert conn.execute(text("SELECT count(*) FROM sentiments")).scalar_one() == 2
        assert conn.execute(text("SELECT count(*) FROM window_aggregates")).scalar_one() == 1
        assert conn.execute(text("SELECT to_regclass('posts_p2026_03'), to_regclass('sentiments_p2026_01')")).one() \
            == (None, None)
        months = [m.strftime("%Y-%m") for m in existing_months(conn)]
    assert months[0] == "2026-04"
    again = apply_retention(engine, policy, now=NOW)
    assert again.posts_deleted == 0 and again.partitions_dropped == ()

    # A replay of a deleted old post is stored again (in DEFAULT: its month is gone) and removed next run.
    _write(engine, {"feb": posts["feb"]})
    assert _where(engine)["feb"][1] == "posts_default"
    assert apply_retention(engine, policy, now=NOW).posts_deleted == 1
    assert _count(engine, "SELECT count(*) FROM post_keys WHERE post_id = 'feb'") == 0
    engine.dispose()


def test_cli_maintenance_partitions_creates_the_coming_months(migrated_db: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    env |= {"SENTISTREAM_DATABASE_URL": migrated_db}
    done = subprocess.run([sys.executable, "-m", "stream.cli", "maintenance", "partitions", "--ahead", "6"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    month = datetime.now(UTC).replace(day=1)
    last = (month + timedelta(days=31 * 6)).strftime("%Y-%m")
    assert "partitions created:" in done.stdout and last in done.stdout
    engine = make_engine(migrated_db)
    with engine.connect() as conn:
        assert last in [m.strftime("%Y-%m") for m in existing_months(conn)]
    engine.dispose()
