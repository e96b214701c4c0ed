"""Save and load SentimentNet checkpoints that carry their own config and model version.

A checkpoint rebuilds the exact network without the training command's flags: it stores the
``ModelConfig`` (plain types), the state dict (fp16 by default: half the size, and the scorer runs
in fp32/bf16 anyway), validation metrics, and a version string that every ``SentimentResult``
repeats so each stored score can be traced to the weights that produced it.

It never contains pretrained encoder or backbone weights: those load from their packages.  The one
exception is ``finetune_layers > 0``, where the fine-tuned top encoder layers are the model's own
trained weights and are stored (a few MB); the layers below come from the package.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.checkpoint_error import CheckpointError
from model.config import ModelConfig
from model.network import SentimentNet

__all__ = ["DEFAULT_CHECKPOINT", "FORMAT_VERSION", "CheckpointError", "build_network", "load", "model_version",
           "read_payload", "save"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "sentistream-default.pt"
REQUIRED_KEYS = ("format_version", "model_version", "config", "state_dict")
_WEIGHTS_ONLY_REFUSAL = "Weights only load failed"
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _load_problem(error: Exception) -> str:
    """What ``torch.load(..., weights_only=True)`` refused, in words.

    torch's own message advises re-running with ``weights_only=False``; that would execute whatever
    the file holds, so only the unpickler's finding is passed on."""
    text = str(error)
    if isinstance(error, OSError):
        return f"it cannot be read ({_one_line(error)})"
    found = _REFUSED_GLOBAL.search(text)
    if found:
        return (f"it holds a Python object ({found.group(1)}) where only tensors and plain data belong; "
                "it was refused, not run (checkpoints load with weights_only=True)")
    if _WEIGHTS_ONLY_REFUSAL in text:
        detail = text.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation", 1)[0]
        return f"it is truncated or not a PyTorch checkpoint (unpickler: {' '.join(detail.split())[:200]})"
    return f"it is truncated or not a PyTorch checkpoint ({_one_line(error)})"


def _one_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one short log line (torch's messages span many lines)."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:10]


def _plain(value: Any) -> Any:
    """Metrics and notes as plain Python types, so the checkpoint loads with ``weights_only=True``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def model_version(config: ModelConfig, state: dict[str, torch.Tensor]) -> str:
    """``sentistream-<fusion>-<modalities>-<digest of the weights>``: the same weights, the same name."""
    modalities = "+".join(config.modalities)
    return f"sentistream-{config.fusion}-{modalities}-{_state_digest(state)}"


def build_network(config: ModelConfig, encoder_top_factory: Any = None) -> SentimentNet:
    """SentimentNet for ``config``; ``encoder_top_factory(config)`` builds fine-tuned encoder layers."""
    encoder_top: nn.Module | None = None
    if config.finetune_layers > 0:
        if encoder_top_factory is None:
            from model.encoder_top import EncoderTop

            encoder_top_factory = EncoderTop.from_config
        encoder_top = encoder_top_factory(config)
    return SentimentNet(config, encoder_top)


def save(path: Path | str, net: SentimentNet, config: ModelConfig, metrics: dict[str, Any] | None = None,
         extra: dict[str, Any] | None = None, half: bool = True) -> str:
    """Write a checkpoint atomically (temp file + rename); return its model version string."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    version = model_version(config, state)
    payload = {
        "format_version": FORMAT_VERSION,
        "model_version": version,
        "config": config.to_dict(),
        "state_dict": state,
        "metrics": _plain(metrics or {}),
        "extra": _plain(extra or {}),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, temp_name)
        os.chmod(temp_name, 0o644)  # mkstemp makes it private; a shipped checkpoint is for everyone to read
        os.replace(temp_name, path)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    logger.info("saved %s (%s, %.1f MB)", path, version, path.stat().st_size / 1e6)
    return version


def read_payload(path: Path | str | None = None,
                 map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint file's checked contents, without building the network.

    Loaded with ``weights_only=True``: only tensors and plain data are ever unpickled, so a
    malicious file cannot run code.  Everything that makes the file unusable (a directory, empty,
    truncated, random bytes, foreign objects, another format version, missing keys) raises one
    ``CheckpointError`` naming the file and the fix; a missing file raises ``FileNotFoundError``
    (the worker then stores posts unscored when no checkpoint was asked for).
    """
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if path.is_dir():
        raise CheckpointError(path, "it is a directory, not a checkpoint file")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise CheckpointError(path, f"it cannot be read ({_one_line(error)})") from error
    if size == 0:
        raise CheckpointError(path, "the file is empty (0 bytes)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to parse the file is a corrupt checkpoint
        raise CheckpointError(path, _load_problem(error)) from error
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"it holds a {type(payload).__name__}, not a sentistream checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            path, f"its format version is {payload.get('format_version')!r}, this sentistream reads "
            f"format {FORMAT_VERSION}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(path, f"it lacks {', '.join(missing)}")
    state = payload["state_dict"]
    if not isinstance(payload["config"], dict) or not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise CheckpointError(path, "its config or state_dict is not a mapping of names to values/tensors")
    return payload


def load(path: Path | str | None = None, map_location: str | torch.device = "cpu",
         encoder_top_factory: Any = None) -> tuple[SentimentNet, ModelConfig, dict[str, Any]]:
    """Rebuild the network from a checkpoint -> (net in eval mode, fp32; config; meta).

    ``meta`` holds model_version, metrics, extra, created, torch_version.  ``path=None`` loads the
    packaged default checkpoint.
    """
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    payload = read_payload(path, map_location)
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise CheckpointError(path, f"its config is not valid ({_one_line(error)})") from error
    try:
        net = build_network(config, encoder_top_factory)
    except (TypeError, ValueError) as error:  # e.g. a width that is not a number
        raise CheckpointError(path, f"its config does not build a network ({_one_line(error)})") from error
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:  # missing or unexpected keys, shape mismatches
        raise CheckpointError(
            path, f"its weights do not fit the network its config describes ({_one_line(error)})"
        ) from error
    net.eval()
    meta = {key: payload.get(key) for key in ("model_version", "metrics", "extra", "created", "torch_version")}
    return net, config, meta
