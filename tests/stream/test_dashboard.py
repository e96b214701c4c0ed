"""`sentistream dashboard`: its JSON API against real PostgreSQL (both back ends), its read-only
transactions, the Wilson band, the static page working offline, and the command itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg2.errors
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from stream.dashboard.confidence import wilson_interval
from stream.dashboard.read_model import MAX_BUCKETS, DashboardReader, QueryError
from stream.dashboard.server import STATIC_DIR
from stream.embedded import free_port
from stream.migrate import make_engine
from tests.stream.dashboard_data import HOSTILE_TEXT, Verdict, first_answer, hour_of, seed, served

# --- the confidence band ---------------------------------------------------------------------------


@given(st.integers(1, 100_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_holds_the_share_and_stays_within_0_and_1(case: tuple[int, int]) -> None:
    k, n = case
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    assert high - low > 0  # never certain from a finite sample


@given(st.integers(1, 50), st.integers(2, 50))
def test_wilson_band_narrows_as_the_sample_grows(k: int, factor: int) -> None:
    n = 2 * k
    low, high = wilson_interval(k, n)
    low_big, high_big = wilson_interval(k * factor, n * factor)
    assert high_big - low_big < high - low


def test_wilson_interval_known_values_and_refusals() -> None:
    # 0 of 10: the textbook upper bound is 0.2775 (the normal approximation would say 0)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.27753, abs=1e-4)
    low, high = wilson_interval(2, 2)
    assert high == 1.0 and low == pytest.approx(0.34238, abs=1e-4)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


# --- the read model over real PostgreSQL ------------------------------------------------------------


@pytest.fixture
def seeded(migrated_db: str):
    engine = make_engine(migrated_db)
    data = seed(engine)
    yield engine, data
    engine.dispose()


def _by_bucket(topic_series: dict) -> dict[datetime, tuple[int, int, int]]:
    return {datetime.fromtimestamp(t, UTC): (p, s, n) for t, p, s, n in zip(
        topic_series["t"], topic_series["n_posts"], topic_series["n_scored"], topic_series["n_negative"],
        strict=True)}


def test_series_counts_every_hour_fills_empty_ones_and_bands_each_share(seeded) -> None:
    engine, data = seeded
    series = DashboardReader(engine).series(since="6h", bucket="hour")
    topics = {t["topic"]: t for t in series["topics"]}
    assert set(topics) == {"acme-phone", "skyways"}
    for name, expected in data.hours.items():
        got = _by_bucket(topics[name])
        buckets = sorted(got)
        # every hour of the span is there, one apart, even those without posts
        assert all(b - a == timedelta(hours=1) for a, b in zip(buckets, buckets[1:], strict=False))
        assert len(buckets) in (7, 8)  # 6 h back to now: 7 buckets (8 when `now` is exactly on the hour)
        for bucket, numbers in got.items():
            assert numbers == expected.get(bucket, (0, 0, 0)), (name, bucket)
        t = topics[name]
        for share, low, high, (_, scored, negative) in zip(t["negative_share"], t["low"], t["high"],
                                                            got.values(), strict=True):
            if scored == 0:
                assert share is None and low is None and high is None
            else:
                assert share == pytest.approx(negative / scored)
                assert (low, high) == pytest.approx(wilson_interval(negative, scored))
    acme = _by_bucket(topics["acme-phone"])
    empty_hour = min(data.hours["acme-phone"]) + timedelta(hours=1)
    assert acme[empty_hour] == (0, 0, 0)
    # the thin bucket (3 scored) is flagged, the thick one (30) is not
    thin = dict(zip(_by_bucket(topics["acme-phone"]), topics["acme-phone"]["thin"], strict=True))
    thick_hour, thin_hour = sorted(data.hours["acme-phone"])
    assert thin[thin_hour] is True and thin[thick_hour] is False
    assert topics["acme-phone"]["total_posts"] == sum(p for p, _, _ in data.hours["acme-phone"].values())


def test_series_uses_each_posts_newest_sentiment_like_the_trend_views(seeded) -> None:
    engine, data = seeded
    from connectors.post import Post
    from stream.sink import PostgresSink, SinkRecord

    with engine.connect() as conn:
        created = conn.execute(text("SELECT created_at FROM posts WHERE post_id = 'a1'")).scalar_one()
    # a second model says a1 (positive under m1) is negative: the newest sentiment wins
    PostgresSink(engine).write([SinkRecord(Post(platform="mastodon", post_id="a1", text="post a1 about acme-phone",
                                                topic="acme-phone", created_at=created,
                                                url="https://social.example/@a/a1"),
                                           sentiment=Verdict("negative", -1.0, model_version="m2"))])
    series = DashboardReader(engine).series(since="6h", bucket="hour", topic="acme-phone")
    assert [t["topic"] for t in series["topics"]] == ["acme-phone"]
    got = _by_bucket(series["topics"][0])
    posts, scored, negative = data.hours["acme-phone"][hour_of(created)]
    assert got[hour_of(created)] == (posts, scored, negative + 1)


def test_series_minute_and_day_buckets_and_refusals(seeded) -> None:
    engine, data = seeded
    reader = DashboardReader(engine)
    day = reader.series(since="2d", bucket="day")
    for t in day["topics"]:
        assert sum(t["n_posts"]) == sum(p for p, _, _ in data.hours[t["topic"]].values())
        assert len(t["t"]) in (3, 4)
    minute = reader.series(since="6h", bucket="minute", topic="skyways")
    got = _by_bucket(minute["topics"][0])
    assert len(got) in (361, 362)
    start = data.window_start
    # 8 burst posts 30 s apart from window_start: 2 per minute over 4 minutes
    assert [got[start + timedelta(minutes=i)][0] for i in range(5)] == [2, 2, 2, 2, 0]
    for since, bucket in (("6h", "week"), ("soon", "hour"), ("400d", "minute"), ("0h", "hour")):
        with pytest.raises(QueryError):
            reader.series(since=since, bucket=bucket)
    with pytest.raises(QueryError, match=str(MAX_BUCKETS)):
        reader.series(since="2d", bucket="minute")


def test_every_query_runs_in_a_read_only_transaction(seeded) -> None:
    engine, _ = seeded
    reader = DashboardReader(engine)
    with reader.read_only() as conn:
        assert conn.execute(text("SHOW transaction_read_only")).scalar_one() == "on"
        assert conn.execute(text("SHOW TimeZone")).scalar_one() == "UTC"
        assert conn.execute(text("SHOW jit")).scalar_one() == "off"
        with pytest.raises(DBAPIError) as caught:
            conn.execute(text("DELETE FROM posts"))
    assert isinstance(caught.value.orig, psycopg2.errors.ReadOnlySqlTransaction)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM posts")).scalar_one() > 0


# --- the HTTP API ------------------------------------------------------------------------------------


def test_api_alert_timeline_and_drill_down_list_the_incidents_posts(seeded) -> None:
    engine, data = seeded
    with served(DashboardReader(engine)) as base:
        alerts = requests.get(f"{base}/api/alerts?since=1d", timeout=30).json()["alerts"]
        assert [a["id"] for a in alerts] == [data.alert_id]
        alert = alerts[0]
        assert alert["topic"] == "skyways" and alert["event"] == "opened"
        assert alert["evidence"]["note_from_a_newer_detector"] == {"nested": [1, 2]}  # shown as stored
        assert alert["incident"]["status"] == "open"
        assert datetime.fromisoformat(alert["window_start"]) == data.window_start

        detail = requests.get(f"{base}/api/alerts/{data.alert_id}", timeout=30).json()
        posts = detail["posts"]
        assert {p["post_id"] for p in posts} == data.incident_post_ids
        assert detail["posts_total"] == len(data.incident_post_ids)
        assert not data.outside_post_ids & {p["post_id"] for p in posts}
        assert [p["label"] for p in posts[:7]] == ["negative"] * 7 and posts[7]["label"] == "neutral"
        hostile = next(p for p in posts if p["post_id"] == "x0")
        assert hostile["text"] == HOSTILE_TEXT and hostile["platform"] == "mastodon"
        assert hostile["url"] == "https://social.example/@a/x0" and hostile["intensity"] == pytest.approx(-1.5)
        pictured = next(p for p in posts if p["post_id"] == "x1")
        assert pictured["modalities"] == ["text", "image"]
        assert pictured["modality_weights"] == {"text": 0.7, "image": 0.3}
        assert pictured["media"] == [{"url": "https://img.example/1.jpg", "kind": "image", "status": "ok"}]

        for path, status in (("/api/alerts/abc", 400), ("/api/alerts/99999999", 404), ("/api/alerts/-1", 400),
                             ("/api/series?bucket=fortnight", 400), ("/api/series?since=1y", 400),
                             ("/api/posts?topic=skyways&start=yesterday&end=now", 400),
                             ("/api/posts?start=2026-01-01T00:00:00Z&end=2026-01-02T00:00:00Z", 400),
                             ("/api/posts?topic=x&start=2026-01-01T00:00:00&end=2026-01-02T00:00:00", 400)):
            answer = requests.get(base + path, timeout=30)
            assert answer.status_code == status, (path, answer.text)
            assert "error" in answer.json()


def test_api_bucket_posts_and_series_match_the_read_model(seeded) -> None:
    engine, data = seeded
    start = data.window_start.replace(second=0)
    with served(DashboardReader(engine)) as base:
        bucket = requests.get(f"{base}/api/posts", params={
            "topic": "skyways", "start": start.isoformat(), "end": (start + timedelta(minutes=1)).isoformat()},
            timeout=30).json()
        assert sorted(p["post_id"] for p in bucket["posts"]) == ["x0", "x1"]
        series = requests.get(f"{base}/api/series?since=6h&bucket=hour", timeout=30).json()
    for topic in series["topics"]:
        got = _by_bucket(topic)
        for hour, numbers in data.hours[topic["topic"]].items():
            assert got[hour] == numbers


HOSTILE_PARAMS = st.text(max_size=40) | st.sampled_from(
    ["\x00", "1h\x00", "99999999999999999999d", "-1h", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z",
     "'; DROP TABLE posts; --", "%", "1e400", "nan", "hour ", "Minute", "2026-13-01T00:00:00Z"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/api/series", "/api/alerts", "/api/posts", "/api/alerts/"]),
       params=st.dictionaries(st.sampled_from(["since", "bucket", "topic", "start", "end"]), HOSTILE_PARAMS,
                              max_size=5),
       alert_id=HOSTILE_PARAMS)
def test_any_query_string_gets_json_with_200_400_or_404_never_a_server_error(api_base: str, path: str,
                                                                              params: dict, alert_id: str) -> None:
    url = api_base + path + (requests.utils.quote(alert_id, safe="") if path.endswith("/") else "")
    answer = requests.get(url, params=params, timeout=60)
    assert answer.status_code in (200, 400, 404), (url, params, answer.status_code, answer.text[:300])
    assert isinstance(answer.json(), dict)


@pytest.fixture(scope="module")
def api_base(embedded_postgres) -> str:
    """One served dashboard over one seeded database (embedded server) for the property test's examples."""
    from stream.migrate import upgrade
    from tests.conftest import create_database, drop_database

    url = create_database(embedded_postgres.sqlalchemy_url("postgres"))
    upgrade(url)
    engine = make_engine(url)
    seed(engine)
    try:
        with served(DashboardReader(engine)) as base:
            yield base
    finally:
        engine.dispose()
        drop_database(url)


