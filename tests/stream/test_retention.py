"""Retention on real PostgreSQL: old raw payloads and posts go, window aggregates and alerts stay."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from connectors.post import MediaRef, Post
from stream.migrate import make_engine
from stream.retention import RetentionPolicy, apply_retention
from stream.settings import Settings
from stream.sink import MediaOutcome, PostgresSink, SinkRecord
from stream.windows import rebuild_windows
from tests.stream.verdicts import Verdict

NOW = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)
HOUR = 3600




def _write(engine: Engine, ages: dict[str, timedelta], *, now: datetime = NOW) -> None:
    """One scored post per name, created ``age`` before ``now``, with a raw payload and a picture."""
    records = []
    for i, (name, age) in enumerate(sorted(ages.items())):
        url = f"http://media.example/{name}.jpg"
        post = Post(platform="mastodon", post_id=name, text=f"text {name}", topic="acme",
                    created_at=now - age, raw={"id": name, "payload": "x" * 50}, media=(MediaRef(url),))
        records.append(SinkRecord(post, sentiment=Verdict(("negative", "neutral", "positive")[i % 3], i - 1.0),
                                  media=[MediaOutcome(url, "image", "ok", width=4, height=4)]))
    PostgresSink(engine).write(records)


def _state(engine: Engine) -> dict[str, Any]:
    """Everything retention may touch or must keep, comparable across runs."""
    with engine.connect() as conn:
        posts = {r.post_id: r.raw is not None for r in conn.execute(text("SELECT post_id, raw FROM posts"))}
        aggregates = conn.execute(text(
            "SELECT topic, window_start, window_seconds, model_version, n_posts, n_negative, n_neutral, "
            "n_positive, mean_intensity FROM window_aggregates ORDER BY 1, 2, 3, 4")).all()
        alerts = conn.execute(text("SELECT id, topic, n_posts FROM alerts ORDER BY id")).all()
        sentiments = conn.execute(text(
            "SELECT p.post_id FROM sentiments s JOIN posts p ON p.id = s.post_pk ORDER BY 1")).scalars().all()
        media = conn.execute(text("SELECT count(*) FROM post_media")).scalar_one()
    return {"posts": posts, "aggregates": [tuple(r) for r in aggregates], "alerts": [tuple(r) for r in alerts],
            "sentiments": sentiments, "media": media}


def _add_alert(engine: Engine, window_start: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO alerts (topic, window_start, window_seconds, model_version, observed, expected, score, "
            "n_posts, n_negative) VALUES ('acme', :start, 3600, 'm1', 0.9, 0.2, 5.0, 12, 11)"),
            {"start": window_start})


AGES = {"fresh": timedelta(minutes=5), "week": timedelta(days=7), "month": timedelta(days=40),
        "year": timedelta(days=400), "year2": timedelta(days=400, hours=2)}


@pytest.fixture
def engine(migrated_db: str) -> Engine:
    engine = make_engine(migrated_db)
    _write(engine, AGES)
    rebuild_windows(engine, (HOUR,), NOW - timedelta(days=500))
    _add_alert(engine, NOW - timedelta(days=400))
    yield engine
    engine.dispose()


def test_old_raw_payloads_are_dropped_and_everything_else_kept(engine: Engine) -> None:
    before = _state(engine)
    assert len(before["aggregates"]) == 5 and before["media"] == 5

    report = apply_retention(engine, RetentionPolicy(raw_days=30, posts_days=0, floor_s=HOUR), now=NOW)

    after = _state(engine)
    assert report.raw_dropped == 3 and report.posts_deleted == 0
    assert after["posts"] == {"fresh": True, "week": True, "month": False, "year": False, "year2": False}
    assert {k: v for k, v in after.items() if k != "posts"} == {k: v for k, v in before.items() if k != "posts"}


def test_old_posts_are_deleted_with_sentiments_and_media_while_aggregates_and_alerts_stay(engine: Engine) -> None:
    before = _state(engine)

    report = apply_retention(engine, RetentionPolicy(raw_days=30, posts_days=365, floor_s=HOUR), now=NOW)

    after = _state(engine)
    assert (report.posts_deleted, report.sentiments_deleted, report.media_deleted) == (2, 2, 2)
    assert report.raw_dropped == 1  # "month"; the two deleted posts are not rewritten first
    assert after["posts"] == {"fresh": True, "week": True, "month": False}
    assert after["sentiments"] == ["fresh", "month", "week"] and after["media"] == 3
    assert after["aggregates"] == before["aggregates"] and after["alerts"] == before["alerts"]


def test_dry_run_changes_nothing_and_predicts_the_real_run(engine: Engine) -> None:
    policy = RetentionPolicy(raw_days=30, posts_days=365, floor_s=HOUR)
    before = _state(engine)

    predicted = apply_retention(engine, policy, now=NOW, dry_run=True)

    assert _state(engine) == before
    done = apply_retention(engine, policy, now=NOW)
    assert predicted.dry_run and not done.dry_run
    counted = ("raw_dropped", "posts_deleted", "sentiments_deleted", "media_deleted")
    assert [getattr(predicted, c) for c in counted] == [getattr(done, c) for c in counted] == [1, 2, 2, 2]
    assert "would delete 2 posts" in predicted.summary() and "deleted 2 posts" in done.summary()


def test_a_second_run_does_nothing(engine: Engine) -> None:
    policy = RetentionPolicy(raw_days=30, posts_days=365, floor_s=HOUR)
    apply_retention(engine, policy, now=NOW)
    first = _state(engine)

    again = apply_retention(engine, policy, now=NOW, batch_rows=1)

    assert (again.raw_dropped, again.posts_deleted, again.sentiments_deleted, again.media_deleted) == (0, 0, 0, 0)
    assert _state(engine) == first


def test_nothing_within_the_longest_window_is_deleted_whatever_the_setting(engine: Engine) -> None:
    # 1 day of retention, but a 30-day window: "week" is inside the window and must stay.
    report = apply_retention(engine, RetentionPolicy(raw_days=1, posts_days=1, floor_s=30 * 86400), now=NOW)

    assert report.posts_cutoff == report.raw_cutoff == NOW - timedelta(days=30)
    assert set(_state(engine)["posts"]) == {"fresh", "week"}
    assert _state(engine)["posts"] == {"fresh": True, "week": True}


def test_policy_from_settings_uses_the_longest_window_and_zero_keeps() -> None:
    policy = RetentionPolicy.from_settings(Settings(windows=("1m", "2d"), retention_raw_days=0,
                                                    retention_posts_days=1))
    assert policy.floor_s == 2 * 86400
    assert policy.raw_cutoff(NOW) is None and policy.posts_cutoff(NOW) == NOW - timedelta(days=2)
    with pytest.raises(ValueError, match=">= 0"):
        RetentionPolicy(raw_days=-1)
    with pytest.raises(ValueError, match="RETENTION_POSTS_DAYS"):
        Settings.from_env({"SENTISTREAM_RETENTION_POSTS_DAYS": "-3"})


def test_cached_picture_features_unused_for_their_days_go_and_nothing_else(engine: Engine) -> None:
    with engine.begin() as conn:
        for name, days in (("recent", 2), ("month", 45), ("year", 400)):
            conn.execute(text("INSERT INTO picture_features (sha256, encoder, dtype, dim, feature, created_at, "
                              "last_used_at) VALUES (:name, 'enc', 'float32', 1, :f, :at, :at)"),
                         {"name": name, "f": bytes(4), "at": NOW - timedelta(days=days, minutes=30)})
    before = _state(engine)
    policy = RetentionPolicy(raw_days=0, posts_days=0, floor_s=HOUR, picture_features_days=30)

    predicted = apply_retention(engine, policy, now=NOW, dry_run=True)
    done = apply_retention(engine, policy, now=NOW, batch_rows=1)
    again = apply_retention(engine, policy, now=NOW)

    assert predicted.picture_features_deleted == done.picture_features_deleted == 2
    assert again.picture_features_deleted == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT sha256 FROM picture_features")).scalars().all() == ["recent"]
    assert _state(engine) == before
    assert "would delete 2 cached picture features" in predicted.summary()
    kept = apply_retention(engine, RetentionPolicy(raw_days=0, posts_days=0, floor_s=HOUR, picture_features_days=0),
                           now=NOW + timedelta(days=3650))
    assert kept.picture_features_deleted == 0 and "picture features kept" in kept.summary()
    assert RetentionPolicy.from_settings(Settings(retention_picture_features_days=7)).picture_features_days == 7


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ages_h=st.lists(st.integers(min_value=0, max_value=24 * 500), min_size=1, max_size=25),
       raw_days=st.integers(min_value=0, max_value=400), posts_days=st.integers(min_value=0, max_value=400),
       batch_rows=st.integers(min_value=1, max_value=7))
def test_property_retention_removes_exactly_what_is_older_than_its_cutoffs(
        migrated_db: str, ages_h: list[int], raw_days: int, posts_days: int, batch_rows: int) -> None:
    engine = make_engine(migrated_db)
    try:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE posts, window_aggregates RESTART IDENTITY CASCADE"))
        # Ages on the half hour never sit on a cut-off (whole days from NOW), so < and <= cannot blur.
        ages = {f"p{i}": timedelta(hours=h, minutes=30) for i, h in enumerate(ages_h)}
        _write(engine, ages)
        policy = RetentionPolicy(raw_days=raw_days, posts_days=posts_days, floor_s=HOUR)
        predicted = apply_retention(engine, policy, now=NOW, dry_run=True)
        report = apply_retention(engine, policy, now=NOW, batch_rows=batch_rows)

        raw_cut, posts_cut = policy.raw_cutoff(NOW), policy.posts_cutoff(NOW)
        expected = {name: not (raw_cut and NOW - age < raw_cut)
                    for name, age in ages.items() if not (posts_cut and NOW - age < posts_cut)}
        state = _state(engine)
        assert state["posts"] == expected
        assert sorted(state["sentiments"]) == sorted(expected) and state["media"] == len(expected)
        assert report.posts_deleted == predicted.posts_deleted == len(ages) - len(expected)
        assert report.raw_dropped == predicted.raw_dropped == sum(not kept for kept in expected.values())
    finally:
        engine.dispose()


def test_cli_dry_run_then_run(engine: Engine, migrated_db: str) -> None:
    # The CLI uses the wall clock, so it gets its own posts relative to today.
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE posts, window_aggregates RESTART IDENTITY CASCADE"))
    _write(engine, {"recent": timedelta(days=1), "old": timedelta(days=100)}, now=datetime.now(UTC))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    env |= {"SENTISTREAM_DATABASE_URL": migrated_db, "SENTISTREAM_RETENTION_RAW_DAYS": "10",
            "SENTISTREAM_RETENTION_POSTS_DAYS": "90"}

    def run(*extra: str) -> str:
        done = subprocess.run([sys.executable, "-m", "stream.cli", "maintenance", "retention", *extra],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "would drop 0 raw payloads" in run("--dry-run") and "would delete 1 posts" in run("--dry-run")
    assert _state(engine)["posts"] == {"recent": True, "old": True}
    assert "deleted 1 posts, 1 sentiments and 1 media rows" in run()
    assert _state(engine)["posts"] == {"recent": True}


def test_cli_every_repeats_the_run_until_stopped(migrated_db: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    env |= {"SENTISTREAM_DATABASE_URL": migrated_db, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "stream.cli", "maintenance", "retention", "--every", "1s"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(2)]  # blocks until each run reports
        assert all("window aggregates and alerts kept" in line for line in lines), lines
        assert process.poll() is None  # still scheduled
    finally:
        process.kill()
        process.wait(timeout=30)
