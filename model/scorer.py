"""Scorer: raw posts (text, pictures, optional audio) in, one SentimentResult per post out.

This is the one object the stream worker calls.  Scoring is split in two steps so the worker can
overlap them: ``prepare`` (tokenisation, picture decoding and transforms, log-mel: pure CPU work
with no model state, safe to run in a worker thread) and ``score_prepared`` (encoders + network
under ``torch.inference_mode`` and the scorer's ``precision``: autocast to bf16 or fp16, by default bf16
on a CUDA device that has it, fp16 on other CUDA devices, fp32 on a CPU).  ``score`` does both.

Robustness is part of the contract: an empty batch gives ``[]``; one bad post never fails the
batch: an unreadable picture is dropped (the post is scored text-only and the result says so in its
modality weights), overlong text is cut (``normalize_text`` caps characters, the tokenizer caps
tokens), audio is used only by a checkpoint that has an audio branch.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from model import checkpoint
from model.config import MODALITIES, ModelConfig
from model.image_cache import ImageFeatureCache, SharedPictureFeatures, picture_key, usable_vector
from model.labels import LABELS
from model.network import SentimentNet

logger = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 40_000_000
"""Pictures above this many pixels are refused before decoding (decompression bombs)."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""What the torch encoders and the network compute in (``torch.autocast``); see ``resolve_precision``."""
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ScoreInput:
    """One post to score.  ``images``: PIL pictures (or encoded bytes / a path; anything that cannot
    be decoded is skipped); ``audio``: (waveform, sample_rate)."""

    text: str
    images: list[Any] = field(default_factory=list)
    audio: tuple[np.ndarray, int] | None = None


@dataclass
class SentimentResult:
    """The model's verdict on one post.

    label: "negative" | "neutral" | "positive"; probabilities over those; intensity on -3..+3
    (a model trained with SemEval-2016 4C, as the shipped one is, learned it from five-point labels
    x 1.5; older checkpoints gave a label-derived proxy; see the model card); modality_weights: how much
    each of text/visual/audio counted (the fusion gate's share; 0 for a modality the post lacks);
    model_version: the checkpoint.
    """

    label: str
    probabilities: dict[str, float]
    intensity: float
    modality_weights: dict[str, float]
    model_version: str


@dataclass
class PreparedBatch:
    """Tensors for ``score_prepared``, built on the CPU by ``prepare``.

    input_ids/attention_mask (B,T); pixels (N,3,224,224) for the N usable pictures and
    picture_rows (N,) the post each belongs to; audio (B,M,A) + audio_mask (B,A) or None;
    text_present (B,) bool.
    """

    size: int
    input_ids: Tensor
    attention_mask: Tensor
    text_present: Tensor
    pixels: Tensor | None
    picture_rows: list[int]
    audio: Tensor | None = None
    audio_mask: Tensor | None = None
    picture_keys: list[str | None] = field(default_factory=list)  # per used picture (as picture_rows)
    cached_vectors: dict[int, Tensor] = field(default_factory=dict)  # picture index -> vector from the cache
    same_as: dict[int, int] = field(default_factory=dict)  # picture index -> earlier index encoding the same picture


DRAFT_SIDE = 256
"""JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides >= this, the
encoder's resize target (model.encoders.RESIZE_SIZE): a 4000 px photo decodes 16-64x fewer pixels."""

PICTURE_FEATURE_VERSION = 1
"""Part of ``Scorer.picture_feature_space``: bump it when decoding or transforming pictures changes what
the image encoder sees, so the shared picture-feature cache never hands back vectors of the old way."""


def _decode_picture(picture: Any) -> Image.Image:
    """A usable RGB PIL image from a PIL image, encoded bytes or a path; raises on anything else."""
    if isinstance(picture, (bytes, bytearray, memoryview)):
        picture = _checked(Image.open(io.BytesIO(bytes(picture))))
        if picture.format == "JPEG":
            picture.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
    elif isinstance(picture, (str, os.PathLike)):
        with Image.open(Path(picture)) as opened:
            _checked(opened)
            if opened.format == "JPEG":
                opened.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
            opened.load()
            picture = opened.copy()
    if not isinstance(picture, Image.Image):
        raise TypeError(f"not a picture: {type(picture).__name__}")
    _checked(picture)
    picture.load()
    return picture.convert("RGB")


