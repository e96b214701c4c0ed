"""Evaluation metrics for the sentiment model, in plain numpy.

Why not scikit-learn: the metrics are few and small, the bootstrap calls them thousands of times (a
plain bincount is much faster than sklearn's input validation), and every figure the project reports
must come from one definition. The tests check each function against scikit-learn where it has the
same metric.

Conventions (the same as scikit-learn's with ``labels=range(n_classes)``, ``zero_division=0``):
- labels are integers ``0..n_classes-1`` (``model.labels.LABELS``: negative, neutral, positive);
- a ratio whose denominator is 0 (a class never predicted, or absent from the gold labels) counts as
  0, and macro averages always run over all ``n_classes`` classes, present or not;
- the confusion matrix has gold labels in rows and predictions in columns.

Uncertainty: ``bootstrap_ci`` gives a percentile interval for any ``metric(y_true, y_pred)`` by
resampling items with replacement; ``paired_bootstrap_test`` resamples the *same* items for two
systems, which is what makes a difference between two models on one validation split testable (the
items are shared, so their difficulty cancels out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

N_CLASSES = 3

Metric = Callable[[np.ndarray, np.ndarray], float]


# ---------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------


def _as_labels(values: Sequence[int] | np.ndarray, n_classes: int, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{name} must hold integer class ids")
    array = array.astype(np.int64, copy=False)
    if array.size and (array.min() < 0 or array.max() >= n_classes):
        raise ValueError(f"{name} holds a class id outside 0..{n_classes - 1}")
    return array


def _check_pair(y_true, y_pred, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    true = _as_labels(y_true, n_classes, "y_true")
    pred = _as_labels(y_pred, n_classes, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {true.shape[0]} vs {pred.shape[0]}")
    return true, pred


def confusion_matrix(y_true, y_pred, n_classes: int = N_CLASSES) -> np.ndarray:
    """Counts of (gold, predicted) pairs: ``cm[i, j]`` = items of class i predicted as j."""
    true, pred = _check_pair(y_true, y_pred, n_classes)
    return np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


@dataclass(frozen=True)
class PerClassScores:
    """Precision, recall, F1 and gold support of each class (arrays of length n_classes)."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray


def per_class_scores_from_confusion(cm: np.ndarray) -> PerClassScores:
    """Per-class P/R/F1 from a confusion matrix (so one matrix serves every averaged metric)."""
    cm = np.asarray(cm, dtype=np.float64)
    true_positive = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return PerClassScores(precision, recall, f1, support.astype(np.int64))


def per_class_scores(y_true, y_pred, n_classes: int = N_CLASSES) -> PerClassScores:
    """Per-class precision, recall, F1 and support: the table the paper asks for on skewed data."""
    return per_class_scores_from_confusion(confusion_matrix(y_true, y_pred, n_classes))


def accuracy(y_true, y_pred) -> float:
    """Share of items predicted correctly (MVSA's headline metric); 0.0 for an empty set."""
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {true.shape} vs {pred.shape}")
    if true.size == 0:
        return 0.0
    return float(np.mean(true == pred))


def macro_precision(y_true, y_pred, n_classes: int = N_CLASSES) -> float:
    """Unweighted mean of the per-class precisions."""
    return float(per_class_scores(y_true, y_pred, n_classes).precision.mean())


def macro_recall(y_true, y_pred, n_classes: int = N_CLASSES) -> float:
    """Unweighted mean of the per-class recalls: TweetEval's official sentiment metric.

    It rewards the rare negative class as much as the common neutral one, so a majority-class
    predictor scores exactly 1/n_classes.
    """
    return float(per_class_scores(y_true, y_pred, n_classes).recall.mean())


def macro_f1(y_true, y_pred, n_classes: int = N_CLASSES) -> float:
    """Unweighted mean of the per-class F1 scores (the early-stopping metric of the paper)."""
    return float(per_class_scores(y_true, y_pred, n_classes).f1.mean())


def weighted_f1(y_true, y_pred, n_classes: int = N_CLASSES) -> float:
    """Per-class F1 weighted by gold support: the F1 the MVSA literature reports."""
    scores = per_class_scores(y_true, y_pred, n_classes)
    total = scores.support.sum()
    if total == 0:
        return 0.0
    return float(np.sum(scores.f1 * scores.support) / total)


