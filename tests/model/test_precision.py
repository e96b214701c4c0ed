"""Scoring precision (SENTISTREAM_PRECISION): bf16 autocast gives fp32's verdicts on real tweets and pictures,
results stay fp32, "auto" picks per device, and ONNX Runtime encoders keep the scorer fp32 and say so.

bf16 autocast runs on a CPU too, so the path a GPU takes (the same ``torch.autocast`` around the same
encoders and network) is exercised here; only its speed on a GPU is left to ``bench/gpu.sh``.
"""

from __future__ import annotations

import logging

import pytest
import torch

from model.image_cache import ImageFeatureCache
from model.scorer import ScoreInput, Scorer, resolve_precision
from stream.settings import Settings, SettingsError
from tests.fixtures.mini_data import draw_picture, fixture_tweets
from tests.model.verdict_agreement import agreement_and_drift

torch.set_num_threads(2)

MAX_PROBABILITY_DRIFT = 0.03
"""Largest change of any class probability bf16 may make (measured on a CPU with AVX512-BF16: 0.005 on the 60
tweets, 0.015 on the 6 posts with pictures)."""


@pytest.fixture(scope="module")
def scorers() -> dict[str, Scorer]:
    """The shipped checkpoint on torch encoders (ONNX Runtime is fp32 only), in fp32 and in bf16."""
    out = {precision: Scorer.from_checkpoint(device="cpu", encoder_runtime="torch", precision=precision)
           for precision in ("fp32", "bf16")}
    for scorer in out.values():
        scorer.image_cache = ImageFeatureCache(0)  # every picture through the encoder, in its precision
    return out


def test_bf16_autocast_gives_fp32s_labels_on_real_tweets_and_fp32_results(scorers: dict[str, Scorer]) -> None:
    texts = [t.raw_text for t in fixture_tweets()]
    pictures = [draw_picture(label, seed) for seed, label in enumerate(["positive", "negative", "neutral"] * 2)]
    posts = [ScoreInput(t) for t in texts] + [ScoreInput(t, images=[p]) for t, p in zip(texts, pictures, strict=False)]
    assert scorers["bf16"].precision == "bf16" and scorers["fp32"].precision == "fp32"
    fp32 = scorers["fp32"].score(posts)
    bf16 = scorers["bf16"].score(posts)
    agree, drift = agreement_and_drift(fp32, bf16)
    assert agree == 1.0, f"bf16 agrees with fp32 on only {agree:.0%} of {len(posts)} posts"
    assert 0 < drift <= MAX_PROBABILITY_DRIFT, drift  # really bf16 (not identical), and close
    for result in bf16:
        assert all(isinstance(p, float) for p in result.probabilities.values())
        assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-6)  # a softmax of fp32 logits
    assert all(r.modality_weights["visual"] > 0 for r in bf16[len(texts):])


def test_bf16_picture_vectors_are_kept_apart_from_fp32_ones_in_the_shared_cache(scorers: dict[str, Scorer]) -> None:
    assert scorers["bf16"].picture_feature_space == scorers["fp32"].picture_feature_space + ":bf16"


def test_onnx_runtime_encoders_keep_the_scorer_fp32_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="model.scorer"):
        scorer = Scorer.from_checkpoint(device="cpu", encoder_runtime="onnx", precision="bf16")
    if not scorer.encoder_runtimes["text"].startswith("onnx"):
        pytest.skip("ONNX Runtime is not installed here")
    assert scorer.precision == "fp32"
    assert "precision bf16 ignored" in caplog.text and "ONNX Runtime" in caplog.text


def test_auto_is_bf16_on_cuda_that_has_it_fp16_on_other_cuda_fp32_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    torch_encoders = {"text": "torch", "visual": "torch"}
    assert resolve_precision("auto", cpu, torch_encoders) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_precision("auto", cuda, torch_encoders) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_precision("auto", cuda, torch_encoders) == "fp16"
    assert resolve_precision("fp16", cpu, torch_encoders) == "fp16"  # asked for: honoured
    assert resolve_precision("bf16", cpu, {"text": "onnx int8"}) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int4", cpu, torch_encoders)


def test_a_bad_precision_setting_fails_naming_the_variable() -> None:
    assert Settings.from_env({"SENTISTREAM_PRECISION": "bf16"}).precision == "bf16"
    assert Settings().precision == "auto"
    with pytest.raises(SettingsError, match="SENTISTREAM_PRECISION"):
        Settings.from_env({"SENTISTREAM_PRECISION": "half"})
