"""``sentistream model ablate``: the controlled ablations of seed paper 4.7 as one markdown table.

Every row trains the network from the cached frozen features of MVSA-Single train (text + picture)
with one ``ModelConfig`` field changed from the reference (text+image, text CNN on, concat fusion,
attention pooling), and is scored on MVSA-Single dev:

(a) text-only / image-only / audio-only     (b) text+image vs text+image+audio
(c) with vs without the text CNN front end   (d) concat vs GMU vs low-rank TFN vs cross-modal attention
(e) attention vs mean (and max) pooling

Protocol, the same for every row: MVSA train minus a stratified 10% *selection* split; early
stopping and the best epoch are chosen on the selection split, so the dev split is only ever used to
report. Each row gets 95% bootstrap intervals on dev and a paired bootstrap test against the
reference row on the same dev items (a difference between two rows is then about the rows, not about
which tweets happened to be in dev). Audio rows say that there is no labelled audio data instead
of printing a number: an audio branch trained on nothing would only measure noise.

The budget is deliberately small (few epochs, two CPU cores): the table compares configurations
under equal budgets; it is not a tuned leaderboard.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from model import metrics

logger = logging.getLogger(__name__)

NO_AUDIO = "no labelled audio data (MVSA-Single has none): not run"


@dataclass(frozen=True)
class AblationRow:
    """One configuration: ``overrides`` of ModelConfig fields, or None when it cannot be run."""

    key: str
    group: str
    description: str
    overrides: dict[str, Any] | None
    reason: str = ""


REFERENCE = AblationRow("full", "(b)", "text+image (reference: CNN, concat, attention)", {})
ROWS: tuple[AblationRow, ...] = (
    REFERENCE,
    AblationRow("text-only", "(a)", "text only", {"modalities": ("text",)}),
    AblationRow("image-only", "(a)", "image only", {"modalities": ("visual",)}),
    AblationRow("audio-only", "(a)", "audio only", None, NO_AUDIO),
    AblationRow("text+image+audio", "(b)", "text+image+audio", None, NO_AUDIO),
    AblationRow("no-text-cnn", "(c)", "without text CNN (encoder tokens -> BiLSTM)", {"text_cnn": False}),
    AblationRow("gmu", "(d)", "GMU fusion", {"fusion": "gmu"}),
    AblationRow("lowrank", "(d)", "low-rank tensor fusion", {"fusion": "lowrank"}),
    AblationRow("crossattn", "(d)", "cross-modal attention fusion", {"fusion": "crossattn"}),
    AblationRow("mean-pooling", "(e)", "mean pooling instead of attention", {"pooling": "mean"}),
    AblationRow("max-pooling", "(e)", "max pooling instead of attention", {"pooling": "max"}),
)
ROW_KEYS = tuple(row.key for row in ROWS)


@dataclass
class RowResult:
    """A trained row's dev predictions (first seed) and its figures."""

    row: AblationRow
    predictions: np.ndarray | None = None
    seed_accuracies: list[float] = field(default_factory=list)
    seed_weighted_f1: list[float] = field(default_factory=list)
    best_epochs: list[int] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class AblationSettings:
    """The training budget shared by every row."""

    epochs: int = 6
    patience: int = 3
    seeds: int = 1
    batch_size: int = 32
    lr: float = 1e-4
    select_share: float = 0.1
    train_limit: int | None = None
    n_resamples: int = 1000
    device: str = "cpu"
    class_weights: str = "sqrt"


