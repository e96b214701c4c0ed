"""Ablation table end to end on a tiny feature cache of the miniature MVSA split (built here, in a temporary folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model import ablate, data
from model.encoders import ImageEncoder, TextEncoder
from model.features import CachedFeatureDataset, FeatureCache
from tests.fixtures.mini_data import mini_data_dir


def test_stratified_selection_split_keeps_class_shares() -> None:
    labels = np.array([0] * 100 + [1] * 20 + [2] * 80)
    train, select = ablate.stratified_selection_split(labels, 0.1, seed=0)
    assert len(set(train) & set(select)) == 0 and len(train) + len(select) == 200
    assert np.bincount(labels[select]).tolist() == [10, 2, 8]


@pytest.fixture(scope="module")
def tiny_mvsa(tmp_path_factory) -> tuple[CachedFeatureDataset, CachedFeatureDataset]:
    torch.set_num_threads(2)
    cache = FeatureCache(tmp_path_factory.mktemp("features"))
    text_encoder, image_encoder = TextEncoder(None), ImageEncoder()
    for split, size in (("train", 60), ("dev", 30)):
        examples = data.load_mvsa(split, root=mini_data_dir())[:size]
        cache.build_text(text_encoder, "mvsa", split, examples)
        cache.build_images(image_encoder, "mvsa", split, examples)
    return (
        CachedFeatureDataset(cache, "mvsa", "train", images=True),
        CachedFeatureDataset(cache, "mvsa", "dev", images=True),
    )


def test_ablation_table_has_every_requested_row(tiny_mvsa, tmp_path: Path) -> None:
    settings = ablate.AblationSettings(epochs=1, patience=1, batch_size=16, n_resamples=50)
    table = ablate.run_ablations(
        ["text-only", "audio-only", "text+image+audio", "mean-pooling"], settings, datasets=tiny_mvsa
    )
    lines = table.splitlines()
    rows = [line for line in lines if line.startswith("| (")]
    # The reference row is always trained, even when not asked for.
    assert len(rows) == 5
    reference = next(line for line in rows if "reference" in line.split("|")[2])
    assert "[" in reference.split("|")[3]  # accuracy with an interval
    text_only = next(line for line in rows if "text only" in line)
    cells = [cell.strip() for cell in text_only.split("|")]
    assert cells[6].startswith(("+", "-"))  # Δ accuracy vs reference
    p_value = cells[7].replace("≤", "").strip()
    assert 0.0 < float(p_value) <= 1.0
    for audio_row in (line for line in rows if "audio" in line):
        assert "no labelled audio data" in audio_row
        assert "[" not in audio_row  # no invented number
    assert "## Reading" in table and "Fusion (text+image)" in table
