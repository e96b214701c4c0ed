"""``sentistream model explain``: why the model scored a post the way it did (seed paper 4.7).

Three views, each answering a different question:
- token attention (HTML + PNG): which tokens the text branch's attention pooling relied on. The
  weights come from the network's own ``token_attention`` output (pooled CNN steps spread back over
  the tokens they cover); word pieces are merged into words and their weights summed.
- Grad-CAM (PNG overlay): which regions of the picture moved the predicted class. The gradient of
  the class logit flows through the whole network (fusion included) back to the last convolutional
  feature map of the visual backbone (``ImageEncoder.gradcam_layer``); channel weights are the
  spatially averaged gradients (Selvaraju et al., 2017). Drawn on the centre crop the backbone saw.
- ``--filters``: the n-grams that excite each text-CNN filter most over a dataset sample, and the
  filters whose activation differs most between gold classes, i.e. the phrases that drive sentiment.

Explanations are computed outside ``Scorer`` because Grad-CAM needs gradients, which serving
disables; the network, encoders and text preparation are the same objects, loaded from the same
checkpoint.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import v2 as transforms

from model import data
from model.config import MODALITIES, ModelConfig
from model.encoders import IMAGE_SIZE, RESIZE_SIZE, ImageEncoder, TextEncoder
from model.labels import LABELS
from model.plots import plot_gradcam_overlay, plot_token_attention
from model.progress import progress_bar

logger = logging.getLogger(__name__)

@dataclass
class Explainer:
    """A trained network with the encoders its checkpoint was built on, in eval mode."""

    net: nn.Module
    config: ModelConfig
    text_encoder: TextEncoder
    image_encoder: ImageEncoder | None
    model_version: str = ""

    @classmethod
    def from_checkpoint(cls, path: Path | str | None = None) -> Explainer:
        """Load the checkpoint (None: the packaged default) exactly as serving does.

        ``Scorer.from_checkpoint`` builds the network, its fine-tuned encoder layers and the
        encoders; the explainer reuses those objects, so what it explains is what is served.
        """
        from model.scorer import Scorer

        scorer = Scorer.from_checkpoint(path, device="cpu")
        return cls.from_network(
            scorer.net, scorer.config, scorer.model_version, scorer.text_encoder, scorer.image_encoder
        )

    @classmethod
    def from_network(
        cls,
        net: nn.Module,
        config: ModelConfig,
        model_version: str = "",
        text_encoder: TextEncoder | None = None,
        image_encoder: ImageEncoder | None = None,
    ) -> Explainer:
        """Wrap an in-memory network (tests, notebooks) with its encoders."""
        net.eval()
        text_encoder = text_encoder or TextEncoder(config.text_encoder)
        text_encoder.eval()
        if image_encoder is None and "visual" in config.modalities:
            image_encoder = ImageEncoder(config.visual_encoder)
        if image_encoder is not None:
            image_encoder.eval()
        return cls(net, config, text_encoder, image_encoder, model_version)

    # -- inputs ------------------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        """Texts -> (text features (B,T,D_t) as the network takes them, mask (B,T), input ids).

        With ``finetune_layers = k`` the network runs the top k encoder layers itself, so it takes
        the hidden states below them, as in training.
        """
        encoded = self.text_encoder.tokenize(list(texts))
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        with torch.no_grad():  # not inference_mode: Grad-CAM later runs autograd on these
            if self.config.finetune_layers > 0:
                layer = self.text_encoder.num_layers - self.config.finetune_layers
                features = self.text_encoder.hidden_at(ids, mask, layer)
            else:
                features = self.text_encoder(ids, mask)
        return features, mask.bool(), ids

    def batch(
        self, text_features: Tensor, text_mask: Tensor, visual: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The contract's batch dict for posts with text and, optionally, one picture each."""
        batch_size = text_features.shape[0]
        present = torch.zeros(batch_size, len(MODALITIES), dtype=torch.bool)
        present[:, 0] = text_mask.any(dim=1)
        batch = {"text": text_features, "text_mask": text_mask, "present": present}
        if visual is not None:
            batch["visual"] = visual.unsqueeze(1)  # (B,1,D_v): one frame
            batch["visual_mask"] = torch.ones(batch_size, 1, dtype=torch.bool)
            present[:, 1] = True
        elif "visual" in self.config.modalities:
            batch["visual"] = torch.zeros(batch_size, 1, self.config.visual_dim)
            batch["visual_mask"] = torch.zeros(batch_size, 1, dtype=torch.bool)
        return batch


