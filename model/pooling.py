"""Sequence -> vector: additive attention (seed paper 4.3), masked mean/max pooling, and a masked BiLSTM.

Every branch (text, visual frames, audio frames) ends in "BiLSTM over a padded sequence, then pool";
they share these blocks so that padding is handled one way everywhere: padded steps never reach the
LSTM (packed sequences) and never receive attention weight, so a post scores the same alone or in
a batch beside longer posts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the True positions of ``mask``; a row with no True position gets all zeros."""
    scores = scores.masked_fill(~mask, float("-inf"))
    any_valid = mask.any(dim=dim, keepdim=True)
    scores = torch.where(any_valid, scores, torch.zeros_like(scores))
    weights = torch.softmax(scores, dim=dim)
    return weights * mask.to(weights.dtype)


class AdditiveAttention(nn.Module):
    """score_t = v^T tanh(W h_t + b); alpha = softmax over valid steps; c = sum_t alpha_t h_t."""

    def __init__(self, input_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(input_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """states (B,L,H), mask (B,L) bool -> context (B,H), weights (B,L)."""
        scores = self.score(torch.tanh(self.proj(states))).squeeze(-1)  # (B,L)
        weights = masked_softmax(scores, mask)
        context = torch.bmm(weights.unsqueeze(1), states).squeeze(1)  # (B,H)
        return context, weights


class SequencePooling(nn.Module):
    """Attention, mean or max pooling over valid steps; returns (context, per-step weights).

    Mean pooling reports uniform weights; max pooling reports, per step, the share of feature
    dimensions whose maximum came from that step, so every mode yields a heatmap.
    """

    def __init__(self, mode: str, input_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.mode = mode
        self.attention = AdditiveAttention(input_dim, attention_dim) if mode == "attention" else None

    def forward(self, states: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.attention is not None:
            return self.attention(states, mask)
        maskf = mask.to(states.dtype).unsqueeze(-1)  # (B,L,1)
        counts = maskf.sum(dim=1).clamp(min=1.0)  # (B,1)
        if self.mode == "mean":
            context = (states * maskf).sum(dim=1) / counts
            return context, maskf.squeeze(-1) / counts
        filled = states.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        context, argmax = filled.max(dim=1)  # (B,H)
        has_any = mask.any(dim=1, keepdim=True)
        context = torch.where(has_any, context, torch.zeros_like(context))
        hits = torch.zeros_like(states[..., 0]).scatter_add_(
            1, argmax, torch.ones_like(argmax, dtype=states.dtype)
        )
        weights = hits / states.shape[-1] * mask.to(states.dtype)
        return context, weights


class MaskedBiLSTM(nn.Module):
    """A bidirectional LSTM that only ever sees each row's valid prefix (packed sequences).

    Rows with no valid step (a post without this modality) get zero outputs instead of an error.
    """

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, batch_first=True, bidirectional=True)
        self.output_dim = 2 * hidden

    def forward(self, inputs: Tensor, mask: Tensor) -> Tensor:
        """inputs (B,L,D), mask (B,L) bool, valid steps first -> outputs (B,L,2H), zero where masked."""
        batch, length, _ = inputs.shape
        lengths = mask.sum(dim=1)
        if batch == 0 or length == 0:
            return inputs.new_zeros(batch, length, self.output_dim)
        packed = pack_padded_sequence(
            inputs, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, _ = self.lstm(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=length)
        return outputs * mask.unsqueeze(-1).to(outputs.dtype)
