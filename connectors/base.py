"""Connector: the base class owns the life cycle of a source; each platform only maps a payload to a Post.

What the base does, so no platform module repeats it:

* ``run()`` loops ``fetch(cursor)`` (a subclass generator: one long stream connection, or one poll)
  until ``stop()``; it reconnects after errors with the backoff the platform prescribes (three
  schedules: network errors, HTTP errors, rate limits), jittered and capped, and reset once a connection
  has been healthy for ``healthy_after_s`` (a server restart drops every client at once; jitter spreads
  their return).
* A 401/403 raises :class:`AuthError` out of ``run()``: retrying a bad token only gets it banned.
* A 429 waits until the reset the platform announced (``RateLimitedError.retry_after_s``), or the
  rate-limit schedule when it did not say; a proactive :class:`RateBudget` waits *before* a request
  when the remaining quota is spent.  Every wait is clamped by ``BackoffPolicy.max_wait_s`` (tests
  set it low) and ends early on ``stop()``.
* A payload that fails to decode or map is logged and dropped; the connection stays.
* Posts pass a bounded de-duplication window on ``platform:post_id`` (a reconnect or a catch-up poll
  that overlaps the stream publishes nothing twice), then go to the publisher.
* Checkpoint order, stated once: **flush the publisher first, then save the cursor**.  A crash between
  the two repeats posts on restart (the worker upserts) but never skips one.

Subclasses implement ``fetch`` (yield decoded payloads, each with the cursor that is safe to resume from
once that payload is published; yield ``None`` on a keep-alive so a quiet stream still checkpoints on
time) and ``to_post`` (payload -> Post, or None to skip).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prometheus_client import Counter
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_never
from tenacity.wait import wait_base

from connectors import backoff
from connectors.cursor import CursorStore, CursorStoreError
from connectors.post import Post, PostDecodeError
from connectors.publisher import PostPublisher
from connectors.topics import TopicsConfig

log = logging.getLogger(__name__)

POSTS_PUBLISHED = Counter("sentistream_connector_posts_published_total", "Posts handed to Kafka", ["source"])
POSTS_DUPLICATE = Counter("sentistream_connector_posts_duplicate_total", "Posts dropped as already seen", ["source"])
PAYLOADS_BAD = Counter("sentistream_connector_payloads_bad_total", "Payloads that failed to decode or map", ["source"])
RECONNECTS = Counter("sentistream_connector_reconnects_total", "Reconnects after an error", ["source", "kind"])


# -- errors a fetch() raises ----------------------------------------------------------------------

class SourceError(Exception):
    """Base of the errors a connector's fetch raises to tell run() what to do next."""


class AuthError(SourceError):
    """401/403: credentials missing, wrong or without access.  Fatal: run() re-raises it."""


class ConfigError(SourceError):
    """The platform rejected our request as invalid (bad query, unknown subreddit).  Fatal."""


