"""bench/trends.py fills the data it claims to (size, span, shape) and appends an entry with every query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from bench import trends
from stream.migrate import make_engine
from tests.conftest import _configured_url


def test_fill_writes_a_year_of_posts_with_the_stated_shape(migrated_db: str) -> None:
    engine = make_engine(migrated_db)
    end = datetime(2026, 5, 1, tzinfo=UTC)
    try:
        trends.fill(engine, 3000, end, chunk=1000)
        with engine.connect() as conn:
            posts, first, last, topics, raw = conn.execute(text(
                "SELECT count(*), min(created_at), max(created_at), count(DISTINCT topic), count(raw) "
                "FROM posts")).one()
            sentiments = conn.execute(text("SELECT count(*) FROM sentiments")).scalar_one()
            media = conn.execute(text("SELECT count(*) FROM post_media")).scalar_one()
        sizes = trends.topics_by_size(engine)
    finally:
        engine.dispose()
    assert posts == raw == 3000 and sentiments == 2700 and media == 600
    assert end - trends.SPAN <= first < end - trends.SPAN + timedelta(days=1)
    assert end - timedelta(days=1) < last <= end + timedelta(minutes=1)
    assert topics == trends.TOPICS == len(sizes)
    assert 0.15 < sizes[0][1] / 3000 < 0.3 and sizes[0][1] > 5 * sizes[-1][1]  # a loud topic and a long tail


def test_trends_bench_appends_an_entry_with_every_query(tmp_path) -> None:
    server = _configured_url()
    backend = "embedded" if server is None else "configured"
    results = tmp_path / "RESULTS.md"
    argv = ["--posts", "2000", "--repeats", "1", "--backend", backend, "--retention-raw-days", "30",
            "--retention-posts-days", "180", "--results-file", str(results)]
    if server is not None:
        argv += ["--database-url", server]

    assert trends.main(argv) == 0

    text_ = results.read_text()
    assert "## bench/trends.py" in text_ and "- command: `.venv/bin/python -m bench.trends --posts 2000" in text_
    rows = [line for line in text_.splitlines() if line.startswith("| ") and "ms" not in line.split("|")[1]]
    assert sum("dashboard series" in r for r in rows) == 8  # 2 topics x 2 buckets, the biggest after each retention
    assert sum("sentistream trends" in r for r in rows) == 8
    assert any("posts older than 180 d" in r and "months dropped whole" in r for r in rows)
    retention = [r for r in rows if "maintenance retention" in r]
    assert len(retention) == 3 and "| 0 payloads dropped |" in retention[1]
