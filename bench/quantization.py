"""int8 dynamic quantisation of the text encoder: speed and TweetEval validation macro recall, fp32 vs int8.

Both Scorers load the same checkpoint; the int8 one has every Linear layer of its text encoder quantised
(``Scorer.from_checkpoint(text_int8=True)``, ``SENTISTREAM_TEXT_INT8``).  Each scores the whole TweetEval
sentiment validation split (2,000 tweets, text only) in batches as the worker does, so the recall is the
data set's official metric on the same items and the speed a ratio from the same run.  The issue's budget:
at most 0.5 point of macro recall lost against fp32.

    .venv/bin/python -m bench.quantization
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/quantization.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.checkpoint import choose_checkpoint  # noqa: E402
from bench.cli import parse_and_log, script_parser  # noqa: E402
from bench.results import DEFAULT_RESULTS_FILE, ResultEntry, command_line, markdown_table  # noqa: E402

log = logging.getLogger("bench.quantization")


def macro_recall(predicted: list[int], gold: list[int], classes: int = 3) -> float:
    recalls = []
    for c in range(classes):
        members = [p for p, g in zip(predicted, gold, strict=True) if g == c]
        if members:
            recalls.append(sum(p == c for p in members) / len(members))
    return sum(recalls) / len(recalls)


def score_all(scorer, texts: list[str], batch: int) -> tuple[list[int], float]:
    """Labels for every text and the posts/s of that one pass."""
    from model.labels import LABELS
    from model.scorer import ScoreInput

    started = time.perf_counter()
    labels: list[int] = []
    for i in range(0, len(texts), batch):
        labels += [LABELS.index(r.label) for r in scorer.score([ScoreInput(t) for t in texts[i:i + batch]])]
    return labels, len(texts) / (time.perf_counter() - started)


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser("quantization", __doc__)
    parser.add_argument("--batch", type=int, default=64, help="posts per Scorer call (the worker's default)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--results-file", type=Path, default=DEFAULT_RESULTS_FILE)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, argv = parse_and_log(get_args_parser(), argv)
    import torch

    from model.data import load_tweeteval_val
    from model.scorer import Scorer

    torch.set_num_threads(args.threads)
    entry = ResultEntry("bench/quantization.py: int8 text encoder, speed and macro recall",
                        command_line("bench.quantization", argv), packages=("torch", "transformers"))
    chosen = choose_checkpoint(args.checkpoint)
    examples = load_tweeteval_val()
    texts, gold = [e.text for e in examples], [e.label for e in examples]
    rows, results = [], {}
    for name, int8 in (("fp32", False), ("int8 dynamic (all Linear layers of the text encoder)", True)):
        scorer = Scorer.from_checkpoint(chosen.path, device="cpu", text_int8=int8)
        score_all(scorer, texts[: args.batch * 2], args.batch)  # warm-up
        labels, rate = score_all(scorer, texts, args.batch)
        recall = macro_recall(labels, gold)
        results[int8] = (recall, rate)
        log.info("%s: macro recall %.4f, %.1f posts/s", name, recall, rate)
        rows.append([name, f"{recall:.4f}", f"{rate:,.1f}"])
        del scorer
    (r32, s32), (r8, s8) = results[False], results[True]
    rows.append(["int8 − fp32", f"{(r8 - r32) * 100:+.2f} points", f"{s8 / s32:.2f}× speed"])
    entry.fact("checkpoint", chosen.description)
    entry.fact("data", f"TweetEval sentiment validation, {len(texts)} tweets, text only, batches of {args.batch}, "
                       f"torch threads {args.threads}")
    entry.section(markdown_table(["text encoder", "macro recall", "posts/s"], rows)
                  + "\nOne pass over the split per encoder after a warm-up; the speed ratio is the figure to "
                    "read on a shared machine.  Budget (issue #14.1): at most 0.5 point of recall lost.\n")
    sys.stdout.write(entry.write(args.results_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
