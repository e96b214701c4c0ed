"""ONNX Runtime for the frozen encoders on a CPU: the same fp32 weights, a faster engine.

The text encoder (MiniLM-L6) and the picture encoder (EfficientNet-Lite0) never train while serving, and
on a CPU ONNX Runtime runs them faster than eager PyTorch (bench/RESULTS.md: ``bench/inference.py``
measures both in one run).  Each encoder is exported once, at first use, to
``$XDG_CACHE_HOME/sentistream/onnx`` (default ``~/.cache/sentistream/onnx``) under a name made of the
encoder's name, what part of it runs, a digest of its weights and the versions that shaped the file
(torch, transformers, onnxruntime, this module's format), and reused after that.

A cache file is trusted only when the sha256 written beside it matches: a file cut short by a crash, or
changed by anything else, is exported again.  A new file is written under a temporary name and moved into
place, so a reader never sees half of one; two processes exporting at once each write their own copy and
the last one wins (the other's next start re-exports).  If the export itself fails, the caller keeps
running the encoder in torch (one warning).

Sessions take their intra-op thread count from torch (``torch.get_num_threads()``, which the worker sets
from ``SENTISTREAM_TORCH_THREADS`` and which defaults to the usable cores), with every graph optimisation
on; a session is made per thread count, so changing torch's threads later changes ONNX Runtime's too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx")
"""``auto``: ONNX Runtime on a CPU (faster there, bench/RESULTS.md), torch on a GPU."""
FORMAT_VERSION = 1
"""Bump when the export changes (inputs, outputs, opset): older cache files are then never read."""
OPSET = 17


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def choose_runtime(requested: str, device: torch.device | str) -> str:
    """``torch`` or ``onnx`` for an encoder on ``device``: ``auto`` picks ONNX Runtime on a CPU where it is
    installed; on a GPU it is always torch (only the CPU build of ONNX Runtime is a dependency)."""
    if requested not in RUNTIMES:
        raise ValueError(f"encoder runtime must be one of {RUNTIMES}, not {requested!r}")
    if torch.device(device).type != "cpu":
        if requested == "onnx":
            logger.info("encoder runtime onnx is CPU only here: torch on %s", device)
        return "torch"
    if requested == "torch":
        return "torch"
    if not onnxruntime_available():
        if requested == "onnx":
            logger.warning("encoder runtime onnx asked for, but onnxruntime/onnx are not installed: torch")
        return "torch"
    return "onnx"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sentistream/onnx``, else ``~/.cache/sentistream/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "sentistream" / "onnx"


def weights_digest(module: nn.Module) -> str:
    """sha256 (first 16 hex digits) over every parameter and buffer: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def cache_key(name: str, part: str, module: nn.Module) -> str:
    """File stem for ``module`` exported as ``part`` of encoder ``name`` (weights and versions included)."""
    import onnxruntime
    import transformers

    versions = (f"torch{torch.__version__}-tf{transformers.__version__}-ort{onnxruntime.__version__}"
                f"-f{FORMAT_VERSION}-op{OPSET}")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}-{part}").strip("_")[:80]
    return f"{slug}-{weights_digest(module)}-{hashlib.sha256(versions.encode()).hexdigest()[:10]}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def cached_file_is_whole(path: Path) -> bool:
    """The file exists and its sha256 is the one recorded beside it when it was written."""
    sidecar = _sidecar(path)
    if not path.is_file() or not sidecar.is_file():
        return False
    try:
        return sidecar.read_text().strip() == file_sha256(path)
    except OSError:
        return False


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def export(module: nn.Module, example: tuple[Tensor, ...], path: Path, input_names: Sequence[str],
           output_name: str, dynamic_axes: Mapping[str, Mapping[int, str]]) -> Path:
    """Export ``module`` (in eval mode) to ``path`` via a temporary file, then record its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    modes = {sub: sub.training for sub in module.modules()}  # each submodule's own mode, restored after
    module.eval()  # the exporter restores the mode it found, so it must find eval (dropout off)
    try:
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            import warnings

            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer warnings about Python branches: checked by tests
                torch.onnx.export(module, example, str(tmp), dynamo=False, input_names=list(input_names),
                                  output_names=[output_name], dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
                                  opset_version=OPSET, do_constant_folding=True)
        finally:
            hf_logging.set_verbosity(verbosity)
        checksum = file_sha256(tmp)
        os.replace(tmp, path)
        _atomic_write_text(_sidecar(path), checksum + "\n")
    finally:
        for sub, training in modes.items():
            sub.training = training
        tmp.unlink(missing_ok=True)
    return path


class OnnxEncoder:
    """One exported encoder graph and its ONNX Runtime sessions (one per intra-op thread count).

    ``__call__`` takes and returns torch tensors on the CPU; a pickled or deep-copied instance keeps the
    path and opens its own sessions when first called."""

    def __init__(self, path: Path, input_names: Sequence[str]) -> None:
        self.path = Path(path)
        self.input_names = tuple(input_names)
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.session()  # load now: a file ONNX Runtime cannot read fails here, not mid-batch

    def session(self) -> Any:
        import onnxruntime as ort

        threads = max(1, torch.get_num_threads())
        found = self._sessions.get(threads)
        if found is not None:
            return found
        with self._lock:
            if threads not in self._sessions:
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                # No busy-waiting between operators: the cores are shared with picture decoding,
                # tokenising and the rest of the worker.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.log_severity_level = 3
                self._sessions[threads] = ort.InferenceSession(str(self.path), options,
                                                               providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    def __call__(self, *inputs: Tensor) -> Tensor:
        feed = {name: np.ascontiguousarray(value.detach().cpu().numpy())
                for name, value in zip(self.input_names, inputs, strict=True)}
        return torch.from_numpy(self.session().run(None, feed)[0])

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "input_names": self.input_names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.input_names = state["path"], state["input_names"]
        self._sessions, self._lock = {}, threading.Lock()


def load_or_export(name: str, part: str, module: nn.Module, example: tuple[Tensor, ...],
                   input_names: Sequence[str], output_name: str, dynamic_axes: Mapping[str, Mapping[int, str]],
                   cache_dir: Path | None = None) -> OnnxEncoder | None:
    """The cached graph for ``module`` (exported now if missing or not whole); None, with one warning, when
    exporting or loading fails (the caller then runs ``module`` in torch)."""
    try:
        path = (cache_dir or default_cache_dir()) / f"{cache_key(name, part, module)}.onnx"
        if cached_file_is_whole(path):
            try:
                return OnnxEncoder(path, input_names)
            except Exception as error:  # noqa: BLE001 - whole but unreadable (other build): export again
                logger.info("onnx cache %s unreadable (%s): exporting again", path.name, error)
        elif path.exists():
            logger.info("onnx cache %s is not whole (checksum): exporting again", path.name)
        export(module, example, path, input_names, output_name, dynamic_axes)
        return OnnxEncoder(path, input_names)
    except Exception as error:  # noqa: BLE001 - any export problem: the torch encoder still works
        logger.warning("%s %s: ONNX export failed (%s: %s); running it in torch", name, part,
                       type(error).__name__, str(error).splitlines()[0][:200] if str(error) else "")
        return None


def quantized_int8(encoder: OnnxEncoder) -> OnnxEncoder | None:
    """``encoder``'s graph with int8 weights (per output channel) for every operator ONNX Runtime quantises
    dynamically (MatMul, the embedding Gather, ...), activations quantised on the fly, cached beside it like
    an export; None, with one warning, when quantising fails.  Text encoder, TweetEval validation macro
    recall: -0.4 point this way, -0.8 with the MatMuls alone, -3.2 with torch's per-tensor int8
    (bench/RESULTS.md)."""
    path = encoder.path.with_name(encoder.path.stem + "-int8pc.onnx")
    try:
        if cached_file_is_whole(path):
            try:
                return OnnxEncoder(path, encoder.input_names)
            except Exception as error:  # noqa: BLE001 - whole but unreadable: quantise again
                logger.info("onnx cache %s unreadable (%s): quantising again", path.name, error)
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            quantize_dynamic(str(encoder.path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
            checksum = file_sha256(tmp)
            os.replace(tmp, path)
            _atomic_write_text(_sidecar(path), checksum + "\n")
        finally:
            tmp.unlink(missing_ok=True)
        return OnnxEncoder(path, encoder.input_names)
    except Exception as error:  # noqa: BLE001 - the fp32 graph still works
        logger.warning("%s: int8 quantisation failed (%s: %s); running it in fp32", encoder.path.name,
                       type(error).__name__, str(error).splitlines()[0][:200] if str(error) else "")
        return None


class TokenVectors(nn.Module):
    """What gets exported of a Hugging Face encoder: (input_ids, attention_mask) (B,T) -> the output of
    layer ``layer`` (B,T,D) (``num_layers``: the last layer)."""

    def __init__(self, model: nn.Module, layer: int, num_layers: int) -> None:
        super().__init__()
        self.model = model
        self.layer = layer
        self.num_layers = num_layers

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        if self.layer == self.num_layers:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return output.hidden_states[self.layer]
