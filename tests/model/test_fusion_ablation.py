"""model.fusion_ablation: the shipped model against retrained single-modality models, same dev posts."""

import numpy as np
import pytest
import torch

from model import checkpoint
from model import fusion_ablation as ablation
from model.config import ModelConfig
from model.eval import _open_image, load_split
from model.network import SentimentNet
from tests.fixtures.mini_data import mini_data_dir


def _untrained(path, modalities: tuple[str, ...], seed: int):
    torch.manual_seed(seed)
    config = ModelConfig(modalities=modalities)
    checkpoint.save(path, SentimentNet(config).eval(), config,
                    extra={"chosen_seed": seed, "command": f"python -m model.train --modalities {','.join(modalities)}"})
    return path


def test_every_checkpoint_scores_the_same_dev_posts_and_the_section_is_kept_in_place(tmp_path, monkeypatch):
    """Over the miniature data folder (18 dev posts with drawn pictures), through the real Scorer: a
    text-only model's verdicts do not depend on the picture it is handed, each retrained checkpoint gets a
    row with its seed, and writing twice replaces the section instead of adding a second one."""
    monkeypatch.setenv("SENTISTREAM_DATA_DIR", str(mini_data_dir()))
    text_only = _untrained(tmp_path / "text.pt", ("text",), 0)
    picture_only = [_untrained(tmp_path / f"picture{k}.pt", ("visual",), k) for k in (1, 2)]
    examples, _ = load_split("mvsa-dev")
    pictures = [_open_image(e.image_path) for e in examples]
    with_pictures = ablation.score_checkpoint(text_only, "t", examples, pictures, "cpu", progress=False)
    without = ablation.score_checkpoint(text_only, "t", examples, [[] for _ in examples], "cpu", progress=False)
    assert np.array_equal(with_pictures.predictions, without.predictions)
    assert with_pictures.modalities == ("text",) and with_pictures.seed == 0

    out = tmp_path / "ABLATIONS.md"
    out.write_text("# Ablations on MVSA-Single dev\n\nthe older table\n", encoding="utf-8")
    argv = ["--reference", str(checkpoint.DEFAULT_CHECKPOINT), "--text-only", str(text_only),
            "--picture-only", ",".join(map(str, picture_only)), "--out", str(out), "--device", "cpu",
            "--resamples", "100", "--no-progress"]
    assert ablation.main(argv) == 0
    assert ablation.main(argv) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Ablations on MVSA-Single dev\n")
    assert text.count(ablation.START_MARKER) == 1 and text.count(ablation.END_MARKER) == 1
    assert text.index(ablation.END_MARKER) < text.index("the older table")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`sentistream-" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| " + ablation.ROLES[0], "| " + ablation.ROLES[1],
                                                      "| " + ablation.ROLES[2], "| " + ablation.ROLES[2]]
    assert [row.split(" | ")[3] for row in rows] == ["0", "0", "1", "2"]  # the shipped file records seed 0
    assert "python -m model.train --modalities visual" in text


def _verdicts(role: str, predictions, seed: int) -> ablation.CheckpointVerdicts:
    return ablation.CheckpointVerdicts(role, checkpoint.DEFAULT_CHECKPOINT, f"v-{role}-{seed}", ("text",), seed, None,
                                       np.asarray(predictions))


def test_the_reading_says_significant_only_when_every_seed_is_beaten_significantly():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    noisy = [np.where(rng.random(300) < 0.5, labels, (labels + 1) % 3) for _ in range(3)]
    close = labels.copy()
    close[:2] = (close[:2] + 1) % 3  # wrong on 2 posts of 300: not a significant difference
    result = ablation.FusionAblation(
        labels, np.ones(300, dtype=bool), _verdicts(ablation.ROLES[0], labels, 0),
        [_verdicts(ablation.ROLES[1], p, k) for k, p in enumerate(noisy)]
        + [_verdicts(ablation.ROLES[2], close, 0), _verdicts(ablation.ROLES[2], noisy[0], 1)], 200, 1.0)
    result.reference.seed_accuracies = [0.70, 0.72, 0.74]
    text = ablation.render_markdown(result, "python -m model.fusion_ablation")
    assert "over its 3 seeds (recorded in the shipped checkpoint" in text and "accuracy 72.0 ± 2.0" in text
    text_line = next(line for line in text.splitlines() if f"vs {ablation.ROLES[1]} (3 seed(s))" in line)
    assert "accuracy 100.0 against" in text_line
    assert "better than every seed, significantly (largest p = 0.005)" in text_line
    picture_line = next(line for line in text.splitlines() if f"vs {ablation.ROLES[2]} (2 seed(s))" in line)
    assert "significantly for 1 of 2" in picture_line


@pytest.mark.parametrize("existing", [None, "notes\n"])
def test_write_section_creates_or_prepends(tmp_path, existing):
    path = tmp_path / "A.md"
    if existing is not None:
        path.write_text(existing, encoding="utf-8")
    section = f"{ablation.START_MARKER}\nbody\n{ablation.END_MARKER}\n"
    ablation.write_section(path, section)
    ablation.write_section(path, section.replace("body", "newer"))
    text = path.read_text(encoding="utf-8")
    assert "newer" in text and "body" not in text and text.count(ablation.START_MARKER) == 1
    assert text.endswith("notes\n") if existing else text == section.replace("body", "newer")
