"""`sentistream rescore`: the current checkpoint's rows are added for stored posts, history is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from connectors.post import Post
from stream.migrate import make_engine
from stream.sink import PostgresSink, SinkRecord
from tests.stream.test_sink_and_trends import Verdict


def _run_rescore(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    env.update(SENTISTREAM_DATABASE_URL=database_url, SENTISTREAM_MEDIA_ENABLED="false")
    return subprocess.run([sys.executable, "-m", "stream.cli", "rescore", "--no-media", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_rescore_adds_the_new_model_rows_once_and_keeps_the_old_ones(embedded_db: str) -> None:
    engine = make_engine(embedded_db)
    now = datetime.now(UTC)
    posts = [Post(platform="reddit", post_id=f"r{i}", topic="t", created_at=now - timedelta(hours=i),
                  text=("What a fantastic day, I love it!", "This is a terrible, broken mess.")[i % 2])
             for i in range(6)]
    posts.append(Post(platform="reddit", post_id="old", topic="t", text="ancient history",
                      created_at=now - timedelta(days=30)))
    PostgresSink(engine).write([SinkRecord(p, sentiment=Verdict("neutral", 0.0, model_version="old-model"))
                                for p in posts])

    first = _run_rescore(embedded_db, "--since", "2d")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "rescored 6 posts" in first.stdout
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT p.post_id, s.model_version, s.label FROM sentiments s JOIN posts p ON p.id = s.post_pk "
            "WHERE s.model_version <> 'old-model' ORDER BY p.post_id")).all()
        old_rows = conn.execute(text("SELECT count(*) FROM sentiments WHERE model_version = 'old-model'")).scalar()
        windows = conn.execute(text("SELECT count(*) FROM window_aggregates WHERE model_version <> 'old-model'")
                               ).scalar()
    assert old_rows == 7  # history is never rewritten
    assert [r.post_id for r in rows] == [f"r{i}" for i in range(6)]  # the 30-day-old post is outside --since
    assert {r.label for r in rows if r.post_id in {"r0", "r2", "r4"}} == {"positive"}
    assert {r.label for r in rows if r.post_id in {"r1", "r3", "r5"}} == {"negative"}
    assert windows > 0  # the new model's windows were recomputed

    second = _run_rescore(embedded_db, "--since", "2d")
    assert second.returncode == 0 and "rescored 0 posts" in second.stdout
    engine.dispose()
