"""Draws ``heart_pancake.png``, the sample picture of ``sentistream model explain``'s example.

Generated once and committed, so the example needs no data set; rerun to redraw it the same way:
``python model/samples/draw_heart_pancake.py``.  A heart-shaped pancake on a plate matches the
example post's text (MVSA-Single dev post 51 is about one) without shipping anyone's photo.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 256


def _heart(cx: float, cy: float, scale: float) -> list[tuple[float, float]]:
    """The classic parametric heart curve, scaled and centred (y grows downward)."""
    points = []
    for step in range(360):
        t = math.radians(step)
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((cx + scale * x, cy - scale * y))
    return points


def draw() -> Image.Image:
    picture = Image.new("RGB", (SIZE, SIZE), (150, 98, 60))  # wooden table
    draw = ImageDraw.Draw(picture)
    for y in range(0, SIZE, 16):  # planks
        draw.line([(0, y), (SIZE, y + 6)], fill=(128, 82, 48), width=2)
    draw.ellipse([18, 22, 238, 242], fill=(120, 120, 125))  # plate shadow
    draw.ellipse([14, 14, 234, 234], fill=(246, 246, 242), outline=(210, 210, 205), width=3)
    draw.ellipse([40, 40, 208, 208], outline=(228, 228, 222), width=2)
    draw.polygon(_heart(124, 120, 5.2), fill=(168, 100, 38))  # browned rim
    draw.polygon(_heart(124, 118, 4.6), fill=(214, 150, 70))  # golden centre
    draw.polygon([(100, 92), (150, 96), (132, 128), (108, 140)], fill=(150, 70, 20))  # syrup
    draw.rectangle([112, 100, 132, 114], fill=(250, 236, 160))  # butter
    return picture.filter(ImageFilter.SMOOTH)


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "heart_pancake.png"
    draw().save(out, optimize=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger(__name__).info("wrote %s (%d bytes)", out, out.stat().st_size)
