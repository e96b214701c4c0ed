"""The shared command-line shell of the bench scripts: parser from the module docstring, then logging.

Each script's docstring is its help (first paragraph the description, the rest the epilog), so the
help and the docs cannot drift apart.
"""

from __future__ import annotations

import argparse
import logging
import sys


def script_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser for ``python -m bench.<module>`` described by the module's docstring."""
    paragraphs = (doc or "").split("\n\n")
    return argparse.ArgumentParser(prog=f"python -m bench.{module}", description=paragraphs[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n\n".join(paragraphs[1:]))


def parse_and_log(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Parse ``argv`` (default: the process's) and turn on INFO logging; returns (args, argv used)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args, argv
