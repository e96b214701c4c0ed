"""Composition root of the worker process: database, sink, scorer, media and alerting, wired once.

Kept apart from ``stream/app.py`` so the Faust file stays a short declaration and so tests can build the
same ``BatchProcessor`` without Kafka.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust

from connectors.broker import wait_for_broker
from connectors.post import Post
from stream import metrics
from stream.app import WorkerState, run_worker
from stream.batch_yield import batch_must_yield
from stream.embedded import services
from stream.language import LanguageGate
from stream.metrics import HealthState
from stream.migrate import check_schema, database_location, make_engine, wait_for_database
from stream.picture_cache import attach as attach_picture_cache
from stream.pipeline import BatchProcessor
from stream.settings import Settings, SettingsError
from stream.sink import PostgresSink
from stream.startup_health import StartupHealth

log = logging.getLogger(__name__)


def load_scorer(settings: Settings) -> Any | None:
    """The model's batch Scorer, or None (posts stored unscored) when no checkpoint is available."""
    if not settings.scoring:
        log.info("scoring disabled (SENTISTREAM_SCORING=false): posts are stored without sentiment")
        return None
    try:
        from model.scorer import Scorer
    except ImportError as exc:
        log.warning("model package unavailable (%s): posts will be stored without sentiment", exc)
        return None
    if settings.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.torch_threads)
    path: Path | None = settings.checkpoint
    if path is not None and not path.exists():
        from model.checkpoint_error import CheckpointError

        raise CheckpointError(path, "no such file")  # asked for, so never fall back to storing unscored
    try:
        scorer = Scorer.from_checkpoint(path, device=settings.device, text_int8=settings.text_int8,
                                        encoder_runtime=settings.encoder_runtime, precision=settings.precision,
                                        image_cache_entries=settings.image_cache_entries)
    except FileNotFoundError as exc:
        log.warning("no model checkpoint (%s): posts will be stored without sentiment", exc)
        return None
    log.info("scoring with model %s on %s in %s", scorer.model_version, getattr(scorer, "device", "?"),
             getattr(scorer, "precision", "?"))
    return scorer


def score_input_factory() -> Any:
    """Adapter from a Post and its decoded images to the model's ScoreInput."""
    from model.scorer import ScoreInput

    def build(post: Post, images: list[Any]) -> Any:
        return ScoreInput(text=post.text, images=images)

    return build


def media_stage(fetcher: Any, max_images: int = 4) -> Any:
    """Adapter: a batch's posts -> per-post media outcomes and decoded images (MediaFetcher does the work).

    Only image-like media (photos, GIF stills, video thumbnails) are fetched; other kinds are recorded
    as ``skipped`` so an analyst can see what the post carried.
    """
    from stream.media import MediaResult
    from stream.pipeline import FetchedMedia
    from stream.sink import MediaOutcome

    async def run(posts: list[Post]) -> list[FetchedMedia]:
        wanted = [[m for m in p.media if m.kind in {"image", "gif", "video_thumbnail"}][:max_images] for p in posts]
        results: list[MediaResult] = await fetcher.fetch_many([m.url for ms in wanted for m in ms])
        now = datetime.now(UTC)
        out, i = [], 0
        for post, ms in zip(posts, wanted, strict=True):
            fetched = FetchedMedia()
            for m in ms:
                r = results[i]
                i += 1
                fetched.outcomes.append(MediaOutcome(url=m.url, kind=m.kind, status=r.status,
                                                     content_type=r.content_type, bytes=r.bytes,
                                                     sha256=r.sha256, width=r.width, height=r.height,
                                                     error=r.error, fetched_at=now))
                if r.image is not None:
                    fetched.images.append(r.image)
            for m in post.media:
                if m not in ms:
                    fetched.outcomes.append(MediaOutcome(url=m.url, kind=m.kind, status="skipped",
                                                         error="media kind not scored" if m.kind not in
                                                         {"image", "gif", "video_thumbnail"} else
                                                         f"more than {max_images} images", fetched_at=now))
            out.append(fetched)
        return out

    return run


