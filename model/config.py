"""ModelConfig: every choice that shapes the network, in one dataclass saved inside each checkpoint.

Why one dataclass: a checkpoint must rebuild exactly the network it was trained as, without the
command-line flags of the run that made it (the nanoGPT/torchvision habit).  Ablations flip one field
(``fusion``, ``text_cnn``, ``pooling``, ``modalities``) and keep the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

MODALITIES: tuple[str, str, str] = ("text", "visual", "audio")
"""Column order of every per-modality tensor (``present``, ``modality_weights``)."""

FUSIONS = ("concat", "gmu", "lowrank", "crossattn")
POOLINGS = ("attention", "mean", "max")
CONTEXT_NORMS = ("l2", "batch", "none")


@dataclass
class ModelConfig:
    """Hyper-parameters of SentimentNet; defaults follow the seed paper, section 4.2-4.9."""

    # which modality branches exist at all (a subset of MODALITIES, in that order)
    modalities: tuple[str, ...] = ("text", "visual")
    fusion: str = "concat"
    # text branch: encoder token vectors -> Conv1d{3,4,5} -> max pool -> BiLSTM -> pooling
    text_encoder: str = "minilm-l6"
    text_dim: int = 384
    text_cnn: bool = True
    cnn_kernel_sizes: tuple[int, ...] = (3, 4, 5)
    cnn_filters: int = 100
    cnn_pool: int = 2
    text_hidden: int = 256
    pooling: str = "attention"
    attention_dim: int = 128
    # top encoder layers fine-tuned on top of cached hidden states (0 = frozen last layer)
    finetune_layers: int = 0
    # visual branch: pooled backbone vector -> FC; several frames -> BiLSTM -> attention
    visual_encoder: str = "efficientnet_lite0"
    visual_dim: int = 1280
    visual_hidden: int = 128
    # audio branch: log-mel -> 2-D CNN -> BiLSTM -> attention
    audio_mels: int = 64
    audio_sample_rate: int = 16000
    audio_channels: int = 32
    audio_hidden: int = 128
    # fusion and heads
    context_norm: str = "l2"
    fusion_dim: int = 512
    head_dim: int = 128
    lowrank_rank: int = 4
    crossattn_dim: int = 128
    crossattn_heads: int = 4
    dropout: float = 0.3
    input_dropout: float = 0.1
    intensity_weight: float = 0.1
    class_weights: tuple[float, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        self.cnn_kernel_sizes = tuple(self.cnn_kernel_sizes)
        if self.class_weights is not None:
            self.class_weights = tuple(float(w) for w in self.class_weights)
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {self.modalities}")
        self.modalities = tuple(m for m in MODALITIES if m in self.modalities)
        for name, value, allowed in (
            ("fusion", self.fusion, FUSIONS),
            ("pooling", self.pooling, POOLINGS),
            ("context_norm", self.context_norm, CONTEXT_NORMS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.cnn_pool < 1:
            raise ValueError("cnn_pool must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so a checkpoint loads with ``weights_only=True``."""
        data = asdict(self)
        data["modalities"] = list(self.modalities)
        data["cnn_kernel_sizes"] = list(self.cnn_kernel_sizes)
        if self.class_weights is not None:
            data["class_weights"] = list(self.class_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from ``to_dict`` output; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