def stratified_selection_split(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, selection): ``share`` of each class held out for early stopping."""
    rng = np.random.default_rng(seed)
    selection: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, round(share * len(members))) if len(members) > 1 else 0
        selection.extend(rng.choice(members, size=count, replace=False).tolist())
    chosen = np.zeros(len(labels), dtype=bool)
    chosen[selection] = True
    return np.flatnonzero(~chosen), np.flatnonzero(chosen)


def load_mvsa_features(cache_dir: Path | None = None) -> tuple[Dataset, Dataset]:
    """MVSA-Single train and dev from the feature cache (text at the last layer + pictures)."""
    from model.features import CachedFeatureDataset, FeatureCache

    cache = FeatureCache(cache_dir)
    train = CachedFeatureDataset(cache, "mvsa", "train", images=True)
    dev = CachedFeatureDataset(cache, "mvsa", "dev", images=True)
    return train, dev


def train_row(
    row: AblationRow,
    train_ds: Dataset,
    dev_ds: Dataset,
    settings: AblationSettings,
) -> RowResult:
    """Train ``row`` for each seed; keep the first seed's dev predictions for the bootstrap."""
    from model import train as training
    from model.config import ModelConfig

    result = RowResult(row)
    if row.overrides is None:
        return result
    started = time.perf_counter()
    labels = training.dataset_labels(train_ds)
    gold_dev = training.dataset_labels(dev_ds)
    for seed_offset in range(settings.seeds):
        seed = seed_offset
        train_idx, select_idx = stratified_selection_split(labels, settings.select_share, seed=1000 + seed)
        if settings.train_limit is not None:
            train_idx = np.sort(np.random.default_rng(seed).permutation(train_idx)[: settings.train_limit])
        fit_train, fit_select = Subset(train_ds, train_idx.tolist()), Subset(train_ds, select_idx.tolist())
        config = replace(
            ModelConfig(class_weights=training.class_weights_for(labels[train_idx], settings.class_weights)),
            **row.overrides,
        )
        args = training.default_fit_args(
            epochs=settings.epochs,
            patience=settings.patience,
            batch_size=settings.batch_size,
            lr=settings.lr,
            seed=seed,
            device=settings.device,
            log_dir=None,
            progress=False,
        )
        fitted = training.fit(config, fit_train, {"mvsa-select": fit_select}, args)
        device = training.resolve_device(settings.device)
        dev_result = training.evaluate(
            fitted.net, training.make_loader(dev_ds, args.eval_batch_size, train=False), device
        )
        if not np.array_equal(dev_result.labels, gold_dev):
            raise RuntimeError("dev predictions came back in a different order than the dev labels")
        if result.predictions is None:
            result.predictions = dev_result.predictions.astype(np.int64)
        result.seed_accuracies.append(metrics.accuracy(gold_dev, dev_result.predictions))
        result.seed_weighted_f1.append(metrics.weighted_f1(gold_dev, dev_result.predictions))
        result.best_epochs.append(fitted.best_epoch)
        logger.info(
            "%s seed %d: dev accuracy %.4f, weighted F1 %.4f (best epoch %d, %.0f s)",
            row.key, seed, result.seed_accuracies[-1], result.seed_weighted_f1[-1], fitted.best_epoch,
            fitted.seconds,
        )
    result.seconds = time.perf_counter() - started
    return result


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> str:
    array = np.asarray(values, dtype=np.float64) * 100
    spread = array.std(ddof=1) if len(array) > 1 else 0.0
    return f"{array.mean():.1f} ± {spread:.1f}"


def _p_value(p: float) -> str:
    return "≤ 0.001" if p <= 0.001 else f"{p:.3f}"


