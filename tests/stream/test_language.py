"""The language gate: platform tags first, offline detection otherwise, unknown means scored, never raises."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.post import Post
from connectors.topics import TopicsConfigError, parse_topics
from stream import language
from stream.language import LanguageGate, detect_language, primary_language

SAMPLE = Path(__file__).resolve().parents[2] / "connectors" / "samples" / "sample_posts.jsonl"
REASON = re.compile(r"^language not scored: [a-z]{2,3} \((detected|tagged by the platform)\); topic \S+ scores ")

FRENCH = "Quelqu'un sait si les bus de nuit circulent pendant la grève du métro ce soir ?"
GERMAN = "Weiß jemand, ob SkyWays ab September wieder nach Mexico City fliegt?"
ENGLISH = "SkyWays lost my checked bag and support is useless, filed a claim two weeks ago"


def post(text: str, lang: str | None = None, topic: str = "news") -> Post:
    return Post(platform="replay", post_id="1", text=text, created_at=datetime(2026, 11, 30, tzinfo=UTC),
                lang=lang, topic=topic)


def test_untagged_posts_in_another_language_are_skipped_with_a_reason() -> None:
    gate = LanguageGate()
    reason = gate.reason_to_skip(post(FRENCH, topic="metro-strike"))
    assert reason is not None and REASON.match(reason), reason
    assert "fr (detected)" in reason and "metro-strike scores en" in reason
    assert "de (detected)" in (gate.reason_to_skip(post(GERMAN)) or "")
    assert gate.reason_to_skip(post(ENGLISH)) is None


def test_the_platform_tag_wins_over_detection() -> None:
    gate = LanguageGate()
    assert "fr (tagged by the platform)" in (gate.reason_to_skip(post(ENGLISH, lang="fr")) or "")
    assert gate.reason_to_skip(post(FRENCH, lang="en")) is None
    assert gate.reason_to_skip(post(FRENCH, lang="en-GB")) is None
    # Twitter's "no language" tags fall back to the text.
    for tag in ("und", "qme", "zxx", "qht"):
        assert "fr (detected)" in (gate.reason_to_skip(post(FRENCH, lang=tag)) or ""), tag


@pytest.mark.parametrize("tag,code", [("en", "en"), ("EN", "en"), ("en-US", "en"), ("pt_BR", "pt"),
                                      ("zh-Hant-TW", "zh"), ("in", "id"), ("iw", "he"), ("und", None),
                                      ("qme", None), ("", None), ("english", None), ("e", None),
                                      (" fr ", "fr"), (None, None), (42, None), ("en--", None)])
def test_platform_tags_are_reduced_to_the_primary_language(tag: object, code: str | None) -> None:
    assert primary_language(tag) == code


@pytest.mark.parametrize("text", ["✈️😡", "🚶‍♀️🚶‍♀️🚶‍♀️😮‍💨", "lol", "ok 👍", "", "   ",
                                  "@SkyWaysAir #fail https://example.com/a/very/long/path?q=1"])
def test_short_or_letterless_texts_are_unknown_and_scored(text: str) -> None:
    gate = LanguageGate()
    assert detect_language(text) is None
    assert gate.reason_to_skip(post(text)) is None
    assert gate.with_detected_language(post(text)).lang is None


def test_per_topic_languages_and_the_english_default_for_unnamed_topics() -> None:
    config = parse_topics({"topics": {"cup-final": {"keywords": ["cup"], "languages": ["en", "fr"]},
                                      "world": {"keywords": ["w"], "languages": ["*"]},
                                      "local": {"keywords": ["l"]}}})
    gate = LanguageGate.from_topics(config)
    assert gate.reason_to_skip(post(FRENCH, topic="cup-final")) is None
    assert "de (detected)" in (gate.reason_to_skip(post(GERMAN, topic="cup-final")) or "")
    assert gate.reason_to_skip(post(GERMAN, topic="world")) is None
    assert gate.reason_to_skip(post(GERMAN, lang="de", topic="world")) is None
    assert gate.reason_to_skip(post(FRENCH, topic="local")) is not None
    assert gate.reason_to_skip(post(FRENCH, topic="not-in-the-file")) is not None  # English-only default
    assert "cup-final: en,fr" in gate.describe() and "world: all" in gate.describe()


def test_from_file(tmp_path: Path) -> None:
    assert LanguageGate.from_file(None).allowed("anything") == {"en"}
    path = tmp_path / "topics.yaml"
    path.write_text("topics:\n  strike:\n    keywords: [grève]\n    languages: [fr]\n")
    gate = LanguageGate.from_file(path)
    assert gate.reason_to_skip(post(FRENCH, topic="strike")) is None
    assert gate.reason_to_skip(post(ENGLISH, topic="strike")) is not None
    path.write_text("topics:\n  strike:\n    languages: [French]\n")
    with pytest.raises(TopicsConfigError, match="topics.strike.languages"):
        LanguageGate.from_file(path)
    with pytest.raises(TopicsConfigError, match="cannot read topics file"):
        LanguageGate.from_file(tmp_path / "missing.yaml")


def test_detected_language_is_recorded_only_when_the_platform_gave_none() -> None:
    gate = LanguageGate()
    assert gate.with_detected_language(post(FRENCH)).lang == "fr"
    assert gate.with_detected_language(post(ENGLISH)).lang == "en"
    tagged = post(FRENCH, lang="und")
    assert gate.with_detected_language(tagged) is tagged  # the platform's own tag is kept
    assert gate.with_detected_language(post(FRENCH, lang="en")).lang == "en"


def test_the_bundled_sample_agrees_with_its_platform_tags() -> None:
    """On the shipped sample feed, detection never calls a tagged-English post foreign and never
    contradicts a tag when it is confident."""
    contradictions, english_flagged, checked = [], [], 0
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        tag = primary_language(data.get("lang"))
        if tag is None or not isinstance(data.get("text"), str):
            continue
        checked += 1
        detected = detect_language(data["text"])
        if detected is not None and detected != tag:
            contradictions.append((tag, detected, data["text"][:60]))
        if tag == "en" and detected not in (None, "en"):
            english_flagged.append(data["text"][:60])
    assert checked > 100
    assert english_flagged == []
    assert contradictions == []


def test_a_failing_identifier_means_unknown_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def classify(self, text: str) -> tuple[str, float]:
            raise RuntimeError("model exploded")

    monkeypatch.setattr(language, "_identifier", lambda: Broken())
    language._detect_prefix.cache_clear()
    try:
        assert detect_language(FRENCH + " (uncached)") is None
        assert LanguageGate().reason_to_skip(post(FRENCH + " (uncached)")) is None
    finally:
        language._detect_prefix.cache_clear()


def test_huge_posts_are_judged_on_their_start() -> None:
    text = " ".join([FRENCH] * 30 + [ENGLISH] * 600)  # ~2,400 chars of French, then ~48,000 of English
    assert len(text) > 40_000 and detect_language(text) == "fr"


lang_tags = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["en", "fr", "und", "qme", "en-US", "pt_BR"]))
topic_names = st.sampled_from(["news", "bilingual", "all", "unlisted"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=400), lang=lang_tags, topic=topic_names)
def test_the_gate_never_raises_on_arbitrary_posts(text: str, lang: str | None, topic: str) -> None:
    gate = LanguageGate({"news": ["en"], "bilingual": ["en", "es"], "all": ["*"]})
    p = post(text, lang=lang, topic=topic)
    reason = gate.reason_to_skip(p)
    assert reason is None or REASON.match(reason), reason
    if topic == "all":
        assert reason is None
    recorded = gate.with_detected_language(p)
    if lang:
        assert recorded.lang == lang  # a platform tag is never replaced
    else:
        assert recorded.lang == lang or re.fullmatch(r"[a-z]{2,3}", recorded.lang or "")
    assert recorded.text == p.text and recorded.key == p.key


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=2000))
def test_detection_answers_a_code_or_unknown(text: str) -> None:
    detected = detect_language(text)
    assert detected is None or re.fullmatch(r"[a-z]{2,3}", detected)


# --- end to end: the real worker reads the topics file and stores other languages unscored ----------------


@pytest.mark.slow
def test_worker_scores_english_and_stores_french_unscored_with_the_reason(
        broker, embedded_db, worker_factory, tmp_path: Path) -> None:
    from connectors.broker import ensure_topics
    from connectors.publisher import KafkaPublisher
    from connectors.replay import replay_posts
    from model.checkpoint import DEFAULT_CHECKPOINT
    from tests.stream.conftest import wait_for

    assert Path(DEFAULT_CHECKPOINT).exists(), "the shipped checkpoint is missing"
    topics = tmp_path / "topics.yaml"
    topics.write_text("topics:\n  airline:\n    keywords: [skyways]\n"
                      "  greve:\n    keywords: [grève]\n    languages: [fr]\n")
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    posts = [
        Post(platform="reddit", post_id="en", text=ENGLISH, created_at=at, topic="airline"),
        Post(platform="reddit", post_id="fr", text=FRENCH, created_at=at, topic="airline"),
        Post(platform="twitter", post_id="fr-tagged", text="SkyWays encore en retard", lang="fr",
             created_at=at, topic="airline"),
        Post(platform="reddit", post_id="fr-topic", text=FRENCH, created_at=at, topic="greve"),
    ]
    ensure_topics(broker, ["posts.raw", "posts.deadletter", "sentiment.alerts"], partitions=1)
    with KafkaPublisher(broker, topic="posts.raw") as publisher:
        assert replay_posts(posts, publisher).sent == len(posts)
    worker = worker_factory(broker, embedded_db, name="languages", topics_file=str(topics),
                            media_enabled="false", windows="1m")

    from sqlalchemy import create_engine, text

    engine = create_engine(embedded_db)

    def rows() -> dict[str, tuple[str | None, str | None, int]]:
        with engine.connect() as conn:
            return {r[0]: (r[1], r[2], r[3]) for r in conn.execute(text(
                "SELECT p.post_id, p.lang, p.unscored_reason, count(s.id) FROM posts p "
                "LEFT JOIN sentiments s ON s.post_pk = p.id GROUP BY p.id, p.created_at"))}

    try:
        wait_for(lambda: len(rows()) == 4 and sum(n for _, _, n in rows().values()) == 2, 300,
                 "four posts stored, two of them scored", worker.log)
        stored = rows()
    finally:
        engine.dispose()
        assert worker.stop() == 0, worker.log()
    assert stored["en"] == ("en", None, 1)  # detected English: scored, and the detection is stored
    assert stored["fr-topic"] == ("fr", None, 1)  # French on a topic that scores French
    lang, reason, scored = stored["fr"]
    assert (lang, scored) == ("fr", 0) and reason is not None
    assert reason.startswith("language not scored: fr (detected); topic airline scores en"), reason
    lang, reason, scored = stored["fr-tagged"]
    assert (lang, scored) == ("fr", 0) and reason is not None and "fr (tagged by the platform)" in reason
    assert "language gate: scores en by default; greve: fr" in worker.log()


def test_the_worker_refuses_a_bad_topics_file_before_starting(tmp_path: Path) -> None:
    from stream.settings import Settings, SettingsError
    from stream.worker import load_language_gate

    path = tmp_path / "topics.yaml"
    path.write_text("topics:\n  t:\n    keywords: [x]\n    languages: [english]\n")
    with pytest.raises(SettingsError, match=r"SENTISTREAM_TOPICS_FILE: .*topics\.t\.languages: 'english'"):
        load_language_gate(Settings.from_env({"SENTISTREAM_TOPICS_FILE": str(path)}))
    assert load_language_gate(Settings.from_env({})).allowed("any") == {"en"}


@pytest.mark.slow
def test_rescore_leaves_other_languages_unscored(embedded_db: str) -> None:
    from datetime import timedelta

    from sqlalchemy import text

    from stream.migrate import make_engine
    from stream.sink import PostgresSink, SinkRecord
    from tests.stream.test_rescore import _run_rescore

    engine = make_engine(embedded_db)
    now = datetime.now(UTC)
    an_hour_ago = now - timedelta(hours=1)
    english = dataclasses.replace(post(ENGLISH, topic="airline"), post_id="en", created_at=an_hour_ago)
    french = dataclasses.replace(post(FRENCH, lang="fr", topic="airline"), post_id="fr", created_at=an_hour_ago)
    reason = LanguageGate().reason_to_skip(french)
    assert reason is not None
    PostgresSink(engine).write([SinkRecord(english), SinkRecord(french, unscored_reason=reason)])
    try:
        done = _run_rescore(embedded_db, "--since", "1d")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "rescored 1 posts" in done.stdout and "left 1 posts unscored: their language" in done.stdout
        with engine.connect() as conn:
            stored = dict(conn.execute(text(
                "SELECT p.post_id, (SELECT count(*) FROM sentiments s WHERE s.post_pk = p.id) FROM posts p")).all())
            kept_reason = conn.execute(text("SELECT unscored_reason FROM posts WHERE post_id = 'fr'")).scalar()
    finally:
        engine.dispose()
    assert stored == {"en": 1, "fr": 0}
    assert kept_reason == reason


def test_each_connector_hands_the_gate_the_platforms_language_tag() -> None:
    """Twitter ``lang``, Bluesky ``langs[0]``, Mastodon ``language`` reach ``Post.lang``; Reddit has no tag,
    so its posts are identified from the text."""
    from connectors.bluesky import BlueskyConnector
    from connectors.credentials import Secret
    from connectors.mastodon import MastodonConnector
    from connectors.twitter import TwitterConnector
    from tests.connectors.test_bluesky import post_event
    from tests.connectors.test_mastodon import status

    topics = parse_topics({"topics": {"metro": {"keywords": ["metro", "metrostrike"]}}})
    twitter = TwitterConnector(None, None, topics, bearer_token=Secret("unused"))
    tweet = twitter.to_post({"data": {"id": "1", "text": "grève du metro", "lang": "fr",
                                      "created_at": "2026-11-30T12:00:00Z"},
                             "matching_rules": [{"tag": "sentistream:metro"}]})
    mastodon = MastodonConnector(None, None, topics, instance_url="https://mastodon.example")
    toot = mastodon.to_post(status(101, "grève du metro", language="fr"))
    bluesky = BlueskyConnector(None, None, topics)
    skeet = bluesky.to_post(json.loads(post_event(1, "3kaa", "grève du metro", langs=["fr-FR", "en"])))
    gate = LanguageGate()
    for name, p in (("twitter", tweet), ("mastodon", toot), ("bluesky", skeet)):
        assert p is not None and primary_language(p.lang) == "fr", (name, p)
        assert "fr (tagged by the platform)" in (gate.reason_to_skip(p) or ""), name
