"""PNG figures: written, readable, sized, and refusing inconsistent inputs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model import plots


def _open(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image


def test_confusion_matrix_png(tmp_path: Path) -> None:
    path = plots.plot_confusion_matrix(np.array([[5, 1, 0], [2, 7, 1], [0, 0, 0]]), tmp_path / "sub" / "cm.png")
    image = _open(path)
    assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300
    # Not a blank canvas: the dark cells and text make many distinct colours.
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50


def test_token_attention_wraps_long_posts(tmp_path: Path) -> None:
    short = _open(plots.plot_token_attention(["good", "day"], [0.7, 0.3], tmp_path / "short.png"))
    tokens = [f"w{i}" for i in range(40)]
    long = _open(plots.plot_token_attention(tokens, np.full(40, 1 / 40), tmp_path / "long.png"))
    assert long.size[1] > short.size[1]  # 40 tokens wrap into several rows
    with pytest.raises(ValueError, match="weights"):
        plots.plot_token_attention(["a", "b"], [1.0], tmp_path / "bad.png")


def test_gradcam_overlay_and_trend(tmp_path: Path) -> None:
    picture = Image.new("RGB", (320, 240), (30, 120, 200))
    heat = np.zeros((7, 7))
    heat[2, 5] = 1.0
    overlay = _open(plots.plot_gradcam_overlay(picture, heat, tmp_path / "cam.png"))
    assert overlay.size[0] > overlay.size[1]  # picture and overlay side by side
    with pytest.raises(ValueError, match="2-D"):
        plots.plot_gradcam_overlay(picture, np.zeros(7), tmp_path / "bad.png")
    times = [dt.datetime(2026, 1, 1) + dt.timedelta(hours=h) for h in range(24)]
    values = np.sin(np.arange(24) / 4)
    trend = _open(plots.plot_trend(times, values, tmp_path / "trend.png", low=values - 0.1, high=values + 0.1))
    assert trend.format == "PNG"
