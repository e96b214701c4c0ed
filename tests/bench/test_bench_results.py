"""RESULTS.md entries carry their context; accuracy tables lead with the official metric."""

from __future__ import annotations

from bench.accuracy import metric_columns
from bench.measure import Timings
from bench.results import ResultEntry, markdown_table


def test_entry_records_context_and_appends(tmp_path) -> None:
    path = tmp_path / "R.md"
    entry = ResultEntry("bench/x.py: thing", "python -m bench.x --n 3", packages=("sqlalchemy",))
    entry.fact("data", "3 rows")
    entry.section(markdown_table(["a", "b"], [[1, 2]]))
    entry.write(path)
    ResultEntry("bench/y.py: other", "python -m bench.y").write(path)

    text = path.read_text()
    assert text.count("# Benchmark results") == 1
    first, second = text.index("## bench/x.py: thing"), text.index("## bench/y.py: other")
    assert first < second
    block = text[first:second]
    for expected in ("- command: `python -m bench.x --n 3`", "- machine: ", "logical cores", "GPU: ",
                     "- software: Python ", "sqlalchemy ", "- commit: ", "load average", "- data: 3 rows",
                     "| a | b |\n|---|---|\n| 1 | 2 |"):
        assert expected in block


def test_timings_summaries() -> None:
    t = Timings((2.0, 1.0, 4.0), items=100)
    assert t.best == 1.0 and t.median == 2.0
    assert t.rate_median == 50.0 and t.rate_best == 100.0
    assert t.ms_per_item_median == 20.0
    assert t.spread == 3.0


def test_accuracy_columns_lead_with_the_official_metric_then_macro_f1() -> None:
    assert metric_columns("tweeteval-val")[:2] == ["macro_recall", "macro_f1"]
    mvsa = metric_columns("mvsa-dev")
    assert mvsa[:3] == ["accuracy", "weighted_f1", "macro_f1"]
    assert len(mvsa) == len(set(mvsa))
