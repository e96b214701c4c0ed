"""dead_letters keyed by (topic, partition, offset, payload_sha256): a reused offset is never dropped.

After a broker restart with a new log (the embedded broker keeps data in memory only) offsets start at 0
again, so a new dead letter can arrive at the coordinates of an old one.  The old key
(topic, partition, offset) with ``ON CONFLICT DO NOTHING`` dropped it silently.  The SHA-256 of the stored
payload joins the key: a different message at reused coordinates gets its own row, while a replay of the
same message (at-least-once delivery) still lands on the existing row.  A NULL payload (tombstone) hashes
as the empty payload.

Downgrade restores the old key only when no two rows share coordinates; otherwise it stops and says so,
rather than deleting dead letters to make room.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("dead_letters", sa.Column("payload_sha256", sa.Text(), nullable=True))
    op.execute("UPDATE dead_letters SET payload_sha256 = encode(sha256(coalesce(payload, ''::bytea)), 'hex')")
    op.alter_column("dead_letters", "payload_sha256", nullable=False)
    op.drop_constraint("uq_dead_letters_source", "dead_letters", type_="unique")
    op.create_unique_constraint("uq_dead_letters_source_payload", "dead_letters",
                                ["source_topic", "source_partition", "source_offset", "payload_sha256"])


def downgrade() -> None:
    shared = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM (SELECT 1 FROM dead_letters GROUP BY source_topic, source_partition, source_offset "
        "HAVING count(*) > 1) AS d")).scalar_one()
    if shared:
        raise RuntimeError(
            f"cannot downgrade below 0003: {shared} (topic, partition, offset) coordinates hold more than one "
            "dead letter (a broker restart reused offsets); export or delete the extra rows first")
    op.drop_constraint("uq_dead_letters_source_payload", "dead_letters", type_="unique")
    op.create_unique_constraint("uq_dead_letters_source", "dead_letters",
                                ["source_topic", "source_partition", "source_offset"])
    op.drop_column("dead_letters", "payload_sha256")
