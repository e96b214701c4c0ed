"""Benchmark posts that look like the real feed: real tweet texts (so real token lengths), unique ids.

Texts come from the TweetEval validation tweets in ``SENTISTREAM_DATA_DIR`` (2,000 tweets, about 30
MiniLM tokens on average); where that folder is missing, from the bundled sample posts.  Texts are
cycled to reach any N; ids are unique so every post is a new row.  Images are the scikit-image photos
the demo serves (``stream.demo_media``), so no file is downloaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.post import MediaRef, Post

log = logging.getLogger(__name__)

TOPICS = ("skyways-airline", "metro-strike", "phone-launch", "city-marathon")
SAMPLE_POSTS = Path(__file__).resolve().parents[1] / "connectors" / "samples" / "sample_posts.jsonl"


def tweet_texts() -> tuple[list[str], str]:
    """Texts to benchmark on and where they came from."""
    try:
        from model.data import load_tweeteval_val

        texts = [example.text for example in load_tweeteval_val()]
        if texts:
            return texts, "TweetEval sentiment validation tweets (../shared/data)"
    except (OSError, ValueError) as exc:
        log.warning("TweetEval texts unavailable (%s); using the bundled sample posts", exc)
    lines = SAMPLE_POSTS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()], "bundled sample posts"


def cycle(items: list[str], n: int) -> list[str]:
    return [items[i % len(items)] for i in range(n)]


def make_posts(n: int, texts: list[str], *, prefix: str = "b", start: datetime | None = None,
               image_url: Callable[[int], str] | None = None) -> list[Post]:
    """``n`` replay posts over a few topics, one second apart; ``image_url(i)`` gives post i a picture."""
    start = start or datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    return [
        Post(platform="replay", post_id=f"{prefix}{i}", text=texts[i % len(texts)],
             created_at=start + timedelta(seconds=i), topic=TOPICS[i % len(TOPICS)],
             keywords=(TOPICS[i % len(TOPICS)].split("-")[0],), author=f"user{i % 997}", lang="en",
             media=(MediaRef(image_url(i)),) if image_url is not None else (),
             raw={"source": "bench", "i": i})
        for i in range(n)
    ]


def skimage_photos(max_side: int = 512) -> list:
    """The demo's photos as decoded RGB PIL images (what the worker's media fetcher hands the scorer)."""
    import io

    from PIL import Image

    from stream.demo_media import SKIMAGE_PHOTOS, render_jpeg

    photos = []
    for name in SKIMAGE_PHOTOS:
        with Image.open(io.BytesIO(render_jpeg(name, max_side))) as image:
            photos.append(image.convert("RGB"))
    return photos