def render_table(
    results: Sequence[RowResult],
    gold: np.ndarray,
    settings: AblationSettings,
    n_train: int,
    command: str = "",
    seconds: float = 0.0,
) -> str:
    """Markdown: one row per configuration with dev intervals and a paired test vs the reference."""
    reference = next((r for r in results if r.row.key == REFERENCE.key and r.predictions is not None), None)
    n = settings.n_resamples
    lines = [
        "# Ablations on MVSA-Single dev",
        "",
        f"- data: MVSA-Single train from the feature cache ({n_train} posts, 10% of them held out per class "
        f"to choose the epoch), reported on MVSA-Single dev ({len(gold)} posts); frozen MiniLM-L6 token "
        "vectors and EfficientNet-Lite0 pooled vectors",
        f"- budget per row: at most {settings.epochs} epochs, patience {settings.patience}, batch "
        f"{settings.batch_size}, LR {settings.lr:g}, {settings.seeds} seed(s), class weights "
        f"'{settings.class_weights}'" + (f", training limited to {settings.train_limit} posts" if settings.train_limit else ""),
        f"- intervals: 95% percentile bootstrap over dev posts ({n} resamples); Δ and p: paired bootstrap "
        "against the reference row on the same posts (two-sided); first seed's predictions",
    ]
    if command:
        lines.append(f"- command: `{command}`")
    if seconds:
        lines.append(f"- wall time: {seconds / 60:.1f} min")
    seeds_column = settings.seeds > 1
    header = "| group | configuration | accuracy [95% CI] | weighted F1 [95% CI] | macro F1 [95% CI] | Δ accuracy vs ref [95% CI] | p (accuracy) | Δ weighted F1 | p (weighted F1) |"
    if seeds_column:
        header += " accuracy over seeds | weighted F1 over seeds |"
    header += " best epoch | time |"
    lines += ["", header, "|" + "---|" * (header.count("|") - 1)]
    for result in results:
        row = result.row
        name = f"{row.description}"
        if result.predictions is None:
            blanks = 6 + (2 if seeds_column else 0)
            lines.append(f"| {row.group} | {name} | {row.reason or 'not run'} |" + " |" * blanks + " — | — |")
            continue
        predicted = result.predictions
        cells = [
            metrics.bootstrap_ci(metric, gold, predicted, n_resamples=n).format()
            for metric in (metrics.accuracy, metrics.weighted_f1, metrics.macro_f1)
        ]
        if reference is None or result is reference:
            cells += ["reference", "", "reference", ""]
        else:
            for metric in (metrics.accuracy, metrics.weighted_f1):
                test = metrics.paired_bootstrap_test(metric, gold, predicted, reference.predictions, n_resamples=n)
                diff = test.difference
                cells += [
                    f"{diff.value * 100:+.1f} [{diff.low * 100:+.1f}, {diff.high * 100:+.1f}]"
                    if metric is metrics.accuracy
                    else f"{diff.value * 100:+.1f}",
                    _p_value(test.p_value),
                ]
        if seeds_column:
            cells += [_mean_std(result.seed_accuracies), _mean_std(result.seed_weighted_f1)]
        cells += [",".join(str(epoch) for epoch in result.best_epochs), f"{result.seconds / 60:.1f} min"]
        lines.append(f"| {row.group} | {name} | " + " | ".join(cells) + " |")
    lines += ["", *reading(results, gold, n)]
    return "\n".join(lines) + "\n"


def reading(results: Sequence[RowResult], gold: np.ndarray, n_resamples: int) -> list[str]:
    """Plain-language conclusions computed from the numbers (the paper's fusion claim first)."""
    by_key = {r.row.key: r for r in results if r.predictions is not None}
    reference = by_key.get(REFERENCE.key)
    if reference is None:
        return []
    lines = ["## Reading", ""]
    for key, label in (("text-only", "text alone"), ("image-only", "the picture alone")):
        other = by_key.get(key)
        if other is None:
            continue
        test = metrics.paired_bootstrap_test(
            metrics.accuracy, gold, reference.predictions, other.predictions, n_resamples=n_resamples
        )
        verdict = (
            "beats" if test.difference.value > 0 and test.p_value < 0.05
            else "is worse than" if test.difference.value < 0 and test.p_value < 0.05
            else "is not significantly different from"
        )
        lines.append(
            f"- Fusion (text+image) {verdict} {label}: accuracy {test.metric_a * 100:.1f} vs "
            f"{test.metric_b * 100:.1f}, Δ {test.difference.value * 100:+.1f} "
            f"[{test.difference.low * 100:+.1f}, {test.difference.high * 100:+.1f}], p = {_p_value(test.p_value)}."
        )
    significant = []
    architecture = [key for key in by_key if key not in (REFERENCE.key, "text-only", "image-only")]
    for key in architecture:
        result = by_key[key]
        test = metrics.paired_bootstrap_test(
            metrics.accuracy, gold, result.predictions, reference.predictions, n_resamples=n_resamples
        )
        if test.p_value < 0.05:
            significant.append(f"{result.row.description} ({test.difference.value * 100:+.1f}, p = {_p_value(test.p_value)})")
    if architecture and significant:
        lines.append("- Architecture rows that differ from the reference at p < 0.05: " + "; ".join(significant) + ".")
    elif architecture:
        lines.append(
            "- No architecture row (CNN front end, fusion, pooling) differs from the reference at p < 0.05: "
            "with 450 dev posts, differences of a few points are within noise."
        )
    lines.append("- Audio rows: " + NO_AUDIO + ".")
    return lines


