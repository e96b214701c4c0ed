"""`sentistream rescore`: the current checkpoint's rows are added for stored posts, history is kept, and
nothing stored is downgraded (pictures that cannot be fetched again, text+image scores, window lengths)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.engine import Engine

from connectors.post import MediaRef, Post
from stream.migrate import make_engine
from stream.settings import Settings
from stream.sink import MediaOutcome, PostgresSink, SinkRecord
from tests.stream.local_http import LocalServer, send
from tests.stream.verdicts import Verdict


def _run_rescore(database_url: str, *args: str, media: bool = False,
                 allow_hosts: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    env.update(SENTISTREAM_DATABASE_URL=database_url, SENTISTREAM_MEDIA_ENABLED=str(media).lower(),
               **({"SENTISTREAM_MEDIA_ALLOW_HOSTS": allow_hosts} if allow_hosts else {}))
    return subprocess.run([sys.executable, "-m", "stream.cli", "rescore", *([] if media else ["--no-media"]), *args],
                          env=env, capture_output=True, text=True, timeout=300)


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


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (220, 160, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def _media_rows(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT p.post_id, m.url, m.status, m.sha256, m.fetched_at FROM post_media m "
            "JOIN posts p ON p.id = m.post_pk ORDER BY p.post_id"))]


def _rows_of(engine: Engine, version: str) -> dict[str, tuple]:
    with engine.connect() as conn:
        return {r.post_id: (r.label, r.p_positive, tuple(r.modalities), r.scored_at) for r in conn.execute(text(
            "SELECT p.post_id, s.label, s.p_positive, s.modalities, s.scored_at FROM sentiments s "
            "JOIN posts p ON p.id = s.post_pk WHERE s.model_version = :v"), {"v": version})}


def test_rescore_never_downgrades_pictures_scores_or_windows(embedded_db: str) -> None:
    engine = make_engine(embedded_db)
    now = datetime.now(UTC)
    png = _png()
    with LocalServer({"/pancake.png": lambda h, _n: send(h, 200, png, "image/png")}) as pictures:
        posts = [Post(platform="reddit", post_id=f"t{i}", topic="t", created_at=now - timedelta(hours=i + 1),
                      text=("What a fantastic day, I love it!", "This is a terrible, broken mess.")[i % 2])
                 for i in range(4)]
        with_picture = {"pic-ok": pictures.url("/pancake.png"), "pic-gone": pictures.url("/gone.png")}
        posts += [Post(platform="reddit", post_id=pid, topic="t", created_at=now - timedelta(minutes=30),
                       text="Look what I made for lunch", media=(MediaRef(url),))
                  for pid, url in with_picture.items()]
        stored_ok = {url: MediaOutcome(url=url, kind="image", status="ok", content_type="image/png",
                                       bytes=len(png), sha256="a" * 64, width=64, height=64, error=None,
                                       fetched_at=now - timedelta(minutes=29)) for url in with_picture.values()}
        PostgresSink(engine).write([
            SinkRecord(p, sentiment=Verdict("neutral", 0.0, model_version="old-model"),
                       media=[stored_ok[m.url] for m in p.media],
                       modalities=("text", "image") if p.media else ("text",)) for p in posts])
        with engine.begin() as conn:  # a stored window length that the settings do not list (2 minutes)
            conn.execute(text("INSERT INTO window_aggregates (topic, window_start, window_seconds, model_version, "
                              "n_posts, n_negative, n_neutral, n_positive) "
                              "VALUES ('t', date_trunc('hour', now()), 120, 'old-model', 1, 0, 1, 0)"))
        media_before = _media_rows(engine)
        allow = f"127.0.0.1:{pictures.port}"

        first = _run_rescore(embedded_db, "--since", "2d", media=True, allow_hosts=allow)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "rescored 5 posts" in first.stdout
        assert "kept 1 posts as stored: their picture could not be fetched again (1 http_error)" in first.stdout
        assert pictures.hits["/pancake.png"] == 1 and pictures.hits["/gone.png"] >= 1

        with engine.connect() as conn:
            (version,) = conn.execute(text(
                "SELECT DISTINCT model_version FROM sentiments WHERE model_version <> 'old-model'")).scalars()
            lengths = sorted(conn.execute(text(
                "SELECT window_seconds, sum(n_posts) FROM window_aggregates WHERE model_version = :v "
                "GROUP BY window_seconds"), {"v": version}).all())
        rows = _rows_of(engine, version)
        assert sorted(rows) == ["pic-ok", "t0", "t1", "t2", "t3"]  # pic-gone keeps only its stored score
        assert rows["pic-ok"][2] == ("text", "image")
        assert _media_rows(engine) == media_before  # no 'ok' row became an error
        # every configured length, and the stored 2-minute length too
        assert lengths == [(seconds, 5) for seconds in sorted({*Settings().window_lengths_s, 120})]

        second = _run_rescore(embedded_db, "--since", "2d", "--force", "--no-media")
        assert second.returncode == 0, second.stderr[-3000:]
        assert "kept 1 posts as stored: --no-media would replace their text+image score" in second.stdout
        after = _rows_of(engine, version)
        assert after["pic-ok"] == rows["pic-ok"]  # not overwritten by a text-only score
        assert {pid for pid in after if after[pid][3] != rows.get(pid, (None,) * 4)[3]} == {
            "t0", "t1", "t2", "t3", "pic-gone"}
        assert _media_rows(engine) == media_before

        third = _run_rescore(embedded_db, "--since", "2d", media=True, allow_hosts=allow)
    assert third.returncode == 0, third.stderr[-3000:]
    assert (f"rescored 0 posts with model {version}: all 6 posts in the last 2d already have model version "
            f"{version}; use --force to rescore") in third.stdout
    engine.dispose()
