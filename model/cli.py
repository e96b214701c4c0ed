"""``sentistream model <verb>``: train, eval, ablate, explain, features.

Each verb belongs to its module, which owns its argument parser and a ``main(argv)``; this file only
routes to them, so ``sentistream model train --help`` shows the trainer's own options.  The
``sentistream`` entry point (``stream.cli``) calls ``register``; ``python -m model.cli`` works
without it (the model package never imports ``stream``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

VERBS: dict[str, tuple[str, str]] = {
    "train": ("model.train", "train SentimentNet on cached features; write a checkpoint"),
    "eval": ("model.eval", "score a checkpoint on a validation split; markdown report with intervals"),
    "ablate": ("model.ablate", "ablation table (modalities, text CNN, fusion, pooling) on MVSA dev"),
    "explain": ("model.explain", "token attention heatmap, Grad-CAM overlay, top n-grams per CNN filter"),
    "features": ("model.features", "cache frozen MiniLM / EfficientNet features"),
}


def _run_verb(args: argparse.Namespace, *_: Any) -> int:
    module = importlib.import_module(VERBS[args.model_verb][0])
    return int(module.main(list(args.verb_args)) or 0)


def _add_verbs(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="model_verb", required=True, metavar="VERB")
    for verb, (_, help_text) in VERBS.items():
        sub = verbs.add_parser(verb, help=help_text, add_help=False)
        sub.add_argument("verb_args", nargs=argparse.REMAINDER, help=f"options of {verb} (see {verb} --help)")
        sub.set_defaults(func=_run_verb)


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``model <verb>`` to the ``sentistream`` command (called by ``stream.cli``)."""
    parser = subcommands.add_parser("model", help="train, evaluate, ablate and explain the sentiment model")
    _add_verbs(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.cli", description=__doc__.split("\n\n")[0])
    _add_verbs(parser)
    args = parser.parse_args(argv)
    return _run_verb(args)


if __name__ == "__main__":
    sys.exit(main())
