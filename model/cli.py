"""``sentistream model <verb>``: train, eval, ablate, explain, features.

Each verb belongs to its module, which owns its argument parser and a ``main(argv)``; this file only
routes to them, so ``sentistream model train --help`` shows the trainer's own options.  The
``sentistream`` entry point (``stream.cli``) calls ``register``; ``python -m model.cli`` works
without it (the model package never imports ``stream``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
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
    if hasattr(args, "verb_args"):  # a module that parses its own command line
        return int(module.main(list(args.verb_args)) or 0)
    return int(module.run(args) or 0)


def _add_verbs(parser: argparse.ArgumentParser) -> None:
    """Verbs whose module offers ``add_arguments``/``run`` get a real subparser (so ``--help`` works);
    any other (``features``, with its own sub-commands) receives the rest of the command line."""
    verbs = parser.add_subparsers(dest="model_verb", required=True, metavar="VERB")
    for verb, (module_name, help_text) in VERBS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a verb whose module is not there yet is simply not offered
        if hasattr(module, "add_arguments") and hasattr(module, "run"):
            sub = verbs.add_parser(verb, help=help_text, description=help_text)
            module.add_arguments(sub)
        else:
            sub = verbs.add_parser(verb, help=help_text, add_help=False)
            sub.add_argument("verb_args", nargs=argparse.REMAINDER, help=f"options of {verb}")
        sub.set_defaults(func=_run_verb)


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``model <verb>`` to the ``sentistream`` command (called by ``stream.cli``)."""
    parser = subcommands.add_parser("model", help="train, evaluate, ablate and explain the sentiment model")
    _add_verbs(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.cli", description=__doc__.split("\n\n")[0])
    _add_verbs(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _run_verb(args)


if __name__ == "__main__":
    sys.exit(main())