def build_processor(settings: Settings, database_url: str, *, scorer: Any | None,
                    executor: Executor | None = None, publish_dead_letters: Any = None,
                    alert_deliverer: Any = None, media_fetcher: Any = None, watermark: Any = None,
                    should_stop: Any = lambda: False, state: WorkerState | None = None,
                    language_gate: LanguageGate | None = None) -> BatchProcessor:
    """Everything the agent needs for one batch; also used by tests and benchmarks without Kafka."""
    gate = language_gate or load_language_gate(settings)
    from stream.aggregation import WindowAlertStage

    engine = make_engine(database_url)
    sink = PostgresSink(engine)
    # picture features by sha256 in picture_features, shared by workers; SENTISTREAM_IMAGE_CACHE_ENTRIES=0: no cache
    attach_picture_cache(scorer, engine, shared=settings.image_cache_entries > 0)

    def on_db_state(up: bool, error: str | None) -> None:
        if state is not None:
            if up:
                state.health.mark_up("database")
            else:
                state.health.mark_down("database", error or "unreachable")

    def on_model_state(up: bool, error: str | None) -> None:
        if state is not None:
            if up:
                state.health.mark_up("model")
            else:
                state.health.mark_down("model", error or "scoring failed")

    windows = WindowAlertStage(
        engine, settings.window_lengths_s, load_spike_detector(settings),
        executor=executor, deliverer=alert_deliverer,  # the alert outbox's deliverer, kicked after each batch
        on_alert=lambda alert: metrics.ALERTS.labels(alert.kind).inc() if alert.event == "opened" else None,
        watermark=watermark,
        historical_after_s=settings.alert_historical_after_s,
        # the words the model attended to in each alert's example posts (a few texts per alert event)
        attended_words=getattr(scorer, "attended_words", None),
        attended_model_version=getattr(scorer, "model_version", None),
    )
    return BatchProcessor(
        sink,
        scorer=scorer,
        score_input=score_input_factory() if scorer is not None else None,
        media=media_stage(media_fetcher) if media_fetcher is not None else None,
        publish_dead_letters=publish_dead_letters,
        after_write=windows,
        executor=executor,
        should_stop=should_stop,
        on_db_state=on_db_state,
        on_model_state=on_model_state,
        model_failures_unhealthy=settings.model_failures_unhealthy,
        media_paused=lambda: state is not None and state.overload is not None and state.overload.active,
        skip_scoring=gate.reason_to_skip,  # other languages than the topic's: stored, flagged, not scored
        annotate_post=gate.with_detected_language,  # posts.lang = the detected language when untagged
    )


def load_language_gate(settings: Settings) -> LanguageGate:
    """The per-topic language gate from SENTISTREAM_TOPICS_FILE (English only without one); fails fast."""
    from connectors.topics import TopicsConfigError

    try:
        return LanguageGate.from_file(settings.topics_file)
    except TopicsConfigError as exc:
        raise SettingsError(f"SENTISTREAM_TOPICS_FILE: {exc}") from None


def load_spike_detector(settings: Settings) -> Any:
    """The spike detector with each topic's ``alerts`` settings from SENTISTREAM_TOPICS_FILE; fails fast."""
    from connectors.topics import TopicsConfigError, load_topics
    from stream.alerts import spike_detector

    try:
        return spike_detector(settings, load_topics(settings.topics_file) if settings.topics_file else None)
    except (TopicsConfigError, ValueError) as exc:
        raise SettingsError(f"SENTISTREAM_TOPICS_FILE: {exc}") from None


def start_alert_delivery(app: faust.App, settings: Settings, database_url: str) -> Any:
    """The alert outbox's deliverer (stream/alert_delivery.py) on a small engine of its own, woken after
    every batch and every SENTISTREAM_ALERT_DELIVERY_INTERVAL_S; it stops with the app."""
    from stream.alert_delivery import AlertDeliverer

    deliverer = AlertDeliverer.from_settings(make_engine(database_url, pool_size=2, max_overflow=0), settings,
                                             publish=app.sentistream_publish_alert)  # type: ignore[attr-defined]
    app.add_future(deliverer.run(settings.alert_delivery_interval_s))
    return deliverer


