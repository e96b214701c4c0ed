"""The bundled sample feed: reproducible, valid, and shaped the way the demo and the alert tests need."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from connectors.post import Post, PostDecodeError
from connectors.samples import MALFORMED_POSTS, MEDIA_HOST_PLACEHOLDER, SAMPLE_POSTS
from connectors.samples import generate_samples as gen


@pytest.fixture(scope="module")
def sample_lines() -> list[str]:
    return SAMPLE_POSTS.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def posts(sample_lines: list[str]) -> list[Post]:
    return [Post.from_json(line) for line in sample_lines]


def test_committed_files_match_the_generator(tmp_path: Path) -> None:
    assert gen.main(["--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / SAMPLE_POSTS.name).read_bytes() == SAMPLE_POSTS.read_bytes()
    assert (tmp_path / MALFORMED_POSTS.name).read_bytes() == MALFORMED_POSTS.read_bytes()


def test_another_base_time_shifts_every_post_and_keeps_the_text() -> None:
    later = gen.generate_posts(base_time=gen.BASE_TIME + timedelta(days=1))
    original = gen.generate_posts()
    assert [p["text"] for p in later] == [p["text"] for p in original]
    assert all(Post.from_dict(a).created_at - Post.from_dict(b).created_at == timedelta(days=1)
               for a, b in zip(later, original, strict=True))


def test_every_line_round_trips_through_post(sample_lines: list[str], posts: list[Post]) -> None:
    assert 350 <= len(posts) <= 450
    for line, post in zip(sample_lines, posts, strict=True):
        expected = json.loads(line)
        actual = post.to_dict()
        actual.pop("ingested_at")  # stamped on ingest, not part of the sample
        assert actual == expected


def test_keys_are_unique_and_times_sorted_within_the_three_hours(posts: list[Post]) -> None:
    assert len({p.key for p in posts}) == len(posts)
    times = [p.created_at for p in posts]
    assert times == sorted(times)
    assert gen.BASE_TIME - gen.SPAN <= times[0] and times[-1] < gen.BASE_TIME
    assert times[-1] - times[0] > timedelta(hours=2, minutes=45)


def test_platforms_topics_and_languages_are_mixed(posts: list[Post]) -> None:
    assert {p.platform for p in posts} == {"twitter", "reddit", "bluesky", "mastodon"}
    topics = Counter(p.topic for p in posts)
    assert set(topics) == {t.name for t in gen.TOPICS}
    assert min(topics.values()) >= 50
    langs = Counter(p.lang for p in posts)
    assert sum(n for lang, n in langs.items() if lang not in {"en", None}) >= 8
    emoji_only = [p for p in posts if not re.search(r"\w", p.text)]
    assert len(emoji_only) >= 3
    terms = {t.name: set(t.terms) for t in gen.TOPICS}
    for post in posts:
        assert post.keywords and set(post.keywords) <= terms[post.topic]


def test_each_topic_has_every_sentiment(posts: list[Post]) -> None:
    by_topic = Counter((p.topic, p.raw["intended_sentiment"]) for p in posts if p.raw)
    for topic in gen.TOPICS:
        for sentiment in gen.SENTIMENTS:
            assert by_topic[(topic.name, sentiment)] >= 3, (topic.name, sentiment)


def test_about_a_third_carry_images_on_the_media_placeholder(posts: list[Post]) -> None:
    with_media = [p for p in posts if p.media]
    assert 0.25 <= len(with_media) / len(posts) <= 0.35
    pattern = re.compile(r"^http://" + re.escape(MEDIA_HOST_PLACEHOLDER) + r"/img/[a-z_]+\.jpg$")
    for post in with_media:
        assert post.image_urls and all(pattern.match(url) for url in post.image_urls)


def test_the_burst_is_a_negative_spike_in_fifteen_minutes(posts: list[Post]) -> None:
    skyways = [p for p in posts if p.topic == gen.BURST_TOPIC]
    inside = [p for p in skyways if gen.BURST_START <= p.created_at < gen.BURST_END]
    outside = [p for p in skyways if not gen.BURST_START <= p.created_at < gen.BURST_END]
    negative_share = sum(p.raw["intended_sentiment"] == "negative" for p in inside) / len(inside)
    baseline_per_15min = len(outside) / ((gen.SPAN.total_seconds() - 900) / 900)
    assert len(inside) >= gen.BURST_POSTS
    assert len(inside) > 8 * baseline_per_15min
    assert negative_share >= 0.8
    # No other topic has anything like it in any 15-minute stretch.
    for topic in {p.topic for p in posts} - {gen.BURST_TOPIC}:
        stamps = [p.created_at for p in posts if p.topic == topic]
        densest = max(sum(1 for t in stamps if s <= t < s + timedelta(minutes=15)) for s in stamps)
        assert densest < len(inside) / 4, topic


def test_malformed_file_fails_exactly_on_the_bad_lines() -> None:
    outcomes: dict[int, str] = {}
    for number, line in enumerate(MALFORMED_POSTS.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            outcomes[number] = "ok:" + Post.from_json(line).post_id
        except PostDecodeError as exc:
            outcomes[number] = exc.reason
    assert [v for v in outcomes.values() if v.startswith("ok:")] == ["ok:valid-1", "ok:valid-2", "ok:valid-3"]
    reasons = [v for v in outcomes.values() if not v.startswith("ok:")]
    assert len(reasons) == 8
    expected_fragments = ["not valid JSON", "text is missing", "platform 'myspace'", "ISO-8601",
                          "must be a JSON object", "text is missing or not a string", "no url", "not valid JSON"]
    for reason, fragment in zip(reasons, expected_fragments, strict=True):
        assert fragment in reason
