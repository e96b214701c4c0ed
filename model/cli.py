"""``sentistream model <verb>``: train, eval, ablate, explain, features.

Each verb belongs to its module, which owns its argument parser and a ``main(argv)``; this file only
routes to them, so ``sentistream model train --help`` shows the trainer's own options.  The verb
modules import torch at the top, so a verb's module is imported only once that verb is chosen:
``sentistream --help`` and the commands that do not score never pay for torch.  The ``sentistream``
entry point (``stream.cli``) calls ``register``; ``python -m model.cli`` works without it (the model
package never imports ``stream``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence
from typing import Any

VERBS: dict[str, tuple[str, str]] = {
    "train": ("model.train", "train SentimentNet on cached features; write a checkpoint"),
    "eval": ("model.eval", "score a checkpoint on a validation split; markdown report with intervals"),
    "ablate": ("model.ablate", "ablation table (modalities, text CNN, fusion, pooling) on MVSA dev"),
    "explain": ("model.explain_command", "token attention heatmap, Grad-CAM overlay, top n-grams per CNN filter"),
    "features": ("model.features", "cache frozen MiniLM / EfficientNet features"),
}

# Packages of the optional extras (pyproject.toml): a verb that needs one says which extra to install.
EXTRA_PROVIDING: dict[str, str] = {"vaderSentiment": "eval", "tensorboard": "train"}


def _run_verb(args: argparse.Namespace, *_: Any) -> int:
    module = importlib.import_module(VERBS[args.model_verb][0])
    if hasattr(args, "verb_args"):  # a module that parses its own command line
        return int(module.main(list(args.verb_args)) or 0)
    return int(module.run(args) or 0)


class VerbParser(argparse.ArgumentParser):
    """A verb's parser that imports the verb's module and adds its options only when it parses.

    argparse calls a subparser only for the verb on the command line, so building the whole CLI
    imports none of the verb modules.  A module with ``add_arguments``/``run`` gets a real parser
    (its own ``--help``); any other (``features``, with its own sub-commands) is handed the rest of
    the command line, ``--help`` included, through its ``main(argv)``.
    """

    def __init__(self, *args: Any, module_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.module_name = module_name
        self._options_added = False

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        try:
            module = importlib.import_module(self.module_name)
        except ModuleNotFoundError as exc:
            package = (exc.name or "").split(".")[0]
            extra = EXTRA_PROVIDING.get(package)
            if extra is None:
                raise
            self.error(f"{package} is not installed; it comes with the '{extra}' extra: "
                       f"pip install -c constraints.txt '.[{extra}]' (make install includes it)")
        if hasattr(module, "add_arguments") and hasattr(module, "run"):
            if not self._options_added:
                module.add_arguments(self)
                self._options_added = True
            return super().parse_known_args(args, namespace)
        namespace = namespace if namespace is not None else argparse.Namespace()
        namespace.verb_args = list(sys.argv[1:] if args is None else args)
        namespace.func = _run_verb
        return namespace, []


def _add_verbs(parser: argparse.ArgumentParser) -> None:
    """One lazily built subparser per verb whose module is installed."""
    verbs = parser.add_subparsers(dest="model_verb", required=True, metavar="VERB", parser_class=VerbParser)
    for verb, (module_name, help_text) in VERBS.items():
        if importlib.util.find_spec(module_name) is None:
            continue  # a verb whose module is not there yet is simply not offered
        sub = verbs.add_parser(verb, help=help_text, description=help_text, module_name=module_name)
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
