"""Column comments on what a sentiment's numbers mean, for analysts reading the schema in psql.

Why (#15.1): ``intensity`` was a relabelled class (the label-derived proxy −1.5 / 0 / +1.5) and is now
learned from SemEval-2016 Task 4C's five-point labels; an analyst running ``\\d+ sentiments`` should see
the scale and where it comes from without opening the model card.  The comments say the scale and the
mapping; which model produced a row is its ``model_version`` (the model card of that version has the rest).
Comments only: no data changes, nothing is rewritten.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMMENTS: dict[tuple[str, str], str] = {
    ("sentiments", "label"): "3-class verdict: negative, neutral or positive (the argmax of p_negative, p_neutral, "
                             "p_positive)",
    ("sentiments", "intensity"): "signed strength of feeling on -3..+3; models trained with SemEval-2016 Task 4C "
                                 "learn it from five-point labels -2..+2 times 1.5 (-2 -> -3, -1 -> -1.5, 0 -> 0, "
                                 "+1 -> +1.5, +2 -> +3); older models gave a label-derived proxy (-1.5 / 0 / +1.5); "
                                 "see the model card of model_version",
    ("sentiments", "modality_weights"): "share of the verdict each modality drove (text, visual, audio), from the "
                                        "model's fusion gate; uniform over the present modalities for a model "
                                        "without a gate",
    ("window_aggregates", "mean_intensity"): "mean of sentiments.intensity (-3..+3) over the window's posts, each "
                                             "post counted once with its latest sentiment of model_version",
}


def upgrade() -> None:
    for (table, column), comment in COMMENTS.items():
        op.alter_column(table, column, comment=comment)


def downgrade() -> None:
    for (table, column), comment in COMMENTS.items():
        op.alter_column(table, column, comment=None, existing_comment=comment)
