"""The serving-only picture path: folded BatchNorms + channels_last, JPEG draft decoding and the
image-feature cache give the features (and scores) the plain path gives, within float tolerance."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from model.data import load_mvsa
from model.encoders import ImageEncoder
from model.image_cache import ImageFeatureCache, picture_key
from model.scorer import ScoreInput, Scorer, _decode_picture
from tests.fixtures.mini_data import draw_picture, mini_data_dir

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def plain() -> ImageEncoder:
    return ImageEncoder().eval()


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    out = []
    for example in load_mvsa("dev", root=mini_data_dir())[:6]:
        with Image.open(example.image_path) as image:
            out.append(image.convert("RGB"))
    return out


def test_folded_channels_last_encoder_gives_the_plain_features(plain: ImageEncoder,
                                                                pictures: list[Image.Image]) -> None:
    optimized = copy.deepcopy(plain).optimize_for_inference()
    assert optimized.inference_optimized
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in optimized.modules())  # really folded
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())  # the original untouched
    pixels = torch.stack([plain.transform(p) for p in pictures])
    with torch.inference_mode():
        expected, got = plain(pixels), optimized(pixels)
        # one picture alone and an odd batch size take other kernels: same features
        alone = optimized(pixels[:1])
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 1e-4 * scale
    assert (alone - expected[:1]).abs().max() <= 1e-4 * scale
    assert F.cosine_similarity(got, expected).min() > 0.99999


def _jpeg(image: Image.Image, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    image.resize(size, Image.BICUBIC).save(out, "JPEG", quality=92)
    return out.getvalue()


def test_draft_decoding_keeps_features_of_a_large_jpeg(plain: ImageEncoder, pictures: list[Image.Image]) -> None:
    for picture in pictures[:3]:
        body = _jpeg(picture, (1600, 1200))
        drafted = _decode_picture(body)
        assert min(drafted.size) >= 256 and drafted.size[0] < 1600  # decoded at a reduced scale, not below 256
        with Image.open(io.BytesIO(body)) as full_image:
            full = full_image.convert("RGB")
        with torch.inference_mode():
            a = plain(plain.transform(drafted).unsqueeze(0))
            b = plain(plain.transform(full).unsqueeze(0))
        assert F.cosine_similarity(a, b).item() > 0.98


def test_cache_keys_are_the_bytes_hash_and_a_bounded_lru() -> None:
    picture = draw_picture("positive", 1)
    body = io.BytesIO()
    picture.save(body, "PNG")
    data = body.getvalue()
    import hashlib

    assert picture_key(data) == hashlib.sha256(data).hexdigest()
    tagged = picture.copy()
    tagged.info["sha256"] = hashlib.sha256(data).hexdigest()
    assert picture_key(tagged) == picture_key(data)  # the fetcher's hash wins over the pixels
    assert picture_key(picture) == picture_key(picture.copy()) != picture_key(draw_picture("negative", 2))
    cache = ImageFeatureCache(2)
    for key in "abc":
        cache.put(key, torch.tensor([1.0]))
    assert cache.get("a") is None and cache.get("c") is not None and len(cache) == 2
    assert ImageFeatureCache(0).get("c") is None


def test_scorer_reuses_cached_picture_features_with_identical_scores() -> None:
    scorer = Scorer.from_checkpoint(device="cpu")
    if scorer.image_encoder is None:
        pytest.skip("the shipped checkpoint has no visual branch")
    assert scorer.image_encoder.inference_optimized
    calls = []
    forward = scorer.image_encoder.forward

    def counting(pixels: torch.Tensor) -> torch.Tensor:
        calls.append(len(pixels))
        return forward(pixels)

    scorer.image_encoder.forward = counting  # type: ignore[method-assign]
    first, second = (_jpeg(draw_picture(label, seed), (320, 240)) for label, seed in (("positive", 3),
                                                                                       ("negative", 4)))
    posts = [ScoreInput("what a day", images=[first]), ScoreInput("no picture")]
    cold = scorer.score(posts)
    assert calls == [1]
    warm = scorer.score(posts + [ScoreInput("same picture again", images=[first])])
    assert calls == [1], "a cached picture was encoded again"
    for hit, miss in zip(warm[:2], cold, strict=True):  # a third post pads the text batch: float noise only
        assert hit.probabilities == pytest.approx(miss.probabilities, abs=1e-5)
    assert scorer.image_cache.hits == 2 and warm[2].modality_weights["visual"] > 0
    scorer.score([ScoreInput("another picture", images=[second]), ScoreInput("and again", images=[first])])
    assert calls == [1, 1]  # only the new picture went through the encoder
