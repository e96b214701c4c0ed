"""The evaluation report: metrics, intervals, baselines and files, on the real MVSA dev split (when the data
folder is there) and on the miniature one shipped in tests/fixtures (always)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model import eval as model_eval
from model import metrics
from model.labels import LABELS
from tests.fixtures.mini_data import mini_data_dir


@pytest.fixture(scope="module")
def mvsa_dev():
    return model_eval.load_split("mvsa-dev")


@pytest.fixture
def mini_mvsa_dev(monkeypatch):
    monkeypatch.setenv("SENTISTREAM_DATA_DIR", str(mini_data_dir()))
    return model_eval.load_split("mvsa-dev")


def _noisy_predictions(gold: np.ndarray, keep: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(gold.shape[0]) < keep, gold, rng.integers(0, 3, size=gold.shape[0]))


@pytest.mark.dataset("mvsa-single")
def test_report_numbers_match_metrics_and_baselines(mvsa_dev, tmp_path: Path) -> None:
    examples, train_labels = mvsa_dev
    gold = np.array([example.label for example in examples])
    predicted = _noisy_predictions(gold, keep=0.8, seed=0)
    report = model_eval.evaluate_predictions("mvsa-dev", examples, predicted, train_labels, n_resamples=200)

    assert report.n_items == len(examples) == 450
    accuracy = report.model.intervals["accuracy"]
    assert accuracy.value == pytest.approx(metrics.accuracy(gold, predicted))
    assert accuracy.low < accuracy.value < accuracy.high
    # The majority baseline is fitted on MVSA train (positive-heavy), not on the dev labels.
    vader, majority = report.baselines
    assert set(majority.predictions.tolist()) == {int(np.argmax(np.bincount(train_labels)))}
    assert majority.metrics.macro_recall == pytest.approx(1 / 3)
    assert vader.name == "VADER" and 0.3 < vader.metrics.accuracy < 0.8
    # An 80%-correct model beats both baselines significantly on accuracy.
    tests = {(name, metric): result for name, metric, result in report.comparisons}
    assert tests[("VADER", "accuracy")].p_value < 0.01
    assert tests[("VADER", "accuracy")].difference.value == pytest.approx(
        metrics.accuracy(gold, predicted) - vader.metrics.accuracy
    )

    markdown_path = model_eval.write_report(report, tmp_path, examples=examples)
    text = markdown_path.read_text()
    assert "MVSA-Single" in text and "MDSE" in text and "VADER" in text and "majority class" in text
    assert accuracy.format() in text
    assert "![confusion matrix](confusion.png)" in text
    png = (tmp_path / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert len(rows) == 451
    assert rows[1].split(",")[1] == LABELS[gold[0]]


def test_report_on_the_miniature_split_writes_consistent_files(mini_mvsa_dev, tmp_path: Path) -> None:
    examples, train_labels = mini_mvsa_dev
    assert len(examples) == 18 and train_labels.shape == (42,)  # majority is fitted on train, not dev
    gold = np.array([example.label for example in examples])
    predicted = _noisy_predictions(gold, keep=0.7, seed=3)
    report = model_eval.evaluate_predictions("mvsa-dev", examples, predicted, train_labels, n_resamples=100)
    assert report.n_items == 18
    assert report.model.intervals["accuracy"].value == pytest.approx(metrics.accuracy(gold, predicted))
    assert report.model.metrics.macro_recall == pytest.approx(metrics.macro_recall(gold, predicted))
    vader, majority = report.baselines
    assert set(majority.predictions.tolist()) == {int(np.argmax(np.bincount(train_labels)))}
    assert vader.name == "VADER" and len(vader.predictions) == 18
    model_eval.write_report(report, tmp_path, examples=examples)
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert len(rows) == 19
    assert [row.split(",")[1] for row in rows[1:]] == [LABELS[label] for label in gold]
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_rejects_mismatched_predictions(mini_mvsa_dev) -> None:
    examples, train_labels = mini_mvsa_dev
    with pytest.raises(ValueError, match="predictions"):
        model_eval.evaluate_predictions("mvsa-dev", examples, [0, 1], train_labels, n_resamples=10)


@pytest.mark.dataset("semeval2017-task4a", "tweeteval-sentiment")
def test_tweeteval_majority_comes_from_training_pool() -> None:
    examples, train_labels = model_eval.load_split("tweeteval-val")
    assert len(examples) == 2000
    # The pool minus validation tweets, far larger than the validation split.
    assert train_labels.shape[0] > 40000
    gold = np.array([example.label for example in examples])
    report = model_eval.evaluate_predictions(
        "tweeteval-val", examples, _noisy_predictions(gold, 0.6, seed=1), train_labels, n_resamples=100
    )
    markdown = model_eval.render_markdown(report)
    assert "macro recall" in markdown.split("## Headline")[1].splitlines()[2]
    assert "TimeLMs-2021" in markdown


def test_evaluate_checkpoint_scores_through_the_scorer(tmp_path: Path, monkeypatch) -> None:
    """A real (tiny, untrained) checkpoint through the serving path; the report agrees with it."""
    monkeypatch.setenv("SENTISTREAM_DATA_DIR", str(mini_data_dir()))
    import torch

    from model import checkpoint
    from model.config import ModelConfig
    from model.network import SentimentNet
    from model.scorer import ScoreInput, Scorer

    torch.manual_seed(0)
    config = ModelConfig(cnn_filters=16)
    path = tmp_path / "tiny.pt"
    version = checkpoint.save(path, SentimentNet(config), config)
    report = model_eval.evaluate_checkpoint(
        path, "mvsa-dev", out_dir=tmp_path / "report", device="cpu", limit=12, n_resamples=50, progress=False
    )
    assert report.n_items == 12 and report.model_version == version
    assert version in (tmp_path / "report" / "report.md").read_text()
    assert "Only the first 12 examples" in report.markdown

    examples = model_eval.load_split("mvsa-dev")[0][:12]
    scorer = Scorer.from_checkpoint(path, device="cpu")
    served = scorer.score([ScoreInput(e.text, images=[e.image_path]) for e in examples])
    assert [LABELS[p] for p in report.model.predictions] == [result.label for result in served]
    rows = (tmp_path / "report" / "predictions.csv").read_text().splitlines()[1:]
    for row, result in zip(rows, served, strict=True):
        cells = row.split(",")
        assert cells[2] == result.label
        probabilities = [float(value) for value in cells[5:8]]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
        assert probabilities[LABELS.index(result.label)] == pytest.approx(max(probabilities))
