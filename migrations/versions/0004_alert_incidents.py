"""Alert incidents: one per topic, kind and model version across window lengths; alerts become its events.

Why: an alert per window paged twice for one outage (1-minute and 5-minute windows), kept its first-look
numbers after its window closed, and a second model's alert for the same window was dropped (the key had
no ``model_version``).  Now the detector opens an *incident* (``alert_incidents``), updates it with final
numbers as windows close and resolves it when the topic is back to normal; every such event is an
``alerts`` row (``event`` = opened / updated / resolved) that delivery sends.  ``historical`` alerts (on
windows older than ``SENTISTREAM_ALERT_HISTORICAL_AFTER_S``, e.g. a replay of March data in December) are
stored and never delivered.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_incidents",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="open", nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("observed", sa.Float(), nullable=False),
        sa.Column("expected", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("n_posts", sa.Integer(), nullable=False),
        sa.Column("n_negative", sa.Integer(), nullable=False),
        sa.Column("n_windows", sa.Integer(), server_default="1", nullable=False),
        sa.Column("historical", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("evidence", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_incidents")),
        sa.UniqueConstraint("topic", "kind", "model_version", "started_at", name="uq_alert_incidents_key"),
    )
    op.create_index("ix_alert_incidents_topic_status", "alert_incidents", ["topic", "status"])
    op.add_column("alerts", sa.Column("incident_id", sa.BigInteger(), nullable=True))
    op.add_column("alerts", sa.Column("event", sa.Text(), server_default="opened", nullable=False))
    op.add_column("alerts", sa.Column("historical", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_foreign_key(op.f("fk_alerts_incident_id_alert_incidents"), "alerts", "alert_incidents",
                          ["incident_id"], ["id"], ondelete="CASCADE")
    op.create_index("ix_alerts_incident_id", "alerts", ["incident_id"])
    op.drop_constraint("uq_alerts_key", "alerts", type_="unique")
    op.create_unique_constraint("uq_alerts_event_key", "alerts",
                                ["topic", "kind", "model_version", "window_start", "window_seconds", "event"])


def downgrade() -> None:
    op.drop_constraint("uq_alerts_event_key", "alerts", type_="unique")
    op.execute("DELETE FROM alerts WHERE event <> 'opened'")
    op.execute("DELETE FROM alerts a USING alerts b WHERE a.id > b.id AND a.topic = b.topic AND a.kind = b.kind "
               "AND a.window_start = b.window_start AND a.window_seconds = b.window_seconds")
    op.create_unique_constraint("uq_alerts_key", "alerts", ["topic", "kind", "window_start", "window_seconds"])
    op.drop_index("ix_alerts_incident_id", table_name="alerts")
    op.drop_constraint(op.f("fk_alerts_incident_id_alert_incidents"), "alerts", type_="foreignkey")
    op.drop_column("alerts", "historical")
    op.drop_column("alerts", "event")
    op.drop_column("alerts", "incident_id")
    op.drop_index("ix_alert_incidents_topic_status", table_name="alert_incidents")
    op.drop_table("alert_incidents")
