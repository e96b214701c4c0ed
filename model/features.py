"""Frozen encoder outputs computed once and kept on disk, so training the small CNN/LSTM/fusion
network on a 2-core CPU takes minutes instead of re-running MiniLM and EfficientNet every epoch.

Layout under the cache root (env ``SENTISTREAM_CACHE_DIR``, default
``~/.cache/sentistream/features``; never inside the repository)::

    text/<encoder>/<dataset>-<split>/meta.json        ids, labels, fingerprint, timings
    text/<encoder>/<dataset>-<split>/offsets.npy      (N+1,) int64: example i = rows offsets[i]:offsets[i+1]
    text/<encoder>/<dataset>-<split>/layer<L>.npy     (sum of lengths, D_t) float16, one row per real token
    image/<encoder>/<dataset>-<split>/meta.json       ids, fingerprint, timings
    image/<encoder>/<dataset>-<split>/vectors.npy     (N, D_v) float16 pooled vectors
    image/<encoder>/<dataset>-<split>/present.npy     (N,) bool: False where the picture is missing/corrupt

Token vectors are trimmed to the attention mask (no padding stored) and kept at several layers from
one encoder pass: the last layer for a frozen encoder, a lower one (default 4 of 6) so the top
layers can be fine-tuned from cache with ``TextEncoder.forward_from``.  A fingerprint of the example
ids and texts and of the encoder settings guards against serving features of a different data set;
a second build with the same inputs returns at once.

Run it with ``python -m model.features build --all`` (tqdm progress; resumable per split).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from model.data import SPLITS, Example, load_split
from model.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, ImageEncoder, TextEncoder
from model.progress import progress_bar

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_FINETUNE_LAYER = 4
"""Cached beside the last layer: MiniLM-L6's layer 4 is the input of its top two layers."""
DEFAULT_VISUAL_DIM = 1280
MODALITY_COUNT = 3  # text, visual, audio: the columns of ``present``


def default_cache_root() -> Path:
    """``$SENTISTREAM_CACHE_DIR`` or ``~/.cache/sentistream/features``."""
    configured = os.environ.get("SENTISTREAM_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "sentistream" / "features"


def _slug(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name)


def _fingerprint(parts: Sequence[str], examples: Sequence[Example], with_images: bool) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    for example in examples:
        image = example.image_path.name if (with_images and example.image_path) else ""
        digest.update(f"{example.id}\t{example.text}\t{image}\n".encode())
    return digest.hexdigest()


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(payload))
    os.replace(temporary, path)


def _progress(iterable: Iterator[Any] | Sequence[Any] | None = None, **kwargs: Any) -> Any:
    # A bar on a terminal only (model.progress); a background run logs each split's summary instead.
    return progress_bar(iterable, mininterval=0.5, **kwargs)


@dataclass(frozen=True)
class TextFeatures:
    """Cached token vectors of one split at one layer; ``tokens`` is memory-mapped."""

    ids: list[str]
    labels: list[int]
    offsets: np.ndarray
    tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def example(self, index: int) -> np.ndarray:
        """(T_i, D_t) float16 vectors of example ``index``."""
        return self.tokens[self.offsets[index] : self.offsets[index + 1]]


@dataclass(frozen=True)
class ImageFeatures:
    """Cached pooled picture vectors of one split; ``present[i]`` False = no usable picture."""

    ids: list[str]
    vectors: np.ndarray
    present: np.ndarray


