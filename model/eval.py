"""``sentistream model eval``: score a checkpoint on a validation split and write a markdown report.

The report puts the model beside the two baselines on the same items (VADER and the majority class
of the training split), gives every headline figure a 95% bootstrap interval, tests the model
against each baseline with a paired bootstrap, and prints the published figures for the dataset so a
reader sees where the number sits (those are test-split figures; ours are validation figures, since
the test splits are held out).

The one path from checkpoint to predictions is ``model.scorer.Scorer``, the same object the stream
worker calls, so the figure measures what is served. ``evaluate_predictions`` does the rest from plain
label vectors, which is what the benchmark and the ablations reuse.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from model import data, metrics
from model.baselines import MajorityBaseline, VaderBaseline
from model.labels import LABEL_TO_INDEX, LABELS
from model.plots import plot_confusion_matrix
from model.progress import progress_bar

if TYPE_CHECKING:
    from model.scorer import Scorer

logger = logging.getLogger(__name__)

DATASETS = ("tweeteval-val", "mvsa-dev")


@dataclass(frozen=True)
class PublishedFigure:
    """A figure from the literature, as quoted in ``../shared/data/README.md``."""

    system: str
    values: dict[str, float]  # metric name -> value in percent


@dataclass(frozen=True)
class SplitSpec:
    """What is evaluated and how the literature reports it."""

    name: str
    title: str
    headline_metrics: tuple[str, ...]  # in CLASSIFICATION_METRICS; the first is the primary one
    published_split: str
    published: tuple[PublishedFigure, ...]


SPLITS: dict[str, SplitSpec] = {
    "tweeteval-val": SplitSpec(
        name="tweeteval-val",
        title="TweetEval sentiment, validation split",
        headline_metrics=("macro_recall", "accuracy", "macro_f1", "weighted_f1"),
        published_split="TweetEval sentiment test split, macro recall (TweetEval leaderboard)",
        published=tuple(
            PublishedFigure(system, {"macro_recall": value})
            for system, value in (
                ("TimeLMs-2021", 73.7),
                ("BERTweet", 73.4),
                ("RoBERTa-Retrained", 72.8),
                ("RoBERTa-Base", 71.3),
                ("RoBERTa-Twitter", 69.1),
                ("FastText", 62.9),
                ("SVM", 62.9),
                ("LSTM", 58.3),
                ("VADER", 57.0),
            )
        ),
    ),
    "mvsa-dev": SplitSpec(
        name="mvsa-dev",
        title="MVSA-Single, dev split (CLMLF split)",
        headline_metrics=("accuracy", "weighted_f1", "macro_recall", "macro_f1"),
        published_split="MVSA-Single test split, accuracy / weighted F1",
        published=tuple(
            PublishedFigure(system, {"accuracy": acc, "weighted_f1": wf1})
            for system, acc, wf1 in (
                ("MultiSentiNet", 69.84, 69.63),
                ("Co-MN-Hop6", 70.51, 70.01),
                ("MGNNS", 73.77, 72.70),
                ("CLMLF", 75.33, 73.46),
                ("MDSE", 76.22, 75.71),
            )
        ),
    ),
}

METRIC_TITLES = {
    "accuracy": "accuracy",
    "macro_recall": "macro recall",
    "macro_f1": "macro F1",
    "weighted_f1": "weighted F1",
    "macro_precision": "macro precision",
    "micro_f1": "micro F1",
}


def load_split(name: str) -> tuple[list[data.Example], np.ndarray]:
    """The evaluated examples and the *training* labels the majority baseline is fitted on.

    TweetEval's training side is the SemEval pool without the validation tweets (as the model is
    trained); MVSA's is its train split.
    """
    if name == "tweeteval-val":
        examples = data.load_tweeteval_val()
        train = data.training_pool_without(examples)
    elif name == "mvsa-dev":
        examples = data.load_mvsa("dev")
        train = data.load_mvsa("train")
    else:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    return examples, np.array([example.label for example in train], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


@dataclass
class SystemResult:
    """One system's predictions on the split, its metrics and their intervals."""

    name: str
    predictions: np.ndarray
    metrics: metrics.ClassificationMetrics
    intervals: dict[str, metrics.Interval]


