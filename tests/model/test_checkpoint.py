"""Checkpoints rebuild the exact network from their own config; the shipped one is small and encoder-free."""

import pytest
import torch

from model import checkpoint
from model.config import ModelConfig
from model.network import SentimentNet
from tests.model.real_features import tiny_real_batch

torch.set_num_threads(2)

def _trained_net(config: ModelConfig) -> SentimentNet:
    """A few real optimisation steps, so the weights are not just their initialisation."""
    torch.manual_seed(0)
    net = SentimentNet(config)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    batch = tiny_real_batch()
    for _ in range(3):
        optimizer.zero_grad()
        net(batch).loss.backward()
        optimizer.step()
    return net.eval()


@pytest.mark.parametrize("fusion", ["concat", "crossattn"])
def test_save_load_gives_identical_outputs(tmp_path, fusion):
    config = ModelConfig(fusion=fusion, class_weights=(1.2, 1.5, 0.8))
    net = _trained_net(config)
    batch = tiny_real_batch()
    with torch.no_grad():
        expected = net(batch)
    path = tmp_path / "model.pt"
    version = checkpoint.save(path, net, config, metrics={"tweeteval-val": {"macro_recall": 0.5}},
                              extra={"seeds": [0, 1]}, half=False)
    loaded, loaded_config, meta = checkpoint.load(path)
    assert loaded_config == config
    assert meta["model_version"] == version and version.startswith(f"sentistream-{fusion}-text+visual-")
    assert meta["metrics"]["tweeteval-val"]["macro_recall"] == 0.5 and meta["extra"]["seeds"] == [0, 1]
    assert not loaded.training
    with torch.no_grad():
        got = loaded(batch)
    assert torch.equal(got.logits, expected.logits)
    assert torch.equal(got.intensity, expected.intensity)
    assert torch.equal(got.modality_weights, expected.modality_weights)
    assert torch.equal(got.loss, expected.loss)  # class weights travel with the checkpoint


def test_half_precision_checkpoint_is_close_smaller_and_deterministic(tmp_path):
    config = ModelConfig()
    net = _trained_net(config)
    batch = tiny_real_batch()
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    checkpoint.save(full, net, config, half=False)
    version_a = checkpoint.save(half, net, config)
    version_b = checkpoint.save(tmp_path / "half2.pt", net, config)
    assert version_a == version_b  # the version names the weights, not the time of saving
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert half.stat().st_size < 25e6
    with torch.no_grad():
        expected = torch.softmax(net(batch).logits, dim=-1)
        first = checkpoint.load(half)[0]
        second = checkpoint.load(half)[0]
        got = torch.softmax(first(batch).logits, dim=-1)
        assert torch.equal(got, torch.softmax(second(batch).logits, dim=-1))
    assert torch.allclose(got, expected, atol=2e-2)
    assert torch.equal(got.argmax(dim=1), expected.argmax(dim=1))


def test_checkpoint_holds_no_pretrained_encoder_weights(tmp_path):
    config = ModelConfig()
    path = tmp_path / "m.pt"
    checkpoint.save(path, SentimentNet(config), config)
    payload = torch.load(path, weights_only=True)
    names = list(payload["state_dict"])
    assert not any("encoder" in name or "backbone" in name for name in names)
    parameters = sum(tensor.numel() for tensor in payload["state_dict"].values())
    assert parameters < 5_000_000  # MiniLM alone has 22.7M, EfficientNet-Lite0 4.7M


def test_missing_or_foreign_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "nope.pt")
    bogus = tmp_path / "bogus.pt"
    torch.save({"format_version": 99}, bogus)
    with pytest.raises(ValueError, match="format"):
        checkpoint.load(bogus)


@pytest.mark.skipif(not checkpoint.DEFAULT_CHECKPOINT.exists(), reason="default checkpoint not trained yet")
def test_shipped_checkpoint_loads_and_fits_the_size_budget():
    size = checkpoint.DEFAULT_CHECKPOINT.stat().st_size
    assert size <= 25 * 1024 * 1024
    net, config, meta = checkpoint.load()
    assert meta["model_version"].startswith("sentistream-")
    assert {"tweeteval-val", "mvsa-dev"} <= set(meta["metrics"])
    assert "text" in config.modalities and "visual" in config.modalities
