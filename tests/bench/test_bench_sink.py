"""bench/sink.py runs end to end on the configured PostgreSQL (its own embedded one when none is configured)
and appends a complete entry."""

from __future__ import annotations

import re

from bench import sink
from tests.conftest import _configured_url


def test_sink_bench_writes_an_entry_with_every_method(tmp_path) -> None:
    server = _configured_url()
    backend = "embedded" if server is None else "configured"
    results = tmp_path / "RESULTS.md"
    argv = ["--rows", "60", "--repeats", "1", "--batch-sizes", "25", "--per-row-commit-rows", "10",
            "--backend", backend, "--results-file", str(results)]
    if server is not None:
        argv += ["--database-url", server]

    assert sink.main(argv) == 0

    text = results.read_text()
    assert text.startswith("# Benchmark results")
    assert "- command: `.venv/bin/python -m bench.sink --rows 60" in text
    assert "load average (1/5/15 min) at start:" in text
    rows = [line for line in text.splitlines() if line.startswith(f"| {backend} |")]
    # 2 cases x (sink batch by COPY + by VALUES + per-row same commits + per-row commit per row)
    assert len(rows) == 8
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4].replace(",", "")) > 0  # posts/s median
    sink_rows = [r for r in rows if re.search(r"PostgresSink\.write \((copy|values)\), batches of 25", r)]
    assert len(sink_rows) == 4 and all(re.search(r"\| \d+\.\d×", r) for r in sink_rows)

    # A second run appends; the header is written once.
    assert sink.main(argv) == 0
    text = results.read_text()
    assert text.count("# Benchmark results") == 1 and text.count("## bench/sink.py") == 2


def test_sink_bench_writes_the_same_rows_as_the_real_sink(tmp_path, pg_server: str) -> None:
    """The per-row baseline must write what PostgresSink.write writes, or the comparison is unfair."""
    from sqlalchemy import text

    from bench.databases import throwaway_database
    from stream.migrate import make_engine

    records = sink.make_records(30)
    snapshot = ("SELECT string_agg(concat_ws('/', p.post_id, p.text, p.topic, s.label, s.p_negative, "
                "s.intensity, s.modality_weights::text, m.url, m.status), ',' ORDER BY p.post_id) "
                "FROM posts p JOIN sentiments s ON s.post_pk = p.id LEFT JOIN post_media m ON m.post_pk = p.id")
    with throwaway_database(pg_server) as url:
        engine = make_engine(url)
        try:
            sink.write_with_sink(engine, records, 7)
            with engine.begin() as conn:
                by_sink = conn.execute(text(snapshot)).scalar()
                conn.execute(text("TRUNCATE sentiments, post_media, posts, post_keys RESTART IDENTITY CASCADE"))
            sink.write_per_row(engine, records, 1)
            with engine.connect() as conn:
                by_row = conn.execute(text(snapshot)).scalar()
                counts = conn.execute(text("SELECT (SELECT count(*) FROM posts), (SELECT count(*) FROM "
                                           "sentiments), (SELECT count(*) FROM post_media)")).one()
        finally:
            engine.dispose()
    assert by_sink == by_row
    assert tuple(counts) == (30, 30, 10)
