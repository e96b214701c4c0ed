"""JSONL replay: feed recorded posts back into the pipeline, for demos, load tests and backfills.

Each line is one normalized :class:`~connectors.post.Post` as JSON.  A bad line (not a post, or one too
large for a Kafka record) never stops the run, because a backfill of a million lines should not die on
line 700 000, and it is not lost either: it goes to a rejects file, one JSON object per bad line with its
line number, the reason and the line itself (``{"line": 7, "reason": "...", "raw": "..."}``), so it
can be fixed and replayed.  Rejects are kept on the replaying side rather than sent to the worker's
dead-letter topic because a line that is not a post has no post key to partition by, and the publisher
only carries posts.  Pacing is optional and composable:

* ``rate`` — at most N posts per second (a load test at a known throughput);
* ``speedup`` — keep the original gaps between ``created_at`` timestamps, divided by X (a realistic,
  bursty load; ``speedup=60`` plays an hour in a minute).  Timestamps going backwards do not wait.

``shift_to_now`` re-stamps every post by one offset so the file's newest post is now (whole minutes, so
minute windows keep their boundaries): a demo or test of last March's data then looks live, and its
alerts are delivered instead of being stored as historical (``SENTISTREAM_ALERT_HISTORICAL_AFTER_S``).
Without it a replay keeps its timestamps, and alerts about old windows never page anyone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from connectors.post import Post, PostDecodeError
from connectors.publisher import PostPublisher

log = logging.getLogger(__name__)

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min|h))?\s*$")
_PER = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
# kafka-python refuses a request over max_request_size (1 MiB by default), record overhead included; a
# post over this is rejected here with the reason instead of being retried by the publisher forever.
MAX_RECORD_BYTES = 1_000_000

Reject = Callable[[int, bytes | str, str], None]


@dataclass
class ReplayReport:
    """What a replay did: posts handed to the publisher, and the lines it skipped with why."""

    sent: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)
    stopped_early: bool = False
    rejects_path: Path | None = None  # where the skipped lines were written, when there were any


class RejectsFile:
    """Bad lines of a replay, one JSON object each: line number, reason and the line as text.

    The file is truncated when opened (so it never describes an older run) and removed on close if
    the run had no bad line, so it exists exactly when there is something to fix.  Undecodable bytes
    are kept as backslash escapes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._handle: IO[str] | None = None

    def __enter__(self) -> RejectsFile:
        self._handle = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
        return self

    def __call__(self, line_no: int, line: bytes | str, reason: str) -> None:
        if self._handle is None:
            raise ValueError("rejects file is not open")
        raw = line.decode("utf-8", "backslashreplace") if isinstance(line, bytes) else line
        self._handle.write(json.dumps({"line": line_no, "reason": reason, "raw": raw.rstrip("\r\n")}) + "\n")
        self._handle.flush()
        self.count += 1

    def __exit__(self, *exc: object) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()
            if self.count == 0:
                self.path.unlink(missing_ok=True)


def default_rejects_path(path: Path) -> Path:
    """``posts.jsonl`` -> ``posts.jsonl.rejects``: beside the input, named after it."""
    return path.with_name(path.name + ".rejects")


def parse_rate(spec: str | float | None) -> float | None:
    """'100/s' -> 100.0, '600/m' -> 10.0, '25' -> 25.0; None stays None (no limit)."""
    if spec is None or isinstance(spec, int | float):
        return None if spec is None else _positive(float(spec), "rate")
    match = _RATE.match(spec)
    if not match:
        raise ValueError(f"rate {spec!r} must look like 100/s, 600/m or 25")
    return _positive(float(match.group(1)) / _PER[match.group(2)], "rate")


def _positive(value: float, name: str) -> float:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def read_posts(lines: Iterable[bytes | str], report: ReplayReport, reject: Reject | None = None,
               max_record_bytes: int = MAX_RECORD_BYTES) -> Iterator[Post]:
    """Decode JSONL lines; a bad one (bad UTF-8, too large included) goes to ``report.invalid`` as
    (line no, reason) and, with ``reject``, is handed to it with the line itself."""
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        reason = _decode_failure(line, max_record_bytes)
        if isinstance(reason, Post):
            yield reason
            continue
        report.invalid.append((line_no, reason))
        log.warning("line %d skipped: %s", line_no, reason)
        if reject is not None:
            reject(line_no, line, reason)


