"""How far a changed model (int8, another runtime) moved from its reference on the same posts."""

from __future__ import annotations

from collections.abc import Sequence

from model.scorer import SentimentResult


def agreement_and_drift(reference: Sequence[SentimentResult], other: Sequence[SentimentResult]
                        ) -> tuple[float, float]:
    """The share of posts given the same label, and the largest change of any class probability."""
    pairs = list(zip(reference, other, strict=True))
    agree = sum(a.label == b.label for a, b in pairs) / len(pairs)
    drift = max(abs(a.probabilities[k] - b.probabilities[k]) for a, b in pairs for k in a.probabilities)
    return agree, drift
