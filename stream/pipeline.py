"""One batch of Kafka messages in, durable rows out: the worker's logic, testable without Kafka.

``BatchProcessor.process`` decodes, fetches media, scores, and writes a batch; the Faust agent acks
the batch's messages only after it returns.  It never raises for bad data: undecodable messages become
dead letters, a failed image degrades its post to text-only, a post the database rejects becomes a dead
letter.  The one thing it waits out instead of skipping is a database that is down: it retries with
capped backoff until the write succeeds or the worker stops, so no offset moves past unsaved posts.

Two lines of defence keep one message from holding up the stream: strict decoding (connectors/post.py)
turns bad input into dead letters up front, and any other non-transient failure of a batch is bisected
until the message(s) causing it are isolated and dead-lettered, so their neighbours land.  Scoring
degrades per post: a post the model cannot take is stored unscored with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.exc import DBAPIError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from connectors.post import Post, PostDecodeError
from stream.overload import SKIPPED_OVERLOAD
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
# returns why a post is not to be scored (e.g. a language its topic does not score), or None to score it
SkipScoring = Callable[[Post], str | None]
# the post as it is stored, after scoring (e.g. with the detected language in ``lang``)
AnnotatePost = Callable[[Post], Post]


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
    unscored_reasons: list[str] = field(default_factory=list)  # one per post stored unscored with a reason


@dataclass(slots=True)
class RetryPolicy:
    """Capped, jittered exponential backoff for a database that is down (a tenacity wait strategy)."""

    initial_s: float = 0.5
    max_s: float = 15.0

    def delay(self, attempt: int) -> float:
        base = min(self.max_s, self.initial_s * (2 ** max(0, attempt - 1)))
        return base * (0.5 + random.random() / 2)

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.delay(retry_state.attempt_number)


def unscored_label(reason: str) -> str:
    """Metric label of an unscored reason: its text before the first ':' (a small, fixed vocabulary)."""
    label = reason.split(":", 1)[0].strip().lower().replace(" ", "_")
    return label[:40] or "unknown"


def merge_write_results(results: Sequence[WriteResult]) -> WriteResult | None:
    """One WriteResult for a batch that was written in parts (after bisection)."""
    if not results:
        return None
    pks: dict[str, int] = {}
    for r in results:
        pks.update(r.post_pks)
    return WriteResult(posts=sum(r.posts for r in results), sentiments=sum(r.sentiments for r in results),
                       media=sum(r.media for r in results), dead_letters=sum(r.dead_letters for r in results),
                       post_pks=pks, seconds=sum(r.seconds for r in results))


def internal_error_reason(exc: BaseException) -> str:
    """The dead-letter reason for a message isolated by bisection."""
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, DBAPIError):
        return f"database rejected the post: {first_line or type(exc).__name__}"
    return f"internal error while processing: {type(exc).__name__}: {first_line}"[:2000]


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
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the stream either
            log.exception("decoder failed on %s[%d]@%d", m.topic, m.partition, m.offset)
            dead.append(DeadLetter(m.topic, m.partition, m.offset, key,
                                   f"internal error while decoding: {type(exc).__name__}: {exc}"[:2000],
                                   m.value))
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
        after_write: Callable[[WriteResult, Sequence[SinkRecord], Sequence[DeadLetter]], Awaitable[None]]
        | None = None,
        executor: Executor | None = None,
        retry: RetryPolicy | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        on_db_state: Callable[[bool, str | None], None] = lambda up, err: None,
        skip_scoring: SkipScoring | None = None,
        annotate_post: AnnotatePost | None = None,
        on_model_state: Callable[[bool, str | None], None] = lambda up, err: None,
        model_failures_unhealthy: int = 3,
        media_paused: Callable[[], bool] = lambda: False,
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
        self.skip_scoring = skip_scoring
        self.annotate_post = annotate_post
        self.on_model_state = on_model_state
        self.model_failures_unhealthy = max(1, model_failures_unhealthy)
        self.model_batch_failures = 0  # consecutive batches in which the model scored nothing
        self.media_paused = media_paused  # overload mode (stream/overload.py): pictures not fetched

    async def process(self, messages: Sequence[RawMessage]) -> BatchReport:
        """Store or dead-letter every message; raises only while the database is down and we stop.

        A non-transient failure the stages did not absorb (a bug met by some input) is bisected: each half
        is processed again until the failing message is alone, and that one becomes a dead letter.
        """
        try:
            return await self._process_once(messages)
        except Exception as exc:  # noqa: BLE001 - classified below; only a database outage escapes
            if is_transient(exc) or not messages or getattr(exc, "hold_batch", False):
                raise  # the database is down, or the rows are stored and only their windows failed
            if len(messages) == 1:
                return await self._dead_letter_alone(messages[0], exc)
            log.exception("processing a batch of %d failed; bisecting to isolate the culprit(s)",
                          len(messages))
            mid = len(messages) // 2
            first = await self.process(messages[:mid])
            second = await self.process(messages[mid:])
            return _merge_reports(first, second)

    async def _dead_letter_alone(self, message: RawMessage, exc: BaseException) -> BatchReport:
        started = time.perf_counter()
        key = message.key.decode("utf-8", errors="replace") if message.key is not None else None
        letter = DeadLetter(message.topic, message.partition, message.offset, key,
                            internal_error_reason(exc), message.value)
        log.error("isolated %s[%d]@%d: %s", message.topic, message.partition, message.offset, letter.reason,
                  exc_info=exc)
        written = await self._retrying(lambda: self._run(self.sink.write, [], [letter]), "dead letter write")
        if self.publish_dead_letters is not None:
            try:
                await self.publish_dead_letters([letter])
            except Exception:  # noqa: BLE001 - durable in dead_letters already
                log.exception("could not publish a dead letter to Kafka (it is in PostgreSQL)")
        seconds = time.perf_counter() - started
        return BatchReport(received=1, written=written, dead_letters=[letter], scored=0, seconds=seconds,
                           stage_seconds={"total": seconds})

    async def _process_once(self, messages: Sequence[RawMessage]) -> BatchReport:
        started = time.perf_counter()
        stages: dict[str, float] = {}
        decoded, dead = decode_batch(messages)
        posts = [p for p, _ in decoded]
        t = time.perf_counter()
        fetched = await self._fetch_media(posts)
        stages["media"] = time.perf_counter() - t
        t = time.perf_counter()
        sentiments, unscored = await self._score(posts, fetched)
        stages["score"] = time.perf_counter() - t
        t = time.perf_counter()
        records = [
            SinkRecord(post=self._annotated(p), media=f.outcomes, sentiment=s,
                       modalities=("text", "image") if f.images else ("text",),
                       source=(m.topic, m.partition, m.offset), unscored_reason=u)
            for (p, m), f, s, u in zip(decoded, fetched, sentiments, unscored, strict=True)
        ]
        by_source = {(m.topic, m.partition, m.offset): m for m in messages}
        written, attempts, rejected = await self._write(records, dead, by_source)
        stages["sink"] = time.perf_counter() - t
        dead = dead + rejected
        rejected_sources = {(d.source_topic, d.source_partition, d.source_offset) for d in rejected}
        kept = [r for r in records if r.source not in rejected_sources]
        if dead and self.publish_dead_letters is not None:
            try:
                await self.publish_dead_letters(dead)
            except Exception:  # noqa: BLE001 - they are durable in dead_letters already
                log.exception("could not publish %d dead letters to Kafka (they are in PostgreSQL)", len(dead))
        t = time.perf_counter()
        if self.after_write is not None and written is not None:
            # Windows are recomputed from the committed rows before the batch is acked, so a crash here
            # means the batch is redelivered and the recompute runs again (it is idempotent).  The stage
            # retries and counts its own failures; one that outlives them (``hold_batch``) propagates, so
            # the batch is not acked (offsets held) instead of being acked with stale windows.  Dead
            # letters go along: they count as read for the event-time watermark.
            await self._retrying(lambda: self.after_write(written, kept, dead), "window/alert update")
        stages["windows"] = time.perf_counter() - t
        stages["total"] = time.perf_counter() - started
        return BatchReport(received=len(messages), written=written, dead_letters=dead,
                           scored=sum(r.sentiment is not None for r in kept),
                           seconds=stages["total"], attempts=attempts, stage_seconds=stages,
                           media_statuses=[m.status for r in kept for m in r.media],
                           unscored_reasons=[r.unscored_reason for r in kept
                                             if r.sentiment is None and r.unscored_reason is not None])

    def _annotated(self, post: Post) -> Post:
        """``annotate_post(post)``, or the post unchanged when there is none or it fails (it is only extra data)."""
        if self.annotate_post is None:
            return post
        try:
            return self.annotate_post(post)
        except Exception:  # noqa: BLE001 - never lose a post over an annotation
            log.exception("annotating %s failed; storing it as received", post.key)
            return post

    async def _fetch_media(self, posts: Sequence[Post]) -> list[FetchedMedia]:
        if self.media is None or not any(p.image_urls for p in posts):
            return [FetchedMedia() for _ in posts]
        if self.media_paused():
            return [skipped_in_overload(p) for p in posts]
        try:
            fetched = await self.media(posts)
            if len(fetched) != len(posts):
                raise RuntimeError(f"media stage returned {len(fetched)} results for {len(posts)} posts")
            return fetched
        except Exception:  # noqa: BLE001 - a media failure degrades posts to text-only
            log.exception("media stage failed for a batch; scoring it text-only")
            return [FetchedMedia() for _ in posts]

    async def _score(self, posts: Sequence[Post], fetched: Sequence[FetchedMedia]
                     ) -> tuple[list[Any], list[str | None]]:
        """Per post: its sentiment, or None and why (skipped by the gate, or the model cannot take it)."""
        sentiments: list[Any] = [None] * len(posts)
        reasons: list[str | None] = [None] * len(posts)
        if self.scorer is None or self.score_input is None or not posts:
            return sentiments, reasons
        todo: list[tuple[int, Any]] = []
        for i, (post, f) in enumerate(zip(posts, fetched, strict=True)):
            try:
                skip = self.skip_scoring(post) if self.skip_scoring is not None else None
                if skip:
                    reasons[i] = skip
                    continue
                todo.append((i, self.score_input(post, f.images)))
            except Exception as exc:  # noqa: BLE001 - one post's bad input must not cost its batch
                log.warning("cannot build model input for %s: %s", post.key, exc)
                reasons[i] = _model_error(exc)
        if not todo:
            return sentiments, reasons
        try:
            results = await self._score_inputs([x for _, x in todo])
        except Exception as exc:  # noqa: BLE001 - find the post(s) the model cannot take
            inputs = [x for _, x in todo]
            if self.model_batch_failures >= self.model_failures_unhealthy and not await self._probe(inputs):
                # the model is known to be failing and fails one post alone too: don't bisect every batch
                log.error("model still failing (%s); %d posts stored unscored", exc, len(todo))
                outcome: list[Any] = [exc] * len(todo)
            else:
                log.warning("scoring a batch of %d failed (%s: %s); isolating the posts the model cannot "
                            "take", len(todo), type(exc).__name__, exc)
                outcome = await self._score_bisect(inputs)
        else:
            outcome = results
        n_scored = 0
        for (i, _), result in zip(todo, outcome, strict=True):
            if isinstance(result, BaseException):
                reasons[i] = _model_error(result)
            else:
                sentiments[i] = result
                n_scored += 1
        self._note_model_batch(n_scored, outcome)
        return sentiments, reasons

    async def _score_inputs(self, inputs: list[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self.executor, self.scorer.prepare, inputs)
        results = await loop.run_in_executor(self.executor, self.scorer.score_prepared, prepared)
        results = list(results)
        if len(results) != len(inputs):
            raise RuntimeError(f"scorer returned {len(results)} results for {len(inputs)} posts")
        return results

    async def _probe(self, inputs: list[Any]) -> bool:
        """Can the model score anything?  The first and the last post alone: a sick model costs three
        calls a batch, and a model that recovered is noticed even when its batches carry a post it
        cannot take."""
        for probe in {0, len(inputs) - 1}:
            try:
                await self._score_inputs(inputs[probe:probe + 1])
            except Exception:  # noqa: BLE001
                continue
            return True
        return False

    async def _score_bisect(self, inputs: list[Any]) -> list[Any]:
        """Score halves until the failing inputs are alone; a failing input's slot holds its exception."""
        if len(inputs) == 1:
            try:
                return await self._score_inputs(inputs)
            except Exception as exc:  # noqa: BLE001
                return [exc]
        mid = len(inputs) // 2
        out: list[Any] = []
        for half in (inputs[:mid], inputs[mid:]):
            try:
                out.extend(await self._score_inputs(half))
            except Exception:  # noqa: BLE001
                out.extend(await self._score_bisect(half))
        return out

    def _note_model_batch(self, n_scored: int, outcome: Sequence[Any]) -> None:
        """The model is unhealthy after K consecutive batches in which it scored nothing; up on success."""
        if n_scored:
            if self.model_batch_failures:
                log.info("model scoring again after %d failed batches", self.model_batch_failures)
            self.model_batch_failures = 0
            self.on_model_state(True, None)
            return
        self.model_batch_failures += 1
        last = next((r for r in outcome if isinstance(r, BaseException)), None)
        if self.model_batch_failures >= self.model_failures_unhealthy:
            self.on_model_state(False, f"{self.model_batch_failures} batches in a row failed to score: "
                                       f"{type(last).__name__}: {last}")

    async def _write(self, records: list[SinkRecord], dead: list[DeadLetter],
                     messages: dict[tuple[str, int, int], RawMessage]
                     ) -> tuple[WriteResult | None, int, list[DeadLetter]]:
        """Write the batch, waiting out a database outage; isolate what the database (or a bug) refuses."""
        attempts = 0

        async def attempt() -> tuple[WriteResult | None, list[DeadLetter]]:
            nonlocal attempts
            attempts += 1
            try:
                return await self._run(self.sink.write, records, dead), []
            except Exception as exc:  # noqa: BLE001 - classified, never escapes for data
                if is_transient(exc):
                    raise
                log.exception("writing a batch of %d posts failed; bisecting to isolate the culprit(s)",
                              len(records))
                results: list[WriteResult] = []
                rejected: list[DeadLetter] = []
                await self._write_bisect(list(records) + list(dead), messages, results, rejected)
                return merge_write_results(results), rejected

        result, rejected = await self._retrying(attempt, "batch write")
        return result, attempts, rejected

    async def _write_bisect(self, items: list[SinkRecord | DeadLetter],
                            messages: dict[tuple[str, int, int], RawMessage],
                            results: list[WriteResult], rejected: list[DeadLetter]) -> None:
        """Write halves until each failing item is alone; a failing post becomes a dead letter."""
        mid = len(items) // 2
        for half in (items[:mid], items[mid:]) if len(items) > 1 else (items,):
            if not half:
                continue
            try:
                results.append(await self._write_items(half))
                continue
            except Exception as exc:  # noqa: BLE001
                if is_transient(exc):
                    raise
                if len(half) > 1:
                    await self._write_bisect(half, messages, results, rejected)
                    continue
                culprit = half[0]
                error = exc
            letter = self._culprit_letter(culprit, error, messages)
            log.error("isolated %s[%d]@%d: %s", letter.source_topic, letter.source_partition,
                      letter.source_offset, letter.reason)
            # a dead letter is written with the fewest assumptions: no payload decoding, bounded text
            results.append(await self._run(self.sink.write, [], [letter]))
            if isinstance(culprit, SinkRecord):
                rejected.append(letter)

    async def _write_items(self, items: Sequence[SinkRecord | DeadLetter]) -> WriteResult:
        records = [x for x in items if isinstance(x, SinkRecord)]
        dead = [x for x in items if isinstance(x, DeadLetter)]
        return await self._run(self.sink.write, records, dead)

    @staticmethod
    def _culprit_letter(culprit: SinkRecord | DeadLetter, exc: BaseException,
                        messages: dict[tuple[str, int, int], RawMessage]) -> DeadLetter:
        if isinstance(culprit, DeadLetter):
            # the dead letter itself would not store: keep where it came from and why, drop the bytes
            return DeadLetter(culprit.source_topic, culprit.source_partition, culprit.source_offset, None,
                              f"{culprit.reason} (payload not storable: {internal_error_reason(exc)})", None)
        topic, partition, offset = culprit.source or ("(unknown)", -1, -1)
        message = messages.get((topic, partition, offset))
        key = (message.key.decode("utf-8", errors="replace") if message is not None and message.key is not None
               else culprit.post.key)
        payload = message.value if message is not None else culprit.post.to_json()
        return DeadLetter(topic, partition, offset, key, internal_error_reason(exc), payload)

    async def _retrying(self, step: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Run ``step`` until it succeeds, backing off while the database is unreachable.

        Only transient errors (see ``is_transient``) are retried; the wait ends when the worker stops, and
        the last error is raised so the batch stays unacked.
        """

        def transient(exc: BaseException) -> bool:
            if not is_transient(exc):
                return False
            self.on_db_state(False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return True

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning("%s: database unavailable (%s); retry %d in %.1fs, offsets held",
                        what, type(exc).__name__, state.attempt_number, delay)

        retrying = AsyncRetrying(retry=retry_if_exception(transient), wait=self.retry,
                                 stop=lambda _state: self.should_stop(), before_sleep=log_retry,
                                 reraise=True)
        async def run_step() -> Any:  # AsyncRetrying awaits only coroutine functions, not a lambda's coroutine
            return await step()

        result = await retrying(run_step)
        self.on_db_state(True, None)
        return result

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


def skipped_in_overload(post: Post) -> FetchedMedia:
    """Every media item of ``post`` recorded as not fetched because the worker is overloaded."""
    return FetchedMedia(outcomes=[MediaOutcome(url=m.url, kind=m.kind, status=SKIPPED_OVERLOAD,
                                               error="worker overloaded: not fetched, post scored without it")
                                  for m in post.media])


def _merge_reports(a: BatchReport, b: BatchReport) -> BatchReport:
    stages = dict(a.stage_seconds)
    for name, seconds in b.stage_seconds.items():
        stages[name] = stages.get(name, 0.0) + seconds
    return BatchReport(received=a.received + b.received,
                       written=merge_write_results([w for w in (a.written, b.written) if w is not None]),
                       dead_letters=a.dead_letters + b.dead_letters, scored=a.scored + b.scored,
                       seconds=a.seconds + b.seconds, attempts=a.attempts + b.attempts, stage_seconds=stages,
                       media_statuses=a.media_statuses + b.media_statuses,
                       unscored_reasons=a.unscored_reasons + b.unscored_reasons)


def _model_error(exc: BaseException) -> str:
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return f"model error: {type(exc).__name__}: {first_line}"[:500]


def count_reasons(reasons: Sequence[str]) -> Counter[str]:
    """Unscored reasons by metric label (see ``unscored_label``)."""
    return Counter(unscored_label(r) for r in reasons)
