"""A training-time view of a cached split that changes its items but not which items there are.

The trainer wraps cached splits (extra intensity labels, augmented picture views); the length-bucketing
sampler and the class weights read ``text`` and ``labels`` off whatever dataset they get, so every view
passes those through from the split it wraps.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset


class SplitView(Dataset):
    """Delegates length, ``text`` and ``labels`` to ``dataset``; subclasses change ``__getitem__``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    @property
    def text(self) -> Any:
        return getattr(self.dataset, "text", None)

    @property
    def labels(self) -> Any:
        return getattr(self.dataset, "labels", None)
