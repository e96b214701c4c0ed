"""Picture-feature cache (memory + PostgreSQL): its hit rate on the bundled sample, and what a repeated picture costs.

Sample: the demo's feed (connectors/samples/sample_posts.jsonl) with its pictures rendered as
``sentistream demo`` serves them (stream/demo_media.py), decoded and tagged with their bytes' sha256 as
the media fetcher does, scored in feed order in batches of ``--batch`` by the shipped checkpoint's
Scorer wired to a throwaway migrated database exactly as the worker wires it
(``stream.picture_cache.attach``).  Reported per level: hits and misses, and the image-encoder passes.
Then a restarted worker: empty memory, the same sample, the PostgreSQL level warm.

Cost: ``--batch`` text+picture posts per batch, each picture (a) new (distinct bytes: decoded,
transformed, encoded, written back), (b) in memory, (c) in PostgreSQL only (memory emptied before each
repeat), against (d) the same texts without pictures; median ms/post of ``--repeats`` batches, the four
cases interleaved round by round (the machine's load swings hit all alike), ratios to (d) within the run.

    .venv/bin/python -m bench.picture_cache
    .venv/bin/python -m bench.picture_cache --backend embedded --batch 32 --repeats 7
"""

from __future__ import annotations

import hashlib
import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/picture_cache.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cli import parse_and_log, script_parser  # noqa: E402
from bench.databases import DEFAULT_SERVER, server, throwaway_database  # noqa: E402
from bench.measure import Timings, time_repeats  # noqa: E402
from bench.results import DEFAULT_RESULTS_FILE, ResultEntry, command_line, markdown_table  # noqa: E402

log = logging.getLogger("bench.picture_cache")


def tagged(body: bytes) -> Any:
    """The picture as the worker's media fetcher hands it to the Scorer: decoded RGB, its bytes' sha256."""
    from stream.media import MediaLimits, decode_image

    limits = MediaLimits()
    image = decode_image(body, limits.max_pixels, limits.formats, limits.draft_side).image
    image.info["sha256"] = hashlib.sha256(body).hexdigest()
    return image


def sample_inputs() -> tuple[list[Any], int]:
    """The bundled sample's posts the worker scores (decodable, in a scored language) as ScoreInputs with
    their pictures, and how many distinct pictures they carry."""
    from connectors.post import Post, PostDecodeError
    from model.scorer import ScoreInput
    from stream.demo import sample_lines
    from stream.demo_media import IMAGE_PREFIX, render_jpeg
    from stream.language import LanguageGate

    gate = LanguageGate.from_file(None)  # the demo's: English only
    bodies: dict[str, bytes] = {}
    inputs = []
    for line in sample_lines():
        try:
            post = Post.from_json(line)
        except PostDecodeError:
            continue  # the sample carries a few deliberately broken lines (dead letters in the demo)
        if gate.reason_to_skip(post):
            continue
        images = []
        for media in post.media:
            if media.kind in {"image", "gif", "video_thumbnail"} and IMAGE_PREFIX in media.url:
                name = media.url.rsplit("/", 1)[1].removesuffix(".jpg")
                if name not in bodies:
                    bodies[name] = render_jpeg(name)
                images.append(tagged(bodies[name]))
        inputs.append(ScoreInput(post.text, images=images))
    return inputs, len(bodies)


