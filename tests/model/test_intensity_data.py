"""SemEval-2016 4C five-point data: loader, the x1.5 mapping, topic-disjoint splits, MAE^M by hand."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import data, metrics
from model.data import Example
from model.labels import label_index
from model.train import intensity_metrics
from tests.fixtures.mini_data import FIVE_POINT_FILE, mini_data_dir


def test_five_point_labels_map_to_the_intensity_scale_by_one_and_a_half():
    assert [data.five_point_to_intensity(v) for v in (-2, -1, 0, 1, 2)] == [-3.0, -1.5, 0.0, 1.5, 3.0]
    assert data.intensity_to_five_point(np.array([-3.0, -2.3, -0.7, 0.74, 0.76, 2.9, 9.0])).tolist() == [
        -2, -2, 0, 0, 1, 2, 2]
    for bad in (3, -3, 1.5):
        with pytest.raises(ValueError):
            data.five_point_to_intensity(bad)  # type: ignore[arg-type]
    assert [data.class_of_five_point(v) for v in (-2, -1, 0, 1, 2)] == [
        label_index("negative"), label_index("negative"), label_index("neutral"), label_index("positive"),
        label_index("positive")]


def test_loader_reads_the_miniature_4c_folder():
    examples = data.load_semeval_ce(mini_data_dir())
    lines = [line for line in FIVE_POINT_FILE.read_text().splitlines() if line and not line.startswith("#")]
    assert len(examples) == len(lines) == 40
    first = examples[0]
    assert first.source == data.SEMEVAL_CE and first.image_path is None
    by_id = {example.id: example for example in examples}
    for line in lines:
        tweet_id, topic, label, text = line.split("\t")
        example = by_id[tweet_id]
        assert (example.topic, example.text) == (topic, text)
        assert example.intensity == int(label) * 1.5
        assert example.label == data.class_of_five_point(int(label))
    assert Counter(round(e.intensity / 1.5) for e in examples) == {v: 8 for v in (-2, -1, 0, 1, 2)}


def test_loader_skips_malformed_lines_and_duplicates(tmp_path):
    folder = tmp_path / data.SEMEVAL_CE
    folder.mkdir()
    (folder / "a-CE.tsv").write_text(
        "1\tapple\t2\tLove the new apple watch\n"
        "2\tapple\tthree\tnot a number\n"          # label not an integer
        "3\tapple\t5\tout of range\n"              # label outside -2..+2
        "4\tapple\n"                               # too few fields
        "5\t\t1\tno topic at all\n"                # empty topic
        "6\tapple\t-1\t   \n"                      # empty text
        "1\tapple\t0\tsame id again\n"             # repeated id
        "7\tapple\t-2\t\"Love the new apple watch\"\n",  # same text, other quoting
        encoding="utf-8")
    examples = data.load_semeval_ce(tmp_path)
    assert [(e.id, e.intensity) for e in examples] == [("1", 3.0)]
    with pytest.raises(FileNotFoundError, match="4C"):
        data.load_semeval_ce(tmp_path / "nowhere")


def test_4c_training_split_drops_tweeteval_validation_tweets(monkeypatch):
    monkeypatch.setenv("SENTISTREAM_DATA_DIR", str(mini_data_dir()))
    everything = data.load_semeval_ce()
    val_keys = {data.duplicate_key(e.text) for e in data.load_tweeteval_val()}
    kept = data.load_split("ce", "train")
    assert kept == [e for e in everything if data.duplicate_key(e.text) not in val_keys]
    assert ("ce", "train") in data.SPLITS


def _examples(topics: list[str]) -> list[Example]:
    return [Example(str(i), f"tweet {i}", 1, None, data.SEMEVAL_CE, 0.0, topic) for i, topic in enumerate(topics)]


def test_split_is_topic_disjoint_deterministic_and_case_blind():
    topics = [f"topic {i}" for i in range(60) for _ in range(5)]
    parts = data.split_ce(_examples(topics))
    names = {part: {data.topic_key(e.topic) for e in examples} for part, examples in parts.items()}
    assert not (names["fit"] & names["select"] or names["fit"] & names["val"] or names["select"] & names["val"])
    assert sum(len(v) for v in parts.values()) == len(topics)
    assert 3 <= len(names["val"]) <= 18 and 1 <= len(names["select"]) <= 12  # ~15 % and ~10 % of 60 topics
    again = data.split_ce(list(reversed(_examples(topics))))
    assert {p: sorted(e.id for e in v) for p, v in again.items()} == {p: sorted(e.id for e in v)
                                                                      for p, v in parts.items()}
    shouted = data.split_ce(_examples([t.upper() + "  " for t in topics]))
    assert {p: [e.id for e in v] for p, v in shouted.items()} == {p: [e.id for e in v] for p, v in parts.items()}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40))
def test_split_properties_for_any_topics(topics):
    parts = data.split_ce(_examples(topics))
    assert sorted(e.id for v in parts.values() for e in v) == sorted(str(i) for i in range(len(topics)))
    seen: dict[str, str] = {}
    for part, examples in parts.items():
        for example in examples:
            assert seen.setdefault(data.topic_key(example.topic), part) == part  # one part per topic
    distinct = {data.topic_key(t) for t in topics}
    if len(distinct) >= 3:
        assert parts["fit"] and parts["val"]  # a small pool still trains and reports
    if len(distinct) >= 4:
        assert parts["select"]


def test_macro_mae_by_hand():
    gold = [-2, 0, 0, 0, 2, 1]
    predicted = [0, 0, 1, 0, 1, 1]
    # per class: -2 -> 2; 0 -> (0+1+0)/3; 1 -> 0; 2 -> 1; mean over the 4 present classes
    expected = (2 + 1 / 3 + 0 + 1) / 4
    assert metrics.macro_mean_absolute_error(gold, predicted) == pytest.approx(expected)
    assert metrics.macro_mean_absolute_error(gold, predicted, classes=(-2, -1, 0, 1, 2)) == pytest.approx(expected)
    assert metrics.mean_absolute_error(gold, predicted) == pytest.approx((2 + 0 + 1 + 0 + 1 + 0) / 6)
    # a constant 0 on a skewed set: plain MAE looks good, MAE^M does not
    skewed = [0] * 96 + [-2, -1, 1, 2]
    zeros = [0] * 100
    assert metrics.mean_absolute_error(skewed, zeros) == pytest.approx(0.06)
    assert metrics.macro_mean_absolute_error(skewed, zeros) == pytest.approx((2 + 1 + 0 + 1 + 2) / 5)
    assert metrics.macro_mean_absolute_error([], []) == 0.0
    with pytest.raises(ValueError):
        metrics.macro_mean_absolute_error([1, 2], [1])


def test_intensity_metrics_round_predictions_to_five_points_and_skip_unlabelled_rows():
    target = np.array([-3.0, 0.0, 1.5, np.nan, 3.0])
    predicted = np.array([-2.0, 0.8, 1.4, -3.0, 3.0])  # five-point: -1, 1, 1, (none), 2
    got = intensity_metrics(target, predicted)
    # gold five-point -2, 0, 1, 2; errors 1, 1, 0, 0 -> MAE 0.5; per class the same numbers
    assert got["intensity_mae"] == pytest.approx(0.5)
    assert got["intensity_macro_mae"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    rows = ~np.isnan(target)
    assert got["intensity_ccc"] == pytest.approx(metrics.concordance_correlation(target[rows], predicted[rows]))


@pytest.mark.dataset(data.SEMEVAL_CE, data.TWEETEVAL)
def test_real_4c_data_loads_with_all_five_points_and_a_topic_disjoint_val():
    examples = data.load_split("ce", "train")
    assert 25_000 < len(examples) <= 30_632
    assert set(Counter(round(e.intensity / 1.5) for e in examples)) == {-2, -1, 0, 1, 2}
    parts = data.split_ce(examples)
    val_topics = {data.topic_key(e.topic) for e in parts["val"]}
    assert val_topics and not val_topics & {data.topic_key(e.topic) for e in parts["fit"] + parts["select"]}
    assert 0.05 < len(parts["val"]) / len(examples) < 0.3
