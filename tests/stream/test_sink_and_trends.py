"""PostgresSink upserts and the analyst views, on both PostgreSQL back ends."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from connectors.post import MediaRef, Post
from stream.migrate import make_engine
from stream.sink import DeadLetter, MediaOutcome, PostgresSink, SinkRecord
from stream.trends import query_trends, render_trends
from tests.stream.verdicts import Verdict

# One base time per test: posts meant for the same minute bucket never straddle a tick.
BASE = datetime.now(UTC).replace(second=5, microsecond=0)


@pytest.fixture(autouse=True)
def _base_now() -> None:
    """BASE is taken again when each test starts: taken at import (collection), posts "30 minutes ago"
    fell out of a real-clock "--since 1h" once the suite had run for half an hour before this test."""
    global BASE
    BASE = datetime.now(UTC).replace(second=5, microsecond=0)


def _post(i: int, minute: int, topic: str = "acme", **kw: object) -> Post:
    return Post(platform="mastodon", post_id=str(i), text=f"text {i}", topic=topic,
                created_at=BASE - timedelta(minutes=minute), **kw)


def test_batch_upsert_is_idempotent_and_collapses_repeated_keys(migrated_db: str) -> None:
    engine = make_engine(migrated_db)
    sink = PostgresSink(engine)
    records = [SinkRecord(_post(i, 1), sentiment=Verdict("negative", -2.0)) for i in range(5)]
    # the same post twice in one batch, the later version wins
    records.append(SinkRecord(_post(0, 1, raw={"v": 2}), sentiment=Verdict("positive", 2.0)))
    result = sink.write(records, [DeadLetter("posts.raw", 0, 7, "k", "not valid JSON", b"{")])
    assert (result.posts, result.sentiments, result.dead_letters) == (5, 5, 1)
    again = sink.write(records, [DeadLetter("posts.raw", 0, 7, "k", "not valid JSON", b"{")])
    assert again.post_pks == result.post_pks
    with engine.connect() as conn:
        counts = conn.execute(text("SELECT (SELECT count(*) FROM posts), (SELECT count(*) FROM sentiments), "
                                   "(SELECT count(*) FROM dead_letters)")).one()
        label = conn.execute(text("SELECT s.label FROM sentiments s JOIN posts p ON p.id = s.post_pk "
                                  "WHERE p.post_id = '0'")).scalar_one()
    assert tuple(counts) == (5, 5, 1)
    assert label == "positive"
    engine.dispose()


def test_raw_payload_survives_a_rescore_upsert_and_nul_characters_are_stored(migrated_db: str) -> None:
    engine = make_engine(migrated_db)
    sink = PostgresSink(engine)
    sink.write([SinkRecord(_post(1, 1, raw={"from": "api", "odd": "a\x00b"}))])
    sink.write([SinkRecord(Post(platform="mastodon", post_id="1", text="nul \x00 inside",
                                created_at=datetime.now(UTC), topic="acme"), sentiment=Verdict("neutral", 0.0))])
    with engine.connect() as conn:
        raw, body = conn.execute(text("SELECT raw, text FROM posts")).one()
    assert raw["from"] == "api" and body == "nul \ufffd inside"
    engine.dispose()


def test_media_outcomes_are_upserted_per_url(migrated_db: str) -> None:
    engine = make_engine(migrated_db)
    sink = PostgresSink(engine)
    post = _post(1, 1, media=(MediaRef("http://x/a.jpg"),))
    sink.write([SinkRecord(post, media=[MediaOutcome("http://x/a.jpg", "image", "timeout", error="slow")])])
    sink.write([SinkRecord(post, media=[MediaOutcome("http://x/a.jpg", "image", "ok", width=10, height=5)])])
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, width, error FROM post_media")).all()
    assert [tuple(r) for r in rows] == [("ok", 10, None)]
    engine.dispose()


def test_trend_views_count_each_post_once_with_its_latest_sentiment(migrated_db: str, tmp_path) -> None:
    engine = make_engine(migrated_db)
    sink = PostgresSink(engine)
    sink.write([SinkRecord(_post(i, 2), sentiment=Verdict("negative" if i < 3 else "positive", -1.0))
                for i in range(4)])
    sink.write([SinkRecord(_post(i, 30), sentiment=Verdict("neutral", 0.0)) for i in range(10, 12)])
    sink.write([SinkRecord(_post(20, 200, topic="other"))])  # unscored, 3 h ago
    # a newer model re-scores post 0 as positive: the views use the newest row, without double counting
    sink.write([SinkRecord(_post(0, 2), sentiment=Verdict("positive", 1.0, model_version="m2"))])

    rows = query_trends(engine, topic="acme", since="1h", bucket="minute")
    assert [(r.n_posts, r.n_negative, r.n_neutral, r.n_positive) for r in rows] == [(2, 0, 2, 0), (4, 2, 0, 2)]
    assert rows[1].negative_share == 0.5
    assert query_trends(engine, topic="other", since="1h") == []
    assert [r.n_scored for r in query_trends(engine, topic="other", since="1d", bucket="hour")] == [0]
    table = render_trends(rows)
    assert "acme" in table and "50%" in table
    engine.dispose()

    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    env["SENTISTREAM_DATABASE_URL"] = migrated_db
    png = tmp_path / "trend.png"
    out = subprocess.run([sys.executable, "-m", "stream.cli", "trends", "--topic", "acme", "--since", "1h",
                          "--plot", str(png)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["topic", "bucket", "posts"] and len(lines) == 5
    assert lines[-1] == f"plot written to {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
