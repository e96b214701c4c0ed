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
from model.labels import label_index
from tests.fixtures.mini_data import fixture_tweets, mini_data_dir


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


@pytest.mark.dataset(data.TWEETEVAL)
def test_tweeteval_val_split():
    val = load_tweeteval_val()
    assert len(val) == 2000
    assert {example.label for example in val} == {0, 1, 2}
    assert all(example.text and example.image_path is None for example in val)
    assert len({example.id for example in val}) == 2000


@pytest.mark.dataset(data.MVSA)
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


@pytest.mark.dataset(data.SEMEVAL, data.TWEETEVAL)
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


def test_loaders_read_the_miniature_folder_in_the_real_layout():
    """The same loaders on the shipped fixtures: ids, labels, cleaned text, pictures, de-duplication."""
    root = mini_data_dir()
    tweets = {tweet.id: tweet for tweet in fixture_tweets()}
    pool = load_semeval_pool(root)
    # Two files overlap by ten ids; the pool keeps each tweet once, first file first.
    assert [example.id for example in pool] == list(tweets)
    for example in pool:
        assert example.label == label_index(tweets[example.id].label) and example.image_path is None
        assert example.text == clean_dump_text(tweets[example.id].raw_text)
        assert not example.text.startswith('"')
    val = load_tweeteval_val(root)
    assert [example.id for example in val] == [f"val-{index}" for index in range(18)]
    assert [sum(example.label == label for example in val) for label in (0, 1, 2)] == [6, 6, 6]
    kept = training_pool_without(val, pool)
    assert len(kept) == 42 and not {duplicate_key(e.text) for e in kept} & {duplicate_key(e.text) for e in val}
    train, dev = load_mvsa("train", root), load_mvsa("dev", root)
    assert (len(train), len(dev)) == (42, 18)
    assert not {example.id for example in train} & {example.id for example in dev}
    for example in train + dev:
        assert isinstance(example.image_path, Path) and example.image_path.is_file()
        assert example.label == label_index(tweets[example.id].label)
    with pytest.raises(ValueError):
        load_mvsa("test", root)


def test_missing_data_folder_fails_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_semeval_pool(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_mvsa("dev", tmp_path)