# ---------------------------------------------------------------------------------------------
# one post: token attention and Grad-CAM
# ---------------------------------------------------------------------------------------------


@dataclass
class PostExplanation:
    """The model's reading of one post."""

    label: str
    probabilities: dict[str, float]
    modality_weights: dict[str, float]
    words: list[str]
    word_weights: np.ndarray
    gradcam: np.ndarray | None  # (h, w) in [0, 1] on the backbone's feature grid
    cropped_image: Image.Image | None  # the centre crop the backbone saw


def merge_word_pieces(tokens: Sequence[str], weights: Sequence[float]) -> tuple[list[str], np.ndarray]:
    """WordPiece tokens ("amaz", "##ing") -> words ("amazing"), summing their weights.

    Padding tokens are dropped; special tokens ([CLS], [SEP]) stay, since the attention may well sit
    on them and hiding that would flatter the explanation.
    """
    words: list[str] = []
    merged: list[float] = []
    for token, weight in zip(tokens, weights, strict=True):
        if token in ("[PAD]", "<pad>"):
            continue
        if token.startswith("##") and words:
            words[-1] += token[2:]
            merged[-1] += float(weight)
        else:
            words.append(token)
            merged.append(float(weight))
    return words, np.array(merged, dtype=np.float64)


def _centre_crop(image: Image.Image) -> Image.Image:
    """The picture as the backbone sees it at evaluation: resize 256 (bicubic), centre crop 224."""
    crop = transforms.Compose(
        [
            transforms.Resize(RESIZE_SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(IMAGE_SIZE),
        ]
    )
    return crop(image.convert("RGB"))


def explain_post(explainer: Explainer, text: str, image: Image.Image | None = None) -> PostExplanation:
    """Predict one post and explain it: token attention always, Grad-CAM when a picture is given."""
    features, mask, ids = explainer.encode_texts([text])
    tokens = explainer.text_encoder.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    gradcam: np.ndarray | None = None
    cropped: Image.Image | None = None
    if image is not None and explainer.image_encoder is not None:
        output, gradcam = _forward_with_gradcam(explainer, features, mask, image)
        cropped = _centre_crop(image)
    else:
        if image is not None:
            logger.warning("checkpoint has no visual branch: the picture is ignored")
        with torch.inference_mode():
            output = explainer.net(explainer.batch(features, mask))
    probabilities = output.probabilities[0].detach().float().tolist()
    weights = output.token_attention[0].detach().float().numpy()
    if weights.shape[0] != len(tokens):  # a text-less or text-free network: no token weights
        weights = np.zeros(len(tokens))
    words, word_weights = merge_word_pieces(tokens, weights)
    modality = output.modality_weights[0].detach().float().tolist()
    return PostExplanation(
        label=LABELS[int(np.argmax(probabilities))],
        probabilities=dict(zip(LABELS, probabilities, strict=True)),
        modality_weights=dict(zip(MODALITIES, modality, strict=True)),
        words=words,
        word_weights=word_weights,
        gradcam=gradcam,
        cropped_image=cropped,
    )


def _forward_with_gradcam(explainer: Explainer, features: Tensor, mask: Tensor, image: Image.Image):
    """Forward pass with gradients through the backbone; Grad-CAM for the predicted class."""
    assert explainer.image_encoder is not None
    encoder = explainer.image_encoder
    captured: dict[str, Tensor] = {}

    def keep_feature_map(_module: nn.Module, _inputs: object, output: Tensor) -> None:
        captured["feature_map"] = output

    handle = encoder.gradcam_layer().register_forward_hook(keep_feature_map)
    try:
        with torch.enable_grad():
            pixels = encoder.transform(image).unsqueeze(0)
            pooled = encoder(pixels)  # (1, D_v)
            output = explainer.net(explainer.batch(features, mask, visual=pooled))
            target = int(output.logits[0].argmax())
            feature_map = captured["feature_map"]  # (1, C, h, w)
            (gradient,) = torch.autograd.grad(output.logits[0, target], feature_map)
    finally:
        handle.remove()
    channel_weights = gradient.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    cam = torch.relu((channel_weights * feature_map).sum(dim=1))[0].detach()  # (h, w)
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else cam
    return output, cam.numpy()


def attention_html(explanation: PostExplanation, text: str) -> str:
    """A self-contained HTML page: each word shaded by its attention weight (hover for the value)."""
    peak = float(explanation.word_weights.max()) if explanation.word_weights.size else 0.0
    spans = []
    for word, weight in zip(explanation.words, explanation.word_weights, strict=True):
        alpha = weight / peak if peak > 0 else 0.0
        spans.append(
            f'<span title="{weight:.3f}" style="background: rgba(220, 40, 40, {alpha:.2f}); '
            f'padding: 2px 3px; margin: 1px; border-radius: 3px;">{html.escape(word)}</span>'
        )
    probabilities = ", ".join(f"{name} {value:.2f}" for name, value in explanation.probabilities.items())
    modality = ", ".join(f"{name} {value:.2f}" for name, value in explanation.modality_weights.items())
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Token attention</title></head>\n"
        '<body style="font-family: sans-serif; max-width: 60em; margin: 2em auto;">\n'
        f"<h1>Token attention</h1>\n<p><b>post:</b> {html.escape(text)}</p>\n"
        f"<p><b>prediction:</b> {explanation.label} ({probabilities})<br>"
        f"<b>modality weights:</b> {modality}</p>\n"
        f'<p style="line-height: 2.2; font-size: 1.2em;">{" ".join(spans)}</p>\n'
        "<p>Darker = more attention weight from the text branch's pooling (word pieces merged, "
        "weights summed; hover a word for its weight).</p>\n</body></html>\n"
    )


