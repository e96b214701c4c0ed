"""The Scorer on awkward real-world input: empty batches, long, foreign and emoji-only posts, bad pictures."""

import io

import pytest
import torch
from PIL import Image

from model import checkpoint
from model.config import ModelConfig
from model.data import load_mvsa
from model.labels import LABELS
from model.network import SentimentNet
from model.scorer import PreparedBatch, ScoreInput, Scorer
from tests.fixtures.mini_data import mini_data_dir
from tests.model.real_features import encoders, tiny_real_batch

torch.set_num_threads(2)

@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> Scorer:
    torch.manual_seed(0)
    config = ModelConfig(modalities=("text", "visual", "audio"))
    net = SentimentNet(config)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    batch = tiny_real_batch()
    for _ in range(5):  # a few real steps: the scorer is tested on weights that mean something
        optimizer.zero_grad()
        net(batch).loss.backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    checkpoint.save(path, net, config, half=False)
    text_encoder, image_encoder = encoders()
    return Scorer.from_checkpoint(path, device="cpu", text_encoder=text_encoder, image_encoder=image_encoder)


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    with Image.open(load_mvsa("dev", root=mini_data_dir())[0].image_path) as image:
        return image.convert("RGB")


@pytest.fixture(scope="module")
def truncated_picture() -> Image.Image:
    """A JPEG cut in half: it opens (header fine) but fails when decoded, as broken downloads do."""
    path = load_mvsa("dev", root=mini_data_dir())[1].image_path
    raw = path.read_bytes()
    return Image.open(io.BytesIO(raw[: len(raw) // 2]))


def _check(result, model_version: str) -> None:
    assert result.label in LABELS
    assert set(result.probabilities) == set(LABELS)
    assert abs(sum(result.probabilities.values()) - 1.0) < 1e-4
    assert result.label == max(result.probabilities, key=result.probabilities.get)
    assert -3.0 <= result.intensity <= 3.0
    assert set(result.modality_weights) == {"text", "visual", "audio"}
    assert result.model_version == model_version


def test_empty_batch_gives_empty_list(scorer):
    assert scorer.score([]) == []
    assert scorer.score_prepared(scorer.prepare([])) == []


def test_awkward_posts_are_all_scored(scorer, picture, truncated_picture):
    posts = [
        ScoreInput("what a wonderful morning, love it"),
        ScoreInput("terrible service " * 300),  # ~5,000 characters
        ScoreInput("Das ist wirklich ein schrecklicher Tag, nichts funktioniert"),
        ScoreInput("这是我最喜欢的餐厅"),
        ScoreInput("😂😂😂🔥"),
        ScoreInput("🙄"),
        ScoreInput("", images=[picture]),  # picture only
        ScoreInput("look at this", images=[truncated_picture]),
        ScoreInput("look at this", images=[b"definitely not a jpeg"]),
        ScoreInput("look at this", images=[picture]),
        ScoreInput(""),
    ]
    assert len(posts[1].text) >= 5000
    results = scorer.score(posts)
    assert len(results) == len(posts)
    for result in results:
        _check(result, scorer.model_version)
    assert results[0].modality_weights["visual"] == 0.0
    assert results[6].modality_weights == {"text": 0.0, "visual": 1.0, "audio": 0.0}
    assert results[9].modality_weights["visual"] > 0.0
    # a broken picture leaves the post exactly as if it had none
    text_only = scorer.score([ScoreInput("look at this")])[0]
    for broken in (results[7], results[8]):
        assert broken.modality_weights["visual"] == 0.0
        assert broken.probabilities == pytest.approx(text_only.probabilities, abs=1e-5)


def test_text_only_post_same_alone_in_a_mixed_batch_and_with_empty_image_list(scorer, picture):
    alone = scorer.score([ScoreInput("the new update is fine I guess")])[0]
    empty_list = scorer.score([ScoreInput("the new update is fine I guess", images=[])])[0]
    mixed = scorer.score([ScoreInput("a much longer post that pads the batch " * 5, images=[picture]),
                          ScoreInput("the new update is fine I guess")])[1]
    assert empty_list.probabilities == alone.probabilities
    assert mixed.probabilities == pytest.approx(alone.probabilities, abs=1e-5)


def test_prepare_is_separate_cpu_work_and_matches_score(scorer, picture):
    posts = [ScoreInput("good", images=[picture]), ScoreInput("bad")]
    prepared = scorer.prepare(posts)
    assert isinstance(prepared, PreparedBatch) and prepared.size == 2
    # the picture was scored by an earlier test, so its features may come from the image cache
    assert (prepared.pixels is not None and prepared.pixels.device.type == "cpu") or set(prepared.cached_vectors) == {0}
    assert prepared.picture_rows == [0]
    assert scorer.score_prepared(prepared) == scorer.score(posts)


def test_audio_is_used_by_a_checkpoint_with_an_audio_branch(scorer):
    import numpy as np

    rate = 16000
    tone = (0.1 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)).astype(np.float32)
    results = scorer.score([ScoreInput("listen", audio=(tone, rate)),
                            ScoreInput("listen", audio=(np.array([np.nan, 1.0]), 8000)),
                            ScoreInput("listen", audio=(tone, 0))])  # invalid rate: audio skipped
    assert results[0].modality_weights["audio"] > 0
    assert results[2].modality_weights["audio"] == 0
    for result in results:
        _check(result, scorer.model_version)


@pytest.mark.skipif(not checkpoint.DEFAULT_CHECKPOINT.exists(), reason="default checkpoint not trained yet")
def test_packaged_default_checkpoint_scores_obvious_posts():
    scorer = Scorer.from_checkpoint(device="cpu")
    results = scorer.score([ScoreInput("I absolutely love this, best day ever!"),
                            ScoreInput("This is the worst, I hate it so much."),
                            ScoreInput([])])  # not even a string: scored, not raised
    assert results[0].label == "positive"
    assert results[1].label == "negative"
    assert len(results) == 3


def test_prepare_from_several_threads_at_once(scorer, picture):
    """The worker runs prepare() in a thread pool: concurrent calls must neither fail nor mix posts up."""
    from concurrent.futures import ThreadPoolExecutor

    batches = [[ScoreInput(f"post {i} is {'great' if i % 2 else 'awful'} " * (1 + i % 7))] for i in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        prepared = list(pool.map(scorer.prepare, batches))
    for batch, ready in zip(batches, prepared, strict=True):
        assert torch.equal(ready.input_ids, scorer.prepare(batch).input_ids)
