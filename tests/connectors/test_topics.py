"""Topics config: per-platform queries derived or explicit, errors that name the place, keyword matching."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connectors.topics import TopicsConfigError, load_topics, matched_keywords, parse_topics


def test_sample_topics_file_loads(sample_dir: Path) -> None:
    config = load_topics(sample_dir / "topics.yaml")
    names = [t.name for t in config.topics]
    assert names[0] == "skyways-airline"
    assert "cup-final" not in [t.name for t in config.for_platform("mastodon")]  # mastodon: false
    skyways = config.get("skyways-airline")
    assert skyways.reddit is not None and skyways.reddit.subreddits == ("travel", "flights", "aviation")
    assert skyways.mastodon is not None and skyways.mastodon.hashtags == ("skyways",)


def test_sections_are_derived_from_keywords() -> None:
    topic = parse_topics({"topics": {"cup": {"keywords": ["cup final", "#cupfinal"]}}}).topics[0]
    assert topic.twitter is not None and topic.twitter.query == '("cup final" OR #cupfinal) -is:retweet'
    assert topic.reddit is not None and topic.reddit.query == '"cup final" OR #cupfinal' and topic.reddit.subreddits == ()
    assert topic.bluesky is not None and topic.bluesky.keywords == ("cup final", "#cupfinal")
    assert topic.mastodon is not None and topic.mastodon.keywords == ("cup final", "#cupfinal")


def test_toml_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "topics.toml"
    path.write_text('[topics.strike]\nkeywords = ["metro strike"]\n[topics.strike.mastodon]\nhashtags = ["#metrostrike"]\n')
    topic = load_topics(path).get("strike")
    assert topic.mastodon is not None and topic.mastodon.hashtags == ("metrostrike",)


@pytest.mark.parametrize("data,where", [
    ({}, "top-level 'topics'"),
    ({"topics": {"bad name!": {}}}, "topics.bad name!"),
    ({"topics": {"t": {"keywords": "x", "twiter": {}}}}, "unknown keys ['twiter']"),
    ({"topics": {"t": {"reddit": {"subreddits": ["no spaces allowed"]}}}}, "topics.t.reddit.subreddits"),
    ({"topics": {"t": {"keywords": [""]}}}, "topics.t.keywords"),
    ({"topics": {"t": {"twitter": {"query": 42}}}}, "topics.t.twitter.query"),
])
def test_errors_name_the_place(data: object, where: str) -> None:
    with pytest.raises(TopicsConfigError, match=re.escape(where)):
        parse_topics(data)


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("topics: [unclosed\n")
    with pytest.raises(TopicsConfigError, match="t.yaml: not valid YAML"):
        load_topics(path)


def test_keywords_match_whole_words_case_insensitively() -> None:
    assert matched_keywords("The Cup Final is on! #CupFinal", ["cup final", "#cupfinal", "cup"]) == (
        "cup final", "#cupfinal", "cup")
    assert matched_keywords("my cupboard", ["cup"]) == ()
    assert matched_keywords("#skyways rocks", ["skyways"]) == ()  # a bare word does not match inside a hashtag


# --- languages: which languages the worker may score per topic -------------------------------------------


def test_languages_default_to_english_and_keep_file_order() -> None:
    config = parse_topics({"topics": {"plain": {"keywords": ["x"]},
                                      "bilingual": {"keywords": ["y"], "languages": ["FR", "en", "fr"]},
                                      "everything": {"keywords": ["z"], "languages": ["*"]},
                                      "one": {"keywords": ["w"], "languages": "es"}}})
    assert config.get("plain").languages == ("en",)
    assert config.get("bilingual").languages == ("fr", "en")  # lower-cased, duplicates dropped
    assert config.get("everything").languages == ("*",)
    assert config.get("one").languages == ("es",)


def test_sample_topics_file_has_valid_languages(sample_dir: Path) -> None:
    for topic in load_topics(sample_dir / "topics.yaml").topics:
        assert topic.languages and all(re.fullmatch(r"[a-z]{2,3}|\*", code) for code in topic.languages)


@pytest.mark.parametrize("value,message", [
    (["English"], "'english' is not an ISO 639-1 language code"),
    (["en-US"], "'en-us' is not an ISO 639-1 language code"),
    ([], "must name at least one language"),
    (["*", "en"], "'*' (every language) cannot be combined"),
    ([1], "must be a list of non-empty strings"),
    (None, "must be a list of non-empty strings"),
    ({"en": True}, "must be a list of non-empty strings"),
])
def test_bad_languages_fail_with_the_place_and_the_fix(value: object, message: str) -> None:
    with pytest.raises(TopicsConfigError, match=re.escape("topics.t.languages: ") + ".*" + re.escape(message)):
        parse_topics({"topics": {"t": {"keywords": ["x"], "languages": value}}})


def test_languages_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "topics.toml"
    path.write_text('[topics.strike]\nkeywords = ["grève"]\nlanguages = ["fr"]\n')
    assert load_topics(path).get("strike").languages == ("fr",)
