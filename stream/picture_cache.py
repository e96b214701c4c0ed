"""The picture-feature cache's second level: PostgreSQL's ``picture_features`` (migration 0006).

Why: the image encoder is the dearest step of scoring a post, and a reposted picture (same bytes, same
sha256) is common.  The Scorer's in-memory LRU (``model/image_cache.py``) helps one process while it
lives; this level lets every worker, and a restarted one, reuse what any worker encoded.

Per batch (``model.image_cache.SharedPictureFeatures``, called by the Scorer in the worker's threads):

* ``get_many``: one ``SELECT`` for every picture the memory cache lacks, keyed by (sha256, encoder); a
  row is used only if it decodes to ``dim`` finite values of a known dtype, anything else is counted as
  ``rejected``, ignored (the picture is encoded again) and overwritten by the fresh vector.  Rows used are
  touched (``last_used_at``) at most once an hour, skipping rows another worker holds, so retention
  (``stream/retention.py``) drops only what nobody reposted for its days.
* ``put_many``: one ``INSERT … ON CONFLICT DO NOTHING`` of the batch's new vectors (float32,
  little-endian), sorted by key so two workers inserting the same pictures never deadlock.  It runs
  while the batch is scored, before the batch's rows are written.

Neither ever raises: a failed read or write is logged once (and again once it works after failing),
counted in ``sentistream_picture_cache_errors_total``, and scoring goes on with the encoder.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Engine
from torch import Tensor

from stream import metrics
from stream.db import PictureFeatureRow

log = logging.getLogger(__name__)

DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
"""How ``picture_features.feature`` may be stored; written as float32 (exact reuse of the encoder's output)."""

TOUCH_AFTER_S = 3600.0
"""A hit refreshes ``last_used_at`` only when it is older than this: retention counts days, and a write per
hit would turn every lookup into an update."""

_SELECT = text("SELECT sha256, dtype, dim, feature FROM picture_features "
               "WHERE encoder = :encoder AND sha256 = ANY(:keys)")

# Rows another transaction holds are skipped, not waited for: a touch is only a hint for retention.
_TOUCH = text("""
UPDATE picture_features f SET last_used_at = now()
FROM (SELECT sha256 FROM picture_features
      WHERE encoder = :encoder AND sha256 = ANY(:keys) AND last_used_at < now() - make_interval(secs => :after_s)
      ORDER BY sha256 FOR UPDATE SKIP LOCKED) t
WHERE f.encoder = :encoder AND f.sha256 = t.sha256
""")


def encode_feature(vector: Tensor) -> bytes:
    """A vector as stored: float32 little-endian."""
    return vector.detach().to("cpu", torch.float32).numpy().astype(DTYPES["float32"]).tobytes()


def decode_feature(dtype: Any, dim: Any, feature: Any, expected_dim: int) -> Tensor | None:
    """The stored vector as a float32 tensor of ``expected_dim`` finite values, or None when the row is not
    one (unknown dtype, another dim, a byte length that does not match, NaN or infinity)."""
    if dtype not in DTYPES or dim != expected_dim or not isinstance(feature, bytes | bytearray | memoryview):
        return None
    raw = bytes(feature)
    if len(raw) != expected_dim * DTYPES[dtype].itemsize:
        return None
    values = np.frombuffer(raw, dtype=DTYPES[dtype]).astype(np.float32)
    if not np.isfinite(values).all():
        return None
    return torch.from_numpy(values)


class PostgresPictureFeatures:
    """``SharedPictureFeatures`` in PostgreSQL; thread-safe (the engine's pool, a lock for the bookkeeping)."""

    def __init__(self, engine: Engine, touch_after_s: float = TOUCH_AFTER_S) -> None:
        self.engine = engine
        self.touch_after_s = touch_after_s
        self._lock = threading.Lock()
        self._failing: set[str] = set()  # operations whose last attempt failed (logged once)
        self._rejected: set[tuple[str, str]] = set()  # (encoder, sha256) of rows found unusable: overwrite them
        self.hits = self.misses = self.rejected = 0
        self.errors = {"read": 0, "write": 0}

    def get_many(self, encoder: str, dim: int, keys: Sequence[str]) -> dict[str, Tensor]:
        keys = sorted(set(keys))
        if not keys:
            return {}
        try:
            with self.engine.begin() as conn:
                rows = conn.execute(_SELECT, {"encoder": encoder, "keys": keys}).all()
                if rows:
                    conn.execute(_TOUCH, {"encoder": encoder, "keys": [r.sha256 for r in rows],
                                          "after_s": self.touch_after_s})
        except Exception as exc:  # noqa: BLE001 - a cache never fails a batch
            self._failed("read", exc)
            return {}
        self._worked("read")
        found: dict[str, Tensor] = {}
        bad: list[str] = []
        for row in rows:
            vector = decode_feature(row.dtype, row.dim, row.feature, dim)
            if vector is None:
                bad.append(row.sha256)
            else:
                found[row.sha256] = vector
        if bad:
            log.warning("picture cache: %d stored vector(s) of %s unusable (not %d finite float values); "
                        "encoding them again", len(bad), encoder, dim)
        with self._lock:
            self._rejected.update((encoder, key) for key in bad)
            self.hits += len(found)
            self.rejected += len(bad)
            self.misses += len(keys) - len(found) - len(bad)
        metrics.count_picture_cache("postgres", hit=len(found), miss=len(keys) - len(found) - len(bad),
                                    rejected=len(bad))
        return found

    def put_many(self, encoder: str, vectors: Mapping[str, Tensor]) -> None:
        if not vectors:
            return
        rows = [{"sha256": key, "encoder": encoder, "dtype": "float32", "dim": int(vectors[key].numel()),
                 "feature": encode_feature(vectors[key])} for key in sorted(vectors)]
        with self._lock:
            repair = [r for r in rows if (encoder, r["sha256"]) in self._rejected]
        table = PictureFeatureRow.__table__
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(table).values(rows).on_conflict_do_nothing(index_elements=["sha256", "encoder"]))
                if repair:
                    stmt = insert(table).values(repair)
                    conn.execute(stmt.on_conflict_do_update(
                        index_elements=["sha256", "encoder"],
                        set_={"dtype": stmt.excluded.dtype, "dim": stmt.excluded.dim,
                              "feature": stmt.excluded.feature, "last_used_at": text("now()")}))
        except Exception as exc:  # noqa: BLE001 - a cache never fails a batch
            self._failed("write", exc)
            return
        self._worked("write")
        with self._lock:
            self._rejected.difference_update((encoder, r["sha256"]) for r in repair)

    def _failed(self, operation: str, exc: BaseException) -> None:
        metrics.PICTURE_CACHE_ERRORS.labels(operation).inc()
        with self._lock:
            self.errors[operation] += 1
            first = operation not in self._failing
            self._failing.add(operation)
        if first:
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            log.warning("picture cache: PostgreSQL %s failed (%s: %s); pictures are encoded instead, further "
                        "failures are only counted (sentistream_picture_cache_errors_total)",
                        operation, type(exc).__name__, first_line[:300])

    def _worked(self, operation: str) -> None:
        if operation in self._failing:
            with self._lock:
                self._failing.discard(operation)
            log.info("picture cache: PostgreSQL %s works again", operation)


def attach(scorer: Any, engine: Engine, *, shared: bool) -> PostgresPictureFeatures | None:
    """Wire a Scorer to the metrics and, with ``shared``, to ``picture_features`` on ``engine``; returns the
    store.  Anything without the Scorer's hooks (a test double) is left alone."""
    if not hasattr(scorer, "shared_features"):
        return None
    scorer.on_picture_counts = metrics.count_pictures
    store = PostgresPictureFeatures(engine) if shared else None
    scorer.shared_features = store
    return store
