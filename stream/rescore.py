"""`sentistream rescore --since 7d`: score stored posts with the current checkpoint.

A new checkpoint scores new posts as they arrive; history keeps the old model's rows (sentiments are
unique per post *and* model version, nothing is rewritten).  This command fills in the current model's
rows for older posts, re-fetching their pictures through the same SSRF-safe MediaFetcher, then
recomputes the windows it touched for that model version.  Running it twice does nothing new.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from tqdm import tqdm

from connectors.post import MediaRef, Post
from stream.settings import Settings, window_seconds
from stream.sink import PostgresSink, SinkRecord

log = logging.getLogger(__name__)

_SELECT = """
SELECT p.id, p.platform, p.post_id, p.text, p.created_at, p.author, p.lang, p.url, p.topic, p.keywords,
       p.ingested_at,
       COALESCE((SELECT array_agg(m.url ORDER BY m.id) FROM post_media m
                 WHERE m.post_pk = p.id AND m.status = 'ok'), '{{}}') AS image_urls
FROM posts p
WHERE p.created_at >= :since {topic_clause}
  AND (:force OR NOT EXISTS (SELECT 1 FROM sentiments s WHERE s.post_pk = p.id AND s.model_version = :version))
  AND p.id > :after
ORDER BY p.id
LIMIT :limit
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rescore", help="score stored posts with the current checkpoint (new model version)")
    p.add_argument("--since", default="7d", help="posts created in this period before now (e.g. 6h, 7d)")
    p.add_argument("--topic", default=None, help="only this topic")
    p.add_argument("--batch-size", type=int, default=None, help="posts per scoring batch (default: settings)")
    p.add_argument("--no-media", action="store_true", help="score text only, do not re-fetch pictures")
    p.add_argument("--force", action="store_true", help="re-score posts that already have this version's row")
    p.set_defaults(func=cmd_rescore)


def cmd_rescore(args: argparse.Namespace, settings: Settings) -> int:
    from stream.embedded import services
    from stream.migrate import check_schema, make_engine
    from stream.worker import load_scorer

    scorer = load_scorer(settings)
    if scorer is None:
        log.error("no model checkpoint to score with (SENTISTREAM_CHECKPOINT or the shipped default)")
        return 2
    with services(settings, need_broker=False) as resolved:
        engine = make_engine(resolved.database_url)
        check_schema(engine)
        since = datetime.now(UTC) - timedelta(seconds=window_seconds(args.since))
        n = asyncio.run(rescore(engine, scorer, settings, since=since, topic=args.topic,
                                batch_size=args.batch_size or settings.batch_size,
                                media=not args.no_media, force=args.force))
        engine.dispose()
    sys.stdout.write(f"rescored {n} posts with model {scorer.model_version}\n")
    return 0


async def rescore(engine: Engine, scorer: Any, settings: Settings, *, since: datetime, topic: str | None,
                  batch_size: int, media: bool = True, force: bool = False) -> int:
    """Score every matching post in id order, batch by batch; returns how many were scored."""
    from stream.aggregation import WindowAlertStage
    from stream.media import MediaFetcher
    from stream.worker import media_stage, score_input_factory

    sink = PostgresSink(engine)
    build_input = score_input_factory()
    windows = WindowAlertStage(engine, settings.window_lengths_s, detector=None)  # no alerts about the past
    fetcher = MediaFetcher.from_settings(settings) if media else None
    fetch = media_stage(fetcher) if fetcher is not None else None
    if fetcher is not None:
        await fetcher.start()
    total, after = 0, 0
    sql = text(_SELECT.format(topic_clause="AND p.topic = :topic" if topic else ""))
    progress = tqdm(desc=f"rescore ({scorer.model_version})", unit="post")
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
            images = [f.images for f in fetched] if fetched else [[] for _ in posts]
            inputs = [build_input(p, imgs) for p, imgs in zip(posts, images, strict=True)]
            results = await asyncio.to_thread(scorer.score, inputs)
            records = [SinkRecord(post=p, sentiment=s, media=f.outcomes if fetched else [],
                                  modalities=("text", "image") if imgs else ("text",))
                       for p, s, imgs, f in zip(posts, results, images, fetched or [None] * len(posts),
                                                strict=True)]
            written = await asyncio.to_thread(sink.write, records)
            await windows(written, records)
            total += len(records)
            progress.update(len(records))
    finally:
        progress.close()
        if fetcher is not None:
            await fetcher.close()
    return total


def _post(row: Any) -> Post:
    return Post(platform=row.platform, post_id=row.post_id, text=row.text, created_at=row.created_at,
                author=row.author, lang=row.lang, url=row.url, topic=row.topic,
                keywords=tuple(row.keywords or ()), media=tuple(MediaRef(u) for u in row.image_urls),
                ingested_at=row.ingested_at)
