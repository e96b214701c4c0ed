"""Broker epochs: notice a broker whose log restarted under the worker and re-read the new log.

A broker can lose its log and keep its address: the embedded Tansu broker keeps data in memory only, so
when it restarts (or a Kafka cluster is rebuilt) every partition starts again at offset 0 while the worker
still holds its fetch positions in the old log.  Tansu then answers a fetch beyond the log end with an
empty record set and no ``OFFSET_OUT_OF_RANGE``, so the consumer would wait silently until the new log
grows past the old position and skip every post before it (issue #16: 934 of 4,000 acknowledged posts).
A rebalance does not always save us either: an old-generation commit that reaches the new broker makes
``seek_to_committed`` land beyond the new log's end just the same.

Policy (documented in the README, "Embedded services"): a partition whose fetch position is beyond the log
end the broker reports (the high-water mark of its last fetch response, which Tansu reports correctly,
unlike ListOffsets) belongs to an older epoch of the broker.  Its position, committed offset and Faust's
ack bookkeeping are dropped and it is re-read **from the start of the new log**.  The new broker's
committed offset is not trusted for such a partition, because it may be exactly the stale commit that put
the position there.  Re-reading is harmless: every write is an upsert keyed by the post.

The check runs every ``epoch_check_interval_s`` seconds, so a new log that outgrows the old position
within one interval is not caught by it (a rebalance after the restart usually catches that case: the new
broker has no committed offsets and the group starts from the earliest offset).  Messages fetched from the
old log but not yet processed when the reset happens are still written; their acks are harmless unless
the new log has reached the same offsets, which the interval keeps unlikely.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from faust.types import TP

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StalePosition:
    """A partition whose fetch position lies beyond the log end of the broker it now talks to."""

    tp: TP
    position: int
    log_end: int


async def find_stale_positions(consumer: object, partitions: Iterable[TP],
                               timeout_s: float = 5.0) -> list[StalePosition]:
    """Partitions whose consumer position is beyond the high-water mark of their last fetch."""
    stale: list[StalePosition] = []
    for tp in partitions:
        try:
            log_end = consumer.highwater(tp)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - not fetched yet: nothing to compare
            continue
        if log_end is None:
            continue
        try:
            position = await asyncio.wait_for(consumer.position(tp), timeout_s)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - position being reset or broker unreachable: next round
            continue
        if position is not None and int(position) > int(log_end):
            stale.append(StalePosition(tp, int(position), int(log_end)))
    return stale


def forget_partition_progress(consumer: object, tp: TP) -> None:
    """Drop Faust's read/ack/commit bookkeeping for ``tp`` so offsets of the new log count again.

    Faust drops fetched messages below its read offset and ignores acks below its committed offset; both
    still hold values from the old log.
    """
    for name in ("_read_offset", "_committed_offset"):
        table = getattr(consumer, name, None)
        if table is not None:
            table.pop(tp, None)
    for name in ("_acked", "_acked_index", "_gap"):
        table = getattr(consumer, name, None)
        if table is not None:
            table.pop(tp, None)


async def reset_stale_partitions(consumer: object, partitions: Iterable[TP]) -> list[StalePosition]:
    """Re-read, from the start of the new log, every partition left beyond its log end by a broker restart."""
    stale = await find_stale_positions(consumer, partitions)
    if not stale:
        return []
    tps = [s.tp for s in stale]
    try:
        earliest = await consumer.earliest_offsets(*tps)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - the broker may be restarting again: retry next round
        log.warning("broker epoch changed for %d partition(s) but their log start is unknown yet; retrying",
                    len(tps))
        return []
    for s in stale:
        forget_partition_progress(consumer, s.tp)
    start = {tp: int(earliest.get(tp) or 0) for tp in tps}
    await consumer.seek_wait(start)  # type: ignore[attr-defined]
    for s in stale:
        log.warning("broker epoch changed on %s[%d]: position %d is beyond the log end %d (the broker "
                    "restarted with a new log); re-reading from offset %d", s.tp.topic, s.tp.partition,
                    s.position, s.log_end, start[s.tp])
    return stale