@dataclass
class EvalReport:
    """Everything the markdown report shows; ``markdown`` is the rendered text."""

    dataset: str
    n_items: int
    gold: np.ndarray
    model: SystemResult
    baselines: list[SystemResult]
    comparisons: list[tuple[str, str, metrics.PairedBootstrapResult]]  # (baseline, metric, result)
    n_resamples: int
    model_version: str = ""
    checkpoint: str = ""
    seconds: float = 0.0
    confusion_png: Path | None = None
    markdown: str = ""
    notes: list[str] = field(default_factory=list)


def score_system(
    name: str,
    gold: np.ndarray,
    predictions: np.ndarray,
    metric_names: Sequence[str],
    n_resamples: int,
    seed: int,
) -> SystemResult:
    """Metrics of one prediction vector with a bootstrap interval for each headline metric."""
    intervals = {
        metric_name: metrics.bootstrap_ci(
            metrics.CLASSIFICATION_METRICS[metric_name], gold, predictions, n_resamples=n_resamples, seed=seed
        )
        for metric_name in metric_names
    }
    return SystemResult(name, predictions, metrics.classification_metrics(gold, predictions), intervals)


def evaluate_predictions(
    dataset: str,
    examples: Sequence[data.Example],
    predictions: Sequence[int] | np.ndarray,
    train_labels: Sequence[int] | np.ndarray,
    model_name: str = "model",
    n_resamples: int = 1000,
    seed: int = 0,
) -> EvalReport:
    """Metrics, intervals, baselines and paired tests for a model's predictions on ``examples``.

    The baselines run on the same examples; the majority class comes from ``train_labels``.
    """
    spec = SPLITS[dataset]
    gold = np.array([example.label for example in examples], dtype=np.int64)
    predicted = np.asarray(predictions, dtype=np.int64)
    if predicted.shape != gold.shape:
        raise ValueError(f"{predicted.shape[0]} predictions for {gold.shape[0]} examples")
    texts = [example.text for example in examples]
    model_result = score_system(model_name, gold, predicted, spec.headline_metrics, n_resamples, seed)
    baselines = [
        score_system(baseline.name, gold, baseline.predict(texts), spec.headline_metrics, n_resamples, seed)
        for baseline in (VaderBaseline(), MajorityBaseline().fit(train_labels))
    ]
    comparisons = [
        (
            baseline.name,
            metric_name,
            metrics.paired_bootstrap_test(
                metrics.CLASSIFICATION_METRICS[metric_name],
                gold,
                predicted,
                baseline.predictions,
                n_resamples=n_resamples,
                seed=seed,
            ),
        )
        for baseline in baselines
        for metric_name in spec.headline_metrics[:2]
    ]
    return EvalReport(
        dataset=dataset,
        n_items=int(gold.shape[0]),
        gold=gold,
        model=model_result,
        baselines=baselines,
        comparisons=comparisons,
        n_resamples=n_resamples,
    )


# ---------------------------------------------------------------------------------------------
# predictions from a checkpoint
# ---------------------------------------------------------------------------------------------


def _open_image(path: Path | None) -> list[Image.Image]:
    if path is None:
        return []
    try:
        with Image.open(path) as image:
            image.load()
            return [image.convert("RGB")]
    except (OSError, ValueError) as error:  # a missing or corrupt picture: score the text alone
        logger.warning("could not read %s (%s); scoring text only", path, error)
        return []


@dataclass
class ScoredSplit:
    """Predicted class ids and class probabilities (rows in ``LABELS`` order) for each example."""

    predictions: np.ndarray
    probabilities: np.ndarray
    model_version: str


def predict_with_scorer(
    scorer: Scorer, examples: Sequence[data.Example], batch_size: int = 64, progress: bool = True
) -> ScoredSplit:
    """Run ``scorer.score`` over the examples in batches (text plus the post's picture, if any)."""
    from model.scorer import ScoreInput  # the serving path; imported here so metrics need no torch

    predictions: list[int] = []
    probabilities: list[list[float]] = []
    version = ""
    batches = range(0, len(examples), batch_size)
    for start in progress_bar(batches, enabled=progress, desc="scoring", unit="batch"):
        chunk = examples[start : start + batch_size]
        posts = [ScoreInput(text=example.text, images=_open_image(example.image_path)) for example in chunk]
        for result in scorer.score(posts):
            predictions.append(LABEL_TO_INDEX[result.label])
            probabilities.append([float(result.probabilities[name]) for name in LABELS])
            version = result.model_version
    return ScoredSplit(
        np.array(predictions, dtype=np.int64),
        np.array(probabilities, dtype=np.float64).reshape(-1, len(LABELS)),
        version,
    )


