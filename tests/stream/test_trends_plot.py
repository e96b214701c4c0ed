"""`trends --plot`: one line per topic with a legend, volume in its own panel, thin buckets hollow."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import matplotlib
import pytest

from stream.trends import THIN_BUCKET_SCORED, TrendRow, plot_trends, trend_figure

matplotlib.use("Agg")

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _row(topic: str, minute: int, posts: int, negative: int) -> TrendRow:
    return TrendRow(topic=topic, bucket=T0 + timedelta(minutes=minute), n_posts=posts, n_scored=posts,
                    n_negative=negative, n_neutral=posts - negative, n_positive=0, mean_intensity=-0.5,
                    negative_share=negative / posts, n_with_media=0)


ROWS = [
    _row("acme", 0, 40, 10), _row("acme", 1, 2, 2), _row("acme", 3, 30, 3),  # minute 2: no posts
    _row("skyways", 0, 20, 1), _row("skyways", 1, 25, 20), _row("skyways", 2, 22, 2), _row("skyways", 3, 21, 1),
]


def _ydata(line) -> list[float]:
    return [float(v) for v in line.get_ydata()]


def test_figure_has_a_line_per_topic_with_legend_a_volume_panel_and_hollow_thin_buckets() -> None:
    import matplotlib.pyplot as plt

    fig = trend_figure(ROWS, "all topics", "minute")
    try:
        share_ax, volume_ax = fig.axes
        legend = [t.get_text() for t in share_ax.get_legend().get_texts()]
        assert legend[:2] == ["acme", "skyways"]
        assert f"fewer than {THIN_BUCKET_SCORED} scored posts" in legend
        lines = {line.get_label(): line for line in share_ax.get_lines()}
        acme = _ydata(lines["acme"])
        # 4 buckets, minute 1 is thin (2 posts) and minute 2 empty: both are gaps in the line
        assert acme[0] == pytest.approx(0.25) and math.isnan(acme[1]) and math.isnan(acme[2])
        assert acme[3] == pytest.approx(0.1)
        hollow = [line for line in share_ax.get_lines() if line.get_markerfacecolor() == "white"
                  and line.get_color() == lines["acme"].get_color()]
        assert len(hollow) == 1 and _ydata(hollow[0])[1] == pytest.approx(1.0)
        assert _ydata(lines["skyways"]) == pytest.approx([0.05, 0.8, 2 / 22, 1 / 21])
        volumes = {line.get_label(): _ydata(line) for line in volume_ax.get_lines()}
        assert volumes == {"acme": [40, 2, 0, 30], "skyways": [20, 25, 22, 21]}  # the empty minute is a zero
        assert lines["acme"].get_color() != lines["skyways"].get_color()
    finally:
        plt.close(fig)


def test_plot_trends_writes_a_png(tmp_path) -> None:
    path = plot_trends(ROWS, tmp_path / "sub" / "trend.png", "all topics", "minute")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
