"""Giving a batch back: when a worker stops, or its group rebalances, while the database is down.

The agent acks a batch only once it is durable in PostgreSQL, and waits out a database outage by retrying.
Faust, for its part, waits before a rebalance (and before shutting down) until every message a stream has
taken is acked (``Consumer.wait_empty``).  Together that blocks: a worker holding an unwritable batch
never finishes its revocation, so with two workers in a group, a database outage plus one worker leaving
stalled the whole group for as long as the outage lasted, and the leaving worker never exited (#10 item 6).

So the retry loop gives up as soon as the worker is stopping or a rebalance is waiting on it (Faust
suspends flow control from the start of a revocation until the new assignment is in place), and the agent
then releases the batch's messages from Faust's in-flight set **without acking them**.  Their offsets are
not committed; after the rebalance the partitions' new owners (this worker included) start again from the
committed offsets, so the batch is redelivered and written once the database is back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def batch_must_yield(app: Any) -> bool:
    """True while the worker is stopping or a rebalance waits for in-flight batches to finish."""
    if app.should_stop:
        return True
    flow_control = getattr(app, "flow_control", None)
    return flow_control is not None and not flow_control.is_active()


def release_unacked(consumer: Any, events: Iterable[Any]) -> int:
    """Drop the events' messages from Faust's in-flight set without acking them; returns how many.

    ``wait_empty`` then no longer waits for them, and since they are not acked their offsets are never
    committed: the batch is read again from the committed offset after the rebalance or restart.
    """
    unacked = getattr(consumer, "_unacked_messages", None)
    if unacked is None:
        return 0
    released = 0
    for event in events:
        message = event.message
        if not message.acked and message in unacked:
            unacked.discard(message)
            released += 1
    return released
