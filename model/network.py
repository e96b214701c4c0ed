"""SentimentNet: modality branches -> context normalisation -> fusion -> two heads.

One ``forward`` for training and serving (the nanoGPT habit): it takes the batch dict of the model
contract (see ``model.features.collate_features`` and ``model.scorer``) and returns logits, an
intensity, per-modality weights, token attention and, when the batch carries labels, the multitask
loss.

Heads (seed paper 4.5): a 3-class softmax (negative, neutral, positive) and an intensity regression
on -3..+3 (3 * tanh of a linear unit).  A batch that brings ``intensity`` + ``intensity_mask`` (SemEval-2016
4C five-point labels x 1.5, see ``model.train``) trains it on those rows only; without them the target is
a label-derived proxy (``label_intensity_proxy``), how the shipped checkpoint was trained (model card).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.audio import AudioBranch
from model.config import MODALITIES, ModelConfig
from model.fusion import ContextNorm, build_fusion
from model.text import BranchOutput, TextBranch
from model.vision import ImageBranch

INTENSITY_RANGE = 3.0
PROXY_INTENSITY = (-1.5, 0.0, 1.5)
"""Label-derived intensity targets (negative, neutral, positive): the middle of each half of the
-3..+3 scale.  A proxy, not a measurement: used only where a run has no five-point data
(``--intensity-data none``); SemEval-2016 4C's labels replace it otherwise."""

_INPUT_KEYS = {"text": ("text", "text_mask"), "visual": ("visual", "visual_mask"), "audio": ("audio", "audio_mask")}


def label_intensity_proxy(labels: Tensor) -> Tensor:
    """Class indices (B,) -> proxy intensity targets (B,) float on the -3..+3 scale."""
    table = torch.tensor(PROXY_INTENSITY, device=labels.device)
    return table[labels]


@dataclass
class SentimentOutput:
    """What SentimentNet returns.

    logits (B,3); intensity (B,) in -3..+3; modality_weights (B,3) over (text, visual, audio),
    zero for absent or unbuilt modalities; token_attention (B,T) over the input tokens (sums to 1
    for a post with text); visual_attention (B,F) over frames; loss when labels were given.
    """

    logits: Tensor
    intensity: Tensor
    modality_weights: Tensor
    token_attention: Tensor
    visual_attention: Tensor | None = None
    loss: Tensor | None = None

    @property
    def probabilities(self) -> Tensor:
        return torch.softmax(self.logits.float(), dim=-1)