class FeatureCache:
    """Builds and loads frozen encoder outputs keyed by (encoder, layer, dataset, split)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()

    # ------------------------------------------------------------------ paths and metadata
    def text_dir(self, encoder: str, dataset: str, split: str) -> Path:
        return self.root / "text" / _slug(encoder) / f"{_slug(dataset)}-{_slug(split)}"

    def image_dir(self, encoder: str, dataset: str, split: str) -> Path:
        return self.root / "image" / _slug(encoder) / f"{_slug(dataset)}-{_slug(split)}"

    @staticmethod
    def _meta(folder: Path) -> dict[str, Any] | None:
        path = folder / "meta.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def text_layers(self, encoder: str, dataset: str, split: str) -> list[int]:
        """Layers already cached for this split (empty when nothing is)."""
        meta = self._meta(self.text_dir(encoder, dataset, split))
        return sorted(meta["layers"]) if meta else []

    def resolve_layer(self, encoder: str, dataset: str, split: str, layer: int | None) -> int:
        """``None`` means the encoder's last layer, whose index the build recorded."""
        if layer is not None:
            return layer
        meta = self._meta(self.text_dir(encoder, dataset, split))
        if meta is None:
            raise FileNotFoundError(self._missing_message("text", encoder, dataset, split))
        return int(meta["num_layers"])

    def has_images(self, encoder: str, dataset: str, split: str) -> bool:
        return self._meta(self.image_dir(encoder, dataset, split)) is not None

    @staticmethod
    def _missing_message(kind: str, encoder: str, dataset: str, split: str) -> str:
        return (
            f"no cached {kind} features for {encoder} {dataset}/{split}; build them with "
            f"`python -m model.features build --dataset {dataset} --split {split}`"
        )

    # ------------------------------------------------------------------ loading
    def load_text(
        self, dataset: str, split: str, layer: int | None = None, encoder: str = DEFAULT_TEXT_ENCODER
    ) -> TextFeatures:
        folder = self.text_dir(encoder, dataset, split)
        meta = self._meta(folder)
        layer = self.resolve_layer(encoder, dataset, split, layer)
        if meta is None or layer not in meta["layers"]:
            raise FileNotFoundError(self._missing_message(f"layer-{layer} text", encoder, dataset, split))
        return TextFeatures(
            ids=list(meta["ids"]),
            labels=[int(label) for label in meta["labels"]],
            offsets=np.load(folder / "offsets.npy"),
            tokens=np.load(folder / f"layer{layer}.npy", mmap_mode="r"),
        )

    def load_images(
        self, dataset: str, split: str, encoder: str = DEFAULT_IMAGE_ENCODER
    ) -> ImageFeatures:
        folder = self.image_dir(encoder, dataset, split)
        meta = self._meta(folder)
        if meta is None:
            raise FileNotFoundError(self._missing_message("image", encoder, dataset, split))
        return ImageFeatures(
            ids=list(meta["ids"]),
            vectors=np.load(folder / "vectors.npy", mmap_mode="r"),
            present=np.load(folder / "present.npy"),
        )

    # ------------------------------------------------------------------ building
    def build_text(
        self,
        encoder: TextEncoder,
        dataset: str,
        split: str,
        examples: Sequence[Example],
        layers: Sequence[int | None] = (None,),
        batch_size: int = 64,
    ) -> dict[str, Any]:
        """Cache ``encoder``'s token vectors at ``layers`` (None = last) for ``examples``.

        All layers come from one encoder pass.  Examples are run in order of token length so a
        batch pads almost nothing (~1.6x faster than arrival order on this CPU); rows are stored in
        the examples' own order.  Layers already cached with the same fingerprint are skipped.
        Returns the split's metadata (with ``texts_per_second`` of this build).
        """
        wanted = sorted({encoder.num_layers if layer is None else int(layer) for layer in layers})
        for layer in wanted:
            if not 0 <= layer <= encoder.num_layers:
                raise ValueError(f"layer {layer} outside 0..{encoder.num_layers} for {encoder.name}")
        folder = self.text_dir(encoder.name, dataset, split)
        fingerprint = _fingerprint(
            [f"v{FORMAT_VERSION}", encoder.name, str(encoder.max_length)], examples, with_images=False
        )
        meta = self._meta(folder)
        if meta is not None and meta.get("fingerprint") != fingerprint:
            logger.warning("%s: examples or encoder changed since the last build; rebuilding", folder)
            shutil.rmtree(folder)
            meta = None
        missing = [layer for layer in wanted if meta is None or layer not in meta["layers"]]
        if not missing:
            logger.info("%s/%s text layers %s already cached in %s", dataset, split, wanted, folder)
            assert meta is not None
            return meta
        folder.mkdir(parents=True, exist_ok=True)

        texts = [encoder.prepare_text(example.text) for example in examples]
        token_ids: list[list[int]] = encoder.tokenizer(
            texts, truncation=True, max_length=encoder.max_length
        )["input_ids"]
        lengths = np.array([len(ids) for ids in token_ids], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        outputs = {
            layer: open_memmap(
                folder / f"layer{layer}.npy.tmp",
                mode="w+",
                dtype=np.float16,
                shape=(int(offsets[-1]), encoder.dim),
            )
            for layer in missing
        }
        order = np.argsort(lengths, kind="stable")
        pad_id = encoder.tokenizer.pad_token_id or 0
        started = time.perf_counter()
        encoder.eval()
        with (
            torch.inference_mode(),
            _progress(total=len(examples), desc=f"text {dataset}/{split}", unit="text") as bar,
        ):
            for start in range(0, len(order), batch_size):
                batch_indices = order[start : start + batch_size]
                longest = int(lengths[batch_indices].max())
                input_ids = torch.full((len(batch_indices), longest), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch_indices), longest), dtype=torch.long)
                for row, index in enumerate(batch_indices):
                    input_ids[row, : lengths[index]] = torch.tensor(token_ids[index])
                    attention_mask[row, : lengths[index]] = 1
                hidden = encoder.hidden_states(input_ids, attention_mask)
                for layer, output in outputs.items():
                    states = hidden[layer].to(torch.float16).numpy()
                    for row, index in enumerate(batch_indices):
                        output[offsets[index] : offsets[index + 1]] = states[row, : lengths[index]]
                bar.update(len(batch_indices))
        seconds = time.perf_counter() - started
        for output in outputs.values():
            output.flush()
        outputs.clear()  # drop the memory maps before the files are renamed into place
        for layer in missing:
            os.replace(folder / f"layer{layer}.npy.tmp", folder / f"layer{layer}.npy")
        np.save(folder / "offsets.npy", offsets)
        meta = {
            "format": FORMAT_VERSION,
            "kind": "text",
            "encoder": encoder.name,
            "dim": encoder.dim,
            "num_layers": encoder.num_layers,
            "max_length": encoder.max_length,
            "dataset": dataset,
            "split": split,
            "fingerprint": fingerprint,
            "layers": sorted(set(missing) | set(meta["layers"] if meta else [])),
            "count": len(examples),
            "tokens": int(offsets[-1]),
            "ids": [example.id for example in examples],
            "labels": [example.label for example in examples],
            "seconds": round(seconds, 1),
            "texts_per_second": round(len(examples) / max(seconds, 1e-9), 1),
            "threads": torch.get_num_threads(),
            "batch_size": batch_size,
        }
        _write_json_atomic(folder / "meta.json", meta)
        logger.info(
            "%s/%s: %d texts, %d tokens, layers %s in %.0f s (%.1f texts/s) -> %s",
            dataset, split, len(examples), offsets[-1], missing, seconds, meta["texts_per_second"], folder,
        )
        return meta

    def build_images(
        self,
        encoder: ImageEncoder,
        dataset: str,
        split: str,
        examples: Sequence[Example],
        batch_size: int = 32,
    ) -> dict[str, Any]:
        """Cache one pooled vector per example's picture (eval transform, no augmentation).

        A missing or unreadable picture is stored as a zero vector with ``present`` False and
        logged: the post then trains as text-only, which is how the live feed treats it too.
        """
        folder = self.image_dir(encoder.name, dataset, split)
        fingerprint = _fingerprint([f"v{FORMAT_VERSION}", encoder.name], examples, with_images=True)
        meta = self._meta(folder)
        if meta is not None and meta.get("fingerprint") == fingerprint:
            logger.info("%s/%s images already cached in %s", dataset, split, folder)
            return meta
        if meta is not None:
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        vectors = np.zeros((len(examples), encoder.dim), dtype=np.float16)
        present = np.zeros(len(examples), dtype=bool)
        started = time.perf_counter()
        encoder.eval()
        with (
            torch.inference_mode(),
            _progress(total=len(examples), desc=f"image {dataset}/{split}", unit="img") as bar,
        ):
            for start in range(0, len(examples), batch_size):
                pixels, rows = [], []
                for index in range(start, min(start + batch_size, len(examples))):
                    picture = _open_picture(examples[index].image_path)
                    if picture is not None:
                        pixels.append(encoder.transform(picture))
                        rows.append(index)
                if rows:
                    vectors[rows] = encoder(torch.stack(pixels)).to(torch.float16).numpy()
                    present[rows] = True
                bar.update(min(batch_size, len(examples) - start))
        seconds = time.perf_counter() - started
        np.save(folder / "vectors.npy", vectors)
        np.save(folder / "present.npy", present)
        meta = {
            "format": FORMAT_VERSION,
            "kind": "image",
            "encoder": encoder.name,
            "dim": encoder.dim,
            "dataset": dataset,
            "split": split,
            "fingerprint": fingerprint,
            "count": len(examples),
            "present": int(present.sum()),
            "ids": [example.id for example in examples],
            "seconds": round(seconds, 1),
            "images_per_second": round(len(examples) / max(seconds, 1e-9), 1),
            "threads": torch.get_num_threads(),
        }
        _write_json_atomic(folder / "meta.json", meta)
        logger.info(
            "%s/%s: %d/%d pictures in %.0f s (%.1f img/s) -> %s",
            dataset, split, present.sum(), len(examples), seconds, meta["images_per_second"], folder,
        )
        return meta


