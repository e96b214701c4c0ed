"""Does the shipped fusion earn its place?  The shipped checkpoint against text-only and picture-only
models retrained with its own recipe, on MVSA-Single dev, with paired bootstrap tests.

Why a module of its own: ``model.ablate`` compares configurations trained on MVSA-Single train alone
under a small equal budget, and ``model.modality_contribution`` withholds a modality from the one
shipped model.  Neither answers what analysts and issue #15 ask: would a model that never saw pictures
(or never saw text), trained on the same data with the same recipe, score the same posts as well as
the shipped text + picture model?  Here every checkpoint is scored through the serving ``Scorer`` on the
same 450 dev posts, each given the post's text and picture (a single-modality model uses what its
config names), and each retrained seed is tested against the shipped model on the same posts.

    python -m model.fusion_ablation --reference model/checkpoints/sentistream-default.pt \\
        --text-only t0.pt,t1.pt,t2.pt --picture-only p0.pt,p1.pt,p2.pt --out model/checkpoints/ABLATIONS.md

The report goes between two markers in ``--out`` (kept across runs; the rest of the file is untouched),
or at its top when the markers are not there yet.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model import metrics
from model.labels import LABELS
from model.modality_contribution import add_dev_scoring_arguments
from model.progress import progress_bar

logger = logging.getLogger(__name__)

START_MARKER = "<!-- fusion-ablation:start (written by python -m model.fusion_ablation) -->"
END_MARKER = "<!-- fusion-ablation:end -->"
ROLES = ("shipped (text + picture)", "text only, retrained", "picture only, retrained")


@dataclass
class CheckpointVerdicts:
    """One checkpoint's verdicts on the dev posts."""

    role: str
    path: Path
    model_version: str
    modalities: tuple[str, ...]
    seed: int | None
    command: str | None
    predictions: np.ndarray
    seed_accuracies: list[float] = field(default_factory=list)  # every trained seed's, where recorded


@dataclass
class FusionAblation:
    labels: np.ndarray
    has_picture: np.ndarray
    reference: CheckpointVerdicts
    rows: list[CheckpointVerdicts]
    n_resamples: int
    seconds: float


def score_checkpoint(path: Path, role: str, examples: Sequence[Any], pictures: Sequence[list[Any]],
                     device: str = "auto", batch_size: int = 64, progress: bool = True) -> CheckpointVerdicts:
    """Verdicts of the checkpoint at ``path`` on ``examples`` (text + their decoded ``pictures``)."""
    from model import checkpoint
    from model.scorer import ScoreInput, Scorer

    meta = checkpoint.read_payload(path)
    extra = meta.get("extra") or {}
    scorer = Scorer.from_checkpoint(path, device=device)
    predictions: list[int] = []
    for start in progress_bar(range(0, len(examples), batch_size), enabled=progress, desc=path.name, unit="batch"):
        chunk = examples[start:start + batch_size]
        posts = [ScoreInput(e.text, images=p) for e, p in zip(chunk, pictures[start:start + batch_size], strict=True)]
        predictions.extend(LABELS.index(result.label) for result in scorer.score(posts))
    seed = extra.get("chosen_seed")
    recorded = ((extra.get("per_seed_metrics") or {}).get("mvsa-dev") or {}).get("accuracy") or []
    return CheckpointVerdicts(role, path, scorer.model_version, tuple(scorer.config.modalities),
                              int(seed) if isinstance(seed, int) else None, extra.get("command"),
                              np.asarray(predictions, dtype=np.int64),
                              [float(a) for a in recorded if isinstance(a, int | float)])


def measure(reference: Path, text_only: Sequence[Path], picture_only: Sequence[Path], device: str = "auto",
            limit: int | None = None, n_resamples: int = 1000, batch_size: int = 64,
            progress: bool = True) -> FusionAblation:
    """Score MVSA-Single dev with every checkpoint; the pictures are decoded once for all of them."""
    from model.eval import _open_image, load_split

    started = time.perf_counter()
    examples, _ = load_split("mvsa-dev")
    if limit is not None:
        examples = examples[:limit]
    pictures = [_open_image(e.image_path) for e in examples]
    ref = score_checkpoint(reference, ROLES[0], examples, pictures, device, batch_size, progress)
    rows = [score_checkpoint(path, role, examples, pictures, device, batch_size, progress)
            for role, paths in ((ROLES[1], text_only), (ROLES[2], picture_only)) for path in paths]
    return FusionAblation(np.asarray([e.label for e in examples], dtype=np.int64),
                          np.asarray([bool(p) for p in pictures], dtype=bool), ref, rows, n_resamples,
                          time.perf_counter() - started)


def _ci(interval: metrics.Interval) -> str:
    return f"{interval.value * 100:.1f} [{interval.low * 100:.1f}, {interval.high * 100:.1f}]"


def _mean_std(values: Sequence[float]) -> str:
    if len(values) < 2:
        return f"{values[0] * 100:.1f}" if values else "–"
    return f"{statistics.mean(values) * 100:.1f} ± {statistics.stdev(values) * 100:.1f}"