class SentimentNet(nn.Module):
    """The multimodal CNN-LSTM network of the seed paper, built from a ModelConfig."""

    def __init__(self, config: ModelConfig, encoder_top: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        branches: dict[str, nn.Module] = {}
        if "text" in config.modalities:
            branches["text"] = TextBranch(config, encoder_top)
        if "visual" in config.modalities:
            branches["visual"] = ImageBranch(config)
        if "audio" in config.modalities:
            branches["audio"] = AudioBranch(config)
        self.branches = nn.ModuleDict(branches)
        dims = [branches[m].output_dim for m in config.modalities]
        self.norms = nn.ModuleDict({m: ContextNorm(config.context_norm, d) for m, d in zip(config.modalities, dims, strict=True)})
        self.fusion = build_fusion(config, dims, dims)
        self.classifier = nn.Linear(config.head_dim, 3)
        self.intensity_head = nn.Linear(config.head_dim, 1)
        if config.class_weights is not None:
            self.register_buffer("class_weights", torch.tensor(config.class_weights, dtype=torch.float32))
        else:
            self.class_weights = None

    def _batch_size(self, batch: dict[str, Tensor]) -> int:
        for key in ("present", "label", "text", "visual", "audio"):
            if key in batch:
                return int(batch[key].shape[0])
        raise ValueError("batch has none of the keys present/label/text/visual/audio")

    def _run_branch(self, name: str, batch: dict[str, Tensor], present_column: Tensor, batch_size: int,
                    device: torch.device) -> tuple[BranchOutput, Tensor]:
        """Run one branch; a modality missing from the batch (or absent in every row) costs nothing."""
        data_key, mask_key = _INPUT_KEYS[name]
        branch = self.branches[name]
        if data_key in batch and mask_key in batch:
            mask = batch[mask_key].bool()
            present = present_column & mask.any(dim=1)
        else:
            mask = None
            present = torch.zeros(batch_size, dtype=torch.bool, device=device)
        if mask is None or not bool(present.any()):
            zeros = torch.zeros(batch_size, branch.output_dim, device=device)
            length = 1 if mask is None else mask.shape[1]
            empty = BranchOutput(
                context=zeros,
                sequence=torch.zeros(batch_size, 1, branch.output_dim, device=device),
                sequence_mask=torch.zeros(batch_size, 1, dtype=torch.bool, device=device),
                weights=torch.zeros(batch_size, length, device=device),
            )
            return empty, present
        data = batch[data_key]
        # rows without this modality never influence anything: their slot is masked out entirely
        mask = mask & present.unsqueeze(-1)
        return branch(data, mask), present

    def forward(self, batch: dict[str, Tensor]) -> SentimentOutput:
        batch_size = self._batch_size(batch)
        device = self.classifier.weight.device
        present_all = batch.get("present")
        if present_all is None:
            present_all = torch.ones(batch_size, len(MODALITIES), dtype=torch.bool, device=device)
        present_all = present_all.bool()
        contexts, sequences, present_columns = [], [], []
        outputs: dict[str, BranchOutput] = {}
        for name in self.config.modalities:
            column = present_all[:, MODALITIES.index(name)]
            output, present = self._run_branch(name, batch, column, batch_size, device)
            outputs[name] = output
            contexts.append(self.norms[name](output.context, present))
            sequences.append((output.sequence, output.sequence_mask & present.unsqueeze(-1)))
            present_columns.append(present)
        present = torch.stack(present_columns, dim=1)  # (B,n)
        fused, weights = self.fusion(contexts, sequences, present)
        logits = self.classifier(fused)  # (B,3)
        intensity = INTENSITY_RANGE * torch.tanh(self.intensity_head(fused).squeeze(-1))  # (B,)

        modality_weights = torch.zeros(batch_size, len(MODALITIES), device=device, dtype=weights.dtype)
        for column, name in enumerate(self.config.modalities):
            modality_weights[:, MODALITIES.index(name)] = weights[:, column]

        token_attention = self._token_attention(batch, outputs, batch_size, device)
        visual_attention = outputs["visual"].weights if "visual" in outputs else None
        loss = self.loss(logits, intensity, batch) if "label" in batch else None
        return SentimentOutput(logits, intensity, modality_weights, token_attention, visual_attention, loss)

    def _token_attention(self, batch: dict[str, Tensor], outputs: dict[str, BranchOutput], batch_size: int,
                         device: torch.device) -> Tensor:
        if "text" not in outputs or "text_mask" not in batch:
            length = batch["text_mask"].shape[1] if "text_mask" in batch else 0
            return torch.zeros(batch_size, length, device=device)
        branch: TextBranch = self.branches["text"]  # type: ignore[assignment]
        mask = batch["text_mask"].bool()
        weights = outputs["text"].weights
        if weights.shape[1] == mask.shape[1] and branch.pool == 1:
            return weights
        if weights.shape[1] == 1 and not bool(outputs["text"].sequence_mask.any()):
            return torch.zeros_like(mask, dtype=weights.dtype)
        return branch.token_weights(weights, mask)

    def loss(self, logits: Tensor, intensity: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Cross-entropy (class-weighted if configured) + intensity_weight * smooth-L1 on intensity.

        Multitask batches mix posts with only one of the two labels: a label < 0 has no class, and
        ``intensity_mask`` (B,) marks the rows whose ``intensity`` is real; each loss is the mean over
        its own labelled rows (0 when there are none).  Without an ``intensity`` key the regression
        target is the label-derived proxy for every row (the older, circular set-up).
        """
        labels = batch["label"].long()
        has_class = labels >= 0
        safe_labels = labels.clamp(min=0)
        if bool(has_class.all()):
            loss = F.cross_entropy(logits.float(), safe_labels, weight=self.class_weights)
        elif bool(has_class.any()):
            loss = F.cross_entropy(logits.float()[has_class], safe_labels[has_class], weight=self.class_weights)
        else:
            loss = logits.float().sum() * 0.0
        if self.config.intensity_weight > 0:
            target = batch.get("intensity")
            rows = batch.get("intensity_mask")
            if target is None:
                target, rows = label_intensity_proxy(safe_labels), has_class
            elif rows is None:
                rows = torch.ones_like(labels, dtype=torch.bool)
            rows = rows.bool()
            if bool(rows.any()):
                loss = loss + self.config.intensity_weight * F.smooth_l1_loss(
                    intensity.float()[rows], target.float()[rows])
        return loss