def evaluate_checkpoint(
    checkpoint: Path | str | None,
    dataset: str,
    out_dir: Path | str | None = None,
    device: str = "auto",
    batch_size: int = 64,
    n_resamples: int = 1000,
    limit: int | None = None,
    seed: int = 0,
    scorer: Scorer | None = None,
    progress: bool = True,
) -> EvalReport:
    """Score ``checkpoint`` (None: the packaged default) on ``dataset`` and build the report.

    With ``out_dir`` the markdown report (``report.md``), the confusion matrix PNG and a predictions
    CSV are written there. ``limit`` evaluates the first N examples only (smoke tests). An already
    loaded ``scorer`` (e.g. the benchmark's) is used instead of loading ``checkpoint`` again.
    """
    if dataset not in SPLITS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    started = time.perf_counter()
    if scorer is None:  # first: an unusable checkpoint fails before the data set is read
        from model.scorer import Scorer

        scorer = Scorer.from_checkpoint(checkpoint, device=device)
    examples, train_labels = load_split(dataset)
    if limit is not None:
        examples = examples[:limit]
    scored = predict_with_scorer(scorer, examples, batch_size=batch_size, progress=progress)
    if checkpoint is not None:
        checkpoint_name = str(checkpoint)
    else:
        from model.checkpoint import DEFAULT_CHECKPOINT

        checkpoint_name = f"{DEFAULT_CHECKPOINT.name} (packaged default)"
    report = evaluate_predictions(
        dataset,
        examples,
        scored.predictions,
        train_labels,
        model_name=f"model ({scored.model_version})" if scored.model_version else "model",
        n_resamples=n_resamples,
        seed=seed,
    )
    report.model_version = scored.model_version
    report.checkpoint = checkpoint_name
    report.seconds = time.perf_counter() - started
    if limit is not None:
        report.notes.append(f"Only the first {len(examples)} examples were evaluated (--limit).")
    if out_dir is not None:
        write_report(report, Path(out_dir), examples=examples, probabilities=scored.probabilities)
    else:
        report.markdown = render_markdown(report)
    return report


# ---------------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------------


def _percent(value: float) -> str:
    return f"{value * 100:.1f}"


def _p_value(p: float) -> str:
    return "≤ 0.001" if p <= 0.001 else f"{p:.3f}"


