"""Window math, and window aggregates recomputed in PostgreSQL from the stored posts and sentiments."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from stream.db import PostKeyRow, PostRow, SentimentRow, WindowAggregateRow
from stream.windows import (
    EPOCH,
    WindowKey,
    WindowRangeError,
    all_window_keys,
    recompute_windows,
    window_start,
    windows_touched,
)
from tests.stream.pg_module import db_fixture, s4_engine_fixture  # noqa: F401 - fixtures

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LABELS = ("negative", "neutral", "positive")
MV = "mv-1"


def test_window_start_floors_to_epoch_aligned_windows() -> None:
    ts = datetime(2026, 11, 25, 12, 34, 56, 789_000, tzinfo=UTC)
    assert window_start(ts, 60) == datetime(2026, 11, 25, 12, 34, tzinfo=UTC)
    assert window_start(ts, 3600) == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert window_start(ts, 900) == datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
    # The same instant in another zone lands in the same window.
    plus2 = ts.astimezone(timezone(timedelta(hours=2)))
    assert window_start(plus2, 3600) == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    # A boundary belongs to the window it starts; before 1970 still floors downwards.
    assert window_start(datetime(2026, 11, 25, 13, 0, tzinfo=UTC), 3600).hour == 13
    assert window_start(datetime(1969, 12, 31, 23, 59, 30, tzinfo=UTC), 60) == datetime(
        1969, 12, 31, 23, 59, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        window_start(datetime(2026, 1, 1), 60)


class _P:
    def __init__(self, topic: str, created_at: datetime) -> None:
        self.topic, self.created_at = topic, created_at


def test_windows_touched_has_one_key_per_post_topic_and_length() -> None:
    posts = [_P("a", T0 + timedelta(seconds=5)), _P("a", T0 + timedelta(seconds=50)),
             _P("a", T0 + timedelta(minutes=61)), _P("b", T0)]
    keys = windows_touched(posts, (60, 3600))
    assert keys == {
        WindowKey("a", T0, 60), WindowKey("a", T0 + timedelta(minutes=61), 60),
        WindowKey("a", T0, 3600), WindowKey("a", T0 + timedelta(hours=1), 3600),
        WindowKey("b", T0, 60), WindowKey("b", T0, 3600),
    }
    assert WindowKey("a", T0, 60).window_end == T0 + timedelta(minutes=1)


def _store(conn, rows: list[tuple[str, str, datetime, str, float]], model_version: str = MV) -> None:
    """rows: (post_id, topic, created_at, label, intensity)."""
    for post_id, topic, created_at, label, intensity in rows:
        pk = conn.execute(insert(PostKeyRow).values(platform="replay", post_id=post_id, created_at=created_at)
                          .returning(PostKeyRow.id)).scalar_one()
        conn.execute(insert(PostRow).values(
            id=pk, platform="replay", post_id=post_id, text="t", created_at=created_at, topic=topic,
            ingested_at=created_at))
        conn.execute(insert(SentimentRow).values(
            post_pk=pk, post_created_at=created_at, model_version=model_version, label=label, p_negative=0.3, p_neutral=0.3,
            p_positive=0.4, intensity=intensity))


def _feed(n: int, seed: int, start: datetime = T0, span_s: int = 600) -> list[tuple[str, str, datetime, str, float]]:
    rng = random.Random(seed)
    return [(f"{seed}-{i}", rng.choice(["acme", "globex"]), start + timedelta(seconds=rng.uniform(0, span_s)),
             rng.choice(LABELS), round(rng.uniform(0, 1), 3)) for i in range(n)]


def _expected(rows, lengths=(60, 3600)) -> dict[tuple, tuple]:
    """Independent Python computation of every window's aggregate."""
    groups: dict[tuple, list] = {}
    for _pid, topic, created_at, label, intensity in rows:
        for length in lengths:
            groups.setdefault((topic, window_start(created_at, length), length), []).append((label, intensity))
    out = {}
    for key, items in groups.items():
        n = len(items)
        neg = sum(1 for lab, _ in items if lab == "negative")
        out[key] = (n, neg, sum(1 for lab, _ in items if lab == "neutral"),
                    sum(1 for lab, _ in items if lab == "positive"),
                    round(sum(i for _, i in items) / n, 9), round(neg / n, 9))
    return out


