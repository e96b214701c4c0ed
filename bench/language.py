"""Posts/s of the worker's language gate (stream/language.py) and how often it calls English tweets foreign.

The gate runs once per post in the worker's event loop, so it must stay far cheaper than the model.
Three cases over the same tweets, the detection cache cleared before each repeat:

* untagged: no platform tag, so py3langid identifies every text (Reddit, replays);
* tagged: the platform's tag decides, no identification (Twitter, Bluesky, Mastodon);
* stored: ``with_detected_language`` after ``reason_to_skip``, as the pipeline calls them (the second
  call is served from the cache).

The TweetEval texts are English, so every post the gate would skip is a false positive; the count is
reported (not asserted: tests/stream/test_language.py checks the bundled sample).

    .venv/bin/python -m bench.language                 # 1,000 tweets, 5 repeats
    .venv/bin/python -m bench.language --posts 2000
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/language.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cli import parse_and_log, script_parser  # noqa: E402
from bench.feed import cycle, make_posts, tweet_texts  # noqa: E402
from bench.measure import fmt_rate, time_repeats  # noqa: E402
from bench.results import DEFAULT_RESULTS_FILE, ResultEntry, command_line, markdown_table  # noqa: E402
from connectors.post import Post  # noqa: E402
from stream import language  # noqa: E402
from stream.language import LanguageGate  # noqa: E402


def get_args_parser():  # noqa: ANN201 - argparse.ArgumentParser
    parser = script_parser("language", __doc__)
    parser.add_argument("--posts", type=int, default=1000, help="tweets per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results-file", type=Path, default=DEFAULT_RESULTS_FILE)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, argv = parse_and_log(get_args_parser(), argv)
    entry = ResultEntry("bench/language.py: language gate", command_line("bench.language", argv),
                        packages=("py3langid", "numpy"))
    texts, source = tweet_texts()
    tagged = make_posts(args.posts, cycle(texts, args.posts), prefix="lang")
    untagged = [dataclasses.replace(p, lang=None) for p in tagged]
    gate = LanguageGate()
    gate.reason_to_skip(untagged[0])  # load the model outside the timings (it loads once per process)

    def skip_all(posts: list[Post]) -> None:
        for post in posts:
            gate.reason_to_skip(post)

    def skip_and_store(posts: list[Post]) -> None:
        for post in posts:
            gate.reason_to_skip(post)
            gate.with_detected_language(post)

    clear = language._detect_prefix.cache_clear
    cases = [("untagged (py3langid)", lambda: skip_all(untagged)),
             ("tagged by the platform", lambda: skip_all(tagged)),
             ("untagged, skip + store (as the pipeline)", lambda: skip_and_store(untagged))]
    rows = []
    for name, work in cases:
        timings = time_repeats(work, len(untagged), args.repeats, before_each=clear)
        rows.append([name, fmt_rate(timings.rate_median), fmt_rate(timings.rate_best),
                     f"{1000 * timings.ms_per_item_median:.3f}", f"{100 * timings.spread:.0f} %"])
    clear()
    flagged = [gate.reason_to_skip(p) for p in untagged]
    false_positives = sum(r is not None for r in flagged)
    unknown = sum(language.detect_language(p.text) is None for p in untagged)
    entry.fact("data", f"{len(untagged)} posts from {source}, cycled; English, so any skip is a false positive")
    entry.fact("English posts the gate would not score (false positives)", f"{false_positives} of {len(untagged)}")
    entry.fact("posts of unknown language (too short or under the confidence floor: scored)",
               f"{unknown} of {len(untagged)}")
    entry.section(markdown_table(["case", "posts/s (median)", "posts/s (best)", "µs/post (median)", "spread"], rows))
    sys.stdout.write(entry.write(args.results_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
