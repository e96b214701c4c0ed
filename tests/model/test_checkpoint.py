"""Checkpoints rebuild the exact network from their own config; the shipped one is small and encoder-free."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import checkpoint
from model.checkpoint import FORMAT_VERSION, CheckpointError
from model.config import ModelConfig
from model.network import SentimentNet
from model.scorer import Scorer
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


# ---------------------------------------------------------------------------------------------
# unusable checkpoints: one CheckpointError naming the file, the setting and the fix (#16.5)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    """A small valid checkpoint to damage in different ways."""
    torch.manual_seed(0)
    config = ModelConfig(cnn_filters=8, text_hidden=16, visual_hidden=16, fusion_dim=32, head_dim=16,
                         attention_dim=8)
    path = tmp_path_factory.mktemp("good") / "good.pt"
    checkpoint.save(path, SentimentNet(config), config)
    return path


def _payload(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _assert_clear(error: CheckpointError, path: Path, *words: str) -> None:
    message = str(error)
    assert str(path) in message and "SENTISTREAM_CHECKPOINT" in message and "Fix:" in message
    assert "\n" not in message  # one log line
    assert error.path == path
    for word in words:
        assert word in message, (word, message)


class _WritesAFileWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _damage(kind: str, good: Path, folder: Path) -> Path:
    path = folder / f"{kind}.pt"
    raw = good.read_bytes()
    if kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    elif kind == "shape-mismatch":
        payload = _payload(good)
        name = next(key for key, value in payload["state_dict"].items() if value.dim() == 2)
        payload["state_dict"][name] = torch.zeros(3, 5, dtype=torch.float16)
        torch.save(payload, path)
    elif kind == "missing-weight":
        payload = _payload(good)
        payload["state_dict"].pop(next(iter(payload["state_dict"])))
        torch.save(payload, path)
    elif kind == "missing-key":
        payload = _payload(good)
        del payload["state_dict"]
        torch.save(payload, path)
    elif kind == "malicious-pickle":
        payload = _payload(good)
        payload["extra"] = {"note": _WritesAFileWhenUnpickled(folder / "pwned")}
        torch.save(payload, path)
    elif kind == "legacy-malicious-pickle":
        with path.open("wb") as handle:
            pickle.dump(_WritesAFileWhenUnpickled(folder / "pwned"), handle, protocol=2)
    elif kind == "wrong-format-version":
        payload = _payload(good)
        payload["format_version"] = FORMAT_VERSION + 1
        torch.save(payload, path)
    elif kind == "not-a-dict":
        torch.save([torch.zeros(2)], path)
    elif kind == "bad-config":
        payload = _payload(good)
        payload["config"]["fusion"] = "telepathy"
        torch.save(payload, path)
    elif kind == "directory":
        path.mkdir()
    else:  # pragma: no cover - a typo in the parametrisation
        raise AssertionError(kind)
    return path


DAMAGE = {
    "zero-bytes": "empty",
    "truncated": "truncated or not a PyTorch checkpoint",
    "random-bytes": "truncated or not a PyTorch checkpoint",
    "shape-mismatch": "do not fit",
    "missing-weight": "do not fit",
    "missing-key": "lacks state_dict",
    "malicious-pickle": "refused, not run",
    "legacy-malicious-pickle": "refused, not run",
    "wrong-format-version": f"format version is {FORMAT_VERSION + 1}",
    "not-a-dict": "not a sentistream checkpoint",
    "bad-config": "config is not valid",
    "directory": "directory",
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_unusable_checkpoint_raises_one_clear_error(kind, good_checkpoint, tmp_path):
    path = _damage(kind, good_checkpoint, tmp_path)
    with pytest.raises(CheckpointError) as caught:
        checkpoint.load(path)
    _assert_clear(caught.value, path, DAMAGE[kind])
    assert not (tmp_path / "pwned").exists()  # nothing was unpickled
    # The Scorer reads the file before loading any encoder, with the same error.
    with pytest.raises(CheckpointError) as caught:
        Scorer.from_checkpoint(path, device="cpu")
    _assert_clear(caught.value, path, DAMAGE[kind])
    assert not (tmp_path / "pwned").exists()


def test_missing_checkpoint_is_file_not_found_so_the_worker_can_store_posts_unscored(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        checkpoint.read_payload(tmp_path / "absent.pt")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(min_value=0.0, max_value=0.999), flips=st.lists(st.integers(min_value=0), max_size=8))
def test_any_truncation_or_bit_flip_is_a_checkpoint_error_or_loads(good_checkpoint, tmp_path, cut, flips):
    """Whatever the damage: either a network comes back or a CheckpointError does; never another error."""
    raw = bytearray(good_checkpoint.read_bytes())
    for flip in flips:
        raw[flip % len(raw)] ^= 0xFF
    raw = raw[: max(1, int(len(raw) * cut))] if cut > 0 else raw
    path = tmp_path / "damaged.pt"
    path.write_bytes(bytes(raw))
    try:
        net, _, _ = checkpoint.load(path)
    except CheckpointError as error:
        _assert_clear(error, path)
    else:
        assert isinstance(net, SentimentNet)


def _cli(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.parametrize("kind", ["truncated", "directory"])
def test_rescore_with_an_unusable_checkpoint_exits_2_with_one_line(kind, good_checkpoint, tmp_path):
    path = _damage(kind, good_checkpoint, tmp_path)
    # No database is reachable at this URL: the checkpoint is refused before anything is connected.
    done = _cli(["rescore", "--since", "1h"], {"SENTISTREAM_CHECKPOINT": str(path),
                                               "SENTISTREAM_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "cannot use model checkpoint" in line]
    assert len(errors) == 1 and str(path) in errors[0] and "SENTISTREAM_CHECKPOINT" in errors[0]


def test_model_eval_with_a_malicious_checkpoint_exits_2(good_checkpoint, tmp_path):
    path = _damage("malicious-pickle", good_checkpoint, tmp_path)
    # The checkpoint is refused before the data set is read: an empty data folder does not matter.
    done = _cli(["model", "eval", "--checkpoint", str(path), "--dataset", "mvsa-dev", "--limit", "2"],
                {"SENTISTREAM_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "cannot use model checkpoint" in done.stderr
    assert not (tmp_path / "pwned").exists()