def faust_watermark(app: faust.App, topic: str) -> Any:
    """An EventTimeWatermark fed by the Faust consumer's assignment and high-water marks."""
    from faust.types import TP

    from stream.aggregation import EventTimeWatermark

    def assigned() -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in app.consumer.assignment() if tp.topic == topic]

    def highwater(tp: tuple[str, int]) -> int | None:
        try:
            return app.consumer.highwater(TP(*tp))
        except Exception:  # noqa: BLE001 - unknown yet: the partition does not hold the watermark
            return None

    return EventTimeWatermark(assigned, highwater)


def database_probe(database_url: str) -> Any:
    """One ``SELECT 1`` on a one-connection engine, so an idle worker still notices a dead database."""
    from sqlalchemy import text

    engine = make_engine(database_url, pool_size=1, max_overflow=0)

    def probe() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    return probe


def _ensure_partitions(engine: Any) -> None:
    """The coming months' partitions, so a deployment without the daily job keeps them ahead (0007).  A failure
    (a lock held elsewhere) is logged, not fatal: rows without a month land in the DEFAULT partition."""
    from stream.partitions import ensure_partitions

    try:
        ensure_partitions(engine)
    except Exception:  # noqa: BLE001 - the worker runs fine on the DEFAULT partition
        log.warning("could not create the coming months' partitions; `sentistream maintenance partitions` "
                    "will", exc_info=True)


def main(settings: Settings) -> int:
    """`sentistream worker`: resolve services, check the schema, load the model, run the Faust worker."""
    language_gate = load_language_gate(settings)  # a bad topics file fails before anything starts
    load_spike_detector(settings)  # so does a bad `alerts` section
    with services(settings) as resolved, StartupHealth(settings.web_host, settings.web_port) as startup:
        # Patient start-up: wait (capped backoff, one line a try) for what a restart policy may bring up
        # after us; /health answers 503 "waiting for ..." meanwhile.
        engine = make_engine(resolved.database_url)
        startup.waiting_for("database", database_location(engine.url))
        wait_for_database(engine, settings.startup_wait_s, on_waiting=startup.set_detail)
        check_schema(engine)
        _ensure_partitions(engine)
        engine.dispose()
        startup.waiting_for("model")
        scorer = load_scorer(settings)
        startup.waiting_for("broker", resolved.broker.bootstrap_servers)
        wait_for_broker(resolved.broker, settings.startup_wait_s, on_waiting=startup.set_detail)
        startup.stop()  # Faust's web server takes the port over

        state = WorkerState(health=HealthState(("broker", "database", "model") if settings.scoring
                                               else ("broker", "database"),
                                               stall_after_s=settings.stall_after_s,
                                               down_grace_s={"database": settings.db_down_unhealthy_s,
                                                             "broker": settings.broker_down_unhealthy_s}))
        state.database_probe = database_probe(resolved.database_url)
        state.health.mark_up("database")
        if scorer is not None:
            state.health.mark_up("model")
        elif settings.scoring:
            state.health.mark_down("model", "no model checkpoint loaded; posts are stored unscored")

        async def processor_factory(app: faust.App, state: WorkerState) -> BatchProcessor:
            state.model_version = scorer.model_version if scorer is not None else None
            state.health.mark_up("broker")
            fetcher = None
            if settings.media_enabled and scorer is not None:
                from stream.media import MediaFetcher

                # Entered on the app's exit stack: closed after the agents stopped, so no batch loses its
                # session mid-fetch and no "Unclosed client session" error ends every run.
                fetcher = await app.add_async_context(MediaFetcher.from_settings(settings))
            return build_processor(
                settings, resolved.database_url, scorer=scorer, media_fetcher=fetcher, language_gate=language_gate,
                watermark=faust_watermark(app, settings.topic_raw),
                publish_dead_letters=app.sentistream_publish_dead_letters,  # type: ignore[attr-defined]
                alert_deliverer=start_alert_delivery(app, settings, resolved.database_url),
                should_stop=lambda: batch_must_yield(app), state=state,
            )

        log.info("worker consuming %s from %s (embedded=%s)", settings.topic_raw,
                 resolved.broker.bootstrap_servers, resolved.broker.embedded)
        return run_worker(settings, resolved.broker, processor_factory, state)

