"""`sentistream dashboard`: its parser (cheap to build) and its command (imports the web stack lazily).

The parser is built on every ``sentistream`` call, so this module imports nothing but argparse and the
settings; aiohttp, SQLAlchemy and the embedded services load only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys

from stream.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PORT = 8050


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="web page of trends and alerts over the database (read-only)",
                       description="Serve the analyst's dashboard: negative share with its confidence band "
                                   "and volume per topic, the alerts timeline and each alert's posts. Reads "
                                   "the database every command uses (embedded unless SENTISTREAM_DATABASE_URL "
                                   "is set), in read-only transactions.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--refresh", type=float, default=10.0, metavar="SECONDS",
                   help="how often the page polls for new numbers (default 10)")
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from stream.dashboard.read_model import DashboardReader
    from stream.dashboard.server import run
    from stream.embedded import services
    from stream.migrate import check_schema, make_engine, wait_for_database

    if not 0 < args.port < 65536:
        raise SystemExit(f"sentistream dashboard: --port must be 1..65535, got {args.port}")
    if not args.refresh >= 1:
        raise SystemExit(f"sentistream dashboard: --refresh must be at least 1 second, got {args.refresh}")
    with services(settings, need_broker=False) as resolved:
        engine = make_engine(resolved.database_url)
        wait_for_database(engine, settings.startup_wait_s)
        check_schema(engine)
        url = f"http://{'localhost' if args.host in ('127.0.0.1', '::1') else args.host}:{args.port}/"
        where = "embedded PostgreSQL in " + str(settings.home / "pgdata") if "postgres" in resolved.started \
            else "the configured database (SENTISTREAM_DATABASE_URL)"

        def ready(_: str) -> None:
            sys.stdout.write(f"sentistream dashboard on {url} reading {where}; Ctrl-C stops it\n")
            sys.stdout.flush()

        try:
            run(DashboardReader(engine), args.host, args.port, args.refresh, on_ready=ready)
        finally:
            engine.dispose()
    return 0
