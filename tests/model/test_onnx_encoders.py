"""ONNX Runtime encoders (SENTISTREAM_ENCODER_RUNTIME): the exported graphs give torch's token vectors and
pooled picture vectors on real tweets and drawn pictures, the Scorer's verdicts do not move, odd texts
crash neither runtime, and the export cache is reused, rebuilt when damaged, and optional."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from model.data import load_mvsa
from model.encoders import ImageEncoder, TextEncoder
from model.image_cache import ImageFeatureCache
from model.onnx_encoders import cached_file_is_whole, choose_runtime, file_sha256
from model.scorer import ScoreInput, Scorer
from tests.fixtures.mini_data import draw_picture, fixture_tweets, mini_data_dir
from tests.model.verdict_agreement import agreement_and_drift

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def text_onnx(onnx_dir: Path) -> TextEncoder:
    encoder = TextEncoder()
    assert encoder.use_onnx(cache_dir=onnx_dir)
    return encoder


@pytest.fixture(scope="module")
def image_onnx(onnx_dir: Path) -> ImageEncoder:
    encoder = ImageEncoder()
    assert encoder.use_onnx(cache_dir=onnx_dir)
    return encoder


@pytest.fixture(scope="module")
def scorers() -> dict[str, Scorer]:
    """The worker's Scorer on each runtime (default cache: what a worker would use)."""
    out = {runtime: Scorer.from_checkpoint(device="cpu", encoder_runtime=runtime) for runtime in ("torch", "onnx")}
    assert out["torch"].encoder_runtimes == {"text": "torch", "visual": "torch"}
    assert out["onnx"].encoder_runtimes == {"text": "onnx", "visual": "onnx"}
    for scorer in out.values():
        scorer.image_cache = ImageFeatureCache(0)  # every picture through the encoder
    return out


def _pictures() -> list[Image.Image]:
    drawn = [draw_picture(label, seed) for seed, label in enumerate(["positive", "negative", "neutral"] * 2)]
    real = []
    for example in load_mvsa("dev", root=mini_data_dir())[:4]:
        with Image.open(example.image_path) as image:
            real.append(image.convert("RGB"))
    return drawn + real