def render_markdown(report: EvalReport, confusion_png_name: str | None = None) -> str:
    """The report as markdown (percent figures, intervals in brackets)."""
    spec = SPLITS[report.dataset]
    headline = spec.headline_metrics
    lines = [f"# Evaluation on {spec.title}", ""]
    if report.checkpoint:
        lines.append(f"- checkpoint: `{report.checkpoint}`")
    if report.model_version:
        lines.append(f"- model version: `{report.model_version}`")
    lines += [
        f"- items: {report.n_items}",
        f"- primary metric: {METRIC_TITLES[headline[0]]}; 95% percentile bootstrap intervals over items "
        f"({report.n_resamples} resamples)",
    ]
    if report.seconds:
        lines.append(f"- wall time: {report.seconds:.0f} s")
    lines += [f"- note: {note}" for note in report.notes]
    lines += ["", "## Headline (percent, 95% CI)", ""]
    lines.append("| system | " + " | ".join(METRIC_TITLES[name] for name in headline) + " |")
    lines.append("|---" * (len(headline) + 1) + "|")
    for system in [report.model, *report.baselines]:
        cells = [system.intervals[name].format() for name in headline]
        lines.append(f"| {system.name} | " + " | ".join(cells) + " |")

    lines += ["", "## Per class (model)", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    per_class = report.model.metrics.per_class
    for index, label in enumerate(LABELS):
        lines.append(
            f"| {label} | {_percent(per_class.precision[index])} | {_percent(per_class.recall[index])} | "
            f"{_percent(per_class.f1[index])} | {int(per_class.support[index])} |"
        )
    summary = report.model.metrics.summary()
    lines += [
        "",
        "Averages (model): "
        + ", ".join(f"{METRIC_TITLES.get(key, key.replace('_', ' '))} {_percent(value)}" for key, value in summary.items()),
    ]

    lines += ["", "## Confusion matrix (model; rows gold, columns predicted)", ""]
    if confusion_png_name:
        lines += [f"![confusion matrix]({confusion_png_name})", ""]
    lines.append("| gold \\ predicted | " + " | ".join(LABELS) + " |")
    lines.append("|---" * (len(LABELS) + 1) + "|")
    for index, label in enumerate(LABELS):
        lines.append(f"| {label} | " + " | ".join(str(int(v)) for v in report.model.metrics.confusion[index]) + " |")

    lines += [
        "",
        f"## Model vs baselines (paired bootstrap, {report.n_resamples} resamples, two-sided)",
        "",
        "| baseline | metric | model | baseline | difference [95% CI] | p |",
        "|---|---|---|---|---|---|",
    ]
    for baseline_name, metric_name, result in report.comparisons:
        lines.append(
            f"| {baseline_name} | {METRIC_TITLES[metric_name]} | {_percent(result.metric_a)} | "
            f"{_percent(result.metric_b)} | {result.difference.format()} | {_p_value(result.p_value)} |"
        )

    published_metrics = [name for name in headline if any(name in fig.values for fig in spec.published)]
    lines += [
        "",
        "## Published figures",
        "",
        f"From `../shared/data/README.md`: {spec.published_split}. They are on the held-out test split, "
        "ours on the validation split, so they locate our figure rather than rank it.",
        "",
        "| system | " + " | ".join(METRIC_TITLES[name] for name in published_metrics) + " |",
        "|---" * (len(published_metrics) + 1) + "|",
    ]
    for figure in spec.published:
        lines.append(
            f"| {figure.system} | "
            + " | ".join(f"{figure.values[name]:g}" if name in figure.values else "" for name in published_metrics)
            + " |"
        )
    ours = " | ".join(report.model.intervals[name].format() for name in published_metrics)
    lines.append(f"| **this model ({report.dataset})** | {ours} |")
    lines.append("")
    return "\n".join(lines)


def write_report(
    report: EvalReport,
    out_dir: Path,
    examples: Sequence[data.Example] | None = None,
    probabilities: np.ndarray | None = None,
) -> Path:
    """Write ``report.md``, ``confusion.png`` and (with examples) ``predictions.csv``; returns the .md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report.confusion_png = plot_confusion_matrix(
        report.model.metrics.confusion,
        out_dir / "confusion.png",
        title=f"{report.model.name} on {report.dataset}",
    )
    report.markdown = render_markdown(report, confusion_png_name="confusion.png")
    markdown_path = out_dir / "report.md"
    markdown_path.write_text(report.markdown, encoding="utf-8")
    if examples is not None:
        with (out_dir / "predictions.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            header = ["id", "gold", "predicted", "vader", "majority"]
            if probabilities is not None:
                header += [f"p_{label}" for label in LABELS]
            writer.writerow(header)
            vader, majority = report.baselines
            for index, example in enumerate(examples):
                row = [
                    example.id,
                    LABELS[report.gold[index]],
                    LABELS[report.model.predictions[index]],
                    LABELS[vader.predictions[index]],
                    LABELS[majority.predictions[index]],
                ]
                if probabilities is not None:
                    row += [f"{p:.4f}" for p in probabilities[index]]
                writer.writerow(row)
    return markdown_path


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sentistream model eval`` (registered by ``model.cli``)."""
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint .pt (default: packaged one)")
    parser.add_argument("--dataset", choices=DATASETS, default="tweeteval-val")
    parser.add_argument("--out", type=Path, default=None, help="folder for report.md, confusion.png, predictions.csv")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report if ``--out`` is given, print the markdown to stdout."""
    report = evaluate_checkpoint(
        args.checkpoint,
        args.dataset,
        out_dir=args.out,
        device=args.device,
        batch_size=args.batch_size,
        n_resamples=args.resamples,
        limit=args.limit,
        seed=args.seed,
    )
    sys.stdout.write(report.markdown)
    if args.out is not None:
        sys.stdout.write(f"\nreport written to {Path(args.out) / 'report.md'}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m model.eval`` without the sentistream CLI."""
    parser = argparse.ArgumentParser(prog="sentistream model eval", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