def _stored(conn, model_version: str = MV) -> dict[tuple, tuple]:
    w = WindowAggregateRow
    rows = conn.execute(select(w.topic, w.window_start, w.window_seconds, w.n_posts, w.n_negative, w.n_neutral,
                               w.n_positive, w.mean_intensity, w.negative_share)
                        .where(w.model_version == model_version)).all()
    return {(r[0], r[1].astimezone(UTC), r[2]): (r[3], r[4], r[5], r[6],
                                                 None if r[7] is None else round(r[7], 9),
                                                 None if r[8] is None else round(r[8], 9)) for r in rows}


def test_recompute_matches_an_independent_computation_and_is_idempotent(db: Engine) -> None:
    rows = _feed(300, seed=1)
    with db.begin() as conn:
        _store(conn, rows)
        _store(conn, [("other-mv", "acme", T0, "negative", 1.0)], model_version="mv-0")  # must not count
    keys = windows_touched([_P(t, c) for _, t, c, _, _ in rows], (60, 3600))
    with db.begin() as conn:
        returned = recompute_windows(conn, keys, MV)
    assert {a.key for a in returned} == keys
    with db.connect() as conn:
        first = _stored(conn)
        updated_at = dict(conn.execute(text("SELECT id, updated_at FROM window_aggregates")).all())
    assert first == _expected(rows)
    with db.begin() as conn:
        recompute_windows(conn, keys, MV)
    with db.connect() as conn:
        assert _stored(conn) == first
        # Unchanged windows are not rewritten (no churn, updated_at means "numbers changed").
        assert dict(conn.execute(text("SELECT id, updated_at FROM window_aggregates")).all()) == updated_at


def test_a_late_post_updates_its_own_window_and_equals_a_full_rebuild(db: Engine) -> None:
    on_time = _feed(200, seed=2)
    with db.begin() as conn:
        _store(conn, on_time)
        recompute_windows(conn, windows_touched([_P(t, c) for _, t, c, _, _ in on_time], (60, 3600)), MV)
    late = [("late-1", "acme", T0 + timedelta(seconds=30), "negative", 0.9),
            ("late-2", "acme", T0 - timedelta(hours=2), "negative", 0.8)]  # a window nobody has seen
    with db.begin() as conn:
        _store(conn, late)
        recompute_windows(conn, windows_touched([_P(t, c) for _, t, c, _, _ in late], (60, 3600)), MV)
    with db.connect() as conn:
        incremental = _stored(conn)
    assert incremental == _expected(on_time + late)
    assert incremental[("acme", T0 - timedelta(hours=2), 60)][:2] == (1, 1)
    # From scratch: drop the aggregates and rebuild every window from the rows.
    with db.begin() as conn:
        conn.execute(delete(WindowAggregateRow))
        keys = all_window_keys(conn, (60, 3600), MV)
        recompute_windows(conn, keys, MV)
    with db.connect() as conn:
        assert _stored(conn) == incremental


def test_a_window_that_lost_its_rows_is_zeroed_not_left_stale(db: Engine) -> None:
    rows = [("x1", "acme", T0, "negative", 0.5), ("x2", "acme", T0 + timedelta(seconds=1), "positive", 0.5)]
    with db.begin() as conn:
        _store(conn, rows)
        recompute_windows(conn, {WindowKey("acme", T0, 60)}, MV)
        conn.execute(delete(SentimentRow))
        recompute_windows(conn, {WindowKey("acme", T0, 60)}, MV)
    with db.connect() as conn:
        assert _stored(conn)[("acme", T0, 60)] == (0, 0, 0, 0, None, None)


def test_concurrent_recomputes_of_one_window_are_serialized(db: Engine) -> None:
    key = WindowKey("acme", T0, 60)
    with db.begin() as conn:
        _store(conn, [("c1", "acme", T0, "negative", 0.5)])
    holder = db.connect()
    tx = holder.begin()
    recompute_windows(holder, {key}, MV)  # holds the window's advisory lock until commit
    error: list[BaseException] = []

    def other() -> None:
        try:
            with db.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '300ms'"))
                recompute_windows(conn, {key}, MV)
        except BaseException as exc:  # noqa: BLE001 - reported below
            error.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    tx.commit()
    holder.close()
    assert error and isinstance(error[0], OperationalError) and "lock timeout" in str(error[0])
    with db.begin() as conn:  # once released, it goes through
        assert recompute_windows(conn, {key}, MV)[0].n_posts == 1