def test_the_page_is_served_offline_with_its_vendored_chart_library(seeded) -> None:
    engine, _ = seeded
    with served(DashboardReader(engine)) as base:
        page = requests.get(base + "/", timeout=30)
        assert page.status_code == 200 and "sentistream" in page.text
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/static/") for s in sources)  # nothing from a CDN
        for source in sources:
            assert requests.get(base + source, timeout=30).status_code == 200, source
        assert requests.get(base + "/static/../read_model.py", timeout=30).status_code in (403, 404)
        config = requests.get(base + "/api/config", timeout=30).json()
        assert config == {"refresh_s": 2.0, "thin_below": 10}
    assert (STATIC_DIR / "uPlot.LICENSE").read_text().startswith("The MIT License")
    assert "uPlot" in (STATIC_DIR / "uPlot.iife.min.js").read_text()[:200]


def test_the_api_says_503_when_the_database_is_gone(migrated_db: str) -> None:
    engine = make_engine(migrated_db)
    reader = DashboardReader(make_engine("postgresql+psycopg2://nobody@127.0.0.1:1/none",
                                         connect_args={"connect_timeout": 2}))
    with served(reader) as base:
        answer = requests.get(base + "/api/series", timeout=60)
    assert answer.status_code == 503 and "database" in answer.json()["error"]
    engine.dispose()


