"""VADER and majority-class baselines on hand-made texts and on a slice of the real validation split."""

from __future__ import annotations

import numpy as np
import pytest

from model import data, metrics
from model.baselines import (
    VADER_NEGATIVE_THRESHOLD,
    VADER_POSITIVE_THRESHOLD,
    MajorityBaseline,
    VaderBaseline,
)
from model.labels import LABEL_TO_INDEX


@pytest.fixture(scope="module")
def vader() -> VaderBaseline:
    return VaderBaseline()


def test_vader_labels_clear_cases(vader: VaderBaseline) -> None:
    texts = [
        "I love this, it is wonderful and amazing :)",
        "This is the worst, I hate it, terrible service",
        "The meeting is at 3pm in room 201",
    ]
    predicted = vader.predict(texts).tolist()
    assert predicted == [LABEL_TO_INDEX["positive"], LABEL_TO_INDEX["negative"], LABEL_TO_INDEX["neutral"]]


def test_vader_prediction_follows_compound_thresholds(vader: VaderBaseline) -> None:
    texts = ["good", "not bad", "meh", "bad", "ok", "sad but fine", "", "😀", "😡"]
    compound = vader.compound_scores(texts)
    predicted = vader.predict(texts)
    for score, label in zip(compound, predicted, strict=True):
        if score >= VADER_POSITIVE_THRESHOLD:
            assert label == LABEL_TO_INDEX["positive"]
        elif score <= VADER_NEGATIVE_THRESHOLD:
            assert label == LABEL_TO_INDEX["negative"]
        else:
            assert label == LABEL_TO_INDEX["neutral"]
    assert vader.predict([]).shape == (0,)


def test_majority_baseline_predicts_most_common_training_label() -> None:
    baseline = MajorityBaseline().fit([2, 2, 1, 0, 2, 1])
    assert baseline.label == 2
    assert baseline.predict(["a", "b", "c"]).tolist() == [2, 2, 2]
    # Ties go to the lower class id, deterministically.
    assert MajorityBaseline().fit([0, 1, 1, 0]).label == 0
    with pytest.raises(RuntimeError):
        MajorityBaseline().predict(["x"])
    with pytest.raises(ValueError):
        MajorityBaseline().fit([])


@pytest.mark.dataset(data.TWEETEVAL)
def test_vader_beats_majority_on_real_tweeteval_slice(vader: VaderBaseline) -> None:
    val = data.load_tweeteval_val()[:400]
    gold = np.array([example.label for example in val])
    texts = [example.text for example in val]
    majority = MajorityBaseline().fit(gold).predict(texts)
    vader_recall = metrics.macro_recall(gold, vader.predict(texts))
    assert metrics.macro_recall(gold, majority) == pytest.approx(1 / 3)
    # TweetEval reports 57.0 for VADER on its test split; a 400-tweet slice lands near that.
    assert 0.45 < vader_recall < 0.70