def _open_picture(path: Path | None) -> Image.Image | None:
    if path is None:
        return None
    try:
        with Image.open(path) as picture:
            picture.load()
            return picture.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        logger.warning("unusable picture %s: %s", path, error)
        return None


class CachedFeatureDataset(Dataset):
    """One cached split as training items:
    ``{"text": (T, D_t) float, "image": (1, D_v) float | None, "label": int, "id": str}``.

    ``text_layer=None`` serves the last layer; ``DEFAULT_FINETUNE_LAYER`` (4) serves the input of
    MiniLM's top two layers for fine-tuning.  ``images=None`` uses cached pictures where the split
    has them (MVSA) and none otherwise (SemEval, TweetEval); False never loads them.
    """

    def __init__(
        self,
        cache: FeatureCache,
        dataset: str,
        split: str,
        text_layer: int | None = None,
        text_encoder: str = DEFAULT_TEXT_ENCODER,
        image_encoder: str = DEFAULT_IMAGE_ENCODER,
        images: bool | None = None,
    ) -> None:
        self.dataset, self.split = dataset, split
        self.text = cache.load_text(dataset, split, text_layer, text_encoder)
        use_images = cache.has_images(image_encoder, dataset, split) if images is None else images
        self.images = cache.load_images(dataset, split, image_encoder) if use_images else None
        if self.images is not None and self.images.ids != self.text.ids:
            raise ValueError(f"{dataset}/{split}: text and image caches list different examples; rebuild")

    def __len__(self) -> int:
        return len(self.text)

    @property
    def labels(self) -> list[int]:
        return self.text.labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = None
        if self.images is not None and self.images.present[index]:
            image = torch.from_numpy(np.asarray(self.images.vectors[index], dtype=np.float32)).unsqueeze(0)
        return {
            "text": torch.from_numpy(np.asarray(self.text.example(index), dtype=np.float32)),
            "image": image,
            "label": self.text.labels[index],
            "id": self.text.ids[index],
        }


