"""Dead letters keyed by coordinates and payload hash (migration 0003), on both PostgreSQL back ends.

A broker that restarted with a new log reuses offsets: a new dead letter at the coordinates of an old one
must get its own row, while a replay of the same message (at-least-once delivery) must not duplicate.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from stream.migrate import downgrade, make_engine, upgrade
from stream.sink import DeadLetter, PostgresSink


def rows(url: str) -> list[tuple[int, bytes | None, str]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [(o, bytes(p) if p is not None else None, r) for o, p, r in conn.execute(text(
                "SELECT source_offset, payload, reason FROM dead_letters ORDER BY id"))]
    finally:
        engine.dispose()


def test_new_message_at_reused_offset_is_kept_and_replay_does_not_duplicate(migrated_db: str) -> None:
    engine = make_engine(migrated_db)
    sink = PostgresSink(engine)
    old_epoch = DeadLetter("posts.raw", 2, 7, "k1", "not valid JSON", b"{broken")
    sink.write([], [old_epoch])
    sink.write([], [old_epoch])  # redelivered: same coordinates, same bytes
    new_epoch = DeadLetter("posts.raw", 2, 7, "k2", "text is missing", b'{"platform": "reddit"}')
    sink.write([], [new_epoch, new_epoch])
    tombstone = DeadLetter("posts.raw", 2, 7, None, "empty message (tombstone)", None)
    sink.write([], [tombstone])
    sink.write([], [tombstone])
    engine.dispose()
    assert rows(migrated_db) == [(7, b"{broken", "not valid JSON"),
                                 (7, b'{"platform": "reddit"}', "text is missing"),
                                 (7, None, "empty message (tombstone)")]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.one_of(st.none(), st.binary(max_size=64)), min_size=1, max_size=6))
def test_one_row_per_distinct_payload_at_one_offset(migrated_db: str, payloads: list[bytes | None]) -> None:
    engine = make_engine(migrated_db)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM dead_letters"))
        sink = PostgresSink(engine)
        for p in payloads + payloads:  # every message twice, as a replay would
            sink.write([], [DeadLetter("posts.raw", 0, 0, None, "bad", p)])
    finally:
        engine.dispose()
    stored = [p for _, p, _ in rows(migrated_db)]
    distinct = list(dict.fromkeys(p or b"" for p in payloads))
    assert [p or b"" for p in stored] == distinct


def test_migration_backfills_hashes_and_downgrade_refuses_to_drop_rows(fresh_db: str) -> None:
    upgrade(fresh_db, "0002")
    engine = make_engine(fresh_db)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO dead_letters (source_topic, source_partition, source_offset, reason, "
                          "payload) VALUES ('posts.raw', 0, 1, 'bad', 'abc'), ('posts.raw', 0, 2, 'bad', NULL)"))
    upgrade(fresh_db, "0003")
    with engine.connect() as conn:
        hashes = dict(conn.execute(text("SELECT source_offset, payload_sha256 FROM dead_letters")).all())
    assert hashes == {1: hashlib.sha256(b"abc").hexdigest(), 2: hashlib.sha256(b"").hexdigest()}

    PostgresSink(engine).write([], [DeadLetter("posts.raw", 0, 1, None, "other", b"xyz")])
    with pytest.raises(Exception, match="coordinates hold more than one dead letter"):
        downgrade(fresh_db, "0002")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM dead_letters WHERE payload = 'xyz'"))
    downgrade(fresh_db, "0002")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM dead_letters")).scalar_one() == 2
    engine.dispose()
