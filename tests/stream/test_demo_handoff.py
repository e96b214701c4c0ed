"""`make demo` ends where an analyst starts: the demo's rows stay in $SENTISTREAM_HOME, and the commands
run afterwards (`trends`, `dashboard`) show them; a new run replaces only the previous run's rows."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from connectors.post import Post
from stream.demo import forget_previous_run, sample_lines
from stream.embedded import free_port
from stream.migrate import make_engine
from stream.sink import PostgresSink, SinkRecord
from tests.stream.dashboard_data import Verdict, first_answer, insert_alert


def _env(home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    env.update({"SENTISTREAM_HOME": str(home), "SENTISTREAM_SCORING": "false"})
    return env


@pytest.mark.slow
def test_after_the_demo_trends_and_dashboard_show_its_data(server_tmp) -> None:
    home = server_tmp / "home"
    home.mkdir()
    home.chmod(0o755)  # the embedded server runs as its own OS user when we are root
    demo = subprocess.run([sys.executable, "-m", "stream.cli", "demo", "--timeout", "300"], env=_env(home),
                          capture_output=True, text=True, timeout=400)
    assert demo.returncode == 0, demo.stderr[-4000:]
    n = len(sample_lines())
    assert f"the demo's data stays in the embedded PostgreSQL in {home / 'pgdata'}" in demo.stdout
    assert f"SENTISTREAM_HOME={home} sentistream dashboard" in demo.stdout
    assert f"connection string: postgresql://postgres@/postgres?host={home / 'pgdata'}" in demo.stdout

    trends = subprocess.run([sys.executable, "-m", "stream.cli", "trends", "--since", "6h", "--bucket", "hour"],
                            env=_env(home), capture_output=True, text=True, timeout=300)
    assert trends.returncode == 0, trends.stderr[-3000:]
    for topic in ("acme-phone", "skyways-airline", "cup-final", "metro-strike", "starfall-series"):
        assert topic in trends.stdout

    port = free_port()
    dashboard = subprocess.Popen([sys.executable, "-m", "stream.cli", "dashboard", "--port", str(port)],
                                 env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        series = first_answer(dashboard, f"http://127.0.0.1:{port}/api/series?since=6h&bucket=hour")
        assert series.status_code == 200
        assert sum(t["total_posts"] for t in series.json()["topics"]) == n
    finally:
        dashboard.terminate()
        dashboard.communicate(timeout=60)


def test_a_new_demo_run_forgets_only_the_previous_runs_rows(migrated_db: str) -> None:
    engine = make_engine(migrated_db)
    now = datetime.now(UTC).replace(microsecond=0)
    sample = [Post(platform="demo", post_id=f"d{i}", text="sample", topic="skyways-airline",
                   created_at=now - timedelta(minutes=i)) for i in range(3)]
    mine = Post(platform="mastodon", post_id="real", text="an analyst's post", topic="my-brand", created_at=now)
    PostgresSink(engine).write([SinkRecord(p, sentiment=Verdict("negative", -1.0)) for p in [*sample, mine]])
    insert_alert(engine, "skyways-airline", now - timedelta(minutes=5), 300, n_posts=3, n_negative=3)
    insert_alert(engine, "my-brand", now - timedelta(minutes=5), 300, n_posts=1, n_negative=1)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO window_aggregates (topic, window_start, window_seconds, model_version, n_posts, n_negative,"
            " n_neutral, n_positive) VALUES ('skyways-airline', :t, 60, 'm1', 3, 3, 0, 0),"
            " ('my-brand', :t, 60, 'm1', 1, 1, 0, 0)"), {"t": now.replace(second=0)})
    forget_previous_run(engine, sample[:2] + sample[2:])
    with engine.connect() as conn:
        left = {table: sorted(conn.execute(text(f"SELECT DISTINCT {column} FROM {table}")).scalars())
                for table, column in (("posts", "post_id"), ("sentiments", "model_version"),
                                      ("window_aggregates", "topic"), ("alerts", "topic"),
                                      ("alert_incidents", "topic"))}
    assert left == {"posts": ["real"], "sentiments": ["m1"], "window_aggregates": ["my-brand"],
                    "alerts": ["my-brand"], "alert_incidents": ["my-brand"]}
    engine.dispose()
