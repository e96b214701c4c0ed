"""Alert delivery outbox, delivery attempts, acknowledgements and topic mutes.

Why: delivery used to send every alert whose ``published_at`` was NULL without claiming it, so two workers
(or a retry after a database blip) sent it twice, and a webhook that was down for four seconds lost the
alert for good.  Now each alert gets a row per destination (``kafka``, ``webhook``) in
``alert_deliveries``, written in the alert's own transaction; a deliverer claims due rows with
``FOR UPDATE SKIP LOCKED`` and a lease (``claimed_until``), and keeps its retry schedule in the row
(``next_attempt_at``), so backoff survives restarts.  ``alert_delivery_attempts`` records every attempt
for ``sentistream alerts show``.  ``alert_incidents.acked_at/acked_by`` and ``alert_mutes`` let an
analyst stop an incident or a topic from paging (``sentistream alerts ack`` / ``mute``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("claimed_until", TS, nullable=True),
        sa.Column("claim_token", sa.Text(), nullable=True),
        sa.Column("last_attempt_at", TS, nullable=True),
        sa.Column("last_status", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name=op.f("fk_alert_deliveries_alert_id_alerts"),
                                ondelete="CASCADE"),
        sa.UniqueConstraint("alert_id", "destination", name="uq_alert_deliveries_alert_id_destination"),
    )
    op.create_index("ix_alert_deliveries_state_next_attempt_at", "alert_deliveries", ["state", "next_attempt_at"])
    op.create_table(
        "alert_delivery_attempts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("attempted_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_delivery_attempts")),
        sa.ForeignKeyConstraint(["delivery_id"], ["alert_deliveries.id"],
                                name=op.f("fk_alert_delivery_attempts_delivery_id_alert_deliveries"),
                                ondelete="CASCADE"),
    )
    op.create_index("ix_alert_delivery_attempts_delivery_id", "alert_delivery_attempts", ["delivery_id"])
    op.create_table(
        "alert_mutes",
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("muted_until", TS, nullable=False),
        sa.Column("muted_by", sa.Text(), nullable=True),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("topic", name=op.f("pk_alert_mutes")),
    )
    op.add_column("alert_incidents", sa.Column("acked_at", TS, nullable=True))
    op.add_column("alert_incidents", sa.Column("acked_by", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("alert_incidents", "acked_by")
    op.drop_column("alert_incidents", "acked_at")
    op.drop_table("alert_mutes")
    op.drop_index("ix_alert_delivery_attempts_delivery_id", table_name="alert_delivery_attempts")
    op.drop_table("alert_delivery_attempts")
    op.drop_index("ix_alert_deliveries_state_next_attempt_at", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
