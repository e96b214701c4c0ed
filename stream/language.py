"""The language gate: the model reads English only, so a post in another language is stored, not scored.

Why a gate and not a filter: a French post about a topic is still a post about it (volume, trends,
audit), but its "sentiment" from an English-only model would be noise that can raise a false alert.
So the worker stores it with ``posts.unscored_reason`` saying which language it was and why it was
not scored.  ``sentistream rescore`` applies the same gate, so it scores such a post only once its
topic's ``languages`` include that language (with a model that reads it).

Which language a post is in, in order:

1. The platform's tag (``Post.lang``: Twitter ``lang``, Bluesky ``langs[0]``, Mastodon ``language``),
   reduced to its primary subtag (``en-US`` -> ``en``).  Twitter's "no language" tags (``und``,
   ``zxx``, ``qme`` media only, ``qht`` hashtags only, ...) count as no tag.
2. Otherwise (Reddit, replays, untagged posts) an offline identifier, ``py3langid`` (a naive Bayes
   model over byte n-grams, shipped inside the package: no download), on the text without URLs,
   @mentions, #hashtags and HTML entities.  It answers only when the text has at least
   ``MIN_LETTERS`` letters and it is at least ``MIN_CONFIDENCE`` sure.  Measured on this repo's data:
   at 0.8 it called none of 1,000 English TweetEval tweets non-English and 27 of ~30,000 SemEval
   tweets (most of them really Tagalog, Dutch, Italian or Spanish); 6k-14k posts/s on one shared
   core (``python -m bench.language``).
3. Otherwise the language is unknown and the post is scored: emoji-only and very short posts carry
   little language, and dropping them would hide a burst of "😡✈️" replies.

The topics file (``SENTISTREAM_TOPICS_FILE``, connectors/topics.py) gives each topic its scored
``languages`` (default ``[en]``; ``["*"]`` scores everything).  Without a topics file, or for a post
whose topic the file does not name, a topic scores English only: the shipped model's language.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from connectors.post import Post
from connectors.topics import ANY_LANGUAGE, DEFAULT_LANGUAGES, TopicsConfig, load_topics

log = logging.getLogger(__name__)

MIN_LETTERS = 8  # fewer letters than this (after stripping URLs, mentions, hashtags): language unknown
MIN_CONFIDENCE = 0.8  # calibrated probability py3langid must reach; see the module docstring
DETECTION_CACHE = 1024  # texts remembered: the gate asks twice per post, replays repeat texts
DETECTION_CHARS = 2000  # enough text to tell a language; bounds the cache and hostile 40k-char posts
# Tags that say "no language" rather than naming one: ISO 639-2 special codes and Twitter's own.
NO_LANGUAGE_TAGS = frozenset({"und", "zxx", "mul", "mis", "art", "qme", "qht", "qam", "qct", "qst", "qdr"})
# Deprecated ISO 639-1 codes some platforms still send -> the codes py3langid and topics files use.
LEGACY_CODES = {"in": "id", "iw": "he", "ji": "yi", "jw": "jv", "mo": "ro"}
NOT_LANGUAGE = re.compile(r"https?://\S+|www\.\S+|[@#][\w.]+|&#?\w+;")
LANGUAGE_TAG = re.compile(r"^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*$")

LanguageDetector = Callable[[str], str | None]


def primary_language(tag: object) -> str | None:
    """``en-US`` / ``EN`` / ``pt_BR`` -> ``en`` / ``en`` / ``pt``; None for a "no language" or junk tag."""
    if not isinstance(tag, str):
        return None
    match = LANGUAGE_TAG.match(tag.strip())
    if match is None:
        return None
    code = match.group(1).lower()
    if code in NO_LANGUAGE_TAGS:
        return None
    return LEGACY_CODES.get(code, code)


@functools.cache
def _identifier() -> object:
    """py3langid's identifier with calibrated probabilities, loaded once (about 0.1 s, no network)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> str | None:
    """The text's language code, or None when it is too short or the identifier is not sure."""
    return _detect_prefix(text[:DETECTION_CHARS])


@functools.lru_cache(maxsize=DETECTION_CACHE)
def _detect_prefix(text: str) -> str | None:
    words = NOT_LANGUAGE.sub(" ", text)
    if sum(ch.isalpha() for ch in words) < MIN_LETTERS:
        return None
    try:
        code, confidence = _identifier().classify(words)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a detector failure must never stop the stream: unknown
        log.exception("language identification failed; treating the post's language as unknown")
        return None
    if confidence < MIN_CONFIDENCE:
        return None
    return primary_language(code)


class LanguageGate:
    """Per topic, which languages the model may score; see the module docstring for the rules."""

    def __init__(self, languages_by_topic: Mapping[str, Iterable[str]] | None = None,
                 default: Iterable[str] = DEFAULT_LANGUAGES, detect: LanguageDetector = detect_language) -> None:
        self.default = frozenset(default)
        self.languages_by_topic = {t: frozenset(langs) for t, langs in (languages_by_topic or {}).items()}
        self.detect = detect

    @classmethod
    def from_topics(cls, config: TopicsConfig | None) -> LanguageGate:
        return cls({t.name: t.languages for t in config.topics} if config is not None else None)

    @classmethod
    def from_file(cls, path: str | Path | None) -> LanguageGate:
        """The gate for a topics file, or English-only for every topic when there is none.

        Raises ``TopicsConfigError`` for an unreadable or invalid file: a worker must not start
        scoring every language because of a typo.
        """
        gate = cls.from_topics(load_topics(path) if path is not None else None)
        log.info("language gate: %s", gate.describe())
        return gate

    def describe(self) -> str:
        def show(langs: frozenset[str]) -> str:
            return "all" if ANY_LANGUAGE in langs else ",".join(sorted(langs))

        per_topic = "; ".join(f"{t}: {show(v)}" for t, v in self.languages_by_topic.items() if v != self.default)
        return f"scores {show(self.default)} by default" + (f"; {per_topic}" if per_topic else "")

    def allowed(self, topic: str) -> frozenset[str]:
        return self.languages_by_topic.get(topic, self.default)

    def language_of(self, post: Post) -> tuple[str | None, bool]:
        """(language or None when unknown, True when it was detected rather than tagged by the platform)."""
        tagged = primary_language(post.lang)
        if tagged is not None:
            return tagged, False
        text = post.text if isinstance(post.text, str) else ""
        return self.detect(text), True

    def reason_to_skip(self, post: Post) -> str | None:
        """Why ``post`` must not be scored (stored as ``posts.unscored_reason``), or None to score it."""
        allowed = self.allowed(post.topic)
        if ANY_LANGUAGE in allowed:
            return None
        language, detected = self.language_of(post)
        if language is None or language in allowed:
            return None
        how = "detected" if detected else "tagged by the platform"
        # The text before ':' is fixed: it is the metric label of the reason (stream/pipeline.py).
        return (f"language not scored: {language} ({how}); topic {post.topic} scores "
                f"{', '.join(sorted(allowed))} (the model is English-only)")

    def with_detected_language(self, post: Post) -> Post:
        """``post`` with ``lang`` set to the detected language when the platform gave none (else as is)."""
        if post.lang:
            return post
        language, _ = self.language_of(post)
        return dataclasses.replace(post, lang=language) if language is not None else post
