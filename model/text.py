"""TextBranch: encoder token vectors -> Conv1d{3,4,5} -> ReLU -> max pool -> BiLSTM -> attention.

Seed paper 4.2 (option A) and 4.11.1: the 1-D convolutions pick up n-gram cues ("so great",
"worst ever"), max pooling with a stride keeps the most salient of neighbouring n-gram features and
halves the sequence, the BiLSTM relates them across the tweet, and additive attention turns the
sequence into one context vector while telling us which tokens it relied on.

The encoder itself is not part of this module: training runs on cached frozen token vectors (see
``model.features``) and serving runs the encoder in ``model.scorer``; both hand this branch the same
(B,T,D_t) tensor.  When ``finetune_layers > 0`` the top encoder layers are passed in as
``encoder_top`` and run here on cached hidden states of the layer below them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import ModelConfig
from model.pooling import MaskedBiLSTM, SequencePooling


@dataclass
class BranchOutput:
    """What every modality branch returns.

    context (B,H) pooled vector; sequence (B,L,H_seq) and sequence_mask (B,L) for cross-modal
    attention; weights (B,L) the pooling weights over the branch's own steps.
    """

    context: Tensor
    sequence: Tensor
    sequence_mask: Tensor
    weights: Tensor


class TextCNN(nn.Module):
    """Parallel Conv1d over token vectors, one per kernel width, each keeping the sequence length.

    Padded tokens are zeroed before the convolution, so a token near the end of a short tweet sees
    the same zeros whether the batch pads it or not.
    """

    def __init__(self, input_dim: int, kernel_sizes: tuple[int, ...], filters: int) -> None:
        super().__init__()
        self.kernel_sizes = kernel_sizes
        self.convs = nn.ModuleList(nn.Conv1d(input_dim, filters, k) for k in kernel_sizes)
        self.output_dim = filters * len(kernel_sizes)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """tokens (B,T,D), mask (B,T) -> feature maps (B,T,F*K) after ReLU, zero at padding."""
        x = (tokens * mask.unsqueeze(-1).to(tokens.dtype)).transpose(1, 2)  # (B,D,T)
        maps = []
        for kernel, conv in zip(self.kernel_sizes, self.convs, strict=True):
            padded = F.pad(x, ((kernel - 1) // 2, kernel // 2))
            maps.append(conv(padded))  # (B,F,T)
        features = torch.relu(torch.cat(maps, dim=1)).transpose(1, 2)  # (B,T,F*K)
        return features * mask.unsqueeze(-1).to(features.dtype)


class TextBranch(nn.Module):
    """Token vectors (B,T,D_t) + mask (B,T) -> BranchOutput with context (B, 2*text_hidden)."""

    def __init__(self, config: ModelConfig, encoder_top: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder_top = encoder_top
        self.input_dropout = nn.Dropout(config.input_dropout)
        if config.text_cnn:
            self.cnn: TextCNN | None = TextCNN(config.text_dim, config.cnn_kernel_sizes, config.cnn_filters)
            lstm_input = self.cnn.output_dim
            self.pool = config.cnn_pool
        else:
            self.cnn = None
            lstm_input = config.text_dim
            self.pool = 1
        self.lstm = MaskedBiLSTM(lstm_input, config.text_hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.pooling = SequencePooling(config.pooling, self.lstm.output_dim, config.attention_dim)
        self.output_dim = self.lstm.output_dim

    def forward(self, tokens: Tensor, mask: Tensor) -> BranchOutput:
        if self.encoder_top is not None:
            tokens = self.encoder_top(tokens, mask)
        x = self.input_dropout(tokens)
        step_mask = mask
        if self.cnn is not None:
            x = self.cnn(x, mask)  # (B,T,F*K)
            if self.pool > 1:
                # ReLU outputs are >= 0 and padding is 0, so a window's max ignores its padding.
                x = F.max_pool1d(x.transpose(1, 2), self.pool, self.pool, ceil_mode=True).transpose(1, 2)
                step_mask = (
                    F.max_pool1d(mask.unsqueeze(1).float(), self.pool, self.pool, ceil_mode=True)
                    .squeeze(1)
                    .bool()
                )  # (B,T')
        states = self.dropout(self.lstm(x, step_mask))  # (B,T',2H)
        context, weights = self.pooling(states, step_mask)
        return BranchOutput(context=context, sequence=states, sequence_mask=step_mask, weights=weights)

    def token_weights(self, step_weights: Tensor, mask: Tensor) -> Tensor:
        """Spread pooled-step weights (B,T') back over the tokens they cover -> (B,T), summing to 1."""
        if self.pool > 1:
            step_weights = step_weights.repeat_interleave(self.pool, dim=1)[:, : mask.shape[1]]
        per_token = step_weights * mask.to(step_weights.dtype)
        return per_token / per_token.sum(dim=1, keepdim=True).clamp(min=1e-12)
