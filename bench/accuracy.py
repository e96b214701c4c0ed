"""Accuracy on each benchmark dataset: the shipped checkpoint vs VADER vs the majority class.

For every dataset in ``../shared/data`` that the project evaluates on (TweetEval sentiment validation,
MVSA-Single dev), the checkpoint is scored through the worker's own ``Scorer`` (``model.eval``), the two
baselines run on the same items, and each figure gets a 95 % percentile bootstrap interval over items.
The table leads with the dataset's official metric (TweetEval: macro recall; MVSA: accuracy and
weighted F1) and always shows macro-F1.  The published figures from the dataset README follow, with
ours in the same columns: they are test-split figures, ours validation/dev figures (the test splits are
held out), so they locate our number rather than rank it.

    .venv/bin/python -m bench.accuracy                       # both datasets, 1,000 bootstrap resamples
    .venv/bin/python -m bench.accuracy --datasets tweeteval-val --limit 200
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/accuracy.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.checkpoint import choose_checkpoint  # noqa: E402
from bench.cli import parse_and_log, script_parser
from bench.results import DEFAULT_RESULTS_FILE, ResultEntry, command_line, markdown_table  # noqa: E402
from model.eval import DATASETS, METRIC_TITLES, SPLITS, EvalReport, evaluate_checkpoint  # noqa: E402

log = logging.getLogger("bench.accuracy")


def metric_columns(dataset: str) -> list[str]:
    """The official metric(s) first, then macro-F1, then the other headline metrics."""
    spec = SPLITS[dataset]
    official = [m for m in spec.headline_metrics
                if any(m in figure.values for figure in spec.published)] or [spec.headline_metrics[0]]
    rest = [m for m in spec.headline_metrics if m not in official and m != "macro_f1"]
    return official + ["macro_f1"] + rest


def render_dataset(report: EvalReport, seconds: float) -> str:
    spec = SPLITS[report.dataset]
    columns = metric_columns(report.dataset)
    official = [c for c in columns if any(c in f.values for f in spec.published)]
    header = ["system"] + [METRIC_TITLES[c] + (" (official)" if c in official else "") for c in columns]
    rows = []
    for system in [report.model, *report.baselines]:
        rows.append([system.name] + [system.intervals[c].format() if c in system.intervals else "" for c in columns])
    out = [f"### {spec.title} ({report.n_items} items)", "",
           markdown_table(header, rows),
           f"Percent, 95 % bootstrap interval over items ({report.n_resamples} resamples); scoring took "
           f"{seconds:.0f} s.", ""]
    comparisons = [f"{METRIC_TITLES[metric]} vs {baseline}: {result.difference.format()} (p "
                   f"{'≤ 0.001' if result.p_value <= 0.001 else f'= {result.p_value:.3f}'})"
                   for baseline, metric, result in report.comparisons]
    if comparisons:
        out += ["Model minus baseline, paired bootstrap: " + "; ".join(comparisons) + ".", ""]
    published_columns = official
    pub_rows = [[f.system] + [f"{f.values[c]:g}" if c in f.values else "" for c in published_columns]
                for f in spec.published]
    pub_rows.append([f"**ours: {report.model.name}, {report.dataset}**"]
                    + [report.model.intervals[c].format() for c in published_columns])
    pub_rows.append([f"ours: VADER, {report.dataset}"]
                    + [report.baselines[0].intervals[c].format() for c in published_columns])
    out += [f"Published: {spec.published_split} (from ../shared/data/README.md); ours below them, on the "
            "validation/dev split because the test split is held out, so they locate our figure rather than "
            "rank it.", "",
            markdown_table(["system"] + [METRIC_TITLES[c] for c in published_columns], pub_rows)]
    return "\n".join(out)


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser("accuracy", __doc__)
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated subset of {DATASETS}")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    parser.add_argument("--allow-untrained", action="store_true",
                        help="without a shipped checkpoint, score the untrained stand-in (smoke runs only)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--limit", type=int, default=None, help="first N items of each dataset only")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--results-file", type=Path, default=DEFAULT_RESULTS_FILE)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, argv = parse_and_log(get_args_parser(), argv)
    import time

    import torch

    torch.set_num_threads(args.threads)
    chosen = choose_checkpoint(args.checkpoint)
    if not chosen.trained and not args.allow_untrained:
        raise SystemExit("no trained checkpoint (model/checkpoints/sentistream-default.pt is missing): pass "
                         "--checkpoint PATH, or --allow-untrained for a smoke run")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    entry = ResultEntry("bench/accuracy.py: accuracy vs VADER and majority class", command_line("bench.accuracy", argv),
                        packages=("torch", "transformers", "vaderSentiment"))
    entry.fact("checkpoint", chosen.description)
    if args.limit:
        entry.fact("limit", f"only the first {args.limit} items of each dataset (not comparable to full runs)")
    for dataset in datasets:
        log.info("evaluating %s ...", dataset)
        started = time.perf_counter()
        report = evaluate_checkpoint(chosen.path, dataset, device=args.device, batch_size=args.batch_size,
                                     n_resamples=args.resamples, limit=args.limit, progress=False)
        entry.section(render_dataset(report, time.perf_counter() - started))
        entry.fact(f"model version on {dataset}", report.model_version)
    sys.stdout.write(entry.write(args.results_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