def run_ablations(
    row_keys: Sequence[str] = ROW_KEYS,
    settings: AblationSettings | None = None,
    datasets: tuple[Dataset, Dataset] | None = None,
    command: str = "",
    partial_out: Path | None = None,
) -> str:
    """Train every selected row and return the markdown table (reference row always included).

    With ``partial_out`` the table so far is rewritten there after each row, so a long run that is
    interrupted still leaves its finished rows.
    """
    from model import train as training

    settings = settings or AblationSettings()
    keys = [REFERENCE.key, *[key for key in row_keys if key != REFERENCE.key]]
    unknown = [key for key in keys if key not in ROW_KEYS]
    if unknown:
        raise ValueError(f"unknown ablation rows {unknown}; choose from {ROW_KEYS}")
    train_ds, dev_ds = datasets if datasets is not None else load_mvsa_features()
    gold = training.dataset_labels(dev_ds)
    started = time.perf_counter()
    rows = {row.key: row for row in ROWS}
    results = []
    for key in keys:
        logger.info("ablation row %s", key)
        results.append(train_row(rows[key], train_ds, dev_ds, settings))
        if partial_out is not None:
            so_far = sorted(results, key=lambda r: ROW_KEYS.index(r.row.key))
            partial_out.write_text(
                render_table(so_far, gold, settings, len(train_ds), command, time.perf_counter() - started),
                encoding="utf-8",
            )
    ordered = sorted(results, key=lambda r: ROW_KEYS.index(r.row.key))
    return render_table(ordered, gold, settings, len(train_ds), command, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sentistream model ablate`` (registered by ``model.cli``)."""
    defaults = AblationSettings()
    parser.add_argument("--out", type=Path, required=True, help="markdown file for the table")
    parser.add_argument("--rows", default=",".join(ROW_KEYS), help=f"comma-separated subset of {','.join(ROW_KEYS)}")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--seeds", type=int, default=defaults.seeds)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--train-limit", type=int, default=None, help="train on N posts only (smoke runs)")
    parser.add_argument("--resamples", type=int, default=defaults.n_resamples)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None)


def run(args: argparse.Namespace) -> int:
    """Run the ablations, write the table to ``--out`` and echo it on stdout."""
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = AblationSettings(
        epochs=args.epochs,
        patience=args.patience,
        seeds=args.seeds,
        batch_size=args.batch_size,
        lr=args.lr,
        train_limit=args.train_limit,
        n_resamples=args.resamples,
        device=args.device,
    )
    command = "sentistream model ablate " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["model", "ablate"] else sys.argv[1:])
    table = run_ablations(
        [key.strip() for key in args.rows.split(",") if key.strip()],
        settings,
        datasets=load_mvsa_features(args.cache_dir),
        command=command,
        partial_out=args.out,
    )
    args.out.write_text(table, encoding="utf-8")
    sys.stdout.write(table)
    sys.stdout.write(f"\nwritten to {args.out}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m model.ablate`` without the sentistream CLI."""
    parser = argparse.ArgumentParser(prog="sentistream model ablate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
