"""``sentistream ingest twitter|reddit|bluesky|mastodon|replay``: each a long-running service.

The stream package's CLI calls ``register(subparsers, resolve_services)``; ``resolve_services`` is how the
connectors get a broker and a database without importing ``stream``: called as
``resolve_services(need_database=bool)`` it returns (or, as a context manager, yields)
``(BrokerTarget, database_url)``.

Shutdown: SIGTERM/SIGINT stop the connector, which checkpoints (flush to Kafka, then save the cursor)
and returns; the publisher is closed (flushed again) and the process exits 0.  Exit codes: 0 done,
1 Kafka never acknowledged, 2 configuration or credentials (401/403 included) — never retried.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.broker import BrokerTarget
from connectors.platform_access import PLATFORM_ACCESS

if TYPE_CHECKING:  # the parsers are built on every `sentistream` call: Kafka and SQLAlchemy load per command
    from sqlalchemy.engine import Engine

    from connectors.base import BackoffPolicy, Connector
    from connectors.credentials import Credentials
    from connectors.publisher import KafkaPublisher
    from connectors.topics import TopicsConfig

log = logging.getLogger("sentistream.ingest")

DEFAULT_KAFKA_TOPIC = "posts.raw"
EXIT_OK, EXIT_PUBLISH, EXIT_CONFIG = 0, 1, 2
PLATFORMS = ("twitter", "reddit", "bluesky", "mastodon")

ResolveServices = Callable[..., Any]
# database URL -> an engine for the cursor store.  stream/ passes one with its timeouts and per-call
# deadline, so a frozen server fails a cursor save (logged; the run goes on) instead of hanging the
# connector in libpq's recv forever; None builds a plain engine.
CursorEngineFactory = Callable[[str], "Engine"]


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def register(subparsers: argparse._SubParsersAction, resolve_services: ResolveServices,
             cursor_engine: CursorEngineFactory | None = None) -> None:
    """Add ``ingest <source>`` subcommands to the main parser."""
    ingest = subparsers.add_parser("ingest", help="run a connector: social platform or JSONL replay -> Kafka")
    sources = ingest.add_subparsers(dest="source", required=True, metavar="SOURCE")

    p = sources.add_parser(
        "replay", help="replay a JSONL file of normalized posts",
        description="Replay a JSONL file of normalized posts into Kafka. Needs a broker that outlives this "
                    "command: SENTISTREAM_KAFKA, or a running `sentistream worker`'s embedded broker. Bad "
                    "lines do not stop the run; they go to the rejects file with line number and reason.")
    p.add_argument("file", type=Path)
    p.add_argument("--rejects", type=Path, default=None, metavar="FILE",
                   help="where bad lines go, one JSON object each: line, reason, raw (default FILE.rejects "
                        "beside the input, or $SENTISTREAM_HOME/rejects/ when that folder is read-only; "
                        "only kept when there are bad lines)")
    p.add_argument("--rate", default=None, help="at most N posts per second, e.g. 200/s or 600/m")
    p.add_argument("--speedup", type=float, default=None,
                   help="keep the original gaps between created_at timestamps, divided by X")
    p.add_argument("--topic", default=None, help="override the topic of every post")
    p.add_argument("--shift-to-now", action="store_true",
                   help="re-stamp every post by one offset (whole minutes) so the file's newest post is now: "
                        "old data then looks live and its alerts are delivered, not stored as historical")
    _common(p)
    p.set_defaults(func=lambda args, *rest: cmd_replay(args, resolve_services, rest[0] if rest else None))

    for platform in PLATFORMS:
        p = sources.add_parser(platform, help=f"{platform} connector (long-running; stops on SIGTERM)",
                               epilog=PLATFORM_ACCESS[platform].help_epilog(),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--topics", type=Path, required=True, help="topics config (YAML or TOML)")
        p.add_argument("--secrets-file", type=Path, default=None,
                       help="KEY=VALUE file with credentials (the environment wins)")
        p.add_argument("--source-name", default=None,
                       help=f"cursor key in source_cursors (default {platform}); one per running instance")
        p.add_argument("--poll-interval", type=float, default=None, help="seconds between polls (polling sources)")
        p.add_argument("--api-url", default=None, help="API base URL (for a proxy or a test server)")
        if platform == "twitter":
            p.add_argument("--mode", choices=["search", "stream"], default="search",
                           help="search (default): recent-search polling, works on the Basic tier; "
                                "stream: the filtered stream, needs the Pro tier")
        if platform == "mastodon":
            p.add_argument("--instance", default=None, help="instance URL (default env MASTODON_INSTANCE)")
            p.add_argument("--local", action="store_true", help="the instance's local timeline only")
        _common(p)
        p.set_defaults(func=lambda args, *rest, _p=platform: cmd_platform(_p, args, resolve_services,
                                                                        rest[0] if rest else None),
                       cursor_engine=cursor_engine)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka-topic", default=None, help=f"Kafka topic (default settings' topic_raw, {DEFAULT_KAFKA_TOPIC})")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on 127.0.0.1:PORT")


@contextlib.contextmanager
def _services(resolve: ResolveServices, need_database: bool) -> Iterator[tuple[BrokerTarget, str]]:
    result = resolve(need_database=need_database)
    if hasattr(result, "__enter__"):
        with result as resolved:
            yield resolved
    else:
        yield result


def _kafka_topic(args: argparse.Namespace, settings: Any) -> str:
    return args.kafka_topic or getattr(settings, "topic_raw", None) or DEFAULT_KAFKA_TOPIC


def _prepare_topic(target: BrokerTarget, topic: str, settings: Any) -> None:
    """Create the Kafka topic with the configured partitions if it is missing (idempotent)."""
    try:
        from connectors.broker import ensure_topics
    except ImportError:  # pragma: no cover - older broker module
        return
    # Waits for a broker that is not up yet (one line per try; SENTISTREAM_STARTUP_WAIT_S, 0 = forever).
    ensure_topics(target, [topic], int(getattr(settings, "topic_partitions", 4) or 4),
                  timeout_s=float(getattr(settings, "startup_wait_s", 0.0) or 0.0))


def _serve_metrics(port: int | None) -> None:
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr="127.0.0.1")
        log.info("metrics on http://127.0.0.1:%d/metrics", port)


@contextlib.contextmanager
def _on_signals(handler: Callable[[], None]) -> Iterator[None]:
    """SIGTERM/SIGINT call ``handler`` (main thread only; elsewhere, e.g. in tests, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _handle(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping after a final flush", signal.Signals(signum).name)
        handler()

    for sig in previous:
        signal.signal(sig, _handle)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _default_rejects(beside_input: Path, settings: Any) -> Path:
    """Beside the input when that folder is writable; else the state directory (a read-only mount of
    the input, as in docker-compose, must not stop a replay that has no bad line at all)."""
    if os.access(beside_input.parent, os.W_OK) and (not beside_input.exists() or os.access(beside_input, os.W_OK)):
        return beside_input
    home = getattr(settings, "home", None)
    folder = Path(home) / "rejects" if home else Path.cwd()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / beside_input.name


def cmd_replay(args: argparse.Namespace, resolve: ResolveServices, settings: Any = None) -> int:
    from connectors.publisher import KafkaPublisher, PublishError
    from connectors.replay import default_rejects_path, parse_rate, replay_file, shift_to_now

    try:
        rate = parse_rate(args.rate)
    except ValueError as exc:
        _err(f"error: {exc}")
        return EXIT_CONFIG
    if not args.file.is_file():
        _err(f"error: {args.file} is not a file")
        return EXIT_CONFIG
    rejects = args.rejects or _default_rejects(default_rejects_path(args.file), settings)
    if rejects.resolve() == args.file.resolve():
        _err(f"error: --rejects {rejects} is the input file")
        return EXIT_CONFIG
    shift = shift_to_now(args.file) if getattr(args, "shift_to_now", False) else None
    if shift:
        _out(f"shifting every post by {shift} so the newest one is now")
    stop = threading.Event()
    _serve_metrics(args.metrics_port)
    with _services(resolve, need_database=False) as (target, _db):
        topic = _kafka_topic(args, settings)
        _prepare_topic(target, topic, settings)
        try:
            with KafkaPublisher(target, topic) as publisher, _on_signals(stop.set):
                report = replay_file(args.file, publisher, rate=rate, speedup=args.speedup,
                                     topic=args.topic, stop=stop, rejects=rejects, shift=shift)
        except PublishError as exc:
            _err(f"error: {exc}")
            return EXIT_PUBLISH
        except OSError as exc:  # the rejects file cannot be written: found before the first post is sent
            _err(f"error: cannot write the rejects file {rejects}: {exc.strerror or exc} (set --rejects)")
            return EXIT_CONFIG
    for line_no, reason in report.invalid[:50]:
        _err(f"{args.file}:{line_no}: skipped: {reason}")
    if len(report.invalid) > 50:
        _err(f"... and {len(report.invalid) - 50} more invalid lines")
    kept = f" (written to {report.rejects_path} with line numbers)" if report.rejects_path else ""
    _out(f"replayed {report.sent} posts to {topic}; {len(report.invalid)} invalid lines skipped{kept}"
         + ("; stopped early" if report.stopped_early else ""))
    return EXIT_OK


def build_connector(platform: str, args: argparse.Namespace, publisher: KafkaPublisher, store: Any,
                    topics: TopicsConfig, credentials: Credentials,
                    backoff: BackoffPolicy | None = None) -> Connector:
    """The platform's connector with its credentials; raises MissingCredentialError when one is absent."""
    from connectors.credentials import MissingCredentialError
    common: dict[str, Any] = {"source": args.source_name or platform, "backoff": backoff}
    if args.poll_interval is not None:
        common["poll_interval_s"] = args.poll_interval
    if args.api_url:
        common["api_url"] = args.api_url
    if platform == "twitter":
        from connectors.twitter import TwitterConnector

        token = credentials.require("TWITTER_BEARER_TOKEN", "the X/Twitter API v2 (app bearer token)")
        return TwitterConnector(publisher, store, topics, bearer_token=token, mode=args.mode, **common)
    if platform == "reddit":
        from connectors.reddit import RedditConnector, RedditCredentials

        return RedditConnector(publisher, store, topics, credentials=RedditCredentials.from_lookup(credentials),
                               **common)
    if platform == "bluesky":
        from connectors.bluesky import BlueskyConnector

        if "api_url" in common:
            common["jetstream_url"] = common.pop("api_url")
        return BlueskyConnector(publisher, store, topics, **common)
    if platform == "mastodon":
        from connectors.mastodon import MastodonConnector

        instance = args.instance or credentials.plain("MASTODON_INSTANCE")
        if not instance:
            raise MissingCredentialError("set --instance or MASTODON_INSTANCE (e.g. https://mastodon.social)")
        common.pop("api_url", None)
        return MastodonConnector(publisher, store, topics, instance_url=args.api_url or instance,
                                 access_token=credentials.get("MASTODON_ACCESS_TOKEN"),
                                 local=args.local, **common)
    raise ValueError(f"unknown platform {platform!r}")


def cmd_platform(platform: str, args: argparse.Namespace, resolve: ResolveServices, settings: Any = None) -> int:
    from connectors.base import AuthError, ConfigError
    from connectors.credentials import Credentials, MissingCredentialError
    from connectors.cursor import CursorStoreError, PostgresCursorStore
    from connectors.publisher import KafkaPublisher, PublishError
    from connectors.topics import TopicsConfigError, load_topics

    try:
        topics = load_topics(args.topics)
        credentials = Credentials(args.secrets_file)
    except (TopicsConfigError, OSError) as exc:
        _err(f"error: {exc}")
        return EXIT_CONFIG
    _serve_metrics(args.metrics_port)
    with _services(resolve, need_database=True) as (target, database_url):
        topic = _kafka_topic(args, settings)
        make_engine = getattr(args, "cursor_engine", None)
        store = (PostgresCursorStore(database_url) if make_engine is None
                 else PostgresCursorStore(engine=make_engine(database_url)))
        try:
            _prepare_topic(target, topic, settings)
            with KafkaPublisher(target, topic) as publisher:
                connector = build_connector(platform, args, publisher, store, topics, credentials)
                with _on_signals(connector.stop):
                    stats = connector.run()
        except (AuthError, ConfigError, MissingCredentialError, ValueError) as exc:
            _err(f"error: {exc}")
            return EXIT_CONFIG
        except CursorStoreError as exc:
            _err(f"error: {exc} (has `sentistream db upgrade` been run?)")
            return EXIT_CONFIG
        except PublishError as exc:
            _err(f"error: {exc}")
            return EXIT_PUBLISH
        finally:
            store.close()
    _out(f"{platform}: stopped after publishing {stats.published} posts "
         f"({stats.duplicates} duplicates dropped, {stats.bad_payloads} bad payloads)")
    return EXIT_OK