class TransientError(SourceError):
    """Worth retrying: ``kind`` picks the backoff schedule ("network" or "http")."""

    def __init__(self, message: str, kind: str = "http", status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class RateLimitedError(TransientError):
    """429 (or an exhausted quota): wait ``retry_after_s`` when the platform said how long."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message, kind="rate_limit", status=429)
        self.retry_after_s = retry_after_s


def error_for_status(status: int, platform: str, detail: str = "",
                     retry_after_s: float | None = None) -> SourceError:
    """Map an HTTP status to the error that makes run() do the right thing."""
    detail = f": {detail[:300]}" if detail else ""
    if status in (401, 403):
        return AuthError(f"{platform} refused our credentials (HTTP {status}){detail}. "
                         f"Check the token/keys in the environment or secrets file and the app's access level.")
    if status == 429:
        return RateLimitedError(f"{platform} rate limit reached (HTTP 429){detail}", retry_after_s)
    if status in (400, 404, 422):
        return ConfigError(f"{platform} rejected the request (HTTP {status}){detail}")
    return TransientError(f"{platform} answered HTTP {status}{detail}", kind="http", status=status)


class _Reconnect(Exception):
    """Raised by one connection attempt that ended in an error worth retrying after a backoff."""

    def __init__(self, kind: str, retry_after_s: float | None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.retry_after_s = retry_after_s


# -- backoff ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Retry:
    """One schedule: ``linear`` adds ``step_s`` per attempt, ``exponential`` multiplies by ``factor``."""

    initial_s: float
    max_s: float
    mode: str = "exponential"
    step_s: float = 0.0
    factor: float = 2.0

    def strategy(self) -> wait_base:
        """This schedule as a tenacity wait strategy."""
        if self.mode == "linear":
            return backoff.linear(self.initial_s, self.step_s, self.max_s)
        return backoff.exponential(self.initial_s, self.max_s, self.factor)

    def delay(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (0-based), before jitter."""
        return backoff.wait_before(self.strategy(), attempt)


@dataclass(frozen=True)
class BackoffPolicy:
    """Per-kind schedules; the defaults are the X/Twitter streaming guidance, sane for every platform.

    network: linear +250 ms up to 16 s; http: exponential from 5 s doubling up to 320 s;
    rate_limit: exponential from 60 s.  ``max_wait_s`` clamps every wait (tests set it to seconds).
    """

    network: Retry = Retry(0.25, 16.0, mode="linear", step_s=0.25)
    http: Retry = Retry(5.0, 320.0)
    rate_limit: Retry = Retry(60.0, 960.0)
    jitter: float = 0.25  # each wait is drawn from [delay * (1 - jitter), delay]
    healthy_after_s: float = 30.0  # a connection this old resets every attempt counter
    max_wait_s: float | None = None

    def schedule(self, kind: str) -> Retry:
        return {"network": self.network, "http": self.http, "rate_limit": self.rate_limit}[kind]

    def wait_s(self, kind: str, attempt: int) -> float:
        return self.clamp(backoff.jittered_below(self.schedule(kind).delay(attempt), self.jitter))

    def clamp(self, seconds: float) -> float:
        seconds = max(0.0, seconds)
        return min(seconds, self.max_wait_s) if self.max_wait_s is not None else seconds


# -- bookkeeping helpers ----------------------------------------------------------------------------

class DedupWindow:
    """The last ``capacity`` keys seen; ``seen(key)`` is True for a repeat (and refreshes it)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    def seen(self, key: str) -> bool:
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._keys)


class RateBudget:
    """What the platform's rate-limit headers said: wait before the next request when it is spent.

    ``min_interval_s`` spaces requests even when the headers are generous (polling politely).
    """

    def __init__(self, min_interval_s: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.remaining: float | None = None
        self.reset_at: float | None = None  # epoch seconds
        self._last_request = 0.0

    def note(self, remaining: float | None, reset_at: float | None) -> None:
        self.remaining, self.reset_at = remaining, reset_at

    def seconds_until_allowed(self) -> float:
        now = self.clock()
        wait = max(0.0, self._last_request + self.min_interval_s - now)
        if self.remaining is not None and self.remaining < 1 and self.reset_at is not None:
            wait = max(wait, self.reset_at - now)
        return wait

    def mark_request(self) -> None:
        self._last_request = self.clock()
        if self.remaining is not None:
            self.remaining -= 1


@dataclass
class Item:
    """One decoded payload from fetch(), with the cursor that is safe once it is published."""

    payload: Any
    cursor: str | None = None


@dataclass
class BadPayload:
    """fetch() found bytes it could not decode; run() counts and logs it and goes on."""

    reason: str
    snippet: str = ""


@dataclass
class ConnectorStats:
    published: int = 0
    duplicates: int = 0
    skipped: int = 0  # to_post returned None (not a post, or no topic matched)
    bad_payloads: int = 0
    reconnects: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0


def decode_json(raw: bytes | str) -> Item | BadPayload:
    """Decode one JSON document into an Item, or a BadPayload saying why not."""
    try:
        return Item(json.loads(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return BadPayload(f"not valid JSON: {exc}", text[:200])


# -- the connector ----------------------------------------------------------------------------------

class Connector(ABC):
    """Life cycle, backoff, rate limits, de-duplication and cursor of one source; see module docstring."""

    platform: ClassVar[str]
    #: True: fetch() is one poll and returns; run() waits ``poll_interval_s`` between polls.
    polling: ClassVar[bool] = False
    #: Exceptions from the transport that mean "network problem": retried on the network schedule.
    network_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError, EOFError)

    def __init__(
        self,
        publisher: PostPublisher,
        cursor_store: CursorStore,
        topics: TopicsConfig,
        *,
        source: str | None = None,
        backoff: BackoffPolicy | None = None,
        poll_interval_s: float = 30.0,
        dedup_capacity: int = 100_000,
        checkpoint_every: int = 500,
        checkpoint_interval_s: float = 5.0,
    ) -> None:
        self.publisher = publisher
        self.cursor_store = cursor_store
        self.topics = topics
        self.source = source or self.platform
        self.backoff = backoff or BackoffPolicy()
        self.poll_interval_s = poll_interval_s
        self.dedup = DedupWindow(dedup_capacity)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self.stats = ConnectorStats()
        self._stop = threading.Event()
        self._cursor: str | None = None
        self._saved_cursor: str | None = None
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._attempts: dict[str, int] = {}
        self._prepared = False

    # -- what a platform implements ---------------------------------------------------------------

    @abstractmethod
    def fetch(self, cursor: str | None) -> Iterator[Item | BadPayload | None]:
        """Connect (or poll once) and yield payloads (None = keep-alive); raise SourceError/network errors."""

    @abstractmethod
    def to_post(self, payload: Any) -> Post | None:
        """Map one payload to a Post, or None when it is not a post we want (may raise on bad shapes)."""

    def interrupt(self) -> None:  # noqa: B027 - optional hook
        """Unblock a fetch() waiting on the network (close the socket); called from stop()."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """One-time set-up before the first fetch (e.g. sync stream rules); may raise SourceError."""

    # -- life cycle --------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def cursor(self) -> str | None:
        return self._cursor

    def stop(self) -> None:
        """Ask run() to return after a final checkpoint; safe from signal handlers and other threads."""
        self._stop.set()
        try:
            self.interrupt()
        except Exception:  # noqa: BLE001 - best effort; run() also notices the flag
            log.debug("interrupt failed", exc_info=True)

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` (clamped by the policy) unless stopped first; True when stopped."""
        return self._stop.wait(self.backoff.clamp(seconds))

    def run(self) -> ConnectorStats:
        """Ingest until stop(); returns the stats.  Raises AuthError/ConfigError (fatal) after a checkpoint."""
        self._cursor = self._saved_cursor = self.cursor_store.load(self.source)
        log.info("%s: starting (cursor %s)", self.source, self._cursor or "none")
        # tenacity drives the reconnects: retry on _Reconnect, waits from the per-kind schedules, and
        # the sleep is the stop event's wait, so stop() cuts it short.  A clean return (poll done, an
        # established stream ended) ends one call; the loop starts the next.
        retrying = Retrying(retry=retry_if_exception_type(_Reconnect), wait=self._reconnect_delay,
                            stop=stop_never, sleep=self._stop.wait, before_sleep=self._log_reconnect,
                            reraise=True)
        try:
            while not self.stopping:
                retrying(self._run_once)
        finally:
            self.checkpoint()
            log.info("%s: stopped; %s", self.source, self.stats)
        return self.stats

    def _run_once(self) -> None:
        """One connection (or poll): returns when it ended normally, raises _Reconnect to back off first."""
        if self.stopping:
            return
        started = time.monotonic()
        healthy = False
        kind: str | None = None
        retry_after: float | None = None
        try:
            if not self._prepared:  # inside the retry loop: a 503 while syncing rules is retried too
                self.prepare()
                self._prepared = True
            for entry in self.fetch(self._cursor):
                if not healthy and time.monotonic() - started >= self.backoff.healthy_after_s:
                    healthy = True
                    self._attempts.clear()
                self._handle(entry)
                if self.stopping:
                    break
        except (AuthError, ConfigError):
            raise
        except RateLimitedError as exc:
            kind, retry_after = "rate_limit", exc.retry_after_s
            log.warning("%s: %s", self.source, exc)
        except TransientError as exc:
            kind = exc.kind
            log.warning("%s: %s", self.source, exc)
        except self.network_errors as exc:
            kind = "network"
            if not self.stopping:
                log.warning("%s: connection lost (%s: %s)", self.source, type(exc).__name__, exc)
        except Exception:
            if not self.stopping:
                raise
            log.debug("%s: error while stopping", self.source, exc_info=True)  # a cut socket, mid-read
        self.checkpoint()
        if self.stopping:
            return
        if kind is None:
            if self.polling:
                self._attempts.clear()
                self.wait(self.poll_interval_s)
            elif time.monotonic() - started < self.backoff.healthy_after_s and not healthy:
                kind = "network"  # a stream that ends at once again and again must not spin
            else:
                self._attempts.clear()  # an established stream ended: reconnect at once (platform advice)
                return
        if kind is None:
            return
        if healthy:
            self._attempts.clear()
        raise _Reconnect(kind, retry_after)

    def _reconnect_delay(self, state: RetryCallState) -> float:
        """tenacity's wait: the kind's own attempt counter picks the step of the kind's schedule (a 429
        after three network errors still waits the first rate-limit step), or the platform's reset."""
        reconnect = state.outcome.exception() if state.outcome else None
        assert isinstance(reconnect, _Reconnect)
        kind = reconnect.kind
        attempt = self._attempts.get(kind, 0)
        self._attempts[kind] = attempt + 1
        self.stats.reconnects[kind] = self.stats.reconnects.get(kind, 0) + 1
        RECONNECTS.labels(self.source, kind).inc()
        if reconnect.retry_after_s is not None:
            return self.backoff.clamp(reconnect.retry_after_s)
        return self.backoff.wait_s(kind, attempt)

    def _log_reconnect(self, state: RetryCallState) -> None:
        reconnect = state.outcome.exception() if state.outcome else None
        kind = reconnect.kind if isinstance(reconnect, _Reconnect) else "?"
        delay = state.next_action.sleep if state.next_action else 0.0
        log.info("%s: retrying in %.1fs (%s, attempt %d)", self.source, delay, kind, self._attempts.get(kind, 0))

    def _handle(self, entry: Item | BadPayload | None) -> None:
        if entry is None:
            self._maybe_checkpoint()
            return
        if isinstance(entry, BadPayload):
            self._bad(entry.reason, entry.snippet)
            return
        try:
            post = self.to_post(entry.payload)
        except (PostDecodeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            self._bad(f"{type(exc).__name__}: {exc}", repr(entry.payload)[:200])
            post = None
        else:
            if post is None:
                self.stats.skipped += 1
        if post is not None:
            if self.dedup.seen(post.key):
                self.stats.duplicates += 1
                POSTS_DUPLICATE.labels(self.source).inc()
            else:
                self.publisher.publish(post)
                self.stats.published += 1
                self._since_checkpoint += 1
                POSTS_PUBLISHED.labels(self.source).inc()
        if entry.cursor is not None:
            self._cursor = self.merge_cursor(self._cursor, entry.cursor)
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        if (self._since_checkpoint >= self.checkpoint_every
                or time.monotonic() - self._last_checkpoint >= self.checkpoint_interval_s):
            self.checkpoint()

    def _bad(self, reason: str, snippet: str) -> None:
        self.stats.bad_payloads += 1
        PAYLOADS_BAD.labels(self.source).inc()
        log.warning("%s: payload dropped (%s): %s", self.source, reason, snippet)

    def merge_cursor(self, current: str | None, new: str) -> str:
        """The cursor after ``new``; platforms with ordered ids keep the maximum (see twitter/mastodon)."""
        return new

    def checkpoint(self) -> None:
        """Flush the publisher, then persist the cursor (this order is the no-gap guarantee)."""
        self.publisher.flush()
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        if self._cursor is not None and self._cursor != self._saved_cursor:
            try:
                self.cursor_store.save(self.source, self._cursor)
            except CursorStoreError as exc:  # posts are safe in Kafka; only a restart could repeat some
                log.warning("%s: %s; will retry at the next checkpoint", self.source, exc)
                return
            self._saved_cursor = self._cursor
            self.stats.checkpoints += 1
