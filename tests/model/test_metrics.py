"""Metrics against hand-computed values and against scikit-learn's implementations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from model import metrics

# A small hand-checkable case: gold in rows, predictions in columns.
#   gold 0: predicted 0,0,1        gold 1: predicted 1,2        gold 2: predicted 2,2,2,0
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED = [0, 0, 1, 1, 2, 2, 2, 2, 0]


def test_confusion_matrix_by_hand() -> None:
    cm = metrics.confusion_matrix(Y_TRUE, Y_PRED)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]


def test_per_class_and_macro_scores_by_hand() -> None:
    scores = metrics.per_class_scores(Y_TRUE, Y_PRED)
    # precision: class0 2/3, class1 1/2, class2 3/4 ; recall: 2/3, 1/2, 3/4
    np.testing.assert_allclose(scores.precision, [2 / 3, 1 / 2, 3 / 4])
    np.testing.assert_allclose(scores.recall, [2 / 3, 1 / 2, 3 / 4])
    np.testing.assert_allclose(scores.f1, [2 / 3, 1 / 2, 3 / 4])
    assert scores.support.tolist() == [3, 2, 4]
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(6 / 9)
    assert metrics.macro_recall(Y_TRUE, Y_PRED) == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)
    weighted = (3 * 2 / 3 + 2 * 1 / 2 + 4 * 3 / 4) / 9
    assert metrics.weighted_f1(Y_TRUE, Y_PRED) == pytest.approx(weighted)
    assert metrics.micro_f1(Y_TRUE, Y_PRED) == pytest.approx(6 / 9)


def test_majority_class_macro_recall_is_one_third() -> None:
    y_true = [0, 1, 1, 2, 2, 2]
    y_pred = [2] * 6
    assert metrics.macro_recall(y_true, y_pred) == pytest.approx(1 / 3)
    # Classes never predicted have precision 0 rather than NaN.
    assert metrics.per_class_scores(y_true, y_pred).precision.tolist() == [0.0, 0.0, 0.5]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn_on_random_predictions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.choice(3, size=500, p=[0.2, 0.5, 0.3])
    # A biased, imperfect classifier, and one class sometimes never predicted.
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.choice([1, 2], size=500))
    labels = [0, 1, 2]
    kw = {"labels": labels, "zero_division": 0}
    result = metrics.classification_metrics(y_true, y_pred)
    assert result.accuracy == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert result.macro_precision == pytest.approx(skm.precision_score(y_true, y_pred, average="macro", **kw))
    assert result.macro_recall == pytest.approx(skm.recall_score(y_true, y_pred, average="macro", **kw))
    assert result.macro_f1 == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", **kw))
    assert result.micro_f1 == pytest.approx(skm.f1_score(y_true, y_pred, average="micro", **kw))
    assert result.weighted_f1 == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted", **kw))
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, **kw)
    np.testing.assert_allclose(result.per_class.precision, precision)
    np.testing.assert_allclose(result.per_class.recall, recall)
    np.testing.assert_allclose(result.per_class.f1, f1)
    np.testing.assert_array_equal(result.per_class.support, support)
    np.testing.assert_array_equal(result.confusion, skm.confusion_matrix(y_true, y_pred, labels=labels))
    # The single-metric functions agree with the all-at-once report.
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx(result.macro_f1)
    assert metrics.macro_recall(y_true, y_pred) == pytest.approx(result.macro_recall)


def test_absent_class_counts_zero_in_macro_average() -> None:
    # Class 1 appears nowhere: sklearn with labels=[0,1,2] averages its 0 in, and so do we.
    y_true = [0, 0, 2, 2]
    y_pred = [0, 2, 2, 2]
    expected = skm.f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro", zero_division=0)
    assert metrics.macro_f1(y_true, y_pred) == pytest.approx(expected)


def test_rejects_bad_labels_and_lengths() -> None:
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix([0, 3], [0, 1])
    with pytest.raises(ValueError, match="length"):
        metrics.macro_recall([0, 1], [0])


def test_regression_metrics_against_hand_and_sklearn() -> None:
    y_true = np.array([-3.0, -1.0, 0.0, 2.0, 3.0])
    y_pred = np.array([-2.0, -1.0, 1.0, 1.0, 3.0])
    assert metrics.mean_absolute_error(y_true, y_pred) == pytest.approx(3 / 5)
    assert metrics.mean_squared_error(y_true, y_pred) == pytest.approx(3 / 5)
    assert metrics.mean_absolute_error(y_true, y_pred) == pytest.approx(skm.mean_absolute_error(y_true, y_pred))
    assert metrics.mean_squared_error(y_true, y_pred) == pytest.approx(skm.mean_squared_error(y_true, y_pred))
    # CCC by hand: means 0.2 and 0.4, population variances, covariance.
    mt, mp = y_true.mean(), y_pred.mean()
    cov = np.mean((y_true - mt) * (y_pred - mp))
    expected = 2 * cov / (y_true.var() + y_pred.var() + (mt - mp) ** 2)
    assert metrics.concordance_correlation(y_true, y_pred) == pytest.approx(expected)
    assert metrics.concordance_correlation(y_true, y_true) == pytest.approx(1.0)
    # A shifted copy is perfectly correlated but not concordant: CCC = 2 var / (2 var + shift^2).
    variance = y_true.var()
    assert metrics.concordance_correlation(y_true, y_true + 2.0) == pytest.approx(
        2 * variance / (2 * variance + 4.0)
    )
    centred = y_true - y_true.mean()
    assert metrics.concordance_correlation(centred, -centred) == pytest.approx(-1.0)


def test_bootstrap_ci_contains_value_and_narrows_with_more_items() -> None:
    rng = np.random.default_rng(3)
    small_true = rng.integers(0, 3, size=100)
    small_pred = np.where(rng.random(100) < 0.7, small_true, rng.integers(0, 3, size=100))
    big_true = rng.integers(0, 3, size=3000)
    big_pred = np.where(rng.random(3000) < 0.7, big_true, rng.integers(0, 3, size=3000))
    small = metrics.bootstrap_ci(metrics.accuracy, small_true, small_pred, n_resamples=500)
    big = metrics.bootstrap_ci(metrics.accuracy, big_true, big_pred, n_resamples=500)
    assert small.low <= small.value <= small.high
    assert big.low <= big.value <= big.high
    assert (big.high - big.low) < (small.high - small.low) / 3
    # Binomial standard error check: width ~ 2 * 1.96 * sqrt(p(1-p)/n).
    p = big.value
    expected_width = 2 * 1.96 * np.sqrt(p * (1 - p) / 3000)
    assert big.high - big.low == pytest.approx(expected_width, rel=0.25)
    # Seeded: the same call gives the same interval.
    again = metrics.bootstrap_ci(metrics.accuracy, big_true, big_pred, n_resamples=500)
    assert again == big
    assert "[" in small.format()


def test_paired_bootstrap_separates_real_from_null_differences() -> None:
    rng = np.random.default_rng(4)
    y_true = rng.integers(0, 3, size=1000)
    good = np.where(rng.random(1000) < 0.8, y_true, rng.integers(0, 3, size=1000))
    bad = np.where(rng.random(1000) < 0.5, y_true, rng.integers(0, 3, size=1000))
    clear = metrics.paired_bootstrap_test(metrics.macro_recall, y_true, good, bad, n_resamples=500)
    assert clear.difference.value > 0.2
    assert clear.difference.low > 0
    assert clear.p_value < 0.01

    # Under the null (two systems drawn from the same process) p-values are roughly uniform:
    # only about 5% of them fall below 0.05.
    p_values = []
    for trial in range(40):
        trial_rng = np.random.default_rng(100 + trial)
        truth = trial_rng.integers(0, 3, size=300)
        first = np.where(trial_rng.random(300) < 0.7, truth, trial_rng.integers(0, 3, size=300))
        second = np.where(trial_rng.random(300) < 0.7, truth, trial_rng.integers(0, 3, size=300))
        p_values.append(
            metrics.paired_bootstrap_test(metrics.accuracy, truth, first, second, n_resamples=200).p_value
        )
    assert np.mean(np.array(p_values) < 0.05) <= 0.15
    assert np.median(p_values) > 0.2

    identical = metrics.paired_bootstrap_test(metrics.accuracy, y_true, good, good, n_resamples=200)
    assert identical.difference.value == 0
    assert identical.p_value == 1.0