def distinct_pictures(n: int) -> Iterator[Any]:
    """``n`` pictures no cache has seen: the demo's photos, each cropped by a different offset."""
    from PIL import Image

    from stream.demo_media import SKIMAGE_PHOTOS, render_jpeg

    photos = [Image.open(io.BytesIO(render_jpeg(name))).convert("RGB") for name in SKIMAGE_PHOTOS]
    for i in range(n):
        photo = photos[i % len(photos)]
        k = i // len(photos) + 1
        out = io.BytesIO()
        photo.crop((k % 17, k // 17, photo.width - 1, photo.height - 1)).save(out, "JPEG", quality=85)
        yield tagged(out.getvalue())


def counted(scorer: Any, inputs: list[Any], batch: int) -> dict[str, int]:
    """Score ``inputs`` in batches; the picture counts the worker's metrics would show."""
    store = scorer.shared_features
    before = (store.hits, store.misses, store.rejected, scorer.image_cache.hits, scorer.image_cache.misses,
              scorer.pictures_encoded)
    memory: dict[str, int] = {"memory_hit": 0, "memory_miss": 0}
    scorer.on_picture_counts = lambda counts: [memory.__setitem__(k, memory[k] + counts.get(k, 0)) for k in memory]
    for start in range(0, len(inputs), batch):
        scorer.score(inputs[start:start + batch])
    scorer.on_picture_counts = None
    return {"pictures": sum(min(len(x.images), scorer.max_images) for x in inputs), **memory,
            "postgres_hit": store.hits - before[0], "postgres_miss": store.misses - before[1],
            "postgres_rejected": store.rejected - before[2], "encoded": scorer.pictures_encoded - before[5]}


def main(argv: list[str] | None = None) -> int:
    parser = script_parser("picture_cache", __doc__)
    parser.add_argument("--batch", type=int, default=64, help="posts per Scorer batch (the worker's default)")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per cost case (median)")
    parser.add_argument("--backend", choices=("configured", "embedded"), default="configured")
    parser.add_argument("--database-url", default=DEFAULT_SERVER, help="server for --backend configured")
    parser.add_argument("--results-file", type=Path, default=DEFAULT_RESULTS_FILE)
    parser.add_argument("--encoder-runtime", choices=("auto", "torch", "onnx"), default="auto",
                        help="what runs the encoders (SENTISTREAM_ENCODER_RUNTIME)")
    args, argv = parse_and_log(parser, argv)

    import torch

    from bench.feed import cycle, tweet_texts
    from model.image_cache import ImageFeatureCache
    from model.scorer import ScoreInput, Scorer
    from stream.migrate import make_engine
    from stream.picture_cache import attach

    entry = ResultEntry("bench/picture_cache.py: picture-feature cache, memory + PostgreSQL (#14 goal 2)",
                        command_line("bench.picture_cache", argv), packages=("torch", "onnxruntime", "psycopg2-binary"))
    scorer = Scorer.from_checkpoint(device="cpu", encoder_runtime=args.encoder_runtime)
    entry.fact("model", f"shipped checkpoint {scorer.model_version}; encoders "
               + ", ".join(f"{k} {v}" for k, v in getattr(scorer, "encoder_runtimes", {}).items())
               + f"; torch threads {torch.get_num_threads()}; batch {args.batch}")
    with server(args.backend, args.database_url) as (server_url, where), throwaway_database(server_url) as url:
        entry.fact("database", f"{where}, a throwaway migrated database")
        engine = make_engine(url)
        attach(scorer, engine, shared=True)

        inputs, distinct = sample_inputs()
        first = counted(scorer, inputs, args.batch)
        scorer.image_cache = ImageFeatureCache(4096)  # a restarted worker
        restarted = counted(scorer, inputs, args.batch)
        rows = []
        for name, c in (("first worker", first), ("restarted worker (empty memory)", restarted)):
            memory_rate = c["memory_hit"] / max(1, c["memory_hit"] + c["memory_miss"])
            pg_looked = c["postgres_hit"] + c["postgres_miss"] + c["postgres_rejected"]
            rows.append([name, len(inputs), c["pictures"], distinct, f"{c['memory_hit']} / {c['memory_miss']}",
                         f"{100 * memory_rate:.1f} %", f"{c['postgres_hit']} / {c['postgres_miss']}",
                         f"{100 * c['postgres_hit'] / pg_looked:.0f} %" if pg_looked else "–", c["encoded"],
                         f"{100 * (1 - c['encoded'] / max(1, c['pictures'])):.1f} %"])
        entry.section("Bundled sample (`sentistream demo`'s feed and pictures):\n\n" + markdown_table(
            ["run", "posts", "pictures", "distinct", "memory hit / miss", "memory hit rate", "PostgreSQL hit / miss",
             "PostgreSQL hit rate", "pictures encoded", "pictures not encoded"], rows))

        texts, source = tweet_texts()
        posts = cycle(texts, args.batch)
        fresh = list(distinct_pictures(args.batch * (args.repeats + 1)))
        batches = [fresh[i * args.batch:(i + 1) * args.batch] for i in range(args.repeats + 1)]
        scorer.image_cache = ImageFeatureCache(4096)
        scorer.score([ScoreInput(t, images=[p]) for t, p in zip(posts, batches[-1], strict=True)])  # warm-up
        queue = iter(batches[:-1])
        current: list[Any] = []

        def next_new() -> None:
            current[:] = [ScoreInput(t, images=[p]) for t, p in zip(posts, next(queue), strict=True)]

        seen = [ScoreInput(t, images=[p]) for t, p in zip(posts, batches[-1], strict=True)]  # stored by the warm-up
        text_only = [ScoreInput(t) for t in posts]
        encoded_before = scorer.pictures_encoded
        plan = [
            ("text only", lambda: scorer.score(text_only), None),
            ("text + new picture (encoded, written back)", lambda: scorer.score(current), next_new),
            ("text + repeated picture, memory hit", lambda: scorer.score(seen), None),
            ("text + repeated picture, PostgreSQL hit (memory empty)", lambda: scorer.score(seen),
             lambda: setattr(scorer, "image_cache", ImageFeatureCache(4096))),
        ]
        # Interleaved rounds, the order rotated each round: the shared machine's load swings hit every case alike.
        seconds: dict[str, list[float]] = {name: [] for name, _, _ in plan}
        for round_ in range(args.repeats):
            log.info("cost: round %d of %d", round_ + 1, args.repeats)
            for name, work, before_each in plan[round_ % len(plan):] + plan[:round_ % len(plan)]:
                seconds[name] += time_repeats(work, args.batch, 1, before_each).seconds
        cases = [(name, Timings(tuple(seconds[name]), args.batch)) for name, _, _ in plan]
        assert scorer.pictures_encoded - encoded_before == args.batch * args.repeats, "only new pictures encoded"
        text_ms = cases[0][1].ms_per_item_median
        entry.section(f"Cost per post, {args.batch} posts a batch, median of {args.repeats} batches ({source}):\n\n"
                      + markdown_table(["post", "ms/post (median)", "spread", "÷ text only"],
                                       [[name, f"{t.ms_per_item_median:.2f}", f"{100 * t.spread:.0f} %",
                                         f"{t.ms_per_item_median / text_ms:.2f}x"] for name, t in cases]))
        engine.dispose()
    sys.stdout.write(entry.write(args.results_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
