"""Fusion of per-modality context vectors into one vector for the heads (seed paper 4.4).

Every fusion takes the presence mask (B,n): most posts in a social feed have no image and none has
labelled audio, so a missing modality is the normal case, not an error.  An absent modality's
context is exactly zero before fusion and gets zero weight, so what sits in its (empty) input slot
cannot change the result: a text-only post scores the same with or without an empty image slot.

- ``ConcatFusion``: [c_text; c_vis; c_audio] -> Dense 512 -> LayerNorm -> ReLU -> Dropout ->
  Dense 128 -> LayerNorm -> ReLU (the paper's baseline).
- ``GatedFusion``: Gated Multimodal Unit generalised to n modalities: h_m = tanh(W_m c_m), gates
  z = softmax over present modalities of W_z [c_1; ...; c_n] (one gate per modality and unit),
  fused = sum_m z_m * h_m.  The gate means are the per-modality weights.
- ``LowRankFusion``: low-rank tensor fusion (Liu et al. 2018): the outer product of [c_m; 1] over
  modalities, contracted with a rank-r factorised weight, without building the outer product.
- ``CrossAttentionFusion``: MulT style: each modality's sequence attends to the other modalities'
  sequences (residual, layer norm, feed-forward), is mean-pooled, and an attention over modalities
  combines them; its weights are the per-modality weights.

All return (fused (B, head_dim), modality_weights (B, n)).  Context normalisation (L2 or masked
batch norm) is ``ContextNorm``, applied by the network before fusion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import ModelConfig
from model.pooling import AdditiveAttention, masked_softmax


def _present_uniform(present: Tensor) -> Tensor:
    """Equal weight over present modalities: the honest weights of fusions that have no gate."""
    presentf = present.float()
    return presentf / presentf.sum(dim=1, keepdim=True).clamp(min=1.0)


def _mlp_block(input_dim: int, output_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(input_dim, output_dim), nn.LayerNorm(output_dim), nn.ReLU(), nn.Dropout(dropout))


class ContextNorm(nn.Module):
    """L2 normalisation (times a learned scale) or batch norm over the present rows only.

    Batch statistics over rows where the modality is absent would be statistics of zeros, so the
    batch-norm variant uses the present rows alone.  Absent rows come out as exact zeros.
    """

    def __init__(self, mode: str, dim: int) -> None:
        super().__init__()
        self.mode = mode
        if mode == "l2":
            self.scale = nn.Parameter(torch.tensor(math.sqrt(dim)))
        elif mode == "batch":
            self.norm = nn.BatchNorm1d(dim)

    def forward(self, context: Tensor, present: Tensor) -> Tensor:
        """context (B,d), present (B,) bool -> (B,d)."""
        if self.mode == "l2":
            out = F.normalize(context, dim=-1) * self.scale
        elif self.mode == "batch":
            out = torch.zeros_like(context)
            rows = present.nonzero(as_tuple=True)[0]
            if rows.numel() > 0:
                use_batch_stats = self.training and rows.numel() > 1
                out[rows] = F.batch_norm(
                    context[rows],
                    self.norm.running_mean,
                    self.norm.running_var,
                    self.norm.weight,
                    self.norm.bias,
                    training=use_batch_stats,
                    momentum=self.norm.momentum,
                    eps=self.norm.eps,
                )
        else:
            out = context
        return out * present.unsqueeze(-1).to(out.dtype)


class ConcatFusion(nn.Module):
    """Concatenate + MLP (the paper's baseline fusion)."""

    def __init__(self, config: ModelConfig, dims: list[int]) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            _mlp_block(sum(dims), config.fusion_dim, config.dropout),
            _mlp_block(config.fusion_dim, config.head_dim, config.dropout),
        )

    def forward(self, contexts: list[Tensor], sequences: list[tuple[Tensor, Tensor]], present: Tensor
                ) -> tuple[Tensor, Tensor]:
        return self.mlp(torch.cat(contexts, dim=-1)), _present_uniform(present)


class GatedFusion(nn.Module):
    """Gated Multimodal Unit over n modalities (Arevalo et al. 2017, softmax gates for n > 2)."""

    def __init__(self, config: ModelConfig, dims: list[int]) -> None:
        super().__init__()
        hidden = config.fusion_dim
        self.hidden = hidden
        self.transforms = nn.ModuleList(nn.Linear(d, hidden) for d in dims)
        self.gate = nn.Linear(sum(dims), hidden * len(dims))
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Dropout(config.dropout),
                                  _mlp_block(hidden, config.head_dim, config.dropout))

    def forward(self, contexts: list[Tensor], sequences: list[tuple[Tensor, Tensor]], present: Tensor
                ) -> tuple[Tensor, Tensor]:
        hidden = torch.stack([torch.tanh(t(c)) for t, c in zip(self.transforms, contexts, strict=True)], dim=1)
        logits = self.gate(torch.cat(contexts, dim=-1)).view(-1, len(contexts), self.hidden)  # (B,n,H)
        gates = masked_softmax(logits, present.unsqueeze(-1).expand_as(logits), dim=1)
        fused = (gates * hidden).sum(dim=1)  # (B,H)
        return self.head(fused), gates.mean(dim=-1)


