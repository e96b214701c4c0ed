"""Broker epochs: notice a broker that restarted with a new log under the worker, and re-read the new log.

A broker can lose its log and keep its address: the embedded Tansu broker keeps data in memory only, so
when it restarts (or a Kafka cluster is rebuilt) every partition starts again at offset 0 while the worker
still holds fetch positions, and the group may hold committed offsets, from the old log.  Tansu answers a
fetch beyond the log end with an empty record set and no ``OFFSET_OUT_OF_RANGE``, so the consumer waited
silently until the new log grew past the old position and skipped every post before it (issue #16: 934 of
4,000 acknowledged posts).  A rebalance does not save it: an ack of the old generation still in flight at
the restart commits an old offset to the new broker, and the rebalance then seeks to it.

Policy (README, "Embedded services"): on a new broker epoch every partition the worker is assigned is
re-read **from the start of the new log**; neither the old positions nor the new broker's committed
offsets are trusted, since either may come from the old log.  Re-reading is harmless: every write is an
upsert keyed by the post.  A new epoch is recognised two ways, checked every ``epoch_check_interval_s``:

* the broker's cluster id changed (the embedded broker gets a fresh id at every start, so this catches a
  restart even when the new log has already outgrown the old positions); for ``EPOCH_GRACE_S`` after the
  change, the partitions assigned to this worker are rewound again after every rebalance, because a
  rebalance in that time can seek to a commit of the old generation again (rebalances are counted by
  Faust's ``rebalancing_count``, not by generation id: a restarted Tansu numbers generations from the
  start again, so old and new generation ids can be equal);
* a partition's fetch position is beyond the log end the broker reports (the high-water mark of its last
  fetch response, which Tansu reports correctly, unlike ListOffsets): for brokers whose cluster id is
  fixed.  This one only fires while the new log is still shorter than the old position.

Known gap: messages fetched from the old log but still waiting in Faust's stream buffer when the rewind
happens are processed and acked afterwards; such an ack can only move a commit past an unprocessed offset
of the new log if the new log has meanwhile reached that offset and everything below it was acked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP

log = logging.getLogger(__name__)

EPOCH_GRACE_S = 60.0  # after a cluster-id change, a rebalance re-reads its partitions from the start again


@dataclass(frozen=True, slots=True)
class StalePosition:
    """A partition whose fetch position lies beyond the log end of the broker it now talks to."""

    tp: TP
    position: int
    log_end: int


async def find_stale_positions(consumer: Any, partitions: Iterable[TP],
                               timeout_s: float = 5.0) -> list[StalePosition]:
    """Partitions whose consumer position is beyond the high-water mark of their last fetch.

    The position is read first and the high-water mark after it: within one broker epoch the high-water
    mark only grows and a position never passes the mark of the fetch that moved it, so reading them in
    this order cannot report a healthy partition whose records arrived between the two reads.
    """
    tps = list(partitions)

    async def position(tp: TP) -> int | None:
        try:
            value = await asyncio.wait_for(consumer.position(tp), timeout_s)
        except Exception:  # noqa: BLE001 - position being reset or broker unreachable: next round
            return None
        return None if value is None else int(value)

    positions = await asyncio.gather(*(position(tp) for tp in tps))
    stale: list[StalePosition] = []
    for tp, pos in zip(tps, positions, strict=True):
        if pos is None:
            continue
        try:
            log_end = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not assigned any more: nothing to compare
            continue
        if log_end is not None and pos > int(log_end):
            stale.append(StalePosition(tp, pos, int(log_end)))
    return stale


def forget_partition_progress(consumer: Any, tp: TP) -> None:
    """Drop Faust's read/ack/commit bookkeeping for ``tp`` so offsets of the new log count again.

    Faust drops fetched messages below its read offset and ignores acks below its committed offset; both
    still hold values from the old log.
    """
    for name in ("_read_offset", "_committed_offset", "_acked", "_acked_index", "_gap"):
        table = getattr(consumer, name, None)
        if table is not None:
            table.pop(tp, None)


async def rewind_to_log_start(consumer: Any, tps: list[TP]) -> dict[TP, int] | None:
    """Seek ``tps`` to the first offset of their log; None when the broker cannot say yet."""
    if not tps:
        return {}
    try:
        earliest = await consumer.earliest_offsets(*tps)
    except Exception:  # noqa: BLE001 - the broker may be restarting again: retry next round
        return None
    for tp in tps:
        forget_partition_progress(consumer, tp)
    start = {tp: int(earliest.get(tp) or 0) for tp in tps}
    await consumer.seek_wait(start)
    return start


def kafka_cluster_id(bootstrap_servers: str) -> Callable[[], str | None]:
    """A blocking probe of the broker's cluster id (kafka-python admin; aiokafka does not expose it)."""
    from kafka.admin import KafkaAdminClient

    client: list[Any] = []

    def probe() -> str | None:
        try:
            if not client:
                client.append(KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","),
                                               client_id="sentistream-epoch-watch", request_timeout_ms=5000))
            return str(client[0].describe_cluster()["cluster_id"])
        except Exception:  # noqa: BLE001 - broker unreachable: no opinion this round, a fresh client next
            while client:
                try:
                    client.pop().close()
                except Exception:  # noqa: BLE001
                    pass
            return None

    return probe