def test_sentistream_dashboard_command_serves_the_configured_database(seeded, migrated_db: str,
                                                                      tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    env.update({"SENTISTREAM_DATABASE_URL": migrated_db, "SENTISTREAM_HOME": str(tmp_path)})
    process = subprocess.Popen([sys.executable, "-m", "stream.cli", "dashboard", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        answer = first_answer(process, f"http://127.0.0.1:{port}/api/series?since=6h&bucket=hour")
        assert answer.status_code == 200
        assert {t["topic"] for t in answer.json()["topics"]} == {"acme-phone", "skyways"}
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert f"sentistream dashboard on http://localhost:{port}/" in out, err


def test_sentistream_dashboard_refuses_a_database_without_the_schema(fresh_db: str, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    env.update({"SENTISTREAM_DATABASE_URL": fresh_db, "SENTISTREAM_HOME": str(tmp_path)})
    done = subprocess.run([sys.executable, "-m", "stream.cli", "dashboard", "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "sentistream db upgrade" in done.stderr



def test_the_documented_read_only_role_reads_and_cannot_write(seeded, migrated_db: str) -> None:
    """deploy/postgres/dashboard_reader.sql (README, compose's initdb) run with psql as the tables' owner:
    the role reads every table, also one created after it (a later migration), and writes nothing."""
    import shutil
    import uuid
    from pathlib import Path

    from sqlalchemy.engine import make_url

    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql (postgresql-client) is not installed")
    engine, _ = seeded
    url = make_url(migrated_db)
    reader = f"reader_{uuid.uuid4().hex[:8]}"
    with engine.connect() as conn:
        owner = conn.execute(text("SELECT tableowner FROM pg_tables WHERE tablename = 'posts'")).scalar_one()
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    sql = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "dashboard_reader.sql"
    done = subprocess.run([psql, libpq, "-v", f"reader={reader}", "-v", "password=s3cret-'quoted",
                           "-v", f"owner={owner}", "-v", f"db={url.database}", "-f", str(sql)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    reader_engine = make_engine(url.set(username=reader, password="s3cret-'quoted").render_as_string(
        hide_password=False))
    try:
        with engine.begin() as conn:  # a later migration's table, created by the owner
            conn.execute(text(f'SET ROLE "{owner}"'))
            conn.execute(text("CREATE TABLE later_table (x int)"))
        series = DashboardReader(reader_engine).series(since="6h", bucket="hour")
        assert {t["topic"] for t in series["topics"]} == {"acme-phone", "skyways"}
        with reader_engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM later_table")).scalar_one() == 0
            assert conn.execute(text("SHOW default_transaction_read_only")).scalar_one() == "on"
            conn.rollback()
            conn.exec_driver_sql("SET default_transaction_read_only = off")  # even so: no privilege to write
            conn.commit()
            assert conn.execute(text("SHOW transaction_read_only")).scalar_one() == "off"
            with pytest.raises(DBAPIError) as caught:
                conn.execute(text("DELETE FROM posts"))
        assert isinstance(caught.value.orig, psycopg2.errors.InsufficientPrivilege)
    finally:
        reader_engine.dispose()
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS later_table"))
            conn.execute(text(f'DROP OWNED BY "{reader}"'))
            conn.execute(text(f'DROP ROLE "{reader}"'))
