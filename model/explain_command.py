"""The ``sentistream model explain`` command line: options, input checks, then the explainer.

Loading the checkpoint and both encoders takes many seconds, so every input is checked first, here,
without importing torch: a missing or unreadable picture, a missing checkpoint or an output path that
is a file fails in well under a second with the reason.  The explanations themselves live in
``model.explain``, imported only once the inputs are known to be usable.

``model/samples/heart_pancake.png`` is a small picture to try it with (drawn by
``model/samples/draw_heart_pancake.py``)::

    sentistream model explain --out /tmp/explain --image model/samples/heart_pancake.png \\
      --text "She wanted a heart shaped pancake for lunch, so I made one"
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

SAMPLE_PICTURE = Path(__file__).resolve().parent / "samples" / "heart_pancake.png"
FILTER_DATASETS = ("tweeteval-val", "mvsa-dev", "mvsa-train")
EXIT_BAD_INPUT = 2


class ExplainInputError(ValueError):
    """An input of ``model explain`` that cannot be used; the message says which and why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sentistream model explain`` (registered by ``model.cli``)."""
    parser.add_argument("--text", default=None, help="the post text to explain")
    parser.add_argument("--image", type=Path, default=None,
                        help="the post's picture, for Grad-CAM (model/samples/heart_pancake.png is one to try)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint .pt (default: packaged one)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--filters", action="store_true", help="also write filters.md: top n-grams per CNN filter")
    parser.add_argument("--filters-dataset", choices=FILTER_DATASETS, default="tweeteval-val")
    parser.add_argument("--sample", type=int, default=500, help="posts sampled for --filters")
    parser.add_argument("--top-k", type=int, default=5, help="n-grams kept per filter")
    parser.add_argument("--seed", type=int, default=0)


def check_inputs(args: argparse.Namespace) -> None:
    """Raise ExplainInputError for the first input that cannot work; creates ``--out``."""
    if args.text is None and not args.filters:
        raise ExplainInputError("nothing to explain: give --text (and optionally --image) and/or --filters")
    if args.text is not None and not args.text.strip():
        raise ExplainInputError("--text is empty")
    if args.image is not None:
        if args.text is None:
            raise ExplainInputError("--image explains a post's picture: give the post's --text too")
        _check_picture(args.image)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise ExplainInputError(f"--checkpoint {args.checkpoint} is not a file")
    if args.filters:
        if args.sample < 1 or args.top_k < 1:
            raise ExplainInputError("--sample and --top-k must be at least 1")
        from model.data import data_dir

        if not data_dir().is_dir():
            raise ExplainInputError(f"--filters samples {args.filters_dataset} from the data folder {data_dir()}, "
                                    "which does not exist (set SENTISTREAM_DATA_DIR)")
    if args.out.exists() and not args.out.is_dir():
        raise ExplainInputError(f"--out {args.out} exists and is not a folder")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExplainInputError(f"--out {args.out} cannot be created: {exc.strerror or exc}") from exc


def _check_picture(path: Path) -> None:
    """The picture exists and its header decodes (PIL reads the header only; no pixels yet)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ExplainInputError(f"--image {path} is not a file")
    try:
        with Image.open(path) as picture:
            picture.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ExplainInputError(f"--image {path} is not a picture this build can read: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports truncated or corrupt files these ways
        raise ExplainInputError(f"--image {path} is damaged: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    """Check the inputs, then write the requested explanations under ``--out`` and list the files."""
    try:
        check_inputs(args)
    except ExplainInputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    import torch
    from PIL import Image

    from model import explain

    torch.set_num_threads(min(2, torch.get_num_threads()))
    explainer = explain.Explainer.from_checkpoint(args.checkpoint)
    written: list[Path] = []
    if args.text is not None:
        image = None
        if args.image is not None:
            with Image.open(args.image) as opened:
                image = opened.convert("RGB")
        explanation = explain.explain_post(explainer, args.text, image)
        written += explain.write_post_explanation(explanation, args.text, args.out)
        probabilities = ", ".join(f"{k} {v:.2f}" for k, v in explanation.probabilities.items())
        sys.stdout.write(f"prediction: {explanation.label} ({probabilities})\n")
    if args.filters:
        sample = explain._sample_dataset(args.filters_dataset, args.sample, args.seed)
        results = explain.filter_ngrams(explainer, [e.text for e in sample], [e.label for e in sample],
                                        top_k=args.top_k)
        path = args.out / "filters.md"
        path.write_text(explain.filters_markdown(results, args.filters_dataset, len(sample)), encoding="utf-8")
        written.append(path)
    for path in written:
        sys.stdout.write(f"wrote {path}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m model.explain`` / ``python -m model.explain_command`` without the sentistream CLI."""
    parser = argparse.ArgumentParser(prog="sentistream model explain", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
