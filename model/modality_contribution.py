"""What each modality contributes to one trained model's verdicts on MVSA-Single dev.

Why: analysts read a post's ``modality_weights`` as "what drove this score", and the model card claims
the picture helps.  Retraining text-only and picture-only models (``model.ablate``) answers "is fusion
worth training"; this answers the cheaper, complementary question for the checkpoint that is actually
shipped: scored through the serving ``Scorer`` on the same dev posts with text and picture, with the text
alone (the picture withheld) and with the picture alone (the text withheld), how often does the picture
change the verdict, is it for the better (paired bootstrap on the same posts), and what weights does the
fusion gate give each modality when it does.

    python -m model.modality_contribution --checkpoint model/checkpoints/sentistream-default.pt \\
        --out model/checkpoints/MODALITY_CONTRIBUTION.md
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model import metrics
from model.labels import LABELS
from model.progress import progress_bar

logger = logging.getLogger(__name__)

VIEWS = ("text + picture", "text only", "picture only")


@dataclass
class ViewScores:
    """One way of presenting the dev posts: predicted class indices and per-post modality weights."""

    name: str
    predictions: np.ndarray
    weights: np.ndarray  # (N, 2): text, visual share of the verdict


@dataclass
class Contribution:
    """The three views of the same posts, scored by one checkpoint."""

    model_version: str
    labels: np.ndarray
    has_picture: np.ndarray
    views: dict[str, ViewScores]
    n_resamples: int
    seconds: float


def score_views(scorer: Any, examples: Sequence[Any], batch_size: int = 64,
                progress: bool = True) -> tuple[dict[str, ViewScores], np.ndarray]:
    """Score ``examples`` three ways through ``scorer`` (a ``model.Scorer``): both modalities, the text
    alone and the picture alone; also which posts have a decodable picture.  A post whose picture is
    missing or undecodable has none in any view, so its "picture only" verdict is an empty post's."""
    from model.eval import _open_image
    from model.scorer import ScoreInput

    out: dict[str, tuple[list[int], list[list[float]]]] = {name: ([], []) for name in VIEWS}
    has_picture: list[bool] = []
    for start in progress_bar(range(0, len(examples), batch_size), enabled=progress, desc="views", unit="batch"):
        chunk = examples[start:start + batch_size]
        pictures = [_open_image(example.image_path) for example in chunk]
        has_picture.extend(bool(p) for p in pictures)
        inputs = {
            "text + picture": [ScoreInput(e.text, images=p) for e, p in zip(chunk, pictures, strict=True)],
            "text only": [ScoreInput(e.text) for e in chunk],
            "picture only": [ScoreInput("", images=p) for p in pictures],
        }
        for name, posts in inputs.items():
            predictions, weights = out[name]
            for result in scorer.score(posts):
                predictions.append(LABELS.index(result.label))
                weights.append([result.modality_weights.get("text", 0.0), result.modality_weights.get("visual", 0.0)])
    views = {name: ViewScores(name, np.asarray(p, dtype=np.int64), np.asarray(w, dtype=np.float64).reshape(-1, 2))
             for name, (p, w) in out.items()}
    return views, np.asarray(has_picture, dtype=bool)


def measure(checkpoint: Path | None, device: str = "auto", limit: int | None = None, n_resamples: int = 1000,
            batch_size: int = 64, progress: bool = True) -> Contribution:
    """Load ``checkpoint`` (None: the shipped one) and score MVSA-Single dev's three views."""
    from model.eval import load_split
    from model.scorer import Scorer

    started = time.perf_counter()
    scorer = Scorer.from_checkpoint(checkpoint, device=device)
    examples, _ = load_split("mvsa-dev")
    if limit is not None:
        examples = examples[:limit]
    views, has_picture = score_views(scorer, examples, batch_size=batch_size, progress=progress)
    return Contribution(scorer.model_version, np.asarray([e.label for e in examples], dtype=np.int64), has_picture,
                        views, n_resamples, time.perf_counter() - started)