def micro_precision(y_true, y_pred, n_classes: int = N_CLASSES) -> float:
    """Pooled TP / pooled predictions over all classes (equals accuracy for single-label data)."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    return float(_safe_divide(np.trace(cm), cm.sum()))


def micro_recall(y_true, y_pred, n_classes: int = N_CLASSES) -> float:
    """Pooled TP / pooled gold items (equals accuracy for single-label data)."""
    return micro_precision(y_true, y_pred, n_classes)


def micro_f1(y_true, y_pred, n_classes: int = N_CLASSES) -> float:
    """Harmonic mean of micro precision and recall (equals accuracy for single-label data)."""
    precision = micro_precision(y_true, y_pred, n_classes)
    recall = micro_recall(y_true, y_pred, n_classes)
    return float(_safe_divide(2 * precision * recall, precision + recall))


@dataclass(frozen=True)
class ClassificationMetrics:
    """Every classification figure for one set of predictions, from one confusion matrix."""

    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    micro_precision: float
    micro_recall: float
    micro_f1: float
    weighted_f1: float
    per_class: PerClassScores
    confusion: np.ndarray

    def summary(self) -> dict[str, float]:
        """The scalar metrics by name (for logs, checkpoints and model cards)."""
        return {
            "accuracy": self.accuracy,
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "macro_f1": self.macro_f1,
            "micro_precision": self.micro_precision,
            "micro_recall": self.micro_recall,
            "micro_f1": self.micro_f1,
            "weighted_f1": self.weighted_f1,
        }


def classification_metrics(y_true, y_pred, n_classes: int = N_CLASSES) -> ClassificationMetrics:
    """All classification metrics at once (one confusion matrix, no repeated passes)."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    scores = per_class_scores_from_confusion(cm)
    total = cm.sum()
    micro = float(_safe_divide(np.trace(cm), total))
    weighted = float(np.sum(scores.f1 * scores.support) / total) if total else 0.0
    return ClassificationMetrics(
        accuracy=micro,
        macro_precision=float(scores.precision.mean()),
        macro_recall=float(scores.recall.mean()),
        macro_f1=float(scores.f1.mean()),
        micro_precision=micro,
        micro_recall=micro,
        micro_f1=micro,
        weighted_f1=weighted,
        per_class=scores,
        confusion=cm,
    )


# Named metrics for reports: an explicit table, so a report can list "macro_recall" without any
# lookup by attribute name.
CLASSIFICATION_METRICS: dict[str, Metric] = {
    "accuracy": accuracy,
    "macro_recall": macro_recall,
    "macro_f1": macro_f1,
    "weighted_f1": weighted_f1,
    "macro_precision": macro_precision,
    "micro_f1": micro_f1,
}


# ---------------------------------------------------------------------------------------------
# regression (sentiment intensity)
# ---------------------------------------------------------------------------------------------


def _check_real_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length: {true.shape} vs {pred.shape}")
    return true, pred


def mean_absolute_error(y_true, y_pred) -> float:
    """Mean |y - y_hat| (the paper reports it for intensity regression); 0.0 for an empty set."""
    true, pred = _check_real_pair(y_true, y_pred)
    return float(np.mean(np.abs(true - pred))) if true.size else 0.0


def macro_mean_absolute_error(y_true, y_pred, classes: Sequence[float] | None = None) -> float:
    """MAE^M, SemEval-2016 Task 4C's official metric: the MAE within each gold class, averaged over
    the classes, so the rare -2/+2 tweets weigh as much as the many 0s (a constant 0 cannot score well).

    ``classes`` (default: the distinct gold values) lists the classes to average over; a listed class
    with no gold item is left out, as the task's scorer does.  0.0 for an empty set.
    """
    true, pred = _check_real_pair(y_true, y_pred)
    if true.size == 0:
        return 0.0
    wanted = np.unique(true) if classes is None else np.asarray(classes, dtype=np.float64)
    per_class = [np.mean(np.abs(true[true == c] - pred[true == c])) for c in wanted if np.any(true == c)]
    return float(np.mean(per_class)) if per_class else 0.0


def mean_squared_error(y_true, y_pred) -> float:
    """Mean (y - y_hat)^2; 0.0 for an empty set."""
    true, pred = _check_real_pair(y_true, y_pred)
    return float(np.mean((true - pred) ** 2)) if true.size else 0.0


