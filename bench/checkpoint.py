"""Which checkpoint a benchmark measures: the given one, else the shipped one, else an untrained stand-in.

Speed does not depend on the weights, only on the architecture in the checkpoint's config, so until
the trained checkpoint ships a speed benchmark can run on an untrained ``SentimentNet(ModelConfig())``
saved to a temporary file.  Results say which one was used; accuracy never uses the stand-in.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STAND_IN = Path(tempfile.gettempdir()) / "sentistream-bench-untrained.pt"


@dataclass(frozen=True)
class ChosenCheckpoint:
    path: Path
    description: str
    trained: bool


def choose_checkpoint(path: Path | None) -> ChosenCheckpoint:
    from model.checkpoint import DEFAULT_CHECKPOINT

    if path is not None:
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        return ChosenCheckpoint(path, f"`{path}`", trained=True)
    if DEFAULT_CHECKPOINT.exists():
        return ChosenCheckpoint(DEFAULT_CHECKPOINT, f"shipped `{DEFAULT_CHECKPOINT.name}`", trained=True)
    return ChosenCheckpoint(untrained_stand_in(), "UNTRAINED stand-in with the default ModelConfig (the shipped "
                            "checkpoint did not exist yet; speed only depends on the architecture)", trained=False)


def untrained_stand_in() -> Path:
    """Save (once per machine) an untrained network of the default architecture."""
    if not STAND_IN.exists():
        import torch

        from model import checkpoint
        from model.config import ModelConfig

        torch.manual_seed(0)
        config = ModelConfig()
        checkpoint.save(STAND_IN, checkpoint.build_network(config), config, extra={"untrained": True})
        log.info("saved an untrained stand-in checkpoint to %s", STAND_IN)
    return STAND_IN
