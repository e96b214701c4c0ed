"""Wall time of `sentistream` commands that do not score: help texts and input errors (issue #13.4).

Each command runs as a fresh process, as a user types it, so the figure is the whole start: the
interpreter, the imports, the parser.  Building the parser used to import torch (6-7 s for `--help`);
the parsers are now built from modules that import nothing heavy, and a command imports what it needs
when it runs.  `model features --help` and `model train --help` still load their module (and torch) to
show their options; they are timed for contrast.  tests/test_cli_startup.py checks the imports
themselves (no timing in tests).

    .venv/bin/python -m bench.startup                 # 5 repeats of each command
    .venv/bin/python -m bench.startup --repeats 10
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/startup.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cli import parse_and_log, script_parser  # noqa: E402
from bench.measure import time_repeats  # noqa: E402
from bench.results import DEFAULT_RESULTS_FILE, ResultEntry, command_line, markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["--help"],
    ["ingest", "replay", "--help"],
    ["ingest", "mastodon", "--help"],
    ["rescore", "--help"],
    ["trends", "--help"],
    ["model", "explain", "--help"],
    ["model", "explain", "--text", "hi", "--image", "missing.png", "--out", "/tmp/sentistream-bench-explain"],
    ["model", "features", "--help"],
    ["model", "train", "--help"],
]


def get_args_parser():  # noqa: ANN201 - argparse.ArgumentParser
    parser = script_parser("startup", __doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results-file", type=Path, default=DEFAULT_RESULTS_FILE)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, argv = parse_and_log(get_args_parser(), argv)
    entry = ResultEntry("bench/startup.py: commands that do not score", command_line("bench.startup", argv))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    rows = []
    for command in COMMANDS:
        def run(command: list[str] = command) -> None:
            subprocess.run([sys.executable, "-m", "stream.cli", *command], cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, check=False)

        timings = time_repeats(run, 1, args.repeats)
        rows.append([f"`sentistream {' '.join(command)}`", f"{timings.median:.2f}", f"{timings.best:.2f}"])
    entry.fact("repeats", f"{args.repeats} fresh processes per command (page cache warm after the first)")
    entry.section(markdown_table(["command", "seconds (median)", "seconds (best)"], rows))
    sys.stdout.write(entry.write(args.results_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