# --------------------------------------------------------------------------------------------------
# Out-of-range times (issue #10): no created_at can break a batch's windows
# --------------------------------------------------------------------------------------------------

def test_window_start_handles_the_ends_of_the_datetime_range() -> None:
    last = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert window_start(last, 3600) == datetime(9999, 12, 31, 23, 0, tzinfo=UTC)
    assert window_start(datetime(1, 1, 1, tzinfo=UTC), 86_400) == datetime(1, 1, 1, tzinfo=UTC)
    # A week window of year 1 would start in year 0; a +05:00 time of 0001-01-01 is in year 0 in UTC.
    with pytest.raises(WindowRangeError):
        window_start(datetime(1, 1, 1, tzinfo=UTC), 7 * 86_400)
    with pytest.raises(WindowRangeError):
        window_start(datetime(1, 1, 1, 2, tzinfo=timezone(timedelta(hours=5))), 60)
    # The far end in a negative offset is year 10000 in UTC: its window starts in year 9999... or not at all.
    late_west = datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    with pytest.raises(WindowRangeError):
        window_start(late_west, 60)


def test_windows_touched_reports_out_of_range_posts_instead_of_raising() -> None:
    posts = [_P("a", datetime(1, 1, 1, tzinfo=UTC)), _P("a", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
             _P("b", T0)]
    skipped: list[tuple[str, int]] = []
    keys = windows_touched(posts, (60, 7 * 86_400), lambda p, length: skipped.append((p.topic, length)))
    assert skipped == [("a", 7 * 86_400)]  # only the week window of year 1 cannot exist
    assert WindowKey("a", datetime(1, 1, 1, tzinfo=UTC), 60) in keys
    assert WindowKey("a", datetime(9999, 12, 31, 23, 59, tzinfo=UTC), 60) in keys
    assert len(keys) == 5


@settings(max_examples=300, deadline=None)
@given(ts=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999_999),
                       timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)),
                                                  timezone(timedelta(hours=5, minutes=45))])),
       length=st.integers(min_value=1, max_value=400 * 86_400))
def test_any_representable_time_lands_in_its_window_or_is_reported(ts: datetime, length: int) -> None:
    skipped: list[int] = []
    keys = windows_touched([_P("t", ts)], (length,), lambda p, n: skipped.append(n))
    if skipped:
        assert not keys
        return
    (key,) = keys
    # key.window_end may overflow (year 10000): compare by the offset into the window instead.
    offset = ts - key.window_start
    assert timedelta(0) <= offset < timedelta(seconds=length)
    assert (key.window_start - EPOCH).total_seconds() % length == 0


def test_year_9999_and_year_1_posts_are_aggregated_like_any_other(db: Engine) -> None:
    rows = [("far-1", "acme", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "negative", 0.9),
            ("far-2", "acme", datetime(9999, 12, 31, 23, 30, tzinfo=UTC), "positive", 0.1),
            ("old-1", "acme", datetime(1, 1, 1, tzinfo=UTC), "neutral", 0.5),
            ("now-1", "acme", T0, "negative", 0.7)]
    with db.begin() as conn:
        _store(conn, rows)
        returned = recompute_windows(conn, windows_touched([_P(t, c) for _, t, c, _, _ in rows], (60, 3600)), MV)
    assert len(returned) == 7  # 3 one-minute windows... plus the shared last hour of 9999
    with db.connect() as conn:
        assert _stored(conn) == _expected(rows)
        assert _stored(conn)[("acme", datetime(9999, 12, 31, 23, 0, tzinfo=UTC), 3600)][:2] == (2, 1)
    with db.begin() as conn:  # a full rebuild finds the same windows, the year-1 one included
        conn.execute(delete(WindowAggregateRow))
        recompute_windows(conn, all_window_keys(conn, (60, 3600), MV), MV)
    with db.connect() as conn:
        assert _stored(conn) == _expected(rows)


