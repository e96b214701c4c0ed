"""ImageFeatureCache: encoder vectors of pictures already seen, keyed by the picture's sha256.

A reposted picture (retweets, memes, the same product shot on every post of a campaign) arrives as the
same bytes under many URLs; the image encoder is the dearest step of scoring a post, so its vector is
kept in a bounded in-memory LRU and a repeat costs a hash instead of a forward pass.  The key is the
sha256 of the encoded bytes when known (the media fetcher's ``post_media.sha256``), else of the decoded
pixels, so the cache never needs the URL.  Thread-safe: ``prepare`` and ``score_prepared`` run in worker
threads.

Behind it the Scorer can use a second level shared by processes (``SharedPictureFeatures``; the worker's
is PostgreSQL, ``stream/picture_cache.py``): a batch's misses are looked up there at once, only what
neither level holds is encoded, and the new vectors are written back in one call.  Whatever that level
returns is checked here again (``usable_vector``) before the model sees it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

SHA256_INFO_KEY = "sha256"
"""``PIL.Image.info`` entry the media fetcher sets to the hex sha256 of the bytes it decoded."""

MAX_HASHED_PIXELS = 2_000_000
"""Decoded pictures larger than this are not cached: hashing their pixels would cost more than a
fraction of encoding them (the fetcher's pictures carry their bytes' hash and are small anyway)."""


def picture_key(picture: Any) -> str | None:
    """The cache key of a picture as the Scorer receives it (bytes, a PIL image or a path), or None."""
    if isinstance(picture, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(picture)).hexdigest()
    info = getattr(picture, "info", None)
    if isinstance(info, dict) and isinstance(info.get(SHA256_INFO_KEY), str):
        return info[SHA256_INFO_KEY]
    tobytes = getattr(picture, "tobytes", None)
    size = getattr(picture, "size", (0, 0))
    if callable(tobytes) and size[0] * size[1] <= MAX_HASHED_PIXELS:  # a decoded picture without its bytes' hash: hash what the encoder would see
        digest = hashlib.sha256(f"{picture.mode}:{picture.size}:".encode())
        digest.update(tobytes())
        return "pixels:" + digest.hexdigest()
    return None  # a path: read and decoded each time (its file may change)


class SharedPictureFeatures(Protocol):
    """A second cache level, shared between processes, behind ``ImageFeatureCache``.

    ``encoder`` names the image encoder and its preprocessing (``Scorer.picture_feature_space``): vectors
    of one encoder are never returned for another.  Both calls take a whole batch and must never raise:
    a shared level that fails costs encoder time, never a batch.
    """

    def get_many(self, encoder: str, dim: int, keys: Sequence[str]) -> Mapping[str, Tensor]:
        """The stored vectors of ``keys`` that are usable (``dim`` finite floats); absent keys are misses."""
        ...

    def put_many(self, encoder: str, vectors: Mapping[str, Tensor]) -> None:
        """Store freshly encoded vectors (keys already stored keep their vector)."""
        ...


def usable_vector(vector: Any, dim: int) -> Tensor | None:
    """``vector`` as a CPU float32 tensor of shape (dim,) when it is one of ``dim`` finite values, else None."""
    if not isinstance(vector, Tensor) or vector.shape != (dim,) or not vector.is_floating_point():
        return None
    vector = vector.detach().to("cpu", torch.float32)
    return vector if bool(torch.isfinite(vector).all()) else None


class ImageFeatureCache:
    """Bounded LRU of ``key -> vector`` (CPU float tensors); ``capacity`` 0 disables it."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = max(0, capacity)
        self._entries: OrderedDict[str, Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str | None) -> Tensor | None:
        if key is None or self.capacity == 0:
            return None
        with self._lock:
            vector = self._entries.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, key: str | None, vector: Tensor) -> None:
        if key is None or self.capacity == 0:
            return
        with self._lock:
            self._entries[key] = vector
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float | None:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else None