def collate_features(items: Sequence[dict[str, Any]], visual_dim: int = DEFAULT_VISUAL_DIM) -> dict[str, Any]:
    """Items of ``CachedFeatureDataset`` -> the batch dict of ``SentimentNet.forward``.

    text (B,T,D_t) zero-padded + text_mask (B,T); visual (B,1,D_v) zeros + all-False mask where a
    post has no picture; present (B,3) for (text, visual, audio); label (B,) long; id list[str].
    There is no "intensity" key: none of these datasets labels intensity.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    texts: list[Tensor] = [item["text"] for item in items]
    batch_size, longest = len(items), max(text.shape[0] for text in texts)
    text = torch.zeros(batch_size, longest, texts[0].shape[-1])
    text_mask = torch.zeros(batch_size, longest, dtype=torch.bool)
    for row, vectors in enumerate(texts):
        text[row, : vectors.shape[0]] = vectors
        text_mask[row, : vectors.shape[0]] = True
    images = [item.get("image") for item in items]
    dim = next((image.shape[-1] for image in images if image is not None), visual_dim)
    visual = torch.zeros(batch_size, 1, dim)
    visual_mask = torch.zeros(batch_size, 1, dtype=torch.bool)
    for row, image in enumerate(images):
        if image is not None:
            visual[row] = image.reshape(1, dim)
            visual_mask[row] = True
    present = torch.zeros(batch_size, MODALITY_COUNT, dtype=torch.bool)
    present[:, 0] = text_mask.any(dim=1)
    present[:, 1] = visual_mask[:, 0]
    return {
        "text": text,
        "text_mask": text_mask,
        "visual": visual,
        "visual_mask": visual_mask,
        "present": present,
        "label": torch.tensor([int(item["label"]) for item in items], dtype=torch.long),
        "id": [item["id"] for item in items],
    }


# ---------------------------------------------------------------------- command line
def _parse_layers(value: str) -> list[int | None]:
    return [None if part.strip() == "last" else int(part) for part in value.split(",") if part.strip()]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.features", description="Cache frozen MiniLM / EfficientNet features."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="compute and store features (skips what is cached)")
    which = build.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every split: " + ", ".join(f"{d}/{s}" for d, s in SPLITS))
    which.add_argument("--dataset", choices=sorted({d for d, _ in SPLITS}))
    build.add_argument("--split", help="with --dataset")
    build.add_argument("--cache-dir", type=Path, default=None, help="default: $SENTISTREAM_CACHE_DIR or ~/.cache/...")
    build.add_argument("--text-encoder", default=None, help="HF name/path; default: packaged MiniLM-L6")
    build.add_argument("--image-encoder", default=DEFAULT_IMAGE_ENCODER)
    build.add_argument(
        "--layers", type=_parse_layers, default=[None, DEFAULT_FINETUNE_LAYER],
        help="comma-separated encoder layers to cache, 'last' for the last (default: last,4)",
    )
    build.add_argument("--batch-size", type=int, default=64)
    build.add_argument("--no-images", action="store_true")
    build.add_argument("--limit", type=int, default=None, help="first N examples only (smoke runs)")
    build.add_argument("--threads", type=int, default=2, help="torch threads (the machine has 2 cores)")
    show = commands.add_parser("info", help="list what is cached")
    show.add_argument("--cache-dir", type=Path, default=None)
    return parser


def _selected_splits(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.all:
        return list(SPLITS)
    splits = [(d, s) for d, s in SPLITS if d == args.dataset and (args.split is None or s == args.split)]
    if not splits:
        raise SystemExit(f"unknown split {args.dataset}/{args.split}")
    return splits


def build(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Build every selected split (text, then pictures where the split has them)."""
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cache = FeatureCache(args.cache_dir)
    text_encoder = TextEncoder(args.text_encoder)
    image_encoder: ImageEncoder | None = None
    built = []
    for dataset, split in _selected_splits(args):
        examples = load_split(dataset, split)
        if args.limit is not None:
            examples = examples[: args.limit]
        built.append(cache.build_text(text_encoder, dataset, split, examples, args.layers, args.batch_size))
        if not args.no_images and any(example.image_path for example in examples):
            image_encoder = image_encoder or ImageEncoder(args.image_encoder)
            built.append(cache.build_images(image_encoder, dataset, split, examples))
    return built


def describe(cache: FeatureCache) -> list[str]:
    """One line per cached split: kind, encoder, split, count, layers, size, build speed."""
    lines = []
    for meta_path in sorted(cache.root.glob("*/*/*/meta.json")):
        meta = json.loads(meta_path.read_text())
        size = sum(path.stat().st_size for path in meta_path.parent.iterdir()) / 2**20
        speed = meta.get("texts_per_second") or meta.get("images_per_second")
        layers = f" layers {meta['layers']}" if "layers" in meta else ""
        lines.append(
            f"{meta['kind']:5} {meta['encoder']:18} {meta['dataset']}/{meta['split']:6} "
            f"{meta['count']:6d} ex{layers} {size:8.1f} MiB  built at {speed}/s in {meta['seconds']} s"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    if args.command == "build":
        build(args)
    lines = describe(FeatureCache(args.cache_dir))
    sys.stdout.write("\n".join(lines or ["(cache is empty)"]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
