"""Shapes and masks of the text, visual and audio branches and of the assembled SentimentNet."""

import math

import numpy as np
import pytest
import torch

from model.audio import AudioBranch, log_mel_spectrogram, mel_filterbank
from model.config import ModelConfig
from model.network import SentimentNet, label_intensity_proxy
from model.pooling import MaskedBiLSTM, SequencePooling, masked_softmax
from model.text import TextBranch
from model.vision import ImageBranch

torch.set_num_threads(2)


def _prefix_mask(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def test_masked_softmax_ignores_masked_steps_and_zeroes_empty_rows():
    scores = torch.tensor([[1.0, 2.0, 50.0], [3.0, 3.0, 3.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    weights = masked_softmax(scores, mask)
    assert weights[0, 2] == 0 and torch.isclose(weights[0].sum(), torch.tensor(1.0))
    assert torch.equal(weights[1], torch.zeros(3))


@pytest.mark.parametrize("mode", ["attention", "mean", "max"])
def test_pooling_weights_live_on_valid_steps_only(mode):
    torch.manual_seed(0)
    pooling = SequencePooling(mode, 8, 4)
    states = torch.randn(3, 5, 8)
    mask = _prefix_mask([5, 2, 0], 5)
    context, weights = pooling(states, mask)
    assert context.shape == (3, 8) and weights.shape == (3, 5)
    assert torch.all(weights[~mask] == 0)
    assert torch.allclose(weights[:2].sum(dim=1), torch.ones(2))
    assert torch.equal(context[2], torch.zeros(8))  # a row without steps pools to zero, not NaN
    if mode == "mean":
        assert torch.allclose(context[1], states[1, :2].mean(dim=0))
    if mode == "max":
        assert torch.allclose(context[1], states[1, :2].max(dim=0).values)


def test_bilstm_output_of_a_row_does_not_depend_on_padding():
    torch.manual_seed(0)
    lstm = MaskedBiLSTM(6, 4).eval()
    inputs = torch.randn(2, 7, 6)
    mask = _prefix_mask([7, 3], 7)
    batched = lstm(inputs, mask)
    alone = lstm(inputs[1:2, :3], mask[1:2, :3])
    assert batched.shape == (2, 7, 8)
    assert torch.allclose(batched[1, :3], alone[0], atol=1e-6)
    assert torch.all(batched[1, 3:] == 0)


@pytest.mark.parametrize("text_cnn", [True, False])
@pytest.mark.parametrize("pooling", ["attention", "mean", "max"])
def test_text_branch_shapes_and_padding_invariance(text_cnn, pooling):
    torch.manual_seed(0)
    config = ModelConfig(text_cnn=text_cnn, pooling=pooling)
    branch = TextBranch(config).eval()
    tokens = torch.randn(3, 11, 384)
    mask = _prefix_mask([11, 6, 1], 11)
    out = branch(tokens, mask)
    steps = math.ceil(11 / 2) if text_cnn else 11
    assert out.context.shape == (3, 512)
    assert out.sequence.shape == (3, steps, 512) and out.sequence_mask.shape == (3, steps)
    assert out.weights.shape == (3, steps)
    assert torch.allclose(out.weights.sum(dim=1), torch.ones(3), atol=1e-5)
    # the same tweet alone (no padding) gives the same context as inside the padded batch
    alone = branch(tokens[1:2, :6], mask[1:2, :6])
    assert torch.allclose(out.context[1], alone.context[0], atol=1e-5)
    token_weights = branch.token_weights(out.weights, mask)
    assert token_weights.shape == (3, 11)
    assert torch.all(token_weights[~mask] == 0)
    assert torch.allclose(token_weights.sum(dim=1), torch.ones(3), atol=1e-5)


def test_text_cnn_sees_ngrams_of_width_3_4_5():
    config = ModelConfig()
    branch = TextBranch(config)
    assert [conv.kernel_size[0] for conv in branch.cnn.convs] == [3, 4, 5]
    assert all(conv.out_channels == 100 for conv in branch.cnn.convs)
    assert branch.lstm.lstm.hidden_size == 256 and branch.lstm.lstm.bidirectional


def test_image_branch_single_picture_is_the_fc_vector_and_frames_use_the_lstm():
    torch.manual_seed(0)
    branch = ImageBranch(ModelConfig()).eval()
    frames = torch.randn(3, 4, 1280)
    mask = torch.tensor([[True, False, False, False], [True, True, True, False], [False] * 4])
    out = branch(frames, mask)
    assert out.context.shape == (3, 256) and out.weights.shape == (3, 4)
    assert torch.allclose(out.context[0], branch.frame_fc(frames[0:1, 0])[0], atol=1e-6)
    assert torch.equal(out.weights[0], torch.tensor([1.0, 0, 0, 0]))
    assert torch.allclose(out.weights[1].sum(), torch.tensor(1.0)) and out.weights[1, 3] == 0
    assert branch.lstm.lstm.hidden_size == 128
    assert torch.equal(out.context[2], torch.zeros(256))
    # garbage in masked frames changes nothing
    noisy = frames.clone()
    noisy[~mask] = 1e3
    assert torch.allclose(branch(noisy, mask).context, out.context, atol=1e-5)


def test_log_mel_uses_25ms_windows_and_10ms_hops():
    rate = 16000
    wave = np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)
    mel = log_mel_spectrogram(wave, rate, n_mels=64)
    assert mel.shape == (64, 1 + (rate - 400) // 160)
    assert torch.isfinite(mel).all()
    # 440 Hz lands in a low mel band: the loudest band is in the lower quarter
    assert int(mel.mean(dim=1).argmax()) < 16
    # the same second at 8 kHz (resampled), in stereo, gives the same frame count
    stereo = np.stack([wave[::2], wave[::2]])
    assert log_mel_spectrogram(stereo, 8000, n_mels=64).shape == mel.shape
    # shorter than one window: one frame, not an error
    assert log_mel_spectrogram(np.zeros(10, dtype=np.float32), rate).shape == (64, 1)


def test_mel_filterbank_is_triangular_and_covers_every_band():
    bank = mel_filterbank(64, 512, 16000)
    assert bank.shape == (64, 257)
    assert torch.all(bank >= 0) and torch.all(bank.sum(dim=1) > 0)
    peaks = bank.argmax(dim=1)
    assert torch.all(peaks[1:] >= peaks[:-1])  # centres rise with the band index


def test_audio_branch_shapes_and_masks():
    torch.manual_seed(0)
    branch = AudioBranch(ModelConfig(modalities=("text", "visual", "audio"))).eval()
    audio = torch.randn(2, 64, 101)
    mask = _prefix_mask([101, 40], 101)
    out = branch(audio, mask)
    steps = math.ceil(math.ceil(101 / 2) / 2)
    assert out.context.shape == (2, 256) and out.weights.shape == (2, steps)
    assert out.sequence_mask[1].sum() == math.ceil(math.ceil(40 / 2) / 2)
    assert torch.all(out.weights[~out.sequence_mask] == 0)
    alone = branch(audio[1:2, :, :40], mask[1:2, :40])
    assert torch.allclose(out.context[1], alone.context[0], atol=1e-5)


def _random_batch(batch_size: int = 4, with_audio: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    batch = {
        "text": torch.randn(batch_size, 9, 384),
        "text_mask": _prefix_mask([9, 5, 3, 2][:batch_size], 9),
        "visual": torch.randn(batch_size, 1, 1280),
        "visual_mask": torch.tensor([[True], [False], [True], [False]][:batch_size]),
        "label": torch.tensor([0, 1, 2, 1][:batch_size]),
    }
    present = torch.zeros(batch_size, 3, dtype=torch.bool)
    present[:, 0] = True
    present[:, 1] = batch["visual_mask"][:, 0]
    if with_audio:
        batch["audio"] = torch.randn(batch_size, 64, 30)
        batch["audio_mask"] = torch.ones(batch_size, 30, dtype=torch.bool)
        present[:, 2] = True
    batch["present"] = present
    return batch


@pytest.mark.parametrize("fusion", ["concat", "gmu", "lowrank", "crossattn"])
def test_network_outputs_and_loss(fusion):
    net = SentimentNet(ModelConfig(fusion=fusion, modalities=("text", "visual", "audio"))).eval()
    batch = _random_batch(with_audio=True)
    out = net(batch)
    assert out.logits.shape == (4, 3) and out.intensity.shape == (4,)
    assert torch.all(out.intensity.abs() <= 3.0)
    assert out.modality_weights.shape == (4, 3)
    assert torch.allclose(out.modality_weights.sum(dim=1), torch.ones(4), atol=1e-5)
    assert torch.all(out.modality_weights[~batch["present"]] == 0)
    assert out.token_attention.shape == (4, 9)
    assert torch.all(out.token_attention[~batch["text_mask"]] == 0)
    assert out.loss is not None and out.loss.ndim == 0 and torch.isfinite(out.loss)
    del batch["label"]
    assert net(batch).loss is None


@pytest.mark.parametrize("fusion", ["concat", "gmu", "lowrank", "crossattn"])
def test_text_only_post_is_identical_with_and_without_an_empty_image_slot(fusion):
    net = SentimentNet(ModelConfig(fusion=fusion)).eval()
    batch = _random_batch()
    text_only = {"text": batch["text"][1:2], "text_mask": batch["text_mask"][1:2],
                 "present": torch.tensor([[True, False, False]])}
    empty_slot = dict(text_only, visual=torch.zeros(1, 1, 1280), visual_mask=torch.zeros(1, 1, dtype=torch.bool))
    garbage_slot = dict(text_only, visual=torch.full((1, 1, 1280), 7.0), visual_mask=torch.zeros(1, 1, dtype=torch.bool))
    with torch.no_grad():
        a, b, c = net(text_only), net(empty_slot), net(garbage_slot)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.logits, c.logits)
    assert torch.equal(a.intensity, b.intensity)
    assert torch.equal(a.modality_weights, torch.tensor([[1.0, 0.0, 0.0]]))
    # and the same post inside a mixed batch (beside posts with pictures) scores the same
    with torch.no_grad():
        mixed = net(batch)
    assert torch.allclose(mixed.logits[1], a.logits[0], atol=1e-5)


def test_absent_present_flag_overrides_a_filled_slot():
    net = SentimentNet(ModelConfig()).eval()
    batch = _random_batch()
    batch["present"][0, 1] = False  # the picture of post 0 is declared absent: it must be ignored
    stripped = dict(batch, visual_mask=batch["visual_mask"].clone())
    stripped["visual_mask"][0] = False
    with torch.no_grad():
        assert torch.equal(net(batch).logits[0], net(stripped).logits[0])


def test_intensity_proxy_targets_follow_the_labels():
    assert label_intensity_proxy(torch.tensor([0, 1, 2])).tolist() == [-1.5, 0.0, 1.5]


def test_config_round_trip_and_validation():
    config = ModelConfig(fusion="gmu", modalities=("visual", "text"), class_weights=(1.0, 2.0, 0.5))
    assert config.modalities == ("text", "visual")
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        ModelConfig(fusion="sum")
    with pytest.raises(ValueError):
        ModelConfig(modalities=("smell",))