def _checked(picture: Image.Image) -> Image.Image:
    """Refuse a picture by its declared size, before its pixels are decoded."""
    width, height = picture.size
    if width * height > MAX_IMAGE_PIXELS or width < 1 or height < 1:
        raise ValueError(f"picture size {width}x{height} refused")
    return picture


class Scorer:
    """Batch-in, batch-out sentiment scoring with the encoders and a trained SentimentNet."""

    def __init__(self, net: SentimentNet, config: ModelConfig, model_version: str, text_encoder: Any,
                 image_encoder: Any | None, device: torch.device, max_images: int = 1,
                 encoder_batch_size: int = 32, image_cache_entries: int = 4096, precision: str = "auto") -> None:
        self.net = net.to(device).eval()
        self.config = config
        self.model_version = model_version
        self.text_encoder = text_encoder.to(device).eval() if text_encoder is not None else None
        self.image_encoder = image_encoder.to(device).eval() if image_encoder is not None else None
        self.device = device
        self.precision = resolve_precision(precision, device, encoder_runtimes(self.text_encoder, self.image_encoder))
        self.max_images = max_images
        self.encoder_batch_size = encoder_batch_size
        # Hugging Face fast tokenizers raise "Already borrowed" when one instance is used from two
        # threads at once; prepare() is meant to run in worker threads, so tokenisation is serialised.
        self._tokenizer_lock = threading.Lock()
        self.image_cache = ImageFeatureCache(image_cache_entries)  # reposted pictures cost a hash, not a pass
        # A second level shared by processes (the worker's: PostgreSQL, stream/picture_cache.py), and who
        # hears each batch's picture counts (memory_hit, memory_miss, encoded); both set by the caller.
        self.shared_features: SharedPictureFeatures | None = None
        self.on_picture_counts: Callable[[Mapping[str, int]], None] | None = None
        self.pictures_encoded = 0
        trained_on = _cache_name(config.text_encoder)
        if self.text_encoder is not None and getattr(self.text_encoder, "name", trained_on) != trained_on:
            raise ValueError(f"text encoder {self.text_encoder.name!r} is not the checkpoint's {config.text_encoder!r}")
        if self.text_encoder is not None and self.text_encoder.dim != config.text_dim:
            raise ValueError(f"text encoder dim {self.text_encoder.dim} != checkpoint's {config.text_dim}")
        if self.image_encoder is not None and getattr(self.image_encoder, "name", config.visual_encoder) != \
                config.visual_encoder:
            raise ValueError(f"image encoder {self.image_encoder.name!r} is not the checkpoint's "
                             f"{config.visual_encoder!r}")
        if self.image_encoder is not None and self.image_encoder.dim != config.visual_dim:
            raise ValueError(f"image encoder dim {self.image_encoder.dim} != checkpoint's {config.visual_dim}")

    @classmethod
    def from_checkpoint(cls, path: Path | str | None = None, device: str = "auto", max_images: int = 1,
                        text_encoder: Any = None, image_encoder: Any = None, text_int8: bool = False,
                        image_cache_entries: int = 4096, encoder_runtime: str = "auto",
                        precision: str = "auto") -> Scorer:
        """Load a checkpoint (None: the packaged default) and the encoders it was trained on.

        ``max_images``: pictures used per post.  The shipped checkpoint learned from single
        pictures; its multi-frame path is untrained, hence 1.  ``text_int8``: on a CPU, int8 dynamic
        quantisation of the text encoder it builds (``TextEncoder.quantize_dynamic_int8``).
        ``image_cache_entries``: picture features kept in memory by sha256 (0 = no cache).
        ``encoder_runtime``: "torch", "onnx" (ONNX Runtime, fp32, CPU only) or "auto" (ONNX Runtime on a
        CPU, torch on a GPU) for the encoders it builds (``model.onnx_encoders``); an encoder passed in
        runs as it is.  ``text_int8`` on ONNX Runtime is its per-channel dynamic int8, not torch's.
        ``precision``: "auto", "fp32", "bf16" or "fp16" (``resolve_precision``).
        """
        from model.encoders import ImageEncoder, TextEncoder
        from model.onnx_encoders import choose_runtime

        resolved = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                else ("cpu" if device == "auto" else device))
        runtime = choose_runtime(encoder_runtime, resolved)
        encoder_top_factory = None
        text_encoder_is_ours = text_encoder is None and "text" in _modalities_of(path)
        if text_encoder_is_ours:
            text_encoder = TextEncoder(_text_encoder_of(path))  # the one it was trained on
            if text_int8 and resolved.type == "cpu" and runtime == "torch":
                text_encoder.quantize_dynamic_int8()
        if text_encoder is not None:
            from model.encoder_top import EncoderTop

            def encoder_top_factory(config: ModelConfig) -> EncoderTop:
                return EncoderTop.from_encoder(text_encoder, config.finetune_layers)

        net, config, meta = checkpoint.load(path, encoder_top_factory=encoder_top_factory)
        if text_encoder_is_ours and runtime == "onnx":  # text_int8: ONNX Runtime's int8 (per-channel)
            text_encoder.use_onnx(text_encoder.num_layers - config.finetune_layers, int8=text_int8)
        if image_encoder is None and "visual" in config.modalities:
            # Ours alone, so it may be optimised for serving (folded BatchNorms, channels_last: what runs
            # where torch does, e.g. Grad-CAM; ONNX Runtime otherwise); an encoder passed in may be shared
            # with training and is used as it is.
            image_encoder = ImageEncoder(config.visual_encoder).optimize_for_inference()
            if runtime == "onnx":
                image_encoder.use_onnx()
        scorer = cls(net, config, str(meta["model_version"]), text_encoder, image_encoder, resolved, max_images,
                     image_cache_entries=image_cache_entries, precision=precision)
        logger.info("scorer: %s on %s (encoders: %s; precision %s)", meta["model_version"], resolved,
                    ", ".join(f"{k} {v}" for k, v in scorer.encoder_runtimes.items()) or "none", scorer.precision)
        return scorer

    # ------------------------------------------------------------------ step 1: CPU preparation
    def prepare(self, posts: list[ScoreInput]) -> PreparedBatch:
        """Tokenise texts, decode and transform pictures, compute log-mels.  Never raises on one post."""
        texts = []
        for post in posts:
            text = post.text if isinstance(post.text, str) else ("" if post.text is None else str(post.text))
            texts.append(text)
        if posts and self.text_encoder is not None:
            with self._tokenizer_lock:
                encoded = self.text_encoder.tokenize(texts)
            input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
        else:
            input_ids = torch.zeros(len(posts), 1, dtype=torch.long)
            attention_mask = torch.zeros(len(posts), 1, dtype=torch.long)
        text_present = torch.tensor([bool(t.strip()) for t in texts], dtype=torch.bool)

        pixels, rows, keys = [], [], []
        cached_vectors: dict[int, Tensor] = {}
        same_as: dict[int, int] = {}
        if self.image_encoder is not None:
            key_of = _memo_picture_key()
            known = self._known_vectors(posts, key_of)
            first_of: dict[str, int] = {}  # key -> index of the picture encoded for it in this batch
            reuse = self.image_cache.capacity > 0  # cache off: every picture is encoded (benchmarks rely on it)
            for row, post in enumerate(posts):
                used = 0
                for picture in post.images or []:
                    if used >= self.max_images:
                        break
                    try:
                        key = key_of(picture)
                        cached = known.get(key) if key is not None else None
                        if cached is not None:
                            cached_vectors[len(rows)] = cached
                        elif reuse and key is not None and key in first_of:
                            same_as[len(rows)] = first_of[key]  # a repost within the batch: encoded once
                        else:
                            pixels.append(self.image_encoder.transform(_decode_picture(picture), train=False))
                            if key is not None:
                                first_of[key] = len(rows)
                    except Exception as error:  # noqa: BLE001 - any undecodable picture: score without it
                        logger.warning("post %d: picture skipped (%s: %s)", row, type(error).__name__, error)
                        continue
                    rows.append(row)
                    keys.append(key)
                    used += 1

        audio = audio_mask = None
        if "audio" in self.config.modalities and any(post.audio is not None for post in posts):
            audio, audio_mask = self._prepare_audio(posts)
        return PreparedBatch(
            size=len(posts),
            input_ids=input_ids,
            attention_mask=attention_mask,
            text_present=text_present,
            pixels=torch.stack(pixels) if pixels else None,
            picture_rows=rows,
            audio=audio,
            audio_mask=audio_mask,
            picture_keys=keys,
            cached_vectors=cached_vectors,
            same_as=same_as,
        )

    @property
    def picture_feature_space(self) -> str:
        """What a picture's vector depends on besides its bytes: the image encoder and the preprocessing
        (sizes, draft decoding, ``PICTURE_FEATURE_VERSION``).  The shared cache keys vectors by it."""
        from model.encoders import IMAGE_SIZE, RESIZE_SIZE

        name = getattr(self.image_encoder, "name", self.config.visual_encoder)
        space = f"{name}:resize{RESIZE_SIZE}:crop{IMAGE_SIZE}:draft{DRAFT_SIDE}:v{PICTURE_FEATURE_VERSION}"
        # A bf16/fp16 vector is close to the fp32 one, not equal: fp32 workers never read it (nor it theirs).
        return space if self.precision == "fp32" else f"{space}:{self.precision}"

    def _known_vectors(self, posts: list[ScoreInput], key_of: Callable[[Any], str | None]) -> dict[str, Tensor]:
        """Vectors of the batch's pictures that the memory cache holds, then those the shared level holds
        (one lookup for all memory misses; what it returns is checked and kept in memory too)."""
        known: dict[str, Tensor] = {}
        missing: dict[str, None] = {}  # ordered set
        counts = {"memory_hit": 0, "memory_miss": 0}
        for post in posts:
            for picture in (post.images or [])[: self.max_images]:
                try:
                    key = key_of(picture)
                except Exception:  # noqa: BLE001 - reported when the picture is used (prepare)
                    continue
                if key is None:
                    continue
                vector = self.image_cache.get(key)  # per picture, as before: its hit/miss counters count pictures
                if vector is not None:
                    known[key] = vector
                    counts["memory_hit"] += 1
                elif key in missing and self.image_cache.capacity > 0:
                    counts["memory_hit"] += 1  # a repost within the batch: encoded once, for both
                else:
                    missing[key] = None
                    counts["memory_miss"] += 1
        if missing and self.shared_features is not None:
            dim = self.config.visual_dim
            try:
                found = self.shared_features.get_many(self.picture_feature_space, dim, list(missing))
            except Exception as error:  # noqa: BLE001 - the contract says never, but a batch is never lost to it
                logger.warning("shared picture features: lookup failed (%s: %s)", type(error).__name__, error)
                found = {}
            for key, vector in found.items():
                checked = usable_vector(vector, dim) if key in missing else None
                if checked is not None:
                    known[key] = checked
                    self.image_cache.put(key, checked)
        self._report_pictures(counts)
        return known

    def _report_pictures(self, counts: Mapping[str, int]) -> None:
        if self.on_picture_counts is not None and any(counts.values()):
            try:
                self.on_picture_counts(counts)
            except Exception:  # noqa: BLE001 - counting never costs a batch
                logger.exception("picture counts callback failed")

    def _prepare_audio(self, posts: list[ScoreInput]) -> tuple[Tensor, Tensor]:
        from model.audio import log_mel_spectrogram

        mels: list[Tensor | None] = []
        for row, post in enumerate(posts):
            mel = None
            if post.audio is not None:
                try:
                    waveform, rate = post.audio
                    mel = log_mel_spectrogram(waveform, int(rate), self.config.audio_mels,
                                              self.config.audio_sample_rate)
                except Exception as error:  # noqa: BLE001 - bad audio: score without it
                    logger.warning("post %d: audio skipped (%s: %s)", row, type(error).__name__, error)
            mels.append(mel)
        longest = max((m.shape[1] for m in mels if m is not None), default=1)
        audio = torch.zeros(len(posts), self.config.audio_mels, longest)
        mask = torch.zeros(len(posts), longest, dtype=torch.bool)
        for row, mel in enumerate(mels):
            if mel is not None:
                audio[row, :, : mel.shape[1]] = mel
                mask[row, : mel.shape[1]] = True
        return audio, mask

    # ------------------------------------------------------------------ step 2: the model
    def _text_vectors(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Token vectors (B,T,D_t) as training saw them: the last layer, or the layer below the
        fine-tuned top layers (the network runs those itself)."""
        assert self.text_encoder is not None
        if self.config.finetune_layers > 0:
            layer = self.text_encoder.num_layers - self.config.finetune_layers
            return self.text_encoder.hidden_at(input_ids, attention_mask, layer)
        return self.text_encoder(input_ids, attention_mask)

    def _encode_texts(self, prepared: PreparedBatch) -> tuple[Tensor, Tensor]:
        """Run the text encoder in length-sorted chunks (padding is the encoder's main waste)."""
        ids, mask = prepared.input_ids, prepared.attention_mask
        lengths = mask.sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        width = int(lengths.max()) if len(lengths) else 1
        vectors = torch.zeros(len(ids), max(width, 1), self.config.text_dim, device=self.device)
        for start in range(0, len(order), self.encoder_batch_size):
            rows = order[start : start + self.encoder_batch_size]
            chunk_width = max(1, int(lengths[rows].max()))
            chunk_ids = ids[rows, :chunk_width].to(self.device)
            chunk_mask = mask[rows, :chunk_width].to(self.device)
            vectors[rows.to(self.device), :chunk_width] = self._text_vectors(chunk_ids, chunk_mask).float()
        text_mask = mask[:, : vectors.shape[1]].bool().to(self.device)
        return vectors, text_mask

    def score_prepared(self, prepared: PreparedBatch) -> list[SentimentResult]:
        """Encoders + network on a prepared batch, in the order the posts came."""
        if prepared.size == 0:
            return []
        size = prepared.size
        with torch.inference_mode(), self.autocast():
            present = torch.zeros(size, len(MODALITIES), dtype=torch.bool, device=self.device)
            batch: dict[str, Tensor] = {}
            if self.text_encoder is not None:
                text, text_mask = self._encode_texts(prepared)
                text_mask = text_mask & prepared.text_present.to(self.device).unsqueeze(1)
                batch.update(text=text, text_mask=text_mask)
                present[:, 0] = text_mask.any(dim=1)
            if self.image_encoder is not None and prepared.picture_rows:
                visual = torch.zeros(size, self.max_images, self.config.visual_dim, device=self.device)
                visual_mask = torch.zeros(size, self.max_images, dtype=torch.bool, device=self.device)
                vectors = self._picture_vectors(prepared)
                slot = [0] * size
                for vector, row in zip(vectors, prepared.picture_rows, strict=True):
                    visual[row, slot[row]] = vector
                    visual_mask[row, slot[row]] = True
                    slot[row] += 1
                batch.update(visual=visual, visual_mask=visual_mask)
                present[:, 1] = visual_mask.any(dim=1)
            if prepared.audio is not None and prepared.audio_mask is not None:
                batch.update(audio=prepared.audio.to(self.device), audio_mask=prepared.audio_mask.to(self.device))
                present[:, 2] = batch["audio_mask"].any(dim=1)
            batch["present"] = present
            output = self.net(batch)
            probabilities = output.probabilities.float().cpu().numpy()
            intensity = output.intensity.float().cpu().numpy()
            weights = output.modality_weights.float().cpu().numpy()
        results = []
        for row in range(size):
            probs = probabilities[row]
            results.append(SentimentResult(
                label=LABELS[int(np.argmax(probs))],
                probabilities={name: float(p) for name, p in zip(LABELS, probs, strict=True)},
                intensity=float(intensity[row]),
                modality_weights={name: float(w) for name, w in zip(MODALITIES, weights[row], strict=True)},
                model_version=self.model_version,
            ))
        return results

    def _picture_vectors(self, prepared: PreparedBatch) -> list[Tensor]:
        """One vector per used picture, in order: from the cache, or encoded now (and cached)."""
        assert self.image_encoder is not None
        encoded: list[Tensor] = []
        if prepared.pixels is not None:
            # In chunks, like the text encoder: activations for 256 pictures at once took 5.6 GB.
            encoded = list(torch.cat([self.image_encoder(chunk.to(self.device)).float()
                                      for chunk in prepared.pixels.split(self.encoder_batch_size)]))
        fresh = iter(encoded)
        vectors: list[Tensor] = []
        new: dict[str, Tensor] = {}
        for index, key in enumerate(prepared.picture_keys or [None] * len(prepared.picture_rows)):
            cached = prepared.cached_vectors.get(index)
            if cached is not None:
                vectors.append(cached.to(self.device))
                continue
            if index in prepared.same_as:
                vectors.append(vectors[prepared.same_as[index]])
                continue
            vector = next(fresh)
            if key is not None:
                new[key] = vector.detach().to("cpu", copy=True)
                self.image_cache.put(key, new[key])
            vectors.append(vector)
        self.pictures_encoded += len(encoded)
        self._report_pictures({"encoded": len(encoded)})
        if new and self.shared_features is not None:
            try:
                self.shared_features.put_many(self.picture_feature_space, new)
            except Exception as error:  # noqa: BLE001 - the contract says never, but a batch is never lost to it
                logger.warning("shared picture features: write failed (%s: %s)", type(error).__name__, error)
        return vectors

    def autocast(self) -> torch.autocast:
        """The autocast context of ``precision`` on this device (disabled for fp32).  Outputs handed to
        callers are fp32 either way: probabilities are a softmax of fp32 logits."""
        dtype = AUTOCAST_DTYPES.get(self.precision, torch.float32)
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.precision != "fp32")

    @property
    def encoder_runtimes(self) -> dict[str, str]:
        """What runs each encoder: {"text": "onnx" | "onnx int8" | "torch" | "torch int8", "visual": ...}."""
        return encoder_runtimes(self.text_encoder, self.image_encoder)

    def score(self, posts: list[ScoreInput]) -> list[SentimentResult]:
        """``prepare`` then ``score_prepared``."""
        return self.score_prepared(self.prepare(list(posts)))

    def attended_words(self, texts: list[str], top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Per text, the ``top_k`` words the text branch's attention pooling weighed most, heaviest first.

        An alert's example posts show what the model read them by (issue #11).  The weights are the
        network's own ``token_attention`` on the text alone, as ``sentistream model explain`` draws them:
        word pieces merged into words by the same ``model.explain.merge_word_pieces``; special tokens
        and bare punctuation dropped (they carry no meaning an analyst can check); a word seen twice
        sums its weights.  One text-only forward pass: meant for a handful of posts, not for serving.
        """
        from model.explain import merge_word_pieces

        texts = [t if isinstance(t, str) else "" for t in texts]
        if not texts or self.text_encoder is None or "text" not in self.config.modalities:
            return [[] for _ in texts]
        prepared = self.prepare([ScoreInput(t) for t in texts])
        with torch.inference_mode(), self.autocast():
            text, text_mask = self._encode_texts(prepared)
            text_mask = text_mask & prepared.text_present.to(self.device).unsqueeze(1)
            present = torch.zeros(len(texts), len(MODALITIES), dtype=torch.bool, device=self.device)
            present[:, 0] = text_mask.any(dim=1)
            attention = self.net({"text": text, "text_mask": text_mask, "present": present}
                                 ).token_attention.float().cpu()
        special = set(self.text_encoder.tokenizer.all_special_tokens)
        out: list[list[tuple[str, float]]] = []
        for row in range(len(texts)):
            length = int(text_mask[row].sum())
            ids = prepared.input_ids[row, :length].tolist()
            pieces = self.text_encoder.tokenizer.convert_ids_to_tokens(ids)
            words, weights = merge_word_pieces(pieces, attention[row, :length].numpy())
            summed: dict[str, float] = {}
            for word, weight in zip(words, weights, strict=True):
                if word not in special and any(ch.isalnum() for ch in word):
                    summed[word] = summed.get(word, 0.0) + float(weight)
            out.append(sorted(summed.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k])
        return out


def encoder_runtimes(text_encoder: Any, image_encoder: Any) -> dict[str, str]:
    """What runs each encoder when scoring: {"text": "onnx" | "torch" | "torch int8", "visual": ...}."""
    out = {}
    if text_encoder is not None:
        out["text"] = ("onnx int8" if getattr(text_encoder, "onnx_int8", False) else "onnx") \
            if getattr(text_encoder, "onnx", None) else (
            "torch int8" if getattr(text_encoder, "int8", False) else "torch")
    if image_encoder is not None:
        out["visual"] = "onnx" if getattr(image_encoder, "onnx", None) is not None else "torch"
    return out


def resolve_precision(requested: str, device: torch.device, runtimes: Mapping[str, str]) -> str:
    """"fp32", "bf16" or "fp16": what ``requested`` means for a scorer on ``device`` whose encoders run on
    ``runtimes`` (``encoder_runtimes``).

    "auto" is bf16 on a CUDA device that supports it (Ampere and later), fp16 on other CUDA devices, fp32 on
    a CPU (bf16 autocast runs there, but only CPUs with AMX or AVX512-BF16 gain from it).  A bf16 or fp16
    request is honoured on any device, except that ONNX Runtime encoders run fp32 only: a scorer with one is
    fp32 throughout, and says so in a warning, rather than refusing to start, because ONNX Runtime is the
    default on a CPU and one ``SENTISTREAM_PRECISION`` may be set for a fleet of GPU and CPU workers.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {requested!r}")
    onnx = sorted(name for name, runtime in runtimes.items() if runtime.startswith("onnx"))
    if requested == "auto":
        if device.type != "cuda" or onnx:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested != "fp32" and onnx:
        logger.warning("precision %s ignored: the %s encoder runs on ONNX Runtime, which runs fp32 only; scoring "
                       "in fp32 (encoder runtime torch for %s)", requested, " and ".join(onnx), requested)
        return "fp32"
    return requested


def _memo_picture_key() -> Callable[[Any], str | None]:
    """``picture_key`` remembered per picture object for one batch (hashing pixels costs milliseconds)."""
    keys: dict[int, str | None] = {}

    def key_of(picture: Any) -> str | None:
        if id(picture) not in keys:
            keys[id(picture)] = picture_key(picture)
        return keys[id(picture)]

    return key_of


def _modalities_of(path: Path | str | None) -> tuple[str, ...]:
    """The modalities a checkpoint was built with, read without building the network."""
    modalities = checkpoint.read_payload(path)["config"].get("modalities")
    if not isinstance(modalities, list | tuple):
        raise checkpoint.CheckpointError(path or checkpoint.DEFAULT_CHECKPOINT,
                                         "its config names no modalities")
    return tuple(modalities)


def _text_encoder_of(path: Path | str | None) -> str:
    """The text encoder a checkpoint names (older checkpoints without one: the packaged MiniLM-L6)."""
    name = checkpoint.read_payload(path)["config"].get("text_encoder", "minilm-l6")
    if not isinstance(name, str) or not name.strip():
        raise checkpoint.CheckpointError(path or checkpoint.DEFAULT_CHECKPOINT,
                                         f"its config names no usable text encoder ({name!r})")
    return name


def _cache_name(text_encoder: str) -> str:
    from model.encoders import TextEncoder

    return TextEncoder.cache_name(text_encoder)
