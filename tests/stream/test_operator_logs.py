"""Logs an operator can use: each dead letter logged once with its id and where it came from."""

from __future__ import annotations

import logging

import pytest

from stream.migrate import make_engine
from stream.sink import DeadLetter, PostgresSink


def dead_letter_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "stream.sink" and "dead letter" in r.getMessage()]


def test_each_new_dead_letter_is_logged_once_with_its_id(migrated_db: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(migrated_db)
    sink = PostgresSink(engine)
    letters = [DeadLetter("posts.raw", 1, 41, "k\nFAKE ERROR line", "not valid JSON", b"{"),
               DeadLetter("posts.raw", 3, 42, None, "text is missing", b'{"platform": "reddit"}')]
    with caplog.at_level(logging.INFO, logger="stream.sink"):
        result = sink.write([], letters)
        first = dead_letter_records(caplog)
        caplog.clear()
        sink.write([], letters)  # a redelivered batch: already stored, nothing new to say
        again = dead_letter_records(caplog)
    engine.dispose()
    assert result.dead_letters == 2
    assert len(first) == 2 and again == []
    assert all(r.levelno == logging.WARNING for r in first)
    messages = [r.getMessage() for r in first]
    (bad_json,) = [m for m in messages if "posts.raw[1]@41" in m]
    (no_text,) = [m for m in messages if "posts.raw[3]@42" in m]
    assert "not valid JSON" in bad_json and "text is missing" in no_text
    assert all("dead letter #" in m for m in messages)
    assert all("\n" not in m for m in messages)  # an input key cannot forge a second log line
