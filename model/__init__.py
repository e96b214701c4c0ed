"""sentistream's multimodal CNN-LSTM sentiment model, usable as a library.

The public names load lazily (``from model import Scorer``), so light modules such as
``model.metrics`` or ``model.labels`` can be imported without pulling in torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Scorer": "model.scorer",
    "ScoreInput": "model.scorer",
    "SentimentResult": "model.scorer",
    "PreparedBatch": "model.scorer",
    "SentimentNet": "model.network",
    "SentimentOutput": "model.network",
    "ModelConfig": "model.config",
    "LABELS": "model.labels",
    "fit": "model.train",
    "FitResult": "model.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
