"""A tiny REAL training set for the network tests: shipped tweets and pictures through the real encoders.

Random tensors check shapes; whether a fusion can learn needs real signal.  Twelve tweets of each
class from the miniature MVSA-Single train split (tests/fixtures/mini_data.py, so no data folder is
needed; first in file order) are encoded once per test session with the packaged MiniLM-L6 and
EfficientNet-Lite0; every other tweet keeps its picture, the rest are text-only, so each batch mixes
posts with and without an image, as the live feed does.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from model import data
from tests.fixtures.mini_data import mini_data_dir

PER_CLASS = 12


@lru_cache(maxsize=1)
def encoders() -> tuple[Any, Any]:
    from model.encoders import ImageEncoder, TextEncoder

    return TextEncoder(None), ImageEncoder()


@lru_cache(maxsize=1)
def tiny_real_items() -> tuple[dict[str, Any], ...]:
    """Items shaped like ``CachedFeatureDataset``'s: text (T,384), image (1,1280) or None, label, id."""
    torch.set_num_threads(2)
    examples = data.load_mvsa("train", root=mini_data_dir())
    chosen: list[data.Example] = []
    for label in range(3):
        chosen.extend([e for e in examples if e.label == label][:PER_CLASS])
    text_encoder, image_encoder = encoders()
    items = []
    with torch.inference_mode():
        tokens = text_encoder.tokenize([e.text for e in chosen])
        vectors = text_encoder(tokens["input_ids"], tokens["attention_mask"])
        from PIL import Image

        pixels = []
        for example in chosen:
            with Image.open(example.image_path) as picture:
                pixels.append(image_encoder.transform(picture))
        pictures = image_encoder(torch.stack(pixels))
    for index, example in enumerate(chosen):
        length = int(tokens["attention_mask"][index].sum())
        items.append({
            "text": vectors[index, :length].clone(),
            "image": pictures[index : index + 1].clone() if index % 2 == 0 else None,
            "label": example.label,
            "id": example.id,
        })
    return tuple(items)


def tiny_real_batch() -> dict[str, Any]:
    from model.features import collate_features

    return collate_features(list(tiny_real_items()))
