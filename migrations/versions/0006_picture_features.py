"""Picture-feature cache: the image encoder's pooled feature per picture, shared by every worker.

Why: a reposted picture (same bytes, same sha256) cost a full image-encoder pass on every worker and after
every restart; the in-memory LRU (``model/image_cache.py``) only helps one process while it lives.  Now the
worker looks every batch's pictures up here at once, encodes only the misses and writes them back
(``stream/picture_cache.py``).  The key holds ``encoder`` (the image encoder's name and preprocessing
version) so a new encoder never reads another encoder's vectors; ``feature`` is the vector as little-endian
``dtype`` (``float16`` or ``float32``) of ``dim`` values, checked on read (a row of the wrong size, type or
with a NaN is ignored and recomputed).  ``last_used_at`` feeds ``sentistream maintenance retention``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "picture_features",
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("encoder", sa.Text(), nullable=False),
        sa.Column("dtype", sa.Text(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("feature", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("last_used_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "encoder", name=op.f("pk_picture_features")),
    )
    op.create_index("ix_picture_features_last_used_at", "picture_features", ["last_used_at"])


def downgrade() -> None:
    op.drop_index("ix_picture_features_last_used_at", table_name="picture_features")
    op.drop_table("picture_features")
