"""Monthly partitions of ``posts``, ``sentiments`` and ``post_media`` (`sentistream maintenance partitions`).

Why: an always-on monitor keeps years of posts, and deleting a month of them row by row costs hours of
WAL and vacuum, while a query over one day should not walk every month's index.  Since migration 0007 the
three tables are partitioned by RANGE on the post's creation time (``posts.created_at``; the children carry
it as ``post_created_at``), with the same monthly bounds in UTC, so a month is one partition per table and
retention drops it whole (``stream/retention.py``).

* ``posts_p2026_11`` / ``sentiments_p2026_11`` / ``post_media_p2026_11`` hold November 2026;
  ``posts_default`` (and its two siblings) catch whatever has no month yet, so a write never fails for lack
  of a partition (a replay of 2019 posts, a clock far in the future).
* ``ensure_partitions`` creates the months from the current one to ``ahead`` months later, plus every month
  that has rows waiting in the DEFAULT partitions.  PostgreSQL refuses to create a partition whose range
  has rows in DEFAULT, so those rows are moved in the same transaction: copied out, deleted from DEFAULT,
  the partitions created, the rows inserted again (they land in the new month).  Ids stay as they were.
* It runs from `sentistream maintenance partitions`, from the daily retention job and when a worker
  starts, so a deployment without cron keeps its partitions ahead of the clock.  An advisory lock makes
  concurrent runs (two workers starting) take turns; ``lock_timeout`` keeps a run from queueing writers
  behind it for long when a long query holds the table (it fails, and the next run does the work).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

# (table, partition column), parents before children: rows are re-inserted in this order.
PARTITIONED: tuple[tuple[str, str], ...] = (("posts", "created_at"), ("sentiments", "post_created_at"),
                                            ("post_media", "post_created_at"))
DEFAULT_AHEAD_MONTHS = 3
MAX_MONTHS_PER_RUN = 120  # months adopted from DEFAULT per run: hostile timestamps cannot make thousands
LOCK_ID = 7_207_001  # pg_advisory_xact_lock key: one partition manager at a time
_NAME = re.compile(r"^posts_p(\d{4})_(\d{2})$")


def month_start(at: datetime) -> datetime:
    """The first instant of ``at``'s month in UTC."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(table: str, month: datetime) -> str:
    return f"{table}_p{month.year:04d}_{month.month:02d}"


def create_month_sql(month: datetime) -> list[str]:
    """CREATE TABLE statements for one month of every partitioned table (the DEFAULT must not hold its rows)."""
    lo, hi = month.isoformat(), add_months(month, 1).isoformat()
    return [f"CREATE TABLE {partition_name(table, month)} PARTITION OF {table} FOR VALUES FROM ('{lo}') TO ('{hi}')"
            for table, _ in PARTITIONED]


def existing_months(conn: Connection) -> list[datetime]:
    """Months that have a ``posts`` partition, oldest first."""
    names = conn.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'posts'::regclass")).scalars()
    months = [datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC) for m in map(_NAME.match, names) if m]
    return sorted(months)


@dataclass(slots=True)
class PartitionReport:
    created: list[str] = field(default_factory=list)  # months created, 'YYYY-MM'
    moved_rows: dict[str, int] = field(default_factory=dict)  # table -> rows moved out of DEFAULT
    default_rows: int = 0  # posts still in DEFAULT after the run

    def summary(self) -> str:
        made = ", ".join(self.created) if self.created else "none"
        moved = sum(self.moved_rows.values())
        return (f"partitions created: {made}; {moved} rows moved out of DEFAULT; "
                f"{self.default_rows} posts left in DEFAULT")


