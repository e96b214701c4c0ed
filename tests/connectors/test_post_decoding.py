"""Strict decoding of ``posts.raw`` values: every hostile input is a Post or a PostDecodeError with a reason.

The catalogue (tests/connectors/hostile_posts.py) is also run end to end through a worker in
tests/stream/test_hostile_input.py; here each case is checked against the decoder alone, plus property
tests over arbitrary bytes and arbitrary JSON documents.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.post import (
    EARLIEST_TIME,
    MAX_CLOCK_SKEW,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_BYTES,
    Post,
    PostDecodeError,
    parse_timestamp,
)
from tests.connectors.hostile_posts import JSON_VALUES, HostileCase, encoded, hostile_cases, post, post_like

CASES = hostile_cases()


def test_catalogue_is_big_and_covers_every_category() -> None:
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"
    assert {c.category for c in CASES} >= {
        "bad bytes", "bad UTF-8", "surrogates", "deep nesting", "huge ints", "duplicate keys", "NaN/Infinity",
        "wrong types", "missing fields", "timestamps", "empty text", "enormous", "NUL and control chars",
        "weird keys", "null value and not-a-post", "schema version"}
    assert {c.expect for c in CASES} == {"stored", "dead"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case_decodes_to_a_post_or_a_reason(case: HostileCase) -> None:
    if case.value is None:
        pytest.skip("a tombstone never reaches the decoder (the pipeline dead-letters it)")
    if case.expect == "dead":
        with pytest.raises(PostDecodeError) as info:
            Post.from_json(case.value)
        assert case.fragment in info.value.reason
        assert info.value.reason.strip(), "a dead letter needs a reason a person can read"
        assert len(info.value.reason) < 500
    else:
        p = Post.from_json(case.value)
        assert p.post_id == case.post_id
        assert p.created_at == datetime.fromisoformat(case.created_at)
        assert p.created_at.tzinfo is not None
        assert case.fragment in p.text.replace("\x00", "\ufffd")  # fragments are of the stored text


def test_pictures_without_text_are_a_post_with_empty_text() -> None:
    p = Post.from_json(encoded(post("pics", text=..., media=[{"url": "https://e.com/a.jpg"}])))
    assert p.text == "" and p.image_urls == ["https://e.com/a.jpg"]


def test_message_size_cap_applies_before_parsing() -> None:
    big = encoded(post("big", raw={"blob": "x" * MAX_MESSAGE_BYTES}))
    with pytest.raises(PostDecodeError, match=f"at most {MAX_MESSAGE_BYTES}"):
        Post.from_json(big)
    with pytest.raises(PostDecodeError, match="bytes"):
        Post.from_json(b" " * (MAX_MESSAGE_BYTES + 1))


def test_depth_limit_is_exact() -> None:
    def nested(depth: int) -> object:
        value: object = 1
        for _ in range(depth):
            value = [value]
        return value

    # the message object is level 1 and raw level 2, so raw may hold MAX_JSON_DEPTH - 2 more levels
    Post.from_json(encoded(post("ok", raw={"a": nested(MAX_JSON_DEPTH - 2)})))
    with pytest.raises(PostDecodeError, match="nested deeper"):
        Post.from_json(encoded(post("deep", raw={"a": nested(MAX_JSON_DEPTH - 1)})))


def test_timestamp_policy_bounds() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_timestamp(EARLIEST_TIME.isoformat(), now=now) == EARLIEST_TIME
    assert parse_timestamp((now + MAX_CLOCK_SKEW).isoformat(), now=now) == now + MAX_CLOCK_SKEW
    with pytest.raises(PostDecodeError, match="accepted range"):
        parse_timestamp((EARLIEST_TIME - timedelta(seconds=1)).isoformat(), now=now)
    with pytest.raises(PostDecodeError, match="accepted range"):
        parse_timestamp((now + MAX_CLOCK_SKEW + timedelta(seconds=1)).isoformat(), now=now)
    assert parse_timestamp("2026-11-30T10:00:00", now=now) == datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert parse_timestamp("2026-11-30T10:00:00-02:00", now=now) == datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_round_trip_of_a_valid_post_is_unchanged() -> None:
    p = Post.from_json(encoded(post("rt", text="ok \U0001F600", raw={"n": 2**63 - 1, "f": 1.5})))
    assert Post.from_json(p.to_json()).to_dict() == p.to_dict()


def _decode_or_reason(value: bytes) -> str:
    try:
        Post.from_json(value)
    except PostDecodeError as exc:
        assert exc.reason
        return exc.reason
    return "ok"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_anything_but_a_decode_error(value: bytes) -> None:
    _decode_or_reason(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(post_like(), JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True).encode())))
def test_arbitrary_json_documents_decode_or_give_a_reason(value: bytes) -> None:
    outcome = _decode_or_reason(value)
    if outcome == "ok":
        # whatever passes is safe downstream: valid UTF-8 text, finite numbers, a time in range
        p = Post.from_json(value)
        p.to_json().decode("utf-8")
        assert EARLIEST_TIME <= p.created_at <= datetime.now(UTC) + MAX_CLOCK_SKEW