class LowRankFusion(nn.Module):
    """Low-rank multimodal fusion: sum_r w_r * prod_m ([c_m; 1] W_m^(r)) + b."""

    def __init__(self, config: ModelConfig, dims: list[int]) -> None:
        super().__init__()
        hidden, rank = config.fusion_dim, config.lowrank_rank
        self.factors = nn.ParameterList(
            nn.Parameter(torch.empty(rank, d + 1, hidden)) for d in dims
        )
        for factor in self.factors:
            nn.init.xavier_normal_(factor)
        self.rank_weights = nn.Parameter(torch.full((rank,), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.ReLU(), nn.Dropout(config.dropout),
                                  _mlp_block(hidden, config.head_dim, config.dropout))

    def forward(self, contexts: list[Tensor], sequences: list[tuple[Tensor, Tensor]], present: Tensor
                ) -> tuple[Tensor, Tensor]:
        product = None
        for factor, context in zip(self.factors, contexts, strict=True):
            ones = context.new_ones(context.shape[0], 1)
            projected = torch.einsum("bd,rdh->rbh", torch.cat([context, ones], dim=-1), factor)  # (r,B,H)
            product = projected if product is None else product * projected
        fused = torch.einsum("r,rbh->bh", self.rank_weights, product) + self.bias
        return self.head(fused), _present_uniform(present)


class CrossModalAttention(nn.Module):
    """Multi-head attention of one sequence (queries) over another (keys/values), mask-aware.

    Written out rather than ``nn.MultiheadAttention`` because a post may have no other modality at
    all: then every key is masked and the output must be zero, not NaN.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor, keys: Tensor, key_mask: Tensor) -> Tensor:
        """queries (B,Lq,d), keys (B,Lk,d), key_mask (B,Lk) -> (B,Lq,d)."""
        batch, lq, dim = queries.shape
        head_dim = dim // self.heads

        def split(x: Tensor) -> Tensor:
            return x.view(batch, -1, self.heads, head_dim).transpose(1, 2)  # (B,h,L,dh)

        q, k, v = split(self.query(queries)), split(self.key(keys)), split(self.value(keys))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)  # (B,h,Lq,Lk)
        weights = masked_softmax(scores, key_mask.view(batch, 1, 1, -1).expand_as(scores))
        attended = (self.dropout(weights) @ v).transpose(1, 2).reshape(batch, lq, dim)
        return self.out(attended)


class CrossAttentionFusion(nn.Module):
    """MulT-style fusion: each modality attends to all the others, then attention over modalities."""

    def __init__(self, config: ModelConfig, dims: list[int], sequence_dims: list[int]) -> None:
        super().__init__()
        dim = config.crossattn_dim
        self.projections = nn.ModuleList(nn.Linear(d, dim) for d in sequence_dims)
        self.context_projections = nn.ModuleList(nn.Linear(d, dim) for d in dims)
        self.modality_embedding = nn.Parameter(torch.zeros(len(dims), dim))
        self.cross = nn.ModuleList(CrossModalAttention(dim, config.crossattn_heads, config.dropout) for _ in dims)
        self.norm1 = nn.ModuleList(nn.LayerNorm(dim) for _ in dims)
        self.ffn = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(2 * dim, dim))
            for _ in dims
        )
        self.norm2 = nn.ModuleList(nn.LayerNorm(dim) for _ in dims)
        self.modality_attention = AdditiveAttention(dim, config.attention_dim)
        self.head = nn.Sequential(nn.Dropout(config.dropout), _mlp_block(dim, config.head_dim, config.dropout))

    def forward(self, contexts: list[Tensor], sequences: list[tuple[Tensor, Tensor]], present: Tensor
                ) -> tuple[Tensor, Tensor]:
        projected = []
        masks = []
        for index, (sequence, mask) in enumerate(sequences):
            mask = mask & present[:, index : index + 1]
            projected.append(self.projections[index](sequence) + self.modality_embedding[index])
            masks.append(mask)
        pooled = []
        for index in range(len(sequences)):
            others = [i for i in range(len(sequences)) if i != index]
            x = projected[index]
            if others:
                keys = torch.cat([projected[i] for i in others], dim=1)
                key_mask = torch.cat([masks[i] for i in others], dim=1)
                x = self.norm1[index](x + self.cross[index](x, keys, key_mask))
            else:
                x = self.norm1[index](x)
            x = self.norm2[index](x + self.ffn[index](x))
            maskf = masks[index].unsqueeze(-1).to(x.dtype)
            mean = (x * maskf).sum(dim=1) / maskf.sum(dim=1).clamp(min=1.0)
            pooled.append(mean + self.context_projections[index](contexts[index]))
        stacked = torch.stack(pooled, dim=1)  # (B,n,d)
        fused, weights = self.modality_attention(stacked, present)
        return self.head(fused), weights


def build_fusion(config: ModelConfig, dims: list[int], sequence_dims: list[int]) -> nn.Module:
    """The fusion module named by ``config.fusion`` for modalities with context sizes ``dims``."""
    if config.fusion == "concat":
        return ConcatFusion(config, dims)
    if config.fusion == "gmu":
        return GatedFusion(config, dims)
    if config.fusion == "lowrank":
        return LowRankFusion(config, dims)
    if config.fusion == "crossattn":
        return CrossAttentionFusion(config, dims, sequence_dims)
    raise ValueError(f"unknown fusion {config.fusion!r}")
