"""EncoderTop: the top k transformer layers of the text encoder, fine-tuned as part of SentimentNet.

Fine-tuning all of MiniLM on two CPU cores is hours per epoch; fine-tuning only its top k layers
on cached hidden states of layer L-k (``model.features`` caches layer 4 of 6) costs a few times the
CNN/LSTM.  This module holds trainable copies of those k layers; the layers below stay frozen in
the encoder package and run in the Scorer (``TextEncoder.hidden_at``) or once into the cache.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn

from model.config import ModelConfig


class EncoderTop(nn.Module):
    """hidden (B,T,D) of encoder layer L-k + attention mask (B,T) -> last-layer token vectors (B,T,D)."""

    def __init__(self, layers: nn.ModuleList, hf_config: Any) -> None:
        super().__init__()
        self.layers = layers
        self.hf_config = hf_config

    @classmethod
    def from_encoder(cls, encoder: Any, k: int) -> EncoderTop:
        """Trainable copies of ``encoder``'s top ``k`` layers (a ``model.encoders.TextEncoder``)."""
        stack = encoder.model.encoder.layer
        if not 1 <= k <= len(stack):
            raise ValueError(f"finetune_layers must be in 1..{len(stack)}, got {k}")
        layers = nn.ModuleList(copy.deepcopy(layer) for layer in stack[len(stack) - k :])
        for param in layers.parameters():
            param.requires_grad_(True)
        return cls(layers, encoder.model.config)

    @classmethod
    def from_config(cls, config: ModelConfig) -> EncoderTop:
        """Build from the packaged encoder named in ``config`` (weights then come from a checkpoint)."""
        from model.encoders import TextEncoder

        return cls.from_encoder(TextEncoder(None if config.text_encoder == "minilm-l6" else config.text_encoder),
                                config.finetune_layers)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        # a row without text would attend to nothing (NaN): let it see its first slot, then zero it
        safe_mask = mask.clone()
        safe_mask[:, 0] = True
        attention = create_bidirectional_mask(config=self.hf_config, inputs_embeds=hidden,
                                              attention_mask=safe_mask.long())
        for layer in self.layers:
            hidden = layer(hidden, attention)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)
