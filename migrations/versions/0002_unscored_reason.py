"""posts.unscored_reason: why a stored post carries no sentiment (model refused it, language, ...).

A post the model cannot take is stored all the same, with the reason, instead of holding up its batch;
a post in a language the topic does not score is stored and flagged the same way.  NULL means the post
was scored (or scoring is off for this worker).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("posts", sa.Column("unscored_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("posts", "unscored_reason")