def write_post_explanation(explanation: PostExplanation, text: str, out_dir: Path) -> list[Path]:
    """attention.html, attention.png and (with a picture) gradcam.png under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / "attention.html"
    html_path.write_text(attention_html(explanation, text), encoding="utf-8")
    title = f"Token attention: predicted {explanation.label} ({explanation.probabilities[explanation.label]:.2f})"
    written = [html_path, plot_token_attention(explanation.words, explanation.word_weights, out_dir / "attention.png", title)]
    if explanation.gradcam is not None and explanation.cropped_image is not None:
        written.append(
            plot_gradcam_overlay(
                explanation.cropped_image,
                explanation.gradcam,
                out_dir / "gradcam.png",
                title=f"Grad-CAM for '{explanation.label}'",
            )
        )
    return written


# ---------------------------------------------------------------------------------------------
# text-CNN filters: top n-grams
# ---------------------------------------------------------------------------------------------


@dataclass
class FilterNgrams:
    """One Conv1d filter: its kernel width and the distinct n-grams that excite it most."""

    index: int
    kernel_size: int
    ngrams: list[tuple[str, float]]  # (n-gram, activation), strongest first
    class_effect: np.ndarray  # per class: standardised mean difference of per-post max activation


def filter_ngrams(
    explainer: Explainer,
    texts: Sequence[str],
    labels: Sequence[int],
    top_k: int = 5,
    batch_size: int = 64,
    progress: bool = True,
) -> list[FilterNgrams]:
    """Top n-grams per text-CNN filter over ``texts`` and each filter's class selectivity.

    The text branch's CNN uses 'same' padding, so the activation at position t of a width-k filter
    covers tokens t - (k-1)//2 .. t + k//2; that span is the filter's n-gram there. The class effect
    of a filter is (mean of its per-post max activation over posts of class c - mean over the other
    posts) / standard deviation over all posts.
    """
    branch = explainer.net.branches["text"] if "text" in explainer.net.branches else None
    cnn = getattr(branch, "cnn", None)
    if cnn is None:
        raise ValueError("this checkpoint's text branch has no CNN front end (text_cnn=False)")
    tokenizer = explainer.text_encoder.tokenizer
    kernel_sizes = list(cnn.kernel_sizes)
    n_filters = cnn.output_dim // len(kernel_sizes)
    activations: list[np.ndarray] = []  # per valid position: (channels,)
    spans: list[list[str]] = []  # per valid position: n-gram per kernel size
    post_max: list[np.ndarray] = []
    for start in progress_bar(range(0, len(texts), batch_size), enabled=progress, desc="filters", unit="batch"):
        features, mask, ids = explainer.encode_texts(texts[start : start + batch_size])
        with torch.inference_mode():
            tokens = features
            if getattr(branch, "encoder_top", None) is not None:
                tokens = branch.encoder_top(features, mask)
            maps = cnn(tokens, mask).float().numpy()  # (B,T,C)
        for row in range(maps.shape[0]):
            length = int(mask[row].sum())
            pieces = tokenizer.convert_ids_to_tokens(ids[row, :length].tolist())
            post_max.append(maps[row, :length].max(axis=0))
            for position in range(length):
                activations.append(maps[row, position])
                spans.append(
                    [_ngram_text(tokenizer, pieces, position, k) for k in kernel_sizes]
                )
    table = np.stack(activations)  # (P, C)
    per_post = np.stack(post_max)  # (N, C)
    gold = np.asarray(labels)
    spread = per_post.std(axis=0) + 1e-8
    effects = np.zeros((per_post.shape[1], len(LABELS)))
    for class_index in range(len(LABELS)):
        inside = gold == class_index
        if inside.any() and (~inside).any():
            effects[:, class_index] = (per_post[inside].mean(axis=0) - per_post[~inside].mean(axis=0)) / spread
    results = []
    for channel in range(table.shape[1]):
        kernel_slot = channel // n_filters
        order = np.argsort(-table[:, channel])
        seen: set[str] = set()
        best: list[tuple[str, float]] = []
        for position in order:
            value = float(table[position, channel])
            if value <= 0:
                break
            ngram = spans[position][kernel_slot]
            if ngram not in seen:
                seen.add(ngram)
                best.append((ngram, value))
            if len(best) == top_k:
                break
        results.append(FilterNgrams(channel, kernel_sizes[kernel_slot], best, effects[channel]))
    return results


def filters_markdown(results: Sequence[FilterNgrams], dataset: str, n_posts: int, per_class: int = 8) -> str:
    """The most class-selective filters per class with their n-grams, then every filter."""
    lines = [
        f"# Text-CNN filters: top n-grams ({dataset}, {n_posts} posts)",
        "",
        "Class effect: (mean per-post max activation in the class - mean elsewhere) / std, over gold labels.",
        "",
    ]
    for class_index, label in enumerate(LABELS):
        ranked = sorted(results, key=lambda result: -result.class_effect[class_index])[:per_class]
        lines += [f"## Filters most selective for {label}", "", "| filter | width | effect | top n-grams |", "|---|---|---|---|"]
        for result in ranked:
            ngrams = "; ".join(f"`{_md_cell(text)}`" for text, _ in result.ngrams)
            lines.append(f"| {result.index} | {result.kernel_size} | {result.class_effect[class_index]:+.2f} | {ngrams} |")
        lines.append("")
    lines += ["## All filters", "", "| filter | width | top n-grams (activation) |", "|---|---|---|"]
    for result in results:
        ngrams = "; ".join(f"`{_md_cell(text)}` ({value:.2f})" for text, value in result.ngrams)
        lines.append(f"| {result.index} | {result.kernel_size} | {ngrams} |")
    lines.append("")
    return "\n".join(lines)


def _ngram_text(tokenizer, pieces: Sequence[str], position: int, kernel: int) -> str:
    """The tokens under a width-``kernel`` window centred as the CNN pads it, as readable text
    (a leading word-piece continuation is marked with "…" rather than "##")."""
    window = list(pieces[max(0, position - (kernel - 1) // 2) : position + kernel // 2 + 1])
    prefix = ""
    if window and window[0].startswith("##"):
        window[0] = window[0][2:]
        prefix = "…"
    return prefix + tokenizer.convert_tokens_to_string(window)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def _sample_dataset(name: str, size: int, seed: int) -> list[data.Example]:
    if name == "tweeteval-val":
        examples = data.load_tweeteval_val()
    elif name == "mvsa-dev":
        examples = data.load_mvsa("dev")
    elif name == "mvsa-train":
        examples = data.load_mvsa("train")
    else:
        raise ValueError(f"unknown dataset {name!r}")
    if size >= len(examples):
        return examples
    chosen = np.random.default_rng(seed).choice(len(examples), size=size, replace=False)
    return [examples[index] for index in sorted(chosen)]


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m model.explain``: the same command as ``sentistream model explain``."""
    from model.explain_command import main as explain_command_main

    return explain_command_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
