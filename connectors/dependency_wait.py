"""Patient start-up: wait for a dependency (broker, database) with capped backoff and one clear line a try.

Why: under a restart policy (compose, systemd, Kubernetes) the broker or the database is often still
starting when a sentistream process starts.  Exiting with a traceback after a fixed 30 s turns that into a
crash loop with pages of noise; waiting with "cannot reach broker at HOST:PORT (reason), retrying in Ns"
is what an operator can act on.  The waits grow to a cap so a long outage costs one line per cap period.

Lives in ``connectors`` because both packages use it and ``connectors`` never imports ``stream``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    wait_exponential,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_WAIT_S = 0.5


class DependencyUnreachableError(RuntimeError):
    """A dependency stayed unreachable for the whole start-up wait."""


def describe_error(exc: BaseException) -> str:
    """First line of an exception, with its type when the message is empty (for one-line logs)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


def wait_until_reachable(
    what: str,
    where: str,
    attempt: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...],
    wait_s: float = 0.0,
    backoff_cap_s: float = 15.0,
    on_waiting: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Call ``attempt`` until it returns, retrying on ``retry_on`` errors with exponential backoff capped
    at ``backoff_cap_s``; ``wait_s`` 0 waits forever, else :class:`DependencyUnreachableError` after it.

    ``on_waiting`` receives each status line too (the worker shows it on its start-up ``/health``).
    """

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        reason = describe_error(exc) if exc else "no answer"
        line = f"cannot reach {what} at {where} ({reason}), retrying in {delay:.{0 if delay >= 1 else 1}f}s"
        log.warning("%s", line)
        if on_waiting is not None:
            on_waiting(line)

    kwargs = {"sleep": sleep} if sleep is not None else {}
    retrying = Retrying(
        retry=retry_if_exception_type(retry_on),
        wait=wait_exponential(multiplier=FIRST_WAIT_S, min=FIRST_WAIT_S, max=backoff_cap_s),
        stop=stop_after_delay(wait_s) if wait_s > 0 else stop_never,
        before_sleep=before_sleep,
        reraise=False,
        **kwargs,
    )
    try:
        result = retrying(attempt)
    except RetryError as exc:  # the wait is over; errors outside ``retry_on`` propagate unchanged
        cause = exc.last_attempt.exception() or exc
        raise DependencyUnreachableError(
            f"cannot reach {what} at {where} ({describe_error(cause)}); gave up after {wait_s:.0f}s "
            f"(SENTISTREAM_STARTUP_WAIT_S; 0 waits forever)") from cause
    return result
