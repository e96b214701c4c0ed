"""Augmented picture views for training: a few random crops/flips per picture, encoded once and cached.

Why cached views instead of augmenting every step: training runs on cached encoder outputs
(``model.features``), and running EfficientNet on every picture of every epoch would multiply an
epoch's cost on a 2-core CPU many times.  ``ImageEncoder.transform(train=True)`` (random resized crop
0.6-1.0, horizontal flip) is applied ``views`` times per picture with a fixed seed; each training
access then draws one view at random, so the network rarely sees the exact same picture vector twice.
Evaluation never uses views: it reads the plain centre-crop cache.

Layout: ``<cache root>/image-views/<encoder>/<dataset>-<split>/views<V>.npy`` (N, V, D) float16 plus
``meta.json`` (ids, seed, fingerprint).  Missing or unreadable pictures stay zero and are never drawn
(the item keeps ``image`` None, as the plain cache has it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from model.data import Example
from model.progress import progress_bar
from model.split_view import SplitView

logger = logging.getLogger(__name__)


def views_dir(cache_root: Path, encoder: str, dataset: str, split: str) -> Path:
    return Path(cache_root) / "image-views" / encoder / f"{dataset}-{split}"


def _fingerprint(encoder: str, views: int, seed: int, examples: Sequence[Example]) -> str:
    digest = hashlib.sha256(f"{encoder}\0{views}\0{seed}\n".encode())
    for example in examples:
        digest.update(f"{example.id}\t{example.image_path.name if example.image_path else ''}\n".encode())
    return digest.hexdigest()


def build_views(cache_root: Path, encoder: Any, dataset: str, split: str, examples: Sequence[Example],
                views: int, seed: int = 0, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(N, V, D) float16 augmented vectors and (N,) present flags for ``examples``' pictures; built
    once with ``encoder`` (an ``ImageEncoder``), then read back from the cache."""
    from model.features import _open_picture

    if views < 1:
        raise ValueError("views must be >= 1")
    folder = views_dir(cache_root, encoder.name, dataset, split)
    fingerprint = _fingerprint(encoder.name, views, seed, examples)
    meta_path, vectors_path = folder / "meta.json", folder / f"views{views}.npy"
    if meta_path.is_file() and vectors_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == fingerprint:
            return np.load(vectors_path, mmap_mode="r"), np.asarray(meta["present"], dtype=bool)
    folder.mkdir(parents=True, exist_ok=True)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the transforms draw from torch's generator: fixed views per seed
    vectors = np.zeros((len(examples), views, encoder.dim), dtype=np.float16)
    present = np.zeros(len(examples), dtype=bool)
    encoder.eval()
    try:
        with torch.inference_mode():
            for start in progress_bar(range(0, len(examples), batch_size), desc=f"views {dataset}/{split}",
                                      unit="batch", leave=False):
                rows, pixels = [], []
                for index in range(start, min(start + batch_size, len(examples))):
                    picture = _open_picture(examples[index].image_path)
                    if picture is None:
                        continue
                    rows.append(index)
                    pixels.extend(encoder.transform(picture, train=True) for _ in range(views))
                if rows:
                    encoded = encoder(torch.stack(pixels)).to(torch.float16).numpy()
                    vectors[rows] = encoded.reshape(len(rows), views, encoder.dim)
                    present[rows] = True
    finally:
        torch.random.set_rng_state(torch_state)
    temporary = vectors_path.with_suffix(".tmp.npy")
    np.save(temporary, vectors)
    os.replace(temporary, vectors_path)
    meta_path.write_text(json.dumps({"fingerprint": fingerprint, "ids": [e.id for e in examples],
                                     "present": present.tolist(), "views": views, "seed": seed}))
    logger.info("%s/%s: %d augmented views of %d pictures -> %s", dataset, split, views, int(present.sum()),
                folder)
    return vectors, present


class AugmentedPictures(SplitView):
    """A cached split whose items carry a randomly drawn augmented view instead of the centre crop.

    ``views_by_id``: id -> (V, D) vectors; items whose id is absent keep their cached picture.
    The draw uses Python's ``random`` (seeded by ``model.train.set_seed``), so a run repeats.
    """

    def __init__(self, dataset: Dataset, views_by_id: dict[str, np.ndarray]) -> None:
        super().__init__(dataset)
        self.views_by_id = views_by_id

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        views = self.views_by_id.get(item["id"])
        if views is not None and item.get("image") is not None:
            view = np.asarray(views[random.randrange(len(views))], dtype=np.float32)
            item["image"] = torch.from_numpy(view).unsqueeze(0)
        return item
