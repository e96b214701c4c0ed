"""Backoff schedules as tenacity wait strategies, asked for the wait before retry number N.

Why not a plain ``tenacity.Retrying`` loop everywhere: a connector's life cycle is not one call to retry.
It keeps separate attempt counters per kind of failure (network, HTTP, rate limit: the platforms prescribe
different schedules), resets them once a connection has been healthy, and must cut a wait short on
``stop()``; the Kafka publisher paces resends of many posts at once.  Those loops own their counters and
ask tenacity's strategies (linear ``wait_incrementing``, ``wait_exponential``) for the delay, so the
schedule arithmetic (growth, caps, overflow) is tenacity's, not ours.
"""

from __future__ import annotations

import random

from tenacity import RetryCallState, Retrying
from tenacity.wait import wait_base, wait_exponential, wait_incrementing

_NO_RETRYING = Retrying()


def wait_before(strategy: wait_base, attempt: int) -> float:
    """The wait ``strategy`` prescribes before retry number ``attempt`` (0-based: the first retry is 0)."""
    state = RetryCallState(retry_object=_NO_RETRYING, fn=None, args=(), kwargs={})
    state.attempt_number = attempt + 1
    return float(strategy(state))


def linear(initial_s: float, step_s: float, max_s: float) -> wait_base:
    """``initial_s``, then ``step_s`` more per attempt, capped at ``max_s``."""
    return wait_incrementing(start=initial_s, increment=step_s, max=max_s)


def exponential(initial_s: float, max_s: float, factor: float = 2.0) -> wait_base:
    """``initial_s``, multiplied by ``factor`` per attempt, capped at ``max_s``."""
    return wait_exponential(multiplier=initial_s, exp_base=factor, max=max_s)


def jittered_below(delay: float, jitter: float) -> float:
    """A wait drawn from ``[delay * (1 - jitter), delay]``: clients dropped together return spread out,
    and never later than the schedule says."""
    return random.uniform(delay * (1.0 - jitter), delay)
