"""The Scorer's side of the shared picture-feature level (model.image_cache.SharedPictureFeatures).

Whatever a shared level hands back is checked before the model sees it: anything but ``visual_dim``
finite floats is dropped and the picture encoded.  The level here is a plain dict (the worker's is
PostgreSQL, tested in tests/stream/test_picture_cache.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.image_cache import ImageFeatureCache, usable_vector
from model.scorer import ScoreInput, Scorer
from tests.fixtures.mini_data import picture_jpeg
from tests.fixtures.scorers import shipped_scorer_with_pictures


class DictLevel:
    """A SharedPictureFeatures kept in a dict, that can be made to hand back anything."""

    def __init__(self) -> None:
        self.vectors: dict[tuple[str, str], Any] = {}
        self.lookups: list[list[str]] = []

    def get_many(self, encoder: str, dim: int, keys: Sequence[str]) -> Mapping[str, Any]:
        self.lookups.append(list(keys))
        return {k: self.vectors[(encoder, k)] for k in keys if (encoder, k) in self.vectors}

    def put_many(self, encoder: str, vectors: Mapping[str, torch.Tensor]) -> None:
        for key, vector in vectors.items():
            self.vectors.setdefault((encoder, key), vector)


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return shipped_scorer_with_pictures()


def test_one_lookup_per_batch_for_the_memory_misses_and_the_vectors_written_back(scorer: Scorer) -> None:
    level = DictLevel()
    scorer.image_cache, scorer.shared_features = ImageFeatureCache(4096), level
    a, b = picture_jpeg("positive", 51), picture_jpeg("negative", 52)
    try:
        scorer.score([ScoreInput("a", [a]), ScoreInput("b", [b]), ScoreInput("a again", [a])])
        assert len(level.lookups) == 1 and len(level.lookups[0]) == 2, "one lookup, each picture once"
        assert {k for _, k in level.vectors} == set(level.lookups[0])
        scorer.score([ScoreInput("a", [a])])
        assert len(level.lookups) == 1, "a memory hit asks nobody"
    finally:
        scorer.shared_features = None


HOSTILE = st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=16),
    st.integers(0, 3000).filter(lambda n: n != 1280).map(torch.zeros),  # another width
    st.just(torch.zeros(1, 1280)), st.just(torch.zeros(1280, dtype=torch.int32)),
    st.builds(lambda i, v: torch.zeros(1280).index_fill_(0, torch.tensor([i]), v), st.integers(0, 1279),
              st.sampled_from([float("nan"), float("inf"), float("-inf")])),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stored=HOSTILE)
def test_a_hostile_vector_from_the_shared_level_is_never_scored(scorer: Scorer, stored: Any) -> None:
    if scorer.config.visual_dim != 1280:
        pytest.skip("the strategies assume EfficientNet-Lite0's 1280 values")
    picture = picture_jpeg("positive", 53)
    scorer.image_cache, scorer.shared_features = ImageFeatureCache(0), None
    reference = scorer.score([ScoreInput("look", [picture])])[0]
    level = DictLevel()
    scorer.image_cache, scorer.shared_features = ImageFeatureCache(4096), level
    try:
        key = scorer.prepare([ScoreInput("look", [picture])]).picture_keys[0]
        level.vectors[(scorer.picture_feature_space, key)] = stored
        scorer.image_cache = ImageFeatureCache(4096)
        before = scorer.pictures_encoded
        result = scorer.score([ScoreInput("look", [picture])])[0]
        assert scorer.pictures_encoded == before + 1, "encoded again"
        assert result.probabilities == pytest.approx(reference.probabilities, abs=1e-5)
    finally:
        scorer.shared_features = None
        scorer.image_cache = ImageFeatureCache(4096)


@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=12),
       dim=st.integers(0, 12))
def test_usable_vector_accepts_exactly_dim_finite_floats(values: list[float], dim: int) -> None:
    vector = torch.tensor(values, dtype=torch.float32)
    checked = usable_vector(vector, dim)
    ok = len(values) == dim and all(torch.isfinite(torch.tensor(values)).tolist())
    assert (checked is not None) == ok
    if ok:
        assert torch.equal(checked, vector)
    assert usable_vector(vector.to(torch.float64), dim) is None or ok
