"""PNG figures for evaluation reports and explanations (matplotlib, Agg canvas, no display).

Each function draws one figure on its own ``Figure`` with an Agg canvas rather than through pyplot,
so it is safe in worker threads and servers (no global current-figure state, no GUI backend), and
writes a PNG to the path given, returning that path.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from model.labels import LABELS


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def plot_confusion_matrix(
    confusion: np.ndarray,
    path: Path | str,
    labels: Sequence[str] = LABELS,
    title: str = "Confusion matrix",
) -> Path:
    """Confusion matrix coloured by row share (recall), each cell printing count and share.

    Colouring by row share rather than count keeps a rare class (MVSA's neutral) readable next to a
    common one.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros(counts.shape, dtype=float), where=row_totals > 0)
    figure = _new_figure(4.8, 4.2)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of gold class")
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels=labels)
    axes.set_yticks(ticks, labels=labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(title)
    for row in range(counts.shape[0]):
        for column in range(counts.shape[1]):
            share = shares[row, column]
            axes.text(
                column,
                row,
                f"{counts[row, column]}\n{share:.0%}",
                ha="center",
                va="center",
                color="white" if share > 0.55 else "black",
                fontsize=9,
            )
    return _save(figure, path)


def plot_token_attention(
    tokens: Sequence[str],
    weights: Sequence[float],
    path: Path | str,
    title: str = "Token attention",
    tokens_per_row: int = 12,
) -> Path:
    """Tokens as coloured cells, darker where the attention weight is higher, wrapped into rows.

    The weight of each token is printed under it so the figure reads without a colour legend.
    """
    weights_array = np.asarray(weights, dtype=float)
    if len(tokens) != weights_array.shape[0]:
        raise ValueError(f"{len(tokens)} tokens but {weights_array.shape[0]} weights")
    n_rows = max(1, int(np.ceil(len(tokens) / tokens_per_row)))
    figure = _new_figure(min(16.0, 1.1 * min(tokens_per_row, max(len(tokens), 1)) + 1.0), 0.8 * n_rows + 0.8)
    axes = figure.add_subplot()
    peak = float(weights_array.max()) if weights_array.size else 1.0
    norm = Normalize(vmin=0.0, vmax=peak if peak > 0 else 1.0)
    reds = colormaps["Reds"]
    for index, (token, weight) in enumerate(zip(tokens, weights_array, strict=True)):
        row, column = divmod(index, tokens_per_row)
        shade = norm(weight)
        axes.add_patch(_cell(column, -row, reds(0.08 + 0.85 * shade)))
        axes.text(
            column + 0.5,
            -row + 0.6,
            _shorten(token),
            ha="center",
            va="center",
            fontsize=9,
            color="white" if shade > 0.6 else "black",
        )
        axes.text(
            column + 0.5,
            -row + 0.22,
            f"{weight:.2f}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if shade > 0.6 else "dimgray",
        )
    axes.set_xlim(0, tokens_per_row if len(tokens) > tokens_per_row else max(len(tokens), 1))
    axes.set_ylim(-n_rows + 1, 1)
    axes.set_aspect("auto")
    axes.axis("off")
    axes.set_title(title)
    return _save(figure, path)


def _cell(x: float, y: float, colour) -> Rectangle:
    return Rectangle((x + 0.03, y + 0.03), 0.94, 0.94, facecolor=colour, edgecolor="white")


def _shorten(token: str, limit: int = 14) -> str:
    return token if len(token) <= limit else token[: limit - 1] + "…"


def plot_gradcam_overlay(
    image: Image.Image,
    heatmap: np.ndarray,
    path: Path | str,
    title: str = "Grad-CAM",
    alpha: float = 0.45,
) -> Path:
    """The picture beside the same picture with the Grad-CAM heatmap (values in [0, 1]) over it.

    The heatmap is resized to the picture with bilinear interpolation; showing the plain picture
    next to the overlay lets a reader see what the colour hides.
    """
    rgb = image.convert("RGB")
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {heat.shape}")
    span = float(heat.max() - heat.min())
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    heat_image = Image.fromarray(np.uint8(heat * 255)).resize(rgb.size, Image.Resampling.BILINEAR)
    heat_resized = np.asarray(heat_image, dtype=np.float32) / 255.0
    figure = _new_figure(8.0, 4.2)
    left, right = figure.subplots(1, 2)
    left.imshow(rgb)
    left.set_title("input")
    right.imshow(rgb)
    overlay = right.imshow(heat_resized, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
    right.set_title(title)
    figure.colorbar(overlay, ax=right, fraction=0.046, pad=0.04, label="relevance")
    for axes in (left, right):
        axes.axis("off")
    return _save(figure, path)


def plot_trend(
    times: Sequence[datetime] | Sequence[float],
    values: Sequence[float],
    path: Path | str,
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
    title: str = "Sentiment trend",
    ylabel: str = "mean sentiment",
) -> Path:
    """A line over time with an optional band (e.g. a confidence interval per window)."""
    figure = _new_figure(8.0, 3.2)
    axes = figure.add_subplot()
    axes.plot(list(times), list(values), color="tab:blue", linewidth=1.6)
    if low is not None and high is not None:
        axes.fill_between(list(times), list(low), list(high), color="tab:blue", alpha=0.2, linewidth=0)
    axes.axhline(0.0, color="gray", linewidth=0.8, linestyle="--")
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    return _save(figure, path)
