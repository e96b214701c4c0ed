"""Explanations on a real (untrained, seeded) SentimentNet with the real offline encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model import data
from model.config import ModelConfig
from model.explain import (
    Explainer,
    attention_html,
    explain_post,
    filter_ngrams,
    filters_markdown,
    merge_word_pieces,
    write_post_explanation,
)
from model.labels import LABELS
from model.network import SentimentNet
from tests.fixtures.mini_data import mini_data_dir


@pytest.fixture(scope="module")
def explainer() -> Explainer:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = ModelConfig(cnn_filters=16)
    return Explainer.from_network(SentimentNet(config), config, model_version="test")


def test_merge_word_pieces_sums_weights_and_drops_padding() -> None:
    words, weights = merge_word_pieces(
        ["[CLS]", "so", "amaz", "##ing", "[SEP]", "[PAD]"], [0.1, 0.2, 0.3, 0.25, 0.15, 0.0]
    )
    assert words == ["[CLS]", "so", "amazing", "[SEP]"]
    np.testing.assert_allclose(weights, [0.1, 0.2, 0.55, 0.15])


def test_text_explanation_weights_cover_the_post(explainer: Explainer, tmp_path: Path) -> None:
    text = "I absolutely love this <b>new</b> phone @someone http://x.co"
    explanation = explain_post(explainer, text)
    assert explanation.label in LABELS
    assert sum(explanation.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert explanation.word_weights.sum() == pytest.approx(1.0, abs=1e-4)
    assert "love" in explanation.words and "phone" in explanation.words
    assert explanation.gradcam is None
    # A text-only post puts no weight on the absent picture.
    assert explanation.modality_weights["visual"] == pytest.approx(0.0)

    page = attention_html(explanation, text)
    assert "&lt;b&gt;" in page and "<b>new</b>" not in page  # the post is escaped
    assert page.count("<span") == len(explanation.words)

    written = write_post_explanation(explanation, text, tmp_path)
    assert [path.name for path in written] == ["attention.html", "attention.png"]
    assert (tmp_path / "attention.png").read_bytes()[:4] == b"\x89PNG"


def test_gradcam_on_a_picture(explainer: Explainer, tmp_path: Path) -> None:
    example = data.load_mvsa("dev", root=mini_data_dir())[0]
    with Image.open(example.image_path) as opened:
        image = opened.convert("RGB")
    explanation = explain_post(explainer, example.text, image)
    cam = explanation.gradcam
    assert cam is not None and cam.shape == (7, 7)
    assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
    assert explanation.cropped_image is not None and explanation.cropped_image.size == (224, 224)
    assert explanation.modality_weights["visual"] > 0.0
    # The heatmap depends on the picture: a flipped picture moves it.
    flipped = explain_post(explainer, example.text, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert not np.allclose(flipped.gradcam, cam)
    written = write_post_explanation(explanation, example.text, tmp_path)
    assert (tmp_path / "gradcam.png") in written
    with Image.open(tmp_path / "gradcam.png") as png:
        assert png.size[0] > 400


def test_filter_ngrams_come_from_the_sample(explainer: Explainer) -> None:
    sample = data.load_tweeteval_val(root=mini_data_dir())[:40]
    results = filter_ngrams(
        explainer, [e.text for e in sample], [e.label for e in sample], top_k=3, progress=False
    )
    assert len(results) == 3 * 16
    assert {result.kernel_size for result in results} == {3, 4, 5}
    joined = " ".join(explainer.text_encoder.prepare_text(e.text).lower() for e in sample)
    squashed = "".join(joined.split())
    for result in results[:: 7]:
        values = [value for _, value in result.ngrams]
        assert values == sorted(values, reverse=True)
        for ngram, _ in result.ngrams:
            # Each n-gram is a stretch of some sample post (compare without spaces, since the
            # tokenizer's detokenisation spaces punctuation differently).
            core = "".join(ngram.lstrip("…").replace("[CLS]", "").replace("[SEP]", "").split())
            assert core in squashed
    markdown = filters_markdown(results, "tweeteval-val", len(sample))
    assert "Filters most selective for negative" in markdown
    assert markdown.count("\n| ") >= len(results)


def test_explainer_from_checkpoint_matches_the_scorer(tmp_path: Path) -> None:
    """The explanation describes the served model: same probabilities as ``Scorer.score``."""
    from model import checkpoint
    from model.scorer import ScoreInput, Scorer

    torch.manual_seed(1)
    config = ModelConfig(cnn_filters=16, fusion="gmu")
    path = tmp_path / "tiny.pt"
    checkpoint.save(path, SentimentNet(config), config)
    explainer = Explainer.from_checkpoint(path)
    scorer = Scorer.from_checkpoint(path, device="cpu")
    example = data.load_mvsa("dev", root=mini_data_dir())[1]
    with Image.open(example.image_path) as opened:
        image = opened.convert("RGB")
    served = scorer.score([ScoreInput(example.text), ScoreInput(example.text, images=[image])])
    text_only = explain_post(explainer, example.text)
    with_image = explain_post(explainer, example.text, image)
    for explained, result in ((text_only, served[0]), (with_image, served[1])):
        assert explained.label == result.label
        for name in LABELS:
            assert explained.probabilities[name] == pytest.approx(result.probabilities[name], abs=1e-4)
    assert with_image.gradcam is not None
