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


@pytest.mark.slow
def test_a_scoring_worker_log_has_no_false_errors_bars_or_library_chatter(broker, embedded_db, worker_factory,
                                                                          tmp_path) -> None:
    """What an operator reads after a normal run: no "Unclosed client session" ERROR at shutdown (the
    media fetcher's session is closed with the app), no progress-bar redraws, no alembic INFO lines."""
    from connectors.broker import ensure_topics
    from connectors.publisher import KafkaPublisher
    from connectors.replay import replay_file
    from tests.stream.conftest import make_posts, scalar, wait_for, write_jsonl

    ensure_topics(broker, ["posts.raw", "posts.deadletter", "sentiment.alerts"], partitions=4)
    worker = worker_factory(broker, embedded_db, torch_threads="1")  # scoring and media on: the defaults
    path = write_jsonl(tmp_path / "posts.jsonl", make_posts(3, topic="acme"))
    with KafkaPublisher(broker, topic="posts.raw") as publisher:
        assert replay_file(path, publisher).sent == 3
    wait_for(lambda: scalar(embedded_db, "SELECT count(*) FROM sentiments") == 3, 240,
             "3 scored posts", worker.log)
    assert worker.stop() == 0
    text = worker.log()
    assert "worker consuming" in text
    assert "Unclosed client session" not in text and "Unclosed connector" not in text
    assert "\r" not in text and "\x1b[" not in text, "a progress bar or terminal escape reached the log"
    chatter = [line for line in text.splitlines() if " INFO " in line and " alembic" in line]
    assert chatter == []
