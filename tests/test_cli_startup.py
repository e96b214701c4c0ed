"""`sentistream --help` and the commands that do not score must not load the model stack.

Building the parser used to import torch (6-7 s before any output).  These tests run in a fresh
interpreter and check which modules got imported, not how long it took, so they do not depend on the
machine's speed; bench/ is the place for timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "transformers", "faust", "sqlalchemy", "kafka", "aiokafka", "numpy")

# Model verbs other than explain import their module (and torch) to show their options: they train or
# score.  Every other command, at any depth, must answer --help without loading the stack.
SCORING_VERBS = {"model train", "model eval", "model ablate", "model features"}

_PROBE = """
import argparse, contextlib, io, json, sys
from stream.cli import build_parser

def commands(parser, prefix):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, [*prefix, name])

parser = build_parser()
skip = set(json.loads(sys.argv[1]))
codes = {}
for argv in [c for c in commands(parser, []) if " ".join(c) not in skip]:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args([*argv, "--help"])
    except SystemExit as exc:
        codes[" ".join(argv)] = exc.code
print(json.dumps({"codes": codes, "heavy": sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)}))
"""


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_building_the_parser_and_every_help_imports_no_model_or_service_library() -> None:
    done = _python("-c", _PROBE, json.dumps(sorted(SCORING_VERBS)), json.dumps(HEAVY))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"", "worker", "db upgrade", "trends", "rescore", "ingest replay", "ingest mastodon",
            "model", "model explain"} <= set(result["codes"])  # the walk reached every level
    assert {command: code for command, code in result["codes"].items() if code != 0} == {}
    assert result["heavy"] == [], f"building the CLI imported {result['heavy']}"


@pytest.mark.parametrize("argv", [["--help"], ["ingest", "replay", "--help"], ["model", "explain", "--help"]])
def test_help_answers_from_the_installed_entry_point_module(argv: list[str]) -> None:
    done = _python("-m", "stream.cli", *argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("usage: sentistream")


def test_model_features_help_is_the_feature_cache_help_and_exits_0() -> None:
    done = _python("-m", "stream.cli", "model", "features", "--help")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "build" in done.stdout and "info" in done.stdout


def test_unknown_model_verb_is_a_usage_error_without_loading_the_model() -> None:
    done = _python("-c", "import sys\nfrom stream.cli import main\ntry:\n    main(['model', 'distill'])\n"
                   "except SystemExit as exc:\n    print(exc.code, 'torch' in sys.modules)")
    assert done.stdout.split() == ["2", "False"], done.stderr[-2000:]
    assert "invalid choice: 'distill'" in done.stderr


_EXPLAIN = """
import sys
from stream.cli import main
code = main(["model", "explain", *sys.argv[1:]])
print(code, "torch" in sys.modules)
"""


@pytest.mark.parametrize("case", ["missing picture", "not a picture", "truncated picture", "picture without text",
                                  "missing checkpoint", "out is a file", "blank text"])
def test_explain_rejects_bad_inputs_before_loading_the_model(tmp_path: Path, case: str) -> None:
    sample = REPO / "model" / "samples" / "heart_pancake.png"
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(sample.read_bytes()[:200])
    not_picture = tmp_path / "notes.png"
    not_picture.write_text("just text")
    out_file = tmp_path / "out.txt"
    out_file.write_text("")
    out = str(tmp_path / "out")
    argv, message = {
        "missing picture": (["--text", "hi", "--image", str(tmp_path / "nope.png"), "--out", out], "is not a file"),
        "not a picture": (["--text", "hi", "--image", str(not_picture), "--out", out], "not a picture"),
        "truncated picture": (["--text", "hi", "--image", str(truncated), "--out", out], "damaged"),
        "picture without text": (["--image", str(sample), "--filters", "--out", out], "give the post's --text too"),
        "missing checkpoint": (["--text", "hi", "--checkpoint", str(tmp_path / "x.pt"), "--out", out], "not a file"),
        "out is a file": (["--text", "hi", "--out", str(out_file)], "is not a folder"),
        "blank text": (["--text", "  ", "--out", out], "--text is empty"),
    }[case]
    done = _python("-c", _EXPLAIN, *argv)
    assert done.stdout.split() == ["2", "False"], done.stderr[-2000:]
    assert message in done.stderr


def test_the_shipped_sample_picture_passes_the_checks() -> None:
    from model.explain_command import SAMPLE_PICTURE, _check_picture

    _check_picture(SAMPLE_PICTURE)  # raises ExplainInputError if the shipped file were damaged