def _decode_failure(line: bytes | str, max_record_bytes: int) -> Post | str:
    """The post on this line, or why there is none."""
    if len(line) > max_record_bytes:
        return f"line of {len(line)} bytes is over the {max_record_bytes}-byte Kafka record limit"
    try:
        post = Post.from_json(line)
    except PostDecodeError as exc:
        return exc.reason
    except (RecursionError, OverflowError, ValueError, TypeError) as exc:  # hostile JSON: deep nesting, huge numbers
        return f"cannot decode: {type(exc).__name__}: {exc}"
    size = len(post.to_json())
    if size > max_record_bytes:
        return f"post encodes to {size} bytes, over the {max_record_bytes}-byte Kafka record limit"
    return post


class Pacer:
    """Computes when each post may go out; the clock and sleep are injectable so tests run fast."""

    def __init__(self, rate: float | None, speedup: float | None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.speedup = _positive(speedup, "speedup") if speedup else None
        self.clock = clock
        self.sleep = sleep
        self._start: float | None = None
        self._first_ts: float | None = None
        self._last_due = 0.0
        self._count = 0

    def wait(self, post: Post, stop: threading.Event | None = None) -> None:
        now = self.clock()
        if self._start is None:
            self._start = now
            self._first_ts = post.created_at.timestamp()
        # The rate is a minimum gap between two sends; the speedup schedule is anchored at the first post.
        due = self._last_due + self.interval if self._count else self._start
        if self.speedup and self._first_ts is not None:
            due = max(due, self._start + (post.created_at.timestamp() - self._first_ts) / self.speedup)
        self._last_due = max(due, now)  # after a stall, no burst to catch up with the rate
        self._count += 1
        delay = due - now
        if delay > 0:
            if stop is not None:
                stop.wait(delay)
            else:
                self.sleep(delay)


def shift_to_now(path: str | Path, now: datetime | None = None,
                 max_record_bytes: int = MAX_RECORD_BYTES) -> timedelta:
    """The offset that moves the file's newest valid post to ``now``, in whole minutes (never later than now).

    A first pass over the file: the replay itself is the second, so the file is read twice (bad lines
    are reported once, by the replay)."""
    now = now or datetime.now(UTC)
    newest: datetime | None = None
    with open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            post = _decode_failure(line, max_record_bytes)
            if isinstance(post, Post) and (newest is None or post.created_at > newest):
                newest = post.created_at
    if newest is None:
        return timedelta(0)
    return timedelta(minutes=(now - newest) // timedelta(minutes=1))


def _shifted(posts: Iterable[Post], shift: timedelta) -> Iterator[Post]:
    for post in posts:
        try:
            yield replace(post, created_at=post.created_at + shift)
        except OverflowError:  # a shift past year 1 or 9999: keep the post's own time rather than lose it
            log.warning("post %s/%s cannot be shifted by %s; replayed with its own time", post.platform,
                        post.post_id, shift)
            yield post


def replay_posts(posts: Iterable[Post], publisher: PostPublisher, *, rate: float | str | None = None,
                 speedup: float | None = None, topic: str | None = None,
                 stop: threading.Event | None = None, report: ReplayReport | None = None,
                 pacer: Pacer | None = None) -> ReplayReport:
    """Publish posts with optional pacing, then flush; ``topic`` overrides each post's topic."""
    report = report if report is not None else ReplayReport()
    pacer = pacer or Pacer(parse_rate(rate), speedup)
    for post in posts:
        if stop is not None and stop.is_set():
            report.stopped_early = True
            break
        pacer.wait(post, stop)
        if stop is not None and stop.is_set():
            report.stopped_early = True
            break
        publisher.publish(replace(post, topic=topic) if topic else post)
        report.sent += 1
    publisher.flush()
    return report


def replay_file(path: str | Path, publisher: PostPublisher, rate: float | str | None = None,
                speedup: float | None = None, *, topic: str | None = None,
                stop: threading.Event | None = None, pacer: Pacer | None = None,
                rejects: str | Path | None = None, shift: timedelta | None = None) -> ReplayReport:
    """Replay a JSONL file of posts into ``publisher``; returns how many were sent and which lines failed.

    With ``rejects``, bad lines are also written there (see :class:`RejectsFile`).  ``shift`` is added
    to every post's ``created_at`` (see :func:`shift_to_now`).  The publisher is flushed before
    returning, so ``sent`` posts are durable in Kafka when this returns.
    """
    report = ReplayReport()
    with open(path, "rb") as handle, (RejectsFile(Path(rejects)) if rejects else contextlib.nullcontext()) as reject:
        posts = read_posts(handle, report, reject)
        replay_posts(_shifted(posts, shift) if shift else posts, publisher, rate=rate, speedup=speedup,
                     topic=topic, stop=stop, report=report, pacer=pacer)
    if rejects and report.invalid:
        report.rejects_path = Path(rejects)
    log.info("replayed %s: %d sent, %d invalid lines", path, report.sent, len(report.invalid))
    return report
