from pathlib import Path

import pytest

from model import data
from model.data import (
    Example,
    clean_dump_text,
    duplicate_key,
    load_mvsa,
    load_semeval_pool,
    load_tweeteval_val,
    training_pool_without,
)

pytestmark = pytest.mark.skipif(
    not (data.data_dir() / data.SEMEVAL).is_dir(), reason="shared data folder not present"
)


def test_data_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SENTISTREAM_DATA_DIR", str(tmp_path))
    assert data.data_dir() == tmp_path


def test_dump_artefacts_are_stripped():
    assert clean_dump_text('"Musical awareness: Great Big Beautiful Tomorrow"\t') == (
        "Musical awareness: Great Big Beautiful Tomorrow"
    )
    assert clean_dump_text('"only an opening quote') == '"only an opening quote'


def test_same_tweet_in_both_spellings_has_one_key():
    # SemEval keeps the URL and JSON escapes; TweetEval drops the URL and keeps the escape.
    semeval = "I\\u2019m going to Anthony Hamilton at DAR Constitution Hall in Washington\\u002c DC - Sep 15 http://t.co/PEcRmVHl"
    tweeteval = "I\\u2019m going to Anthony Hamilton at DAR Constitution Hall in Washington\\u002c DC - Sep 15"
    assert duplicate_key(semeval) == duplicate_key(tweeteval)
    assert duplicate_key("I love it") != duplicate_key("I hate it")


def test_tweeteval_val_split():
    val = load_tweeteval_val()
    assert len(val) == 2000
    assert {example.label for example in val} == {0, 1, 2}
    assert all(example.text and example.image_path is None for example in val)
    assert len({example.id for example in val}) == 2000


def test_mvsa_splits_have_images_on_disk():
    train, dev = load_mvsa("train"), load_mvsa("dev")
    assert (len(train), len(dev)) == (3611, 450)
    # README: train is 2,147 pos / 376 neu / 1,088 neg.
    assert [sum(example.label == label for example in train) for label in (0, 1, 2)] == [1088, 376, 2147]
    for example in dev[:20]:
        assert isinstance(example.image_path, Path) and example.image_path.is_file()
    assert not {example.id for example in train} & {example.id for example in dev}
    with pytest.raises(ValueError):
        load_mvsa("test")


def test_training_pool_excludes_every_validation_tweet():
    pool = load_semeval_pool()
    assert 45_000 < len(pool) < 52_000  # README: about 49.5k distinct tweets
    assert len({example.id for example in pool}) == len(pool)
    val = load_tweeteval_val()
    kept = training_pool_without(val, pool)
    held_out = {duplicate_key(example.text) for example in val}
    assert not any(duplicate_key(example.text) in held_out for example in kept)
    # README: about 1,800 of the 2,000 validation tweets are in the pool.
    assert len(pool) - len(kept) >= 1_700


def test_training_pool_without_on_a_small_pool():
    pool = [
        Example("1", '"Great game tonight!" http://t.co/abc', 2, None, "semeval"),
        Example("2", "Terrible service @Delta", 0, None, "semeval"),
    ]
    val = [Example("val-0", "Great game tonight!", 2, None, "tweeteval")]
    assert [example.id for example in training_pool_without(val, pool)] == ["2"]
