"""Audio: waveform -> log-mel spectrogram (25 ms window, 10 ms hop), and AudioBranch
(log-mel -> 2-D CNN -> BiLSTM 128 -> attention), seed paper 4.1-4.2.

The spectrogram uses ``torch.stft`` and a hand-built HTK mel filterbank rather than torchaudio,
which would force a second torch build into the environment.  No labelled audio exists in the
training data, so the branch is built and tested for shapes and masks but is not trained.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import ModelConfig
from model.pooling import MaskedBiLSTM, SequencePooling
from model.text import BranchOutput

WINDOW_SECONDS = 0.025
HOP_SECONDS = 0.010
MAX_AUDIO_SECONDS = 30.0
"""Longer clips are cut: a post's audio beyond 30 s adds cost in the hot path, not signal."""


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray | float:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> Tensor:
    """Triangular HTK mel filters (n_mels, n_fft//2+1), each normalised to unit area (Slaney style)."""
    n_bins = n_fft // 2 + 1
    bin_hz = np.linspace(0.0, sample_rate / 2.0, n_bins)
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    bank = np.zeros((n_mels, n_bins), dtype=np.float32)
    for m in range(n_mels):
        left, centre, right = hz_points[m], hz_points[m + 1], hz_points[m + 2]
        rising = (bin_hz - left) / max(centre - left, 1e-9)
        falling = (right - bin_hz) / max(right - centre, 1e-9)
        bank[m] = np.clip(np.minimum(rising, falling), 0.0, None)
        bank[m] *= 2.0 / max(right - left, 1e-9)
    return torch.from_numpy(bank)


def log_mel_spectrogram(waveform: np.ndarray | Tensor, sample_rate: int, n_mels: int = 64,
                        target_rate: int = 16000) -> Tensor:
    """Mono or multi-channel waveform -> standardised log-mel (n_mels, frames), float32.

    Resamples (linear interpolation: enough for 64 mel bands) to ``target_rate`` and averages
    channels; per-clip mean/variance normalisation removes recording gain.  Never returns zero
    frames: a clip shorter than one window is zero-padded to one.
    """
    wave = torch.as_tensor(np.asarray(waveform, dtype=np.float32))
    if wave.ndim > 1:
        # channels-first (C,N) or channels-last (N,C): average over the smaller axis
        wave = wave.mean(dim=0 if wave.shape[0] < wave.shape[-1] else -1)
    wave = wave.flatten()
    wave = torch.nan_to_num(wave, nan=0.0, posinf=0.0, neginf=0.0)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    wave = wave[: int(MAX_AUDIO_SECONDS * sample_rate)]
    if sample_rate != target_rate and wave.numel() > 1:
        new_length = max(1, round(wave.numel() * target_rate / sample_rate))
        wave = F.interpolate(wave.view(1, 1, -1), size=new_length, mode="linear", align_corners=False).flatten()
    win_length = round(WINDOW_SECONDS * target_rate)
    hop_length = round(HOP_SECONDS * target_rate)
    n_fft = 2 ** math.ceil(math.log2(win_length))
    if wave.numel() < win_length:
        wave = F.pad(wave, (0, win_length - wave.numel()))
    # stft centres the win_length window inside each n_fft frame: pad so that frame i's window
    # covers exactly samples [i*hop, i*hop + win_length) of the clip
    side = (n_fft - win_length) // 2
    wave = F.pad(wave, (side, n_fft - win_length - side))
    spec = torch.stft(
        wave,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=torch.hann_window(win_length),
        center=False,
        return_complex=True,
    )  # (n_fft//2+1, frames)
    power = spec.abs().pow(2)
    mel = mel_filterbank(n_mels, n_fft, target_rate) @ power  # (n_mels, frames)
    log_mel = torch.log(mel + 1e-6)
    return (log_mel - log_mel.mean()) / log_mel.std(unbiased=False).clamp(min=1e-5)


class AudioBranch(nn.Module):
    """audio (B,M,A) log-mel + mask (B,A) -> BranchOutput with context (B, 2*audio_hidden).

    Two conv blocks (3x3 conv, ReLU, 2x2 max pool) turn the spectrogram into framewise vectors at a
    quarter of the time resolution (40 ms steps), which the BiLSTM and attention then pool.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        channels = config.audio_channels
        self.convs = nn.ModuleList([nn.Conv2d(1, channels, 3, padding=1), nn.Conv2d(channels, channels, 3, padding=1)])
        freq_out = math.ceil(math.ceil(config.audio_mels / 2) / 2)
        self.frame_proj = nn.Sequential(nn.Linear(channels * freq_out, 2 * config.audio_hidden), nn.ReLU())
        self.lstm = MaskedBiLSTM(2 * config.audio_hidden, config.audio_hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.pooling = SequencePooling(config.pooling, self.lstm.output_dim, config.attention_dim)
        self.output_dim = self.lstm.output_dim

    def forward(self, log_mel: Tensor, mask: Tensor) -> BranchOutput:
        x = (log_mel * mask.unsqueeze(1).to(log_mel.dtype)).unsqueeze(1)  # (B,1,M,A)
        step_mask = mask
        for conv in self.convs:
            # re-mask after each conv: a padded frame next to a valid one would otherwise turn
            # non-zero (bias + the neighbour) and leak into the valid frame through the max pool
            x = torch.relu(conv(x)) * step_mask[:, None, None, :].to(x.dtype)
            x = F.max_pool2d(x, 2, ceil_mode=True)
            step_mask = F.max_pool1d(step_mask.unsqueeze(1).float(), 2, 2, ceil_mode=True).squeeze(1).bool()
        batch, channels, freq, frames = x.shape  # (B,C,M',A')
        steps = x.permute(0, 3, 1, 2).reshape(batch, frames, channels * freq)  # (B,A',C*M')
        step_mask = step_mask[:, :frames]
        states = self.dropout(self.lstm(self.frame_proj(steps), step_mask))
        context, weights = self.pooling(states, step_mask)
        return BranchOutput(context=context, sequence=states, sequence_mask=step_mask, weights=weights)