def ensure_partitions(engine: Engine, *, now: datetime | None = None, ahead: int = DEFAULT_AHEAD_MONTHS,
                      older_than: datetime | None = None, lock_timeout_s: float = 10.0) -> PartitionReport:
    """Create the missing monthly partitions from now to ``ahead`` months on, and for months in DEFAULT.

    Months whose end is at or before ``older_than`` (the retention cut-off) are not created for rows in
    DEFAULT: retention deletes those rows anyway.  One transaction; idempotent.
    """
    now = now or datetime.now(UTC)
    report = PartitionReport()
    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'"))
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_ID})
        have = set(existing_months(conn))
        wanted = {add_months(month_start(now), i) for i in range(ahead + 1)}
        in_default = [m.astimezone(UTC) for m in conn.execute(text(
            "SELECT DISTINCT date_trunc('month', created_at, 'UTC') FROM posts_default")).scalars()]
        for table, column in PARTITIONED[1:]:  # children whose post is elsewhere (should not happen)
            in_default += [m.astimezone(UTC) for m in conn.execute(text(
                f"SELECT DISTINCT date_trunc('month', {column}, 'UTC') FROM {table}_default")).scalars()]
        adopt = sorted({m for m in in_default
                        if older_than is None or add_months(m, 1) > older_than} - have - wanted)
        if len(adopt) > MAX_MONTHS_PER_RUN:
            log.warning("partitions: %d months have rows in DEFAULT; creating the newest %d this run",
                        len(adopt), MAX_MONTHS_PER_RUN)
            adopt = adopt[-MAX_MONTHS_PER_RUN:]
        for month in sorted((wanted - have) | set(adopt)):
            moved = _create_month(conn, month)
            report.created.append(f"{month.year:04d}-{month.month:02d}")
            for table, n in moved.items():
                report.moved_rows[table] = report.moved_rows.get(table, 0) + n
        report.default_rows = int(conn.execute(text("SELECT count(*) FROM posts_default")).scalar_one())
    if report.created:
        log.info("partitions: %s", report.summary())
    return report


def _create_month(conn: Connection, month: datetime) -> dict[str, int]:
    """Create one month's partitions, moving that month's rows out of the DEFAULT partitions first."""
    bounds = {"lo": month, "hi": add_months(month, 1)}
    moved: dict[str, int] = {}
    for table, column in PARTITIONED:
        n = conn.execute(text(f"SELECT count(*) FROM {table}_default WHERE {column} >= :lo AND {column} < :hi"),
                         bounds).scalar_one()
        if n:
            moved[table] = int(n)
    if moved:
        for table, column in PARTITIONED:
            conn.execute(text(f"CREATE TEMP TABLE sentistream_move_{table} ON COMMIT DROP AS "
                              f"SELECT * FROM {table}_default WHERE {column} >= :lo AND {column} < :hi"), bounds)
        for table, column in reversed(PARTITIONED):  # children first: the posts' delete cascades to nothing
            conn.execute(text(f"DELETE FROM {table}_default WHERE {column} >= :lo AND {column} < :hi"), bounds)
    for statement in create_month_sql(month):
        conn.execute(text(statement))
    if moved:
        for table, _ in PARTITIONED:
            columns = ", ".join(_columns(conn, table))
            conn.execute(text(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM sentistream_move_{table}"))
            conn.execute(text(f"DROP TABLE sentistream_move_{table}"))
        log.info("partitions: moved %s rows of %s out of DEFAULT", moved, month.strftime("%Y-%m"))
    return moved


def _columns(conn: Connection, table: str) -> list[str]:
    return list(conn.execute(text(
        "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum"), {"t": table}).scalars())


@dataclass(frozen=True, slots=True)
class DroppedMonth:
    month: datetime
    rows: dict[str, int]  # table -> rows the partition held


def months_before(conn: Connection, cutoff: datetime) -> list[datetime]:
    """Months whose partitions end at or before ``cutoff``: every row in them is older than it."""
    return [m for m in existing_months(conn) if add_months(m, 1) <= cutoff]


def drop_month(conn: Connection, month: datetime, *, dry_run: bool = False) -> DroppedMonth:
    """Detach and drop one month's partitions (children first), after counting their rows; the caller holds the
    transaction (and sets its lock_timeout: detaching locks the parent table)."""
    rows: dict[str, Any] = {}
    for table, _ in reversed(PARTITIONED):
        name = partition_name(table, month)
        rows[table] = int(conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one())
        if not dry_run:  # detached first: a referenced partition (posts) cannot be dropped while attached
            conn.execute(text(f"ALTER TABLE {table} DETACH PARTITION {name}"))
            conn.execute(text(f"DROP TABLE {name}"))
    return DroppedMonth(month, rows)


def months_of(rows: Iterable[datetime]) -> list[datetime]:
    """The distinct months of some timestamps, oldest first."""
    return sorted({month_start(r) for r in rows})


_PARTITION_TABLE = re.compile(r"^(posts|sentiments|post_media)_(p\d{4}_\d{2}|default)$")


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic autogenerate filter: partitions and the foreign keys PostgreSQL clones onto each referenced
    partition are managed here, not modelled in ``stream.db``."""
    if type_ == "table" and reflected and name and _PARTITION_TABLE.match(name):
        return False
    if type_ == "foreign_key_constraint" and reflected and _PARTITION_TABLE.match(obj.referred_table.name):
        return False
    return True
