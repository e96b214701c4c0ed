"""The three sentiment classes, in the one order every part of the model agrees on.

Index order matters: checkpoints store logits in this order, datasets store labels as these
indices, and reports print classes in this order.  Keep it in one place so nothing re-derives it.
"""

from __future__ import annotations

LABELS: tuple[str, str, str] = ("negative", "neutral", "positive")
LABEL_TO_INDEX: dict[str, int] = {name: index for index, name in enumerate(LABELS)}
NUM_CLASSES = len(LABELS)


def label_index(name: str) -> int:
    """Map a label name as the datasets spell it ("Positive ", "negative") to its class index.

    Raises ValueError on anything else, so a mislabelled file fails loudly instead of training
    on a wrong class.
    """
    key = name.strip().lower()
    if key not in LABEL_TO_INDEX:
        raise ValueError(f"unknown sentiment label {name!r}; expected one of {LABELS}")
    return LABEL_TO_INDEX[key]
