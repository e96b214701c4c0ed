"""One batch of Kafka messages in, durable rows out: the worker's logic, testable without Kafka.

``BatchProcessor.process`` decodes, fetches media, scores, and writes a batch; the Faust agent acks
the batch's messages only after it returns.  It never raises for bad data: undecodable messages become
dead letters, a failed image degrades its post to text-only, a post the database rejects becomes a dead
letter.  The one thing it waits out instead of skipping is a database that is down: it retries with
capped backoff until the write succeeds or the worker stops, so no offset moves past unsaved posts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from connectors.post import Post, PostDecodeError
from stream.sink import DeadLetter, MediaOutcome, PostgresSink, SinkRecord, WriteResult, is_transient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A Kafka message as the pipeline needs it (Faust's event, reduced to plain data)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None


class ScorerLike(Protocol):
    """The part of ``model.scorer.Scorer`` the pipeline uses (two steps so each can run off-loop)."""

    model_version: str

    def prepare(self, posts: Sequence[Any]) -> Any: ...

    def score_prepared(self, prepared: Any) -> list[Any]: ...


@dataclass(slots=True)
class FetchedMedia:
    """Media outcomes of one post and the decoded images to score with it."""

    outcomes: list[MediaOutcome] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)


# posts -> per-post fetched media (same order); provided by stream.media when media fetching is on.
MediaStage = Callable[[Sequence[Post]], Awaitable[list[FetchedMedia]]]
# builds the model's input for one post from its text and decoded images
ScoreInputFactory = Callable[[Post, list[Any]], Any]


@dataclass(slots=True)
class BatchReport:
    received: int
    written: WriteResult | None
    dead_letters: list[DeadLetter]
    scored: int
    seconds: float
    attempts: int = 1
    stage_seconds: dict[str, float] = field(default_factory=dict)
    media_statuses: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RetryPolicy:
    """Capped, jittered exponential backoff for a database that is down."""

    initial_s: float = 0.5
    max_s: float = 15.0

    def delay(self, attempt: int) -> float:
        base = min(self.max_s, self.initial_s * (2 ** max(0, attempt - 1)))
        return base * (0.5 + random.random() / 2)


def decode_batch(messages: Sequence[RawMessage]) -> tuple[list[tuple[Post, RawMessage]], list[DeadLetter]]:
    """Split messages into valid posts (with their message) and dead letters that say why."""
    posts: list[tuple[Post, RawMessage]] = []
    dead: list[DeadLetter] = []
    for m in messages:
        key = m.key.decode("utf-8", errors="replace") if m.key is not None else None
        try:
            if m.value is None:
                raise PostDecodeError("empty message (tombstone)")
            post = Post.from_json(m.value)
            if key is not None and key != post.key:
                log.debug("message key %r differs from post key %r; the post key wins", key, post.key)
            posts.append((post, m))
        except PostDecodeError as exc:
            dead.append(DeadLetter(m.topic, m.partition, m.offset, key, exc.reason, m.value))
    return posts, dead


class BatchProcessor:
    """Decode → media → score → write, for one batch; see the module docstring for the guarantees."""

    def __init__(
        self,
        sink: PostgresSink,
        *,
        scorer: ScorerLike | None = None,
        score_input: ScoreInputFactory | None = None,
        media: MediaStage | None = None,
        publish_dead_letters: Callable[[Sequence[DeadLetter]], Awaitable[None]] | None = None,
        after_write: Callable[[WriteResult, Sequence[SinkRecord]], Awaitable[None]] | None = None,
        executor: Executor | None = None,
        retry: RetryPolicy | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        on_db_state: Callable[[bool, str | None], None] = lambda up, err: None,
    ) -> None:
        self.sink = sink
        self.scorer = scorer
        self.score_input = score_input
        self.media = media
        self.publish_dead_letters = publish_dead_letters
        self.after_write = after_write
        self.executor = executor
        self.retry = retry or RetryPolicy()
        self.should_stop = should_stop
        self.on_db_state = on_db_state

    async def process(self, messages: Sequence[RawMessage]) -> BatchReport:
        started = time.perf_counter()
        stages: dict[str, float] = {}
        decoded, dead = decode_batch(messages)
        posts = [p for p, _ in decoded]
        t = time.perf_counter()
        fetched = await self._fetch_media(posts)
        stages["media"] = time.perf_counter() - t
        t = time.perf_counter()
        sentiments = await self._score(posts, fetched)
        stages["score"] = time.perf_counter() - t
        t = time.perf_counter()
        records = [
            SinkRecord(post=p, media=f.outcomes, sentiment=s,
                       modalities=("text", "image") if f.images else ("text",),
                       source=(m.topic, m.partition, m.offset))
            for (p, m), f, s in zip(decoded, fetched, sentiments, strict=True)
        ]
        written, attempts, rejected = await self._write(records, dead)
        stages["sink"] = time.perf_counter() - t
        dead = dead + rejected
        if dead and self.publish_dead_letters is not None:
            try:
                await self.publish_dead_letters(dead)
            except Exception:  # noqa: BLE001 - they are durable in dead_letters already
                log.exception("could not publish %d dead letters to Kafka (they are in PostgreSQL)", len(dead))
        t = time.perf_counter()
        if self.after_write is not None and written is not None:
            # Windows are recomputed from the committed rows before the batch is acked, so a crash here
            # means the batch is redelivered and the recompute runs again (it is idempotent).
            try:
                await self._retrying(lambda: self.after_write(written, records), "window/alert update")
            except Exception as exc:  # noqa: BLE001
                if is_transient(exc):
                    raise  # stopping with the database down: leave the batch unacked
                log.exception("window/alert update failed; rows are committed, the windows are "
                              "recomputed when next touched")
        stages["windows"] = time.perf_counter() - t
        stages["total"] = time.perf_counter() - started
        return BatchReport(received=len(messages), written=written, dead_letters=dead,
                           scored=sum(s is not None for s in sentiments),
                           seconds=stages["total"], attempts=attempts, stage_seconds=stages,
                           media_statuses=[m.status for r in records for m in r.media])

    async def _fetch_media(self, posts: Sequence[Post]) -> list[FetchedMedia]:
        if self.media is None or not any(p.image_urls for p in posts):
            return [FetchedMedia() for _ in posts]
        try:
            return await self.media(posts)
        except Exception:  # noqa: BLE001 - a media failure degrades posts to text-only
            log.exception("media stage failed for a batch; scoring it text-only")
            return [FetchedMedia() for _ in posts]

    async def _score(self, posts: Sequence[Post], fetched: Sequence[FetchedMedia]) -> list[Any]:
        if self.scorer is None or self.score_input is None or not posts:
            return [None] * len(posts)
        inputs = [self.score_input(p, f.images) for p, f in zip(posts, fetched, strict=True)]
        loop = asyncio.get_running_loop()
        try:
            prepared = await loop.run_in_executor(self.executor, self.scorer.prepare, inputs)
            results = await loop.run_in_executor(self.executor, self.scorer.score_prepared, prepared)
        except Exception:  # noqa: BLE001 - posts are still stored; `sentistream rescore` fills them later
            log.exception("scoring failed for a batch of %d posts; storing them unscored", len(posts))
            return [None] * len(posts)
        if len(results) != len(posts):
            log.error("scorer returned %d results for %d posts; storing them unscored", len(results), len(posts))
            return [None] * len(posts)
        return list(results)

    async def _write(self, records: list[SinkRecord], dead: list[DeadLetter]
                     ) -> tuple[WriteResult | None, int, list[DeadLetter]]:
        """Write the batch, waiting out a database outage; isolate posts the database refuses."""
        attempts = 0

        async def attempt() -> tuple[WriteResult, list[DeadLetter]]:
            nonlocal attempts
            attempts += 1
            try:
                return await self._run(self.sink.write, records, dead), []
            except Exception as exc:  # noqa: BLE001 - classified, never escapes
                if is_transient(exc):
                    raise
                log.exception("database rejected a batch; isolating the bad posts")
                return await self._write_one_by_one(records, dead)

        result, rejected = await self._retrying(attempt, "batch write")
        return result, attempts, rejected

    async def _retrying(self, step: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Run ``step`` until it succeeds, backing off while the database is unreachable."""
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await step()
                self.on_db_state(True, None)
                return result
            except Exception as exc:  # noqa: BLE001
                if not is_transient(exc):
                    raise
                self.on_db_state(False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                if self.should_stop():
                    raise
                delay = self.retry.delay(attempt)
                log.warning("%s: database unavailable (%s); retry %d in %.1fs, offsets held",
                            what, type(exc).__name__, attempt, delay)
                await asyncio.sleep(delay)

    async def _write_one_by_one(self, records: list[SinkRecord], dead: list[DeadLetter]
                                ) -> tuple[WriteResult, list[DeadLetter]]:
        """Write each record alone; one the database refuses becomes a dead letter with the reason."""
        rejected: list[DeadLetter] = []
        good: list[SinkRecord] = []
        for r in records:
            try:
                await self._run(self.sink.write, [r], [])
                good.append(r)
            except Exception as exc:  # noqa: BLE001
                if is_transient(exc):
                    raise
                topic, partition, offset = r.source or ("(unknown)", -1, -1)
                rejected.append(DeadLetter(topic, partition, offset, r.post.key,
                                           f"database rejected the post: {str(exc).splitlines()[0]}",
                                           r.post.to_json()))
        result = await self._run(self.sink.write, good, dead + rejected)
        return result, rejected

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
