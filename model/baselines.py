"""Reference predictors every evaluation report prints beside the model.

- ``VaderBaseline``: the rule-based VADER analyser (Hutto & Gilbert, 2014) with its authors'
  thresholds: compound >= 0.05 positive, <= -0.05 negative, else neutral. It needs no training, so it
  says what a lexicon gets for free on a split (TweetEval reports 57.0 macro recall for it on test).
- ``MajorityBaseline``: always the most common training label. It is the floor: its accuracy is the
  majority share and its macro recall exactly 1/3, so a model must beat both to have learned anything.

Both take raw post texts (VADER reads capitals, punctuation and emoji, so it gets the text as
posted, not the model's normalised form) and return class ids in ``model.labels.LABELS`` order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from model.labels import LABEL_TO_INDEX, NUM_CLASSES

VADER_POSITIVE_THRESHOLD = 0.05
VADER_NEGATIVE_THRESHOLD = -0.05


class VaderBaseline:
    """VADER compound score mapped to negative / neutral / positive with the standard thresholds."""

    name = "VADER"

    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()

    def compound_scores(self, texts: Sequence[str]) -> np.ndarray:
        """VADER's compound polarity in [-1, 1] for each text."""
        return np.array(
            [self._analyzer.polarity_scores(text)["compound"] for text in texts], dtype=np.float64
        )

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Class id per text: positive at compound >= 0.05, negative at <= -0.05, else neutral."""
        compound = self.compound_scores(texts)
        labels = np.full(compound.shape, LABEL_TO_INDEX["neutral"], dtype=np.int64)
        labels[compound >= VADER_POSITIVE_THRESHOLD] = LABEL_TO_INDEX["positive"]
        labels[compound <= VADER_NEGATIVE_THRESHOLD] = LABEL_TO_INDEX["negative"]
        return labels


class MajorityBaseline:
    """Predicts the most frequent training label for every text (ties go to the lower class id)."""

    name = "majority class"

    def __init__(self) -> None:
        self.label: int | None = None

    def fit(self, train_labels: Sequence[int] | np.ndarray) -> MajorityBaseline:
        """Remember the most common label of the training split (never of the evaluated split)."""
        labels = np.asarray(train_labels, dtype=np.int64)
        if labels.size == 0:
            raise ValueError("cannot fit a majority baseline on no labels")
        self.label = int(np.argmax(np.bincount(labels, minlength=NUM_CLASSES)))
        return self

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """The fitted label once per text."""
        if self.label is None:
            raise RuntimeError("MajorityBaseline.predict called before fit")
        return np.full(len(texts), self.label, dtype=np.int64)
