"""ImageBranch: pooled backbone vectors per frame -> FC; several frames -> BiLSTM -> attention.

Seed paper 4.2: a single image is its global pooled CNN vector through a small FC network; a video
is a sequence of per-frame vectors through a BiLSTM (128 per direction) and attention.  Both paths
produce vectors of the same size, chosen per post by how many valid frames it has, so one network
serves photo posts and video posts.  (The training data here has single images only: the frame
path exists and is tested for shapes, but is untrained in the shipped checkpoint.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.config import ModelConfig
from model.pooling import MaskedBiLSTM, SequencePooling
from model.text import BranchOutput


class ImageBranch(nn.Module):
    """visual (B,F,D_v) + mask (B,F) -> BranchOutput with context (B, 2*visual_hidden)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.output_dim = 2 * config.visual_hidden
        self.frame_fc = nn.Sequential(
            nn.Dropout(config.input_dropout),
            nn.Linear(config.visual_dim, self.output_dim),
            nn.ReLU(),
            nn.Dropout(config.dropout),
        )
        self.lstm = MaskedBiLSTM(self.output_dim, config.visual_hidden)
        self.pooling = SequencePooling(config.pooling, self.output_dim, config.attention_dim)

    def forward(self, frames: Tensor, mask: Tensor) -> BranchOutput:
        maskf = mask.unsqueeze(-1).to(frames.dtype)
        per_frame = self.frame_fc(frames) * maskf  # (B,F,H)
        counts = mask.sum(dim=1)  # (B,)
        # single image (or none): the FC vector of that one frame, weight 1 on it
        context = per_frame.sum(dim=1)  # (B,H)
        weights = mask.to(frames.dtype)
        sequence = per_frame
        multi = counts > 1
        if bool(multi.any()):
            states = self.lstm(per_frame, mask)  # (B,F,H)
            seq_context, seq_weights = self.pooling(states, mask)
            context = torch.where(multi.unsqueeze(-1), seq_context, context)
            weights = torch.where(multi.unsqueeze(-1), seq_weights, weights)
            sequence = torch.where(multi.view(-1, 1, 1), states, per_frame)
        return BranchOutput(context=context, sequence=sequence, sequence_mask=mask, weights=weights)
