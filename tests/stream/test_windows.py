"""Window math, and window aggregates recomputed in PostgreSQL from the stored posts and sentiments."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from stream.db import PostRow, SentimentRow, WindowAggregateRow
from stream.windows import (
    WindowKey,
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
        pk = conn.execute(insert(PostRow).values(
            platform="replay", post_id=post_id, text="t", created_at=created_at, topic=topic,
            ingested_at=created_at).returning(PostRow.id)).scalar_one()
        conn.execute(insert(SentimentRow).values(
            post_pk=pk, model_version=model_version, label=label, p_negative=0.3, p_neutral=0.3,
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