def render_markdown(result: FusionAblation, command: str) -> str:
    """The table (every checkpoint with intervals, every retrained seed tested against the shipped model)
    and a reading per single-modality group."""
    y = result.labels
    ref = result.reference
    n = result.n_resamples
    lines = [
        START_MARKER,
        "## Fusion against single-modality models retrained with the same recipe (MVSA-Single dev)",
        "",
        f"- posts: {len(y)} ({int(result.has_picture.sum())} with a decodable picture); every checkpoint gets each "
        "post's text and picture through the serving `Scorer` and uses the modalities its config names",
        f"- intervals: 95 % percentile bootstrap over posts ({n} resamples); Δ and p: paired bootstrap of the "
        "shipped model against each retrained seed on the same posts (two-sided)",
        f"- command: `{command}`",
        f"- wall time: {result.seconds / 60:.1f} min",
        "",
        "| model | modalities | checkpoint | seed | accuracy [95% CI] | weighted F1 [95% CI] | "
        "Δ accuracy, shipped − this [95% CI] | p | Δ weighted F1 | p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(v: CheckpointVerdicts, tests: tuple[metrics.PairedBootstrapResult, ...] | None) -> str:
        acc = metrics.bootstrap_ci(metrics.accuracy, y, v.predictions, n)
        wf1 = metrics.bootstrap_ci(metrics.weighted_f1, y, v.predictions, n)
        if tests is None:
            compared = "reference | | reference | "
        else:
            d, d_f1 = tests[0].difference, tests[1].difference
            compared = (f"{d.value * 100:+.1f} [{d.low * 100:+.1f}, {d.high * 100:+.1f}] | {tests[0].p_value:.3f} | "
                        f"{d_f1.value * 100:+.1f} | {tests[1].p_value:.3f}")
        seed = "" if v.seed is None else str(v.seed)
        return (f"| {v.role} | {'+'.join(v.modalities)} | `{v.model_version}` | {seed} | {_ci(acc)} | {_ci(wf1)} | "
                f"{compared} |")

    lines.append(row(ref, None))
    by_role: dict[str, list[tuple[metrics.PairedBootstrapResult, metrics.PairedBootstrapResult]]] = {}
    for v in result.rows:
        tests = (metrics.paired_bootstrap_test(metrics.accuracy, y, ref.predictions, v.predictions, n),
                 metrics.paired_bootstrap_test(metrics.weighted_f1, y, ref.predictions, v.predictions, n))
        by_role.setdefault(v.role, []).append(tests)
        lines.append(row(v, tests))

    lines += ["", "### Reading", ""]
    if ref.seed_accuracies:
        lines.append(f"- The shipped recipe over its {len(ref.seed_accuracies)} seeds (recorded in the shipped checkpoint; "
                     f"the file is the seed its selection split chose): MVSA dev accuracy {_mean_std(ref.seed_accuracies)}.")
    for role, seeds in by_role.items():
        parts = []
        for name, k in (("accuracy", 0), ("weighted F1", 1)):
            tests = [pair[k] for pair in seeds]
            worst_p = max(t.p_value for t in tests)
            significant = sum(t.difference.value > 0 and t.p_value < 0.05 for t in tests)
            if all(t.difference.value > 0 for t in tests) and significant == len(tests):
                verdict = f"better than every seed, significantly (largest p = {worst_p:.3f})"
            elif all(t.difference.value > 0 for t in tests):
                verdict = (f"better than every seed, significantly for {significant} of {len(tests)} "
                           f"(largest p = {worst_p:.3f})")
            else:
                verdict = "not better than every seed"
            parts.append(f"{name} {tests[0].metric_a * 100:.1f} against {_mean_std([t.metric_b for t in tests])}: "
                         f"{verdict}")
        lines.append(f"- Shipped text + picture vs {role} ({len(seeds)} seed(s)): " + "; ".join(parts) + ".")
    commands = sorted({v.command for v in result.rows if v.command})
    if commands:
        lines += ["", "Retrained with (each checkpoint records its command):", "", "```",
                  *commands, "```"]
    lines.append(END_MARKER)
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Put ``section`` between the markers in ``path``, or after its first heading block when they are
    not there yet; a file that does not exist is created with the section alone."""
    if not path.exists():
        path.write_text(section, encoding="utf-8")
        return
    text = path.read_text(encoding="utf-8")
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start >= 0 and end > start:
        text = text[:start] + section.rstrip("\n") + text[end + len(END_MARKER):]
    else:
        lines = text.split("\n")
        at = 1 if lines and lines[0].startswith("# ") else 0
        text = "\n".join([*lines[:at], "", section.rstrip("\n"), *lines[at:]])
    path.write_text(text, encoding="utf-8")


def _paths(value: str) -> list[Path]:
    return [Path(part) for part in value.split(",") if part]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model.fusion_ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="the shipped (text + picture) checkpoint")
    parser.add_argument("--text-only", type=_paths, default=[], help="comma-separated text-only checkpoints")
    parser.add_argument("--picture-only", type=_paths, default=[], help="comma-separated picture-only checkpoints")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write the section into")
    add_dev_scoring_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    for path in [args.reference, *args.text_only, *args.picture_only]:
        if not path.is_file():
            raise SystemExit(f"no checkpoint at {path}")
    if not args.text_only and not args.picture_only:
        raise SystemExit("give --text-only and/or --picture-only checkpoints to compare the reference with")
    result = measure(args.reference, args.text_only, args.picture_only, device=args.device, limit=args.limit,
                     n_resamples=args.resamples, batch_size=args.batch_size, progress=args.progress)
    command = "python -m model.fusion_ablation " + " ".join(argv if argv is not None else sys.argv[1:])
    section = render_markdown(result, command.strip())
    sys.stdout.write(section)
    if args.out is not None:
        write_section(args.out, section)
        logger.info("written to %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