def _torch_token_vectors(encoder: TextEncoder, ids: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
    output = encoder.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return output.hidden_states[layer]


def test_runtime_choice() -> None:
    assert choose_runtime("auto", "cpu") == "onnx"
    assert choose_runtime("torch", "cpu") == "torch"
    assert choose_runtime("auto", "cuda") == "torch" and choose_runtime("onnx", "cuda:0") == "torch"
    with pytest.raises(ValueError, match="runtime"):
        choose_runtime("tensorrt", "cpu")


def test_onnx_token_vectors_are_torch_s_on_real_tweets(text_onnx: TextEncoder) -> None:
    texts = [t.raw_text for t in fixture_tweets()]
    long_post = " ".join(texts)  # longer than max_length: the full 128 tokens
    batches = [texts[:32], texts[32:], texts[5:6], [long_post, "ok"]]
    assert not text_onnx.model.training  # exporting left the encoder in eval mode (dropout off)
    for batch in batches:
        encoded = text_onnx.tokenize(batch)
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        with torch.inference_mode():
            got = text_onnx(ids, mask)
            expected = _torch_token_vectors(text_onnx, ids, mask, text_onnx.num_layers)
        assert got.shape == expected.shape and got.dtype == torch.float32
        valid = mask.bool()
        assert (got - expected)[valid].abs().max() < 1e-4, f"batch of {len(batch)}, {ids.shape[1]} tokens"
    assert ids.shape[1] == text_onnx.max_length


def test_onnx_lower_layer_for_fine_tuned_checkpoints(text_onnx: TextEncoder, onnx_dir: Path) -> None:
    layer = text_onnx.num_layers - 2  # a checkpoint fine-tuning the top 2 layers reads layer 4
    assert text_onnx.use_onnx(layer, cache_dir=onnx_dir)
    encoded = text_onnx.tokenize([t.raw_text for t in fixture_tweets()[:16]])
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    with torch.inference_mode():
        got = text_onnx.hidden_at(ids, mask, layer)
        expected = _torch_token_vectors(text_onnx, ids, mask, layer)
    assert (got - expected)[mask.bool()].abs().max() < 1e-4


def test_onnx_pooled_picture_vectors_are_torch_s(image_onnx: ImageEncoder) -> None:
    plain = ImageEncoder().eval()
    pixels = torch.stack([plain.transform(p) for p in _pictures()])
    with torch.inference_mode():
        expected = plain(pixels)
        got = image_onnx(pixels)
        alone = image_onnx(pixels[:1])  # batch 1 and an odd batch size: the batch axis is dynamic
        odd = image_onnx(pixels[:7])
    scale = expected.abs().max()
    assert got.shape == expected.shape == (len(pixels), 1280)
    for out, reference in ((got, expected), (alone, expected[:1]), (odd, expected[:7])):
        assert (out - reference).abs().max() <= 1e-4 * scale


def test_gradients_still_run_torch(image_onnx: ImageEncoder) -> None:
    """Grad-CAM and training need autograd: with gradients on, the torch backbone runs."""
    pixels = torch.stack([image_onnx.transform(p) for p in _pictures()[:2]]).requires_grad_(True)
    features = image_onnx(pixels)
    assert features.grad_fn is not None
    features.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_a_deep_copy_opens_its_own_session(image_onnx: ImageEncoder) -> None:
    pixels = torch.stack([image_onnx.transform(p) for p in _pictures()[:3]])
    twin = copy.deepcopy(image_onnx)
    assert twin.onnx is not None and twin.onnx.path == image_onnx.onnx.path
    with torch.inference_mode():
        assert torch.equal(twin(pixels), image_onnx(pixels))


def test_scorer_verdicts_agree_across_runtimes(scorers: dict[str, Scorer]) -> None:
    texts = [t.raw_text for t in fixture_tweets()]
    pictures = _pictures()
    posts = [ScoreInput(t) for t in texts] + [ScoreInput(t, images=[pictures[i % len(pictures)]])
                                              for i, t in enumerate(texts[:20])]
    a, b = scorers["torch"].score(posts), scorers["onnx"].score(posts)
    agree = sum(x.label == y.label for x, y in zip(a, b, strict=True)) / len(posts)
    drift = max(abs(x.probabilities[k] - y.probabilities[k]) for x, y in zip(a, b, strict=True)
                for k in x.probabilities)
    assert agree >= 0.99, f"labels agree on only {agree:.1%} of {len(posts)} posts"
    assert drift < 1e-3
    assert all(r.modality_weights["visual"] > 0 for r in b[len(texts):])  # pictures really went through


ODD_TEXTS = st.one_of(
    st.just(""),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", categories=["So", "Sk", "Cc", "Cf", "Zs", "Mn"]), max_size=60),
    st.builds(lambda unit, n: unit * n, st.sampled_from(["a", "😂", "\x00", "\u200b", "ab cd ", "\ud7ff"]),
              st.integers(min_value=1, max_value=10_000)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(ODD_TEXTS, min_size=1, max_size=4))
def test_odd_texts_crash_neither_runtime(scorers: dict[str, Scorer], batch: list[str]) -> None:
    results = {runtime: scorer.score([ScoreInput(t) for t in batch]) for runtime, scorer in scorers.items()}
    for verdicts in results.values():
        assert len(verdicts) == len(batch)
        assert all(abs(sum(v.probabilities.values()) - 1) < 1e-4 for v in verdicts)
    for x, y in zip(results["torch"], results["onnx"], strict=True):
        assert max(abs(x.probabilities[k] - y.probabilities[k]) for k in x.probabilities) < 1e-3


def test_the_export_is_cached_and_a_damaged_file_rebuilt(tmp_path: Path) -> None:
    first = ImageEncoder()
    assert first.use_onnx(cache_dir=tmp_path)
    path = first.onnx.path
    assert cached_file_is_whole(path) and path.parent == tmp_path and "efficientnet_lite0" in path.name
    stamp = path.stat().st_mtime_ns

    second = ImageEncoder()
    assert second.use_onnx(cache_dir=tmp_path) and second.onnx.path == path
    assert path.stat().st_mtime_ns == stamp  # reused, not exported again

    with path.open("r+b") as handle:  # a file cut short, as by a crash mid-write
        handle.truncate(path.stat().st_size // 2)
    assert not cached_file_is_whole(path)
    third = ImageEncoder()
    assert third.use_onnx(cache_dir=tmp_path)
    assert cached_file_is_whole(path) and path.stat().st_size > 1_000_000

    path.write_bytes(b"not an onnx graph")  # unreadable, with a checksum that matches it
    path.with_name(path.name + ".sha256").write_text(file_sha256(path) + "\n")
    fourth = ImageEncoder()
    assert fourth.use_onnx(cache_dir=tmp_path) and path.stat().st_size > 1_000_000
    pixels = torch.stack([fourth.transform(p) for p in _pictures()[:2]])
    with torch.inference_mode():
        assert (fourth(pixels) - first(pixels)).abs().max() < 1e-4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


def test_other_weights_get_their_own_file(tmp_path: Path) -> None:
    one, other = ImageEncoder(), ImageEncoder()
    with torch.no_grad():
        other.backbone.network._conv_stem.weight.mul_(1.01)
    assert one.use_onnx(cache_dir=tmp_path) and other.use_onnx(cache_dir=tmp_path)
    assert one.onnx.path != other.onnx.path


def test_a_failed_export_falls_back_to_torch_with_one_warning(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("the cache dir cannot be made under a file")
    encoder = ImageEncoder()
    with caplog.at_level(logging.WARNING, logger="model.onnx_encoders"):
        assert not encoder.use_onnx(cache_dir=blocked / "onnx")
    warnings = [r for r in caplog.records if r.name == "model.onnx_encoders"]
    assert len(warnings) == 1 and "running it in torch" in warnings[0].getMessage()
    assert encoder.onnx is None
    pixels = torch.stack([encoder.transform(p) for p in _pictures()[:2]])
    with torch.inference_mode():
        assert encoder(pixels).shape == (2, 1280)


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from model.onnx_encoders import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "sentistream" / "onnx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "sentistream" / "onnx"


def test_int8_on_onnx_runtime_is_quantised_and_close_to_fp32(scorers: dict[str, Scorer]) -> None:
    """SENTISTREAM_TEXT_INT8 on ONNX Runtime: its per-channel dynamic int8 graph (cost 0.4 point of
    TweetEval validation macro recall, bench/RESULTS.md), cached beside the fp32 one."""
    int8 = Scorer.from_checkpoint(device="cpu", text_int8=True, encoder_runtime="onnx")
    assert int8.encoder_runtimes["text"] == "onnx int8"
    graph, fp32_graph = int8.text_encoder.onnx[6].path, scorers["onnx"].text_encoder.onnx[6].path
    assert cached_file_is_whole(graph) and graph.stat().st_size < 0.7 * fp32_graph.stat().st_size
    texts = [t.raw_text for t in fixture_tweets()]
    a = scorers["onnx"].score([ScoreInput(t) for t in texts])
    b = int8.score([ScoreInput(t) for t in texts])
    agree, drift = agreement_and_drift(a, b)
    assert agree >= 0.9, f"int8 agrees with fp32 on only {agree:.0%} of {len(texts)} tweets"
    assert 0 < drift < 0.5  # quantised (not identical), not broken


@settings(max_examples=10, deadline=None)
@given(width=st.integers(1, 700), height=st.integers(1, 700), seed=st.integers(0, 2**16),
       mode=st.sampled_from(["RGB", "L", "RGBA", "P"]))
def test_eval_transform_is_the_torchvision_pipeline_bit_for_bit(width: int, height: int, seed: int,
                                                                 mode: str) -> None:
    """The serving transform (PIL geometry + one byte-value table) gives exactly the pixels of the
    torchvision pipeline it replaced (Resize, CenterCrop, ToImage, ToDtype, the model's range)."""
    import numpy as np

    encoder = _transform_encoder()
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    picture = Image.fromarray(noise).convert(mode)
    fast, reference = encoder.transform(picture), encoder._eval_transform(picture.convert("RGB"))
    assert fast.shape == reference.shape == (3, 224, 224) and fast.dtype == reference.dtype
    assert torch.equal(fast, reference)


_ENCODERS: dict[str, ImageEncoder] = {}


def _transform_encoder() -> ImageEncoder:
    if "plain" not in _ENCODERS:
        _ENCODERS["plain"] = ImageEncoder()
    return _ENCODERS["plain"]
