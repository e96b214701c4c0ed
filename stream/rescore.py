"""`sentistream rescore --since 7d`: score stored posts with the current checkpoint.

A new checkpoint scores new posts as they arrive; history keeps the old model's rows (sentiments are
unique per post *and* model version, nothing is rewritten).  This command fills in the current model's
rows for older posts, re-fetching their pictures through the same SSRF-safe MediaFetcher, then
recomputes the windows it touched for that model version.  Running it twice does nothing new.

It never downgrades what is stored:

* A post whose stored pictures (``post_media`` rows with status ``ok``) cannot all be fetched again is
  left alone: it keeps its scores, and it is tried again by the next run (no row of this model version
  was written for it).  A text-only score from a failed re-fetch would be worse than the one stored.
* ``post_media`` rows are never written here: a re-fetch that is blocked, refused or times out today
  says nothing about the picture the post was scored with, so an ``ok`` row never becomes ``blocked``.
* ``--no-media --force`` does not replace a text+image row of this model version with a text-only one.
* Windows are recomputed for every configured length and every length already stored in
  ``window_aggregates`` (a demo's 5-minute windows stay true when rescore runs with the default 1m, 1h).

The report says what was done and why anything was skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from connectors.post import MediaRef, Post
from stream.settings import Settings, window_seconds

if TYPE_CHECKING:  # the parser is built on every `sentistream` call: SQLAlchemy loads only to rescore
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

_SELECT = """
SELECT p.id, p.platform, p.post_id, p.text, p.created_at, p.author, p.lang, p.url, p.topic, p.keywords,
       p.ingested_at,
       COALESCE((SELECT array_agg(m.url ORDER BY m.id) FROM post_media m
                 WHERE m.post_pk = p.id AND m.post_created_at = p.created_at AND m.status = 'ok'), '{{}}') AS image_urls,
       (SELECT s.modalities FROM sentiments s
        WHERE s.post_pk = p.id AND s.post_created_at = p.created_at AND s.model_version = :version) AS stored_modalities
FROM posts p
WHERE p.created_at >= :since {topic_clause}
  AND (:force OR NOT EXISTS (SELECT 1 FROM sentiments s WHERE s.post_pk = p.id AND s.post_created_at = p.created_at
                                                 AND s.model_version = :version))
  AND p.id > :after
ORDER BY p.id
LIMIT :limit
"""

_SPAN = """
SELECT count(*) AS posts,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM sentiments s
                                      WHERE s.post_pk = p.id AND s.post_created_at = p.created_at
                                        AND s.model_version = :version)) AS scored
