"""A model's verdict as the sink stores it, for tests that write sentiments without running the model.

``PostgresSink`` reads only these attributes of a Scorer result, so rows written with a ``Verdict`` are
the rows the worker writes; one definition keeps the sink, trend, retention, rescore and dashboard
tests agreeing on what a sentiment looks like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LABELS = ("negative", "neutral", "positive")


@dataclass
class Verdict:
    label: str
    intensity: float
    model_version: str = "m1"
    modality_weights: dict[str, float] = field(default_factory=lambda: {"text": 1.0})

    @property
    def probabilities(self) -> dict[str, float]:
        return {k: (0.8 if k == self.label else 0.1) for k in LABELS}
