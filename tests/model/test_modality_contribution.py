"""model.modality_contribution: one checkpoint's verdicts with both modalities, text alone, picture alone."""

import numpy as np

from model import modality_contribution as contribution
from tests.fixtures.mini_data import mini_data_dir


def test_the_shipped_model_sees_each_dev_post_three_ways(tmp_path, monkeypatch):
    """Over the miniature data folder (18 dev posts with drawn pictures), through the real Scorer: a view
    without a modality gives that modality no weight, the full view's gate weights sum to one, and the
    report's counts add up."""
    monkeypatch.setenv("SENTISTREAM_DATA_DIR", str(mini_data_dir()))
    out = tmp_path / "contribution.md"
    assert contribution.main(["--out", str(out), "--device", "cpu", "--resamples", "200", "--no-progress"]) == 0
    result = contribution.measure(None, device="cpu", n_resamples=50, progress=False)
    assert len(result.labels) == 18 and result.has_picture.all()
    views = result.views
    assert np.allclose(views["text only"].weights[:, 1], 0.0)
    assert np.allclose(views["picture only"].weights[:, 0], 0.0)
    assert np.allclose(views["text + picture"].weights.sum(axis=1), 1.0, atol=1e-3)
    text = out.read_text()
    for name in contribution.VIEWS:
        assert f"| {name} |" in text
    assert "Text + picture vs text only: accuracy" in text and "Text + picture vs picture only" in text
    assert "changes the verdict on" in text


def test_report_counts_which_way_the_picture_moved_each_verdict():
    labels = np.array([0, 1, 2, 2, 0])
    full = np.array([0, 1, 0, 2, 1])  # right, right, wrong, right, wrong
    text_only = np.array([1, 1, 2, 2, 2])  # picture fixed post 0, broke post 2, moved post 4 wrong -> wrong
    weights = np.array([[0.3, 0.7], [0.9, 0.1], [0.2, 0.8], [0.8, 0.2], [0.4, 0.6]])
    views = {
        "text + picture": contribution.ViewScores("text + picture", full, weights),
        "text only": contribution.ViewScores("text only", text_only, np.column_stack([np.ones(5), np.zeros(5)])),
        "picture only": contribution.ViewScores("picture only", full, np.column_stack([np.zeros(5), np.ones(5)])),
    }
    result = contribution.Contribution("v-test", labels, np.ones(5, dtype=bool), views, 100, 1.0)
    text = contribution.render_markdown(result, "python -m model.modality_contribution")
    assert "changes the verdict on 3 of 5 posts with one: 1 to the right label, 1 away from it (1 from one" in text
    assert "gives the picture 0.70 of the weight on average, against 0.15 where" in text
    assert "| text + picture | 60.0 [" in text and "| text only | 60.0 [" in text