FROM posts p
WHERE p.created_at >= :since {topic_clause}
"""


@dataclass
class RescoreReport:
    """What a rescore did: posts scored, posts left alone and why, windows recomputed."""

    rescored: int = 0
    picture_not_refetched: Counter[str] = field(default_factory=Counter)  # media status -> posts kept
    would_drop_picture: int = 0  # --no-media would have replaced a text+image row of this version
    other_language: int = 0  # in a language its topic does not score (stream/language.py): left unscored
    window_lengths_s: tuple[int, ...] = ()

    @property
    def kept(self) -> int:
        return sum(self.picture_not_refetched.values()) + self.would_drop_picture + self.other_language


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rescore", help="score stored posts with the current checkpoint (new model version)",
        description="Score stored posts with the current checkpoint. Never downgrades: a post whose picture "
                    "cannot be fetched again keeps its stored scores and media rows; windows of every "
                    "configured and stored length are recomputed.")
    p.add_argument("--since", default="7d", help="posts created in this period before now (e.g. 6h, 7d)")
    p.add_argument("--topic", default=None, help="only this topic")
    p.add_argument("--batch-size", type=int, default=None, help="posts per scoring batch (default: settings)")
    p.add_argument("--no-media", action="store_true",
                   help="do not re-fetch pictures: posts without stored pictures are scored from text, "
                        "a text+image row of this model version is never replaced")
    p.add_argument("--force", action="store_true", help="re-score posts that already have this version's row")
    p.set_defaults(func=cmd_rescore)


def cmd_rescore(args: argparse.Namespace, settings: Settings) -> int:
    from stream.embedded import services
    from stream.migrate import DatabaseTimeouts, check_schema, make_engine, wait_for_database
    from stream.worker import load_scorer

    if args.batch_size is not None and args.batch_size < 1:
        log.error("--batch-size must be at least 1")
        return 2
    span = window_seconds(args.since)
    scorer = load_scorer(settings)
    if scorer is None:
        log.error("no model checkpoint to score with (SENTISTREAM_CHECKPOINT or the shipped default)")
        return 2
    with services(settings, need_broker=False) as resolved:
        # A batch job: recomputing a long span's windows may outlast the worker's statement timeout.
        engine = make_engine(resolved.database_url,
                             timeouts=DatabaseTimeouts.from_settings(settings).without_statement_timeout())
        wait_for_database(engine, settings.startup_wait_s)  # patient under a restart policy (#16.3)
        check_schema(engine)
        since = datetime.now(UTC) - timedelta(seconds=span)
        report = asyncio.run(rescore(engine, scorer, settings, since=since, topic=args.topic,
                                     batch_size=args.batch_size or settings.batch_size,
                                     media=settings.media_enabled and not args.no_media, force=args.force))
        in_span, scored = _span_counts(engine, since, args.topic, scorer.model_version)
        engine.dispose()
    sys.stdout.write(describe(report, args, scorer.model_version, in_span, scored) + "\n")
    return 0


def describe(report: RescoreReport, args: argparse.Namespace, model_version: str, in_span: int,
             scored: int) -> str:
    """One paragraph for the operator: what was rescored, what was kept and why, what to do next."""
    where = f"in the last {args.since}" + (f" for topic {args.topic}" if args.topic else "")
    lines = [f"rescored {report.rescored} posts with model {model_version}"]
    if report.rescored == 0 and report.kept == 0:
        if in_span == 0:
            lines[0] += f": no posts {where}"
        elif not args.force:
            lines[0] += (f": all {in_span} posts {where} already have model version {model_version}; "
                         "use --force to rescore")
    elif report.rescored:
        lengths = ", ".join(_length(s) for s in report.window_lengths_s)
        lines.append(f"recomputed their {lengths} windows for model {model_version}")
    if report.picture_not_refetched:
        why = ", ".join(f"{n} {status}" for status, n in sorted(report.picture_not_refetched.items()))
        lines.append(f"kept {sum(report.picture_not_refetched.values())} posts as stored: their picture could "
                     f"not be fetched again ({why}); they keep their scores and media rows and are tried "
                     "again by the next run")
    if report.would_drop_picture:
        lines.append(f"kept {report.would_drop_picture} posts as stored: --no-media would replace their "
                     f"text+image score of model {model_version} with a text-only one")
    if report.other_language:
        lines.append(f"left {report.other_language} posts unscored: their language is not one their topic "
                     "scores (languages in SENTISTREAM_TOPICS_FILE; the reason is in posts.unscored_reason)")
    if report.rescored or report.kept:
        lines.append(f"{scored} of {in_span} posts {where} now have model version {model_version}")
    return "\n".join(lines)


def _length(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _span_counts(engine: Engine, since: datetime, topic: str | None, version: str) -> tuple[int, int]:
    from sqlalchemy import text

    sql = text(_SPAN.format(topic_clause="AND p.topic = :topic" if topic else ""))
    with engine.connect() as conn:
        row = conn.execute(sql, {"since": since, "version": version, **({"topic": topic} if topic else {})}).one()
    return int(row.posts), int(row.scored)


def window_lengths(engine: Engine, configured: tuple[int, ...]) -> tuple[int, ...]:
    """The configured window lengths plus every length already stored, so none is left stale."""
    from sqlalchemy import text

    with engine.connect() as conn:
        stored = conn.execute(text("SELECT DISTINCT window_seconds FROM window_aggregates")).scalars().all()
    return tuple(sorted(set(configured) | {int(s) for s in stored}))


async def rescore(engine: Engine, scorer: Any, settings: Settings, *, since: datetime, topic: str | None,
                  batch_size: int, media: bool = True, force: bool = False) -> RescoreReport:
    """Score every matching post in id order, batch by batch; returns what was done and skipped."""
    from sqlalchemy import text
    from tqdm import tqdm

    from stream.aggregation import WindowAlertStage
    from stream.media import MediaFetcher
    from stream.sink import PostgresSink, SinkRecord
    from stream.worker import load_language_gate, media_stage, score_input_factory

    gate = load_language_gate(settings)  # the worker's rule: never score a language as if it were English
    report = RescoreReport(window_lengths_s=window_lengths(engine, settings.window_lengths_s))
    sink = PostgresSink(engine)
    build_input = score_input_factory()
    windows = WindowAlertStage(engine, report.window_lengths_s, detector=None)  # no alerts about the past
    fetcher = MediaFetcher.from_settings(settings) if media else None
    fetch = media_stage(fetcher) if fetcher is not None else None
    if fetcher is not None:
        await fetcher.start()
    after = 0
    sql = text(_SELECT.format(topic_clause="AND p.topic = :topic" if topic else ""))
    progress = tqdm(desc=f"rescore ({scorer.model_version})", unit="post", file=sys.stderr,
                    disable=not sys.stderr.isatty())
    try:
        while True:
            params = {"since": since, "version": scorer.model_version, "force": force, "after": after,
                      "limit": batch_size, **({"topic": topic} if topic else {})}
            with engine.connect() as conn:
                rows = conn.execute(sql, params).all()
            if not rows:
                break
            after = rows[-1].id
            posts = [_post(r) for r in rows]
            fetched = await fetch(posts) if fetch is not None else None
            chosen: list[tuple[Post, list[Any]]] = []
            for i, (row, post) in enumerate(zip(rows, posts, strict=True)):
                if gate.reason_to_skip(post):
                    report.other_language += 1
                    continue
                images: list[Any] = []
                if row.image_urls and fetched is None:  # --no-media
                    if "image" in (row.stored_modalities or ()):
                        report.would_drop_picture += 1
                        continue
                elif row.image_urls:
                    failed = [o.status for o in fetched[i].outcomes if o.status not in {"ok", "skipped"}]
                    if failed or not fetched[i].images:
                        reason = failed[0] if failed else "not decoded"
                        report.picture_not_refetched[reason] += 1
                        log.info("post %s kept as stored: its picture could not be fetched again (%s)",
                                 post.key, reason)
                        continue
                    images = fetched[i].images
                chosen.append((post, images))
            if chosen:
                inputs = [build_input(p, imgs) for p, imgs in chosen]
                results = await asyncio.to_thread(scorer.score, inputs)
                records = [SinkRecord(post=p, sentiment=s, modalities=("text", "image") if imgs else ("text",))
                           for (p, imgs), s in zip(chosen, results, strict=True)]
                written = await asyncio.to_thread(sink.write, records)
                await windows(written, records)
                report.rescored += len(records)
            progress.update(len(rows))
    finally:
        progress.close()
        if fetcher is not None:
            await fetcher.close()
    return report


def _post(row: Any) -> Post:
    return Post(platform=row.platform, post_id=row.post_id, text=row.text, created_at=row.created_at,
                author=row.author, lang=row.lang, url=row.url, topic=row.topic,
                keywords=tuple(row.keywords or ()), media=tuple(MediaRef(u) for u in row.image_urls),
                ingested_at=row.ingested_at)