def render_markdown(result: Contribution, command: str) -> str:
    """The report: each view's accuracy and weighted F1 with intervals, the paired tests of the full
    view against each single modality, how often the picture flips a verdict and which way, and the
    gate's mean weights."""
    y = result.labels
    full = result.views["text + picture"]
    lines = [
        "# What each modality contributes (MVSA-Single dev, one checkpoint)",
        "",
        f"- model version: `{result.model_version}`",
        f"- posts: {len(y)} ({int(result.has_picture.sum())} with a decodable picture)",
        f"- command: `{command}`",
        f"- intervals: 95 % percentile bootstrap over posts ({result.n_resamples} resamples); Δ and p: paired "
        "bootstrap against text + picture on the same posts (two-sided)",
        f"- wall time: {result.seconds / 60:.1f} min",
        "",
        "The same trained model sees each post three ways through the serving `Scorer`: this measures what the "
        "shipped model draws from each modality, not what a model trained on one modality could reach "
        "(that is `model.ablate`, `ABLATIONS*.md`).",
        "",
        "| view | accuracy [95% CI] | weighted F1 [95% CI] | Δ accuracy vs text + picture [95% CI] | p | "
        "Δ weighted F1 | p | mean gate weight text / picture |",
        "|---|---|---|---|---|---|---|---|",
    ]
    readings = []
    for name, view in result.views.items():
        acc = metrics.bootstrap_ci(metrics.accuracy, y, view.predictions, result.n_resamples)
        wf1 = metrics.bootstrap_ci(metrics.weighted_f1, y, view.predictions, result.n_resamples)
        delta = p_acc = delta_f1 = p_f1 = ""
        if name != "text + picture":
            test = metrics.paired_bootstrap_test(metrics.accuracy, y, full.predictions, view.predictions,
                                                 result.n_resamples)
            test_f1 = metrics.paired_bootstrap_test(metrics.weighted_f1, y, full.predictions, view.predictions,
                                                    result.n_resamples)
            d = test.difference
            delta = f"{d.value * 100:+.1f} [{d.low * 100:+.1f}, {d.high * 100:+.1f}]"
            p_acc, delta_f1, p_f1 = f"{test.p_value:.3f}", f"{test_f1.difference.value * 100:+.1f}", \
                f"{test_f1.p_value:.3f}"
            verdict = "significantly" if test.p_value < 0.05 else "not significantly"
            readings.append(f"- Text + picture vs {name}: accuracy {test.metric_a * 100:.1f} vs "
                            f"{test.metric_b * 100:.1f}, Δ {delta}, p = {test.p_value:.3f} ({verdict} different).")
        weights = view.weights[result.has_picture] if result.has_picture.any() else view.weights
        lines.append(f"| {name} | {acc.value * 100:.1f} [{acc.low * 100:.1f}, {acc.high * 100:.1f}] | "
                     f"{wf1.value * 100:.1f} [{wf1.low * 100:.1f}, {wf1.high * 100:.1f}] | {delta or 'reference'} | "
                     f"{p_acc} | {delta_f1 or 'reference'} | {p_f1} | "
                     f"{weights[:, 0].mean():.2f} / {weights[:, 1].mean():.2f} |")
    text_only = result.views["text only"].predictions
    changed = (full.predictions != text_only) & result.has_picture
    fixed = changed & (full.predictions == y)
    broken = changed & (text_only == y)
    flipped_weights = full.weights[changed]
    lines += [
        "",
        "Mean gate weights are over the posts with a picture (a post without one gives the text all the weight).",
        "",
        "## Reading",
        "",
        *readings,
        f"- The picture changes the verdict on {int(changed.sum())} of {int(result.has_picture.sum())} posts with "
        f"one: {int(fixed.sum())} to the right label, {int(broken.sum())} away from it "
        f"({int(changed.sum() - fixed.sum() - broken.sum())} from one wrong label to another).",
    ]
    kept = result.has_picture & ~changed
    if changed.any() and kept.any():
        lines.append(f"- On those posts the gate gives the picture {flipped_weights[:, 1].mean():.2f} of the weight "
                     f"on average, against {full.weights[kept][:, 1].mean():.2f} where the picture leaves the "
                     "verdict as it is.")
    return "\n".join(lines) + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model.modality_contribution", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint .pt (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default: print only)")
    add_dev_scoring_arguments(parser)
    return parser


def add_dev_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """How MVSA dev is scored through the Scorer and tested, for every report that does it this way."""
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--limit", type=int, default=None, help="first N dev posts only (smoke runs)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    result = measure(args.checkpoint, device=args.device, limit=args.limit, n_resamples=args.resamples,
                     batch_size=args.batch_size, progress=args.progress)
    command = "python -m model.modality_contribution " + " ".join(argv if argv is not None else sys.argv[1:])
    markdown = render_markdown(result, command.strip())
    sys.stdout.write(markdown)
    if args.out is not None:
        args.out.write_text(markdown, encoding="utf-8")
        logger.info("written to %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
