"""Adaptive micro-batches from a Faust stream: whatever is waiting, as soon as the model is free.

Faust's ``noack_take(n, within)`` waits up to ``within`` for a batch to fill, so a lone post on an idle
stream always waited the whole 200 ms, and it stops buffering while the agent works on a batch, so under
load the next batch was gathered only after the model had finished the previous one.

``adaptive_take`` instead:

* keeps buffering while a batch is being processed (up to the size bound), so when the model is free the
  next batch is already there;
* on an idle stream hands over the first post at once, after letting the event loop deliver what is
  already fetched behind it: it gathers while each loop turn still brings more, and stops at the first
  turn that brings nothing (or after ``max_gather_s``, or at the size bound);
* reads its size bound per batch (a callable), so overload mode can widen batches.

Like ``noack_take`` it never acks: the agent acks a batch's events only after they are durable.  Events
buffered but not yet handed over are simply not acked; a restart or rebalance redelivers them.  It uses
the same stream hooks ``noack_take`` uses (processors and the passive drainer), which is why it lives next
to the agent and not in a library.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

IDLE_CHECK_S = 1.0
"""How often an idle wait wakes up to notice that the stream is stopping."""


async def adaptive_take(stream: Any, max_size: Callable[[], int], max_gather_s: float
                        ) -> AsyncIterator[list[Any]]:
    """Yield lists of Faust events (not acked) from ``stream``; see the module docstring."""
    pending: list[Any] = []  # events buffered, not yet handed over
    arrived = asyncio.Event()  # set on every arrival
    room = asyncio.Event()  # set whenever pending has room again
    room.set()
    stream_enable_acks = stream.enable_acks

    async def add_to_buffer(value: Any) -> Any:
        event = stream.current_event
        if event is None:
            raise RuntimeError("adaptive_take: the stream has no current event")
        pending.append(event)
        arrived.set()
        # Backpressure: while a full batch waits, Faust's own queues (and flow control) hold the rest.
        while len(pending) >= max(1, max_size()) and not stream.should_stop:
            room.clear()
            await stream.wait_for_stopped(room, timeout=IDLE_CHECK_S)
        return value

    stream.enable_acks = False  # the agent acks after the batch is durable
    stream.add_processor(add_to_buffer)
    stream._enable_passive(stream.channel.__aiter__())  # noqa: SLF001 - the hook noack_take uses
    try:
        while not stream.should_stop:
            if not pending:
                arrived.clear()
                await stream.wait_for_stopped(arrived, timeout=IDLE_CHECK_S)
                if not pending:
                    continue
            await _gather(pending, max(1, max_size()), max_gather_s)
            limit = max(1, max_size())
            batch = pending[:limit]
            del pending[:limit]
            room.set()
            yield batch
    finally:
        stream.enable_acks = stream_enable_acks
        stream._processors.remove(add_to_buffer)  # noqa: SLF001 - undo what we added


async def _gather(pending: list[Any], limit: int, max_gather_s: float) -> None:
    """Let the loop deliver what is already fetched: stop at the first turn that adds nothing."""
    deadline = time.monotonic() + max_gather_s
    quiet_turns = 0
    while len(pending) < limit and time.monotonic() < deadline:
        before = len(pending)
        await asyncio.sleep(0)
        if len(pending) == before:
            quiet_turns += 1
            if quiet_turns >= QUIET_TURNS:
                return
        else:
            quiet_turns = 0


QUIET_TURNS = 3
"""Loop turns in a row without an arrival that end gathering: one turn can pass while the drainer is
between two awaits of its own, three rarely do; each turn costs microseconds."""
