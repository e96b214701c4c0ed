"""Collapse log storms: a record repeated within an interval is counted, not printed.

Why: with the broker down, aiokafka's and kafka-python's reconnect loops log the same ERROR many times
a second (1,953 lines, 258 KB in 25 s in issue #16), which buries the one line that says what is wrong
and fills disks.  The filter lets the first record of each kind through, swallows its repeats for
``interval_s``, and appends "[N similar lines suppressed in the last Ns]" to the next one it lets
through, so the count is never lost and a lasting fault still shows one line per interval.

"The same kind" is (logger, level, message template): the template, not the formatted text, because
reconnect messages differ only in their arguments (node id, errno, backoff).  Install it on handlers
(``install``), not on loggers: a logger's filters do not see records of its child loggers
(``aiokafka.conn``, ``kafka.net.manager``), a handler's filters see everything it prints.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# The Kafka clients' reconnect loops, and mode's "Timer ... is overlapping" warning, which repeats every
# interval while a timer waits on a broker that is gone.
NOISY_CLIENT_LOGGERS = ("aiokafka", "kafka", "mode.timers")
DEFAULT_INTERVAL_S = 30.0
MAX_KINDS = 2_000  # distinct kinds remembered; beyond this the oldest windows are forgotten


@dataclass
class _Window:
    started: float
    suppressed: int = 0


class RepeatedLogThrottle(logging.Filter):
    """Let one record per (logger, level, template) through per ``interval_s``; count the rest."""

    def __init__(self, prefixes: Iterable[str] = NOISY_CLIENT_LOGGERS, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self.suppressed_total = 0

    def _applies(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._applies(record.name):
            return True
        decided = getattr(record, "_throttle_decision", None)
        if decided is not None:  # the same record reaching a second handler
            return bool(decided)
        record._throttle_decision = self._decide(record)
        return record._throttle_decision

    def _decide(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.started < self.interval_s:
                window.suppressed += 1
                self.suppressed_total += 1
                return False
            if len(self._windows) >= MAX_KINDS:
                oldest = min(self._windows, key=lambda k: self._windows[k].started)
                del self._windows[oldest]
            self._windows[key] = _Window(now)
        if window is not None and window.suppressed:
            elapsed = now - window.started
            suffix = f" [{window.suppressed} similar lines suppressed in the last {elapsed:.0f}s]"
            if isinstance(record.msg, str):
                record.msg = record.msg + suffix  # the suffix has no '%': safe with or without args
            else:
                record.msg = f"{record.getMessage()}{suffix}"
                record.args = None
        return True


def install(handlers: Iterable[logging.Handler], throttle: RepeatedLogThrottle | None = None) -> RepeatedLogThrottle:
    """Add one shared throttle to each handler (the CLI passes the root logger's handlers)."""
    throttle = throttle or RepeatedLogThrottle()
    for handler in handlers:
        if throttle not in handler.filters:
            handler.addFilter(throttle)
    return throttle
