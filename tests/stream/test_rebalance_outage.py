"""Rebalance under a database outage (#10 item 6): two workers in one group, the database cut, one leaves.

Both workers hold a batch they cannot write.  The one that leaves must stop in bounded time without acking
its batch; the one that stays must let the group rebalance (not sit in its retry loop holding revoked
partitions) and retry the redelivered batch; once the database is back every post is stored and the group
commits to the log end.  Set checks on post ids, not counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.stream.conftest import make_posts, scalar, wait_for
from tests.stream.test_broker_restart import committed_lag, publish, stored_ids
from tests.stream.test_scoring_e2e import PausableProxy

pytestmark = pytest.mark.slow


def test_worker_leaving_during_database_outage_does_not_block_the_group(
        broker, embedded_postgres, embedded_db, worker_factory) -> None:
    socket_path = str(Path(make_url(embedded_postgres.url).query["host"]) / ".s.PGSQL.5432")
    proxy = PausableProxy(socket_path)
    via_proxy = f"postgresql+psycopg2://postgres@127.0.0.1:{proxy.port}/{make_url(embedded_db).database}"
    try:
        first = make_posts(200, topic="rebalance", prefix="first")
        publish(broker, first)
        stays = worker_factory(broker, via_proxy, name="stays", scoring="false", batch_size="10")
        leaves = worker_factory(broker, via_proxy, name="leaves", scoring="false", batch_size="10")
        wait_for(lambda: len(stored_ids(embedded_db, "first")) == 200, 90, "the first 200 posts",
                 lambda: stays.log()[-3000:] + leaves.log()[-3000:])

        proxy.down()
        during = make_posts(400, topic="rebalance", prefix="during")
        publish(broker, during)
        wait_for(lambda: "database unavailable" in stays.log() and "database unavailable" in leaves.log(), 90,
                 "both workers to hold a batch they cannot write",
                 lambda: stays.log()[-3000:] + leaves.log()[-3000:])

        # One worker leaves while the database is still down: it stops in bounded time, acking nothing.
        assert leaves.stop(timeout_s=45) == 0, leaves.log()[-6000:]
        assert len(stored_ids(embedded_db, "during")) == 0
        # The group rebalances with the database still down: the remaining worker gives its batch back
        # instead of holding the revocation until the database returns.
        wait_for(lambda: "not saved (partitions rebalancing" in stays.log(), 90,
                 "the remaining worker to let the rebalance through", lambda: stays.log()[-6000:])
        # After the rebalance the remaining worker owns every partition and retries the redelivered batch.
        wait_for(lambda: "retry 1 in" in stays.log().split("not saved (partitions rebalancing")[-1], 60,
                 "the remaining worker to retry the redelivered batch", lambda: stays.log()[-3000:])
        assert stays.proc.poll() is None, stays.log()[-6000:]
        assert len(stored_ids(embedded_db, "during")) == 0

        proxy.restore()
        want = {p.post_id for p in during}
        wait_for(lambda: stored_ids(embedded_db, "during") == want, 180,
                 "every post stored by the remaining worker",
                 lambda: f"missing {len(want - stored_ids(embedded_db, 'during'))}\n{stays.log()[-6000:]}")
        wait_for(lambda: committed_lag(broker, "sentistream-worker") == 0, 90,
                 "the group's commits to reach the log end (no partition left blocked)",
                 lambda: f"lag {committed_lag(broker, 'sentistream-worker')}\n{stays.log()[-6000:]}")
        assert int(scalar(embedded_db, "SELECT count(*) FROM posts")) == 600
        assert stays.stop() == 0, stays.log()[-6000:]
        # Rebalances and a busy consumer are no broker restart: nothing was re-read from the start.
        assert "broker epoch changed" not in stays.log() + leaves.log()
    finally:
        proxy.close()