def _rebalancing(app: Any) -> bool:
    """Stopping, or inside a rebalance (from its start until Faust's seeks to committed offsets are done)."""
    flow_control = getattr(app, "flow_control", None)
    return (bool(app.should_stop) or bool(getattr(app, "rebalancing", False))
            or (flow_control is not None and not flow_control.is_active()))


@dataclass
class BrokerEpochWatch:
    """Per-worker state of the epoch check; ``check`` runs on a Faust timer."""

    topic: str
    cluster_id_probe: Callable[[], str | None] | None = None
    grace_s: float = EPOCH_GRACE_S
    cluster_id: str | None = None
    resets: int = 0
    _suspect_until: float = 0.0
    _rewound_at_rebalance: dict[TP, int] = field(default_factory=dict)
    _probe_task: asyncio.Future[str | None] | None = None

    async def _probe_cluster_id(self) -> str | None:
        if self.cluster_id_probe is None:
            return None
        if self._probe_task is None:  # one probe at a time; a slow one is awaited by later rounds
            self._probe_task = asyncio.get_running_loop().run_in_executor(None, self.cluster_id_probe)
        done, _ = await asyncio.wait({self._probe_task}, timeout=5.0)
        if not done:
            return None
        task, self._probe_task = self._probe_task, None
        return task.result()

    async def check(self, app: Any) -> list[TP]:
        """One round: note a new cluster id, rewind what belongs to an older epoch; returns what was rewound."""
        cluster_id = await self._probe_cluster_id()
        if cluster_id is not None:
            if self.cluster_id is not None and cluster_id != self.cluster_id:
                log.warning("broker epoch changed: cluster id %s -> %s (the broker restarted with a new log); "
                            "re-reading the assigned partitions of %s from the start of the new log",
                            self.cluster_id, cluster_id, self.topic)
                self._suspect_until = time.monotonic() + self.grace_s
                self._rewound_at_rebalance.clear()
            self.cluster_id = cluster_id
        if _rebalancing(app):
            return []  # a rebalance is in progress: its seeks would undo ours
        consumer = app.consumer
        try:
            assigned = [tp for tp in consumer.assignment() if tp.topic == self.topic]
        except Exception:  # noqa: BLE001 - consumer not started yet
            return []
        rewind: list[TP] = []
        if time.monotonic() < self._suspect_until:
            rebalances = app.rebalancing_count
            rewind = [tp for tp in assigned if self._rewound_at_rebalance.get(tp) != rebalances]
        stale = await find_stale_positions(consumer, [tp for tp in assigned if tp not in rewind])
        for s in stale:
            log.warning("broker epoch changed on %s[%d]: position %d is beyond the log end %d (the broker "
                        "restarted with a new log); re-reading it from the start", s.tp.topic, s.tp.partition,
                        s.position, s.log_end)
        rewind += [s.tp for s in stale]
        if not rewind or _rebalancing(app):  # the awaits above may have let a rebalance begin
            return []
        rebalances = app.rebalancing_count
        start = await rewind_to_log_start(consumer, rewind)
        if start is None:
            log.warning("broker epoch changed for %d partition(s) but their log start is unknown yet; retrying",
                        len(rewind))
            return []
        for tp in rewind:
            # A rebalance that began meanwhile may undo the seek: the count differs, so the next round
            # rewinds again once it is over.
            self._rewound_at_rebalance[tp] = rebalances
        self.resets += len(rewind)
        log.info("re-reading %s from offsets %s", self.topic,
                 ", ".join(f"[{tp.partition}]@{offset}" for tp, offset in sorted(start.items())))
        return rewind
