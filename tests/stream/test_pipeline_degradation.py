"""The pipeline's second line of defence, on real PostgreSQL: bisection, per-post scoring, any-bytes dead letters.

Nothing here is a mock of the database: failures are injected by a real transaction hook that refuses one
post, by a small real scorer that cannot take one text, or by a server that is not there.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from connectors.post import Post
from model.scorer import SentimentResult
from stream.embedded import free_port
from stream.pipeline import BatchProcessor, RawMessage, RetryPolicy, unscored_label
from stream.sink import MAX_DEAD_LETTER_PAYLOAD, DeadLetter, PostgresSink, SinkRecord, is_transient

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(migrated_db: str) -> Iterator[Engine]:
    e = create_engine(migrated_db)
    yield e
    e.dispose()


def _posts(texts: Sequence[str], prefix: str = "d") -> list[Post]:
    return [Post(platform="replay", post_id=f"{prefix}{i}", text=t, topic="acme", created_at=T0 + timedelta(seconds=i))
            for i, t in enumerate(texts)]


def _messages(posts: Sequence[Post], first_offset: int = 0) -> list[RawMessage]:
    return [RawMessage("posts.raw", 0, first_offset + i, p.key.encode(), p.to_json()) for i, p in enumerate(posts)]


def _rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def _refuse_text(marker: str) -> Any:
    """A transaction hook that fails the write of any batch holding a post whose text has ``marker``:
    the stand-in for a bug (or a constraint) that one input trips deep inside the sink."""

    def hook(cur: Any, records: Sequence[SinkRecord], post_pks: dict[str, int]) -> None:
        for r in records:
            if marker in r.post.text:
                raise ValueError(f"cannot store {r.post.key}")

    return hook


def test_a_poisoned_batch_is_bisected_and_its_neighbours_land(engine: Engine) -> None:
    texts = [f"fine post {i}" for i in range(13)]
    texts[5] = "POISON five"
    texts[11] = "POISON eleven"
    posts = _posts(texts)
    messages = _messages(posts)
    processor = BatchProcessor(PostgresSink(engine, hooks=[_refuse_text("POISON")]))

    report = asyncio.run(processor.process(messages))

    stored = _rows(engine, "SELECT post_id FROM posts ORDER BY post_id")
    assert sorted(r[0] for r in stored) == sorted(p.post_id for i, p in enumerate(posts) if i not in (5, 11))
    dead = _rows(engine, "SELECT source_offset, key, reason, payload FROM dead_letters ORDER BY source_offset")
    assert [d[0] for d in dead] == [5, 11]
    for (offset, key, reason, payload) in dead:
        assert reason == f"internal error while processing: ValueError: cannot store replay:d{offset}"
        assert key == f"replay:d{offset}"
        assert bytes(payload) == messages[offset].value  # the original bytes, for a replay after the fix
    assert report.received == 13 and len(report.dead_letters) == 2
    assert report.written is not None and report.written.posts == 11


class _BugOnMarker(BatchProcessor):
    """A processor with a bug that one message trips outside any stage (the outer guard's case)."""

    async def _process_once(self, messages: Sequence[RawMessage]) -> Any:
        if any(m.value and b"TRIP" in m.value for m in messages):
            raise KeyError("a bug")
        return await super()._process_once(messages)


def test_an_unexpected_error_is_bisected_to_the_message_that_trips_it(engine: Engine) -> None:
    posts = _posts(["a", "b", "TRIP c", "d", "e"], prefix="o")
    report = asyncio.run(_BugOnMarker(PostgresSink(engine)).process(_messages(posts, first_offset=100)))
    assert sorted(r[0] for r in _rows(engine, "SELECT post_id FROM posts")) == ["o0", "o1", "o3", "o4"]
    assert _rows(engine, "SELECT source_offset, reason FROM dead_letters") == [
        (102, "internal error while processing: KeyError: 'a bug'")]
    assert report.received == 5 and [d.source_offset for d in report.dead_letters] == [102]


@dataclass
class PickyScorer:
    """A small real scorer (a word count of 'good'/'bad') whose prepare cannot take one kind of text,
    like a tokenizer meeting an input it chokes on; ``broken`` fails every batch, like a lost GPU."""

    refuse: str = "\u2603CHOKE"
    broken: bool = False
    model_version: str = "picky-1"
    prepare_calls: list[int] = field(default_factory=list)

    def prepare(self, inputs: Sequence[str]) -> list[str]:
        self.prepare_calls.append(len(inputs))
        if self.broken:
            raise RuntimeError("CUDA error: device lost")
        for t in inputs:
            if self.refuse in t:
                raise ValueError("tokenizer cannot take this text")
        return list(inputs)

    def score_prepared(self, prepared: list[str]) -> list[SentimentResult]:
        out = []
        for t in prepared:
            score = t.count("good") - t.count("bad")
            label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
            out.append(SentimentResult(label, {label: 1.0}, float(score), {"text": 1.0}, self.model_version))
        return out


def _processor(engine: Engine, scorer: PickyScorer, **kwargs: Any) -> tuple[BatchProcessor, list[tuple[bool, Any]]]:
    states: list[tuple[bool, Any]] = []
    processor = BatchProcessor(PostgresSink(engine), scorer=scorer, score_input=lambda post, images: post.text,
                               on_model_state=lambda up, err: states.append((up, err)), **kwargs)
    return processor, states


def test_a_post_the_model_cannot_take_is_stored_unscored_and_the_rest_are_scored(engine: Engine) -> None:
    texts = [f"good post {i}" for i in range(10)]
    texts[7] = "bad \u2603CHOKE input"
    scorer = PickyScorer()
    processor, states = _processor(engine, scorer)

    report = asyncio.run(processor.process(_messages(_posts(texts))))

    assert report.scored == 9 and report.dead_letters == []
    rows = _rows(engine, "SELECT p.post_id, p.unscored_reason, s.label FROM posts p "
                         "LEFT JOIN sentiments s ON s.post_pk = p.id ORDER BY p.post_id")
    assert len(rows) == 10
    refused = [r for r in rows if r[0] == "d7"]
    assert refused == [("d7", "model error: ValueError: tokenizer cannot take this text", None)]
    assert all(r[1] is None and r[2] == "positive" for r in rows if r[0] != "d7")
    assert report.unscored_reasons == ["model error: ValueError: tokenizer cannot take this text"]
    assert unscored_label(report.unscored_reasons[0]) == "model_error"
    assert states == [(True, None)]  # one bad post is not a sick model
    assert scorer.prepare_calls[0] == 10 and len(scorer.prepare_calls) <= 1 + 2 * 4  # bisection, not 1-by-1 x N


def test_model_turns_unhealthy_after_k_whole_batch_failures_and_recovers(engine: Engine) -> None:
    scorer = PickyScorer(broken=True)
    processor, states = _processor(engine, scorer, model_failures_unhealthy=2)

    def batch(n: int) -> Any:
        return asyncio.run(processor.process(_messages(_posts([f"good {n}.{i}" for i in range(4)], prefix=f"k{n}-"),
                                                       first_offset=10 * n)))

    first = batch(1)
    assert first.scored == 0 and states == []  # one failed batch: not yet unhealthy
    assert all(r.startswith("model error: RuntimeError: CUDA error") for r in first.unscored_reasons)
    batch(2)
    assert [s[0] for s in states] == [False] and "2 batches in a row" in states[-1][1]
    calls_before = len(scorer.prepare_calls)
    third = batch(3)
    # a known-sick model is not bisected every batch: the batch, then its first and last post alone
    assert scorer.prepare_calls[calls_before:] == [4, 1, 1]
    assert len(third.unscored_reasons) == 4
    assert _rows(engine, "SELECT count(*) FROM posts WHERE unscored_reason IS NOT NULL") == [(12,)]

    scorer.broken = False
    assert batch(4).scored == 4
    assert states[-1] == (True, None) and processor.model_batch_failures == 0


def test_a_recovered_model_is_noticed_even_when_every_batch_has_a_post_it_cannot_take(engine: Engine) -> None:
    scorer = PickyScorer(broken=True)
    processor, states = _processor(engine, scorer, model_failures_unhealthy=1)

    def batch(n: int) -> Any:
        texts = [f"good {n}.{i}" for i in range(5)]
        texts[0] = "\u2603CHOKE first"  # the probe's first pick always fails
        return asyncio.run(processor.process(_messages(_posts(texts, prefix=f"r{n}-"), first_offset=10 * n)))

    assert batch(1).scored == 0 and states[-1][0] is False
    scorer.broken = False
    report = batch(2)
    assert report.scored == 4 and report.unscored_reasons == ["model error: ValueError: tokenizer cannot take this text"]
    assert states[-1] == (True, None)


def test_skip_scoring_hook_stores_the_reason_and_scoring_later_clears_it(engine: Engine) -> None:
    posts = _posts(["good one", "bonjour good", "good two"], prefix="s")
    gate = PickyScorer()
    processor, _ = _processor(engine, gate,
                              skip_scoring=lambda p: "language: fr is not scored for topic acme"
                              if "bonjour" in p.text else None)
    report = asyncio.run(processor.process(_messages(posts)))
    assert report.scored == 2 and report.unscored_reasons == ["language: fr is not scored for topic acme"]
    assert unscored_label(report.unscored_reasons[0]) == "language"
    assert _rows(engine, "SELECT post_id, unscored_reason FROM posts ORDER BY post_id") == [
        ("s0", None), ("s1", "language: fr is not scored for topic acme"), ("s2", None)]
    assert gate.prepare_calls == [2]  # the skipped post never reached the model

    # The same post redelivered to a worker that scores it: the reason is cleared, a sentiment added.
    open_gate, _ = _processor(engine, PickyScorer())
    asyncio.run(open_gate.process(_messages(posts[1:2], first_offset=1)))
    assert _rows(engine, "SELECT unscored_reason FROM posts WHERE post_id = 's1'") == [(None,)]
    assert _rows(engine, "SELECT count(*) FROM sentiments s JOIN posts p ON p.id = s.post_pk "
                         "WHERE p.post_id = 's1'") == [(1,)]


@pytest.mark.parametrize("payload", [
    None, b"", b"\x00", b"\x00\xff\xfe\x00", "text \ud800".encode("utf-8", "surrogatepass"),
    bytes(range(256)) * 3, b"\xed\xa0\xbd\xed\xb8\x80",
], ids=["none", "empty", "nul", "nul-and-invalid", "encoded-surrogate", "all-bytes", "cesu8"])
def test_dead_letter_path_stores_any_bytes(engine: Engine, payload: bytes | None) -> None:
    letter = DeadLetter("posts.raw", 3, 42, "key\x00with nul \udcff", "reason \x00 with \ud800 odd text", payload)
    PostgresSink(engine).write([], [letter])
    row = _rows(engine, "SELECT key, reason, payload FROM dead_letters WHERE source_offset = 42")[0]
    assert row[0] == "key\ufffdwith nul ?"
    assert row[1] == "reason \ufffd with ? odd text"
    assert (bytes(row[2]) if row[2] is not None else None) == payload
    record = json.loads(letter.to_json())  # the dead-letter topic's record is valid JSON whatever the bytes
    assert record["source_offset"] == 42 and record["payload_bytes"] == (len(payload) if payload is not None else None)


def test_an_oversized_dead_letter_is_truncated_with_a_note(engine: Engine) -> None:
    payload = b"\xff" * (2 * 1024 * 1024)
    PostgresSink(engine).write([], [DeadLetter("posts.raw", 0, 7, None, "message is too big", payload)])
    (reason, stored_len), = _rows(engine, "SELECT reason, length(payload) FROM dead_letters")
    assert stored_len == MAX_DEAD_LETTER_PAYLOAD
    assert reason == f"message is too big (payload truncated from {len(payload)} to {MAX_DEAD_LETTER_PAYLOAD} bytes)"
    record = json.loads(DeadLetter("posts.raw", 0, 7, None, "big", payload).to_json())
    assert record["payload_truncated"] is True and len(record["payload"]) < 100_000


def test_a_database_that_is_down_is_waited_out_until_the_worker_stops() -> None:
    down = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nothing",
                         connect_args={"connect_timeout": 2})
    db_states: list[bool] = []
    attempts = {"n": 0}

    def should_stop() -> bool:
        attempts["n"] += 1
        return attempts["n"] >= 3

    processor = BatchProcessor(PostgresSink(down), retry=RetryPolicy(initial_s=0.01, max_s=0.05),
                               should_stop=should_stop, on_db_state=lambda up, err: db_states.append(up))
    with pytest.raises(Exception) as raised:
        asyncio.run(processor.process(_messages(_posts(["held"]))))
    assert is_transient(raised.value), raised.value  # the agent leaves the batch unacked, nothing dead-lettered
    assert attempts["n"] == 3 and db_states and not any(db_states)
    down.dispose()