# --------------------------------------------------------------------------------------------------
# `sentistream windows rebuild` against real PostgreSQL
# --------------------------------------------------------------------------------------------------

def _rebuild_cli(db: Engine, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    env.update(SENTISTREAM_DATABASE_URL=db.url.render_as_string(hide_password=False), SENTISTREAM_WINDOWS="1m,1h",
               SENTISTREAM_HOME=os.environ.get("SENTISTREAM_HOME", "/tmp/sentistream-test-home"))
    done = subprocess.run([sys.executable, "-m", "stream.cli", "windows", "rebuild", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _snapshot(db: Engine) -> list[tuple]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT * FROM window_aggregates ORDER BY id"))]


def test_windows_rebuild_equals_a_from_scratch_computation_and_is_idempotent(db: Engine) -> None:
    now = datetime.now(UTC)
    recent = _feed(150, seed=7, start=now - timedelta(days=3), span_s=2 * 86_400)
    other_model = _feed(30, seed=8, start=now - timedelta(days=1), span_s=3600)
    old = [("old-1", "acme", now - timedelta(days=30), "negative", 0.4)]  # outside --since 7d
    with db.begin() as conn:
        _store(conn, recent + old)
        _store(conn, other_model, model_version="mv-0")
        # Stale state: only a third of the posts were ever aggregated, a window holds numbers no row
        # supports, and an old window (outside the span) is wrong and must be left alone.
        recompute_windows(conn, windows_touched([_P(t, c) for _, t, c, _, _ in recent[:50]], (60, 3600)), MV)
        recompute_windows(conn, windows_touched([_P(t, c) for _, t, c, _, _ in old], (60,)), MV)
        conn.execute(text("UPDATE window_aggregates SET n_posts = 99 WHERE window_start < now() - interval '7 days'"))
        ghost = window_start(now - timedelta(days=2), 60)
        conn.execute(insert(WindowAggregateRow).values(
            topic="acme", window_start=ghost, window_seconds=60, model_version=MV, n_posts=5, n_negative=5,
            n_neutral=0, n_positive=0, mean_intensity=0.5, negative_share=1.0))
    out = _rebuild_cli(db, "--since", "7d")
    assert "rebuilt" in out and "mv-0" in out and MV in out
    expected = _expected(recent)
    expected[("acme", ghost, 60)] = expected.get(("acme", ghost, 60), (0, 0, 0, 0, None, None))
    with db.connect() as conn:
        stored = _stored(conn)
        assert {k: v for k, v in stored.items() if k[1] >= now - timedelta(days=7, hours=1)} == expected
        old_window = window_start(old[0][2], 60)
        assert stored[("acme", old_window, 60)][0] == 99  # outside the span: untouched
        assert _stored(conn, "mv-0") == _expected(other_model)
    before = _snapshot(db)
    again = _rebuild_cli(db, "--since", "7d")
    assert "(0 rows inserted or changed)" in again
    assert _snapshot(db) == before  # nothing rewritten, not even updated_at


def test_windows_rebuild_can_be_limited_to_a_topic_and_a_model(db: Engine) -> None:
    now = datetime.now(UTC)
    rows = _feed(60, seed=9, start=now - timedelta(hours=5), span_s=3 * 3600)
    with db.begin() as conn:
        _store(conn, rows)
        recompute_windows(conn, windows_touched([_P(t, c) for _, t, c, _, _ in rows], (60, 3600)), MV)
        conn.execute(text("UPDATE window_aggregates SET n_negative = n_posts"))
    out = _rebuild_cli(db, "--since", "1d", "--topic", "acme", "--model-version", MV)
    assert "for topic acme" in out
    expected = _expected(rows)
    with db.connect() as conn:
        stored = _stored(conn)
    assert {k: v for k, v in stored.items() if k[0] == "acme"} == {k: v for k, v in expected.items()
                                                                    if k[0] == "acme"}
    globex = {k: v for k, v in stored.items() if k[0] == "globex"}
    assert globex and all(v[1] == v[0] for v in globex.values())  # still the corrupted numbers