def concordance_correlation(y_true, y_pred) -> float:
    """Lin's concordance correlation coefficient, the paper's primary regression metric.

    CCC = 2 cov(y, y_hat) / (var(y) + var(y_hat) + (mean(y) - mean(y_hat))^2), population moments.
    Unlike Pearson's r it penalises a shift or a rescaling of the predictions, so a model that ranks
    well but is miscalibrated does not score 1. Returns 0.0 when both vectors are constant and
    differ, 1.0 when they are identical constants.
    """
    true, pred = _check_real_pair(y_true, y_pred)
    if true.size == 0:
        return 0.0
    mean_true, mean_pred = true.mean(), pred.mean()
    covariance = np.mean((true - mean_true) * (pred - mean_pred))
    denominator = true.var() + pred.var() + (mean_true - mean_pred) ** 2
    if denominator == 0:
        return 1.0
    return float(2 * covariance / denominator)


# ---------------------------------------------------------------------------------------------
# uncertainty
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate with a bootstrap percentile interval."""

    value: float
    low: float
    high: float
    confidence: float = 0.95

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """E.g. ``"71.3 [69.2, 73.4]"`` (percent by default, as the literature prints them)."""
        return (
            f"{self.value * scale:.{digits}f} "
            f"[{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"
        )


def _resample_indices(n_items: int, n_resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_items, size=(n_resamples, n_items))


def bootstrap_ci(
    metric: Metric,
    y_true,
    y_pred,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``metric(y_true, y_pred)`` over items.

    Items are resampled with replacement ``n_resamples`` times; the interval is the central
    ``confidence`` share of the resampled metric values. A fixed seed keeps reports reproducible.
    """
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    if true.shape[0] != pred.shape[0]:
        raise ValueError(f"y_true and y_pred differ in length: {true.shape[0]} vs {pred.shape[0]}")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    value = float(metric(true, pred))
    if true.shape[0] == 0:
        return Interval(value, value, value, confidence)
    indices = _resample_indices(true.shape[0], n_resamples, seed)
    samples = np.fromiter((metric(true[idx], pred[idx]) for idx in indices), dtype=np.float64)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval(value, float(low), float(high), confidence)


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Outcome of comparing system A with system B on the same items.

    ``difference`` is metric(A) - metric(B) with its bootstrap interval; ``p_value`` is two-sided:
    the probability, under the null hypothesis of no difference, of a resampled difference at least
    as far from zero as the observed one.
    """

    metric_a: float
    metric_b: float
    difference: Interval
    p_value: float
    n_resamples: int


def paired_bootstrap_test(
    metric: Metric,
    y_true,
    pred_a,
    pred_b,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedBootstrapResult:
    """Paired bootstrap significance test of metric(A) - metric(B) (Berg-Kirkpatrick et al., 2012).

    Both systems are scored on the same resampled items each round. The resampled differences are
    shifted by the observed difference (so they centre on zero, the null hypothesis) and the p-value is the share of them whose magnitude
    reaches the observed difference, with the usual +1 correction so it is never exactly 0.
    """
    true = np.asarray(y_true)
    a = np.asarray(pred_a)
    b = np.asarray(pred_b)
    if not (true.shape[0] == a.shape[0] == b.shape[0]):
        raise ValueError(
            f"y_true, pred_a and pred_b differ in length: {true.shape[0]}, {a.shape[0]}, {b.shape[0]}"
        )
    metric_a = float(metric(true, a))
    metric_b = float(metric(true, b))
    observed = metric_a - metric_b
    if true.shape[0] == 0:
        return PairedBootstrapResult(
            metric_a, metric_b, Interval(observed, observed, observed, confidence), 1.0, 0
        )
    indices = _resample_indices(true.shape[0], n_resamples, seed)
    differences = np.fromiter(
        (metric(true[idx], a[idx]) - metric(true[idx], b[idx]) for idx in indices), dtype=np.float64
    )
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    centred = differences - observed
    extreme = int(np.sum(np.abs(centred) >= abs(observed) - 1e-12))
    p_value = (extreme + 1) / (n_resamples + 1)
    return PairedBootstrapResult(
        metric_a=metric_a,
        metric_b=metric_b,
        difference=Interval(observed, float(low), float(high), confidence),
        p_value=float(min(1.0, p_value)),
        n_resamples=n_resamples,
    )
