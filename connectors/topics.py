"""The topics config: which monitored topic each platform query serves, so every post carries its topic.

One file (YAML, or TOML by suffix) lists the monitored topics.  A topic has ``keywords`` and, per
platform, the query that platform understands; a platform section left out is derived from the keywords,
and ``false`` switches the platform off for that topic::

    topics:
      skyways-airline:
        keywords: [skyways, "@skywaysair"]
        twitter: {query: "(skyways OR @SkyWaysAir) -is:retweet"}   # a filtered-stream rule / search query
        reddit: {subreddits: [travel, flights], query: skyways}   # search inside those subreddits
        bluesky: {keywords: [skyways]}                            # Jetstream has no server-side filter
        mastodon: {hashtags: [skyways]}                            # hashtag stream / timeline
      cup-final:
        keywords: [cup final, "#cupfinal"]
        mastodon: false
        languages: [en, es]   # scored languages; default [en] (the model is English-only); ["*"] = all

A topic may carry its own alert settings (read by the worker; unset keys take the global
``SENTISTREAM_ALERT_*`` defaults)::

      skyways-airline:
        alerts:
          enabled: true          # false: never alert on this topic
          sensitivity: high      # low | balanced | high (thresholds in stream/alerts.py SENSITIVITIES)
          cooldown: 30m          # a spike this soon after the incident resolved reopens it (30s/5m/2h/1d or seconds)
          min_volume: 15         # fewest posts in a window before it can alert
          window: 5m             # the window alerts are decided on; auto = chosen from the topic's volume

``languages`` is read by the worker (``SENTISTREAM_TOPICS_FILE``, see ``stream/language.py``): a post in
another language is stored with ``unscored_reason`` instead of being scored as if it were English.

Errors name the exact place (``topics.cup-final.reddit.subreddits``) so a typo fails at start-up, not as
an empty feed at 3 a.m.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOPIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
SUBREDDIT = re.compile(r"^[A-Za-z0-9_]{2,21}$")
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")  # ISO 639-1 (or 639-3 when there is no two-letter code)
ANY_LANGUAGE = "*"  # in ``languages``: score every language (the model is English-only: know why)
DEFAULT_LANGUAGES = ("en",)  # the shipped model was trained on English tweets only


class TopicsConfigError(ValueError):
    """The topics file is missing, unreadable, or has a value this build cannot use."""


@dataclass(frozen=True)
class TwitterQuery:
    query: str


@dataclass(frozen=True)
class RedditQuery:
    subreddits: tuple[str, ...] = ()  # empty = all of Reddit (requires a query)
    query: str | None = None  # None = the subreddits' newest posts


@dataclass(frozen=True)
class BlueskyQuery:
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class MastodonQuery:
    hashtags: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


SENSITIVITY_PRESETS = ("low", "balanced", "high")
DURATION = re.compile(r"^(\d+)([smhd])$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class AlertPolicy:
    """A topic's ``alerts`` section; None = the global default (``SENTISTREAM_ALERT_*``)."""

    enabled: bool | None = None
    sensitivity: str | None = None
    cooldown_s: int | None = None
    min_volume: int | None = None
    window: str | None = None  # "auto" or a length like "15m"


@dataclass(frozen=True)
class MonitoredTopic:
    name: str
    keywords: tuple[str, ...]
    twitter: TwitterQuery | None = None
    reddit: RedditQuery | None = None
    bluesky: BlueskyQuery | None = None
    mastodon: MastodonQuery | None = None
    languages: tuple[str, ...] = DEFAULT_LANGUAGES  # scored languages, lower-case codes, or ("*",)
    alerts: AlertPolicy = AlertPolicy()


@dataclass(frozen=True)
class TopicsConfig:
    topics: tuple[MonitoredTopic, ...]

    def for_platform(self, platform: str) -> list[MonitoredTopic]:
        """Topics that have a query for ``platform``, in file order (the first match wins a post)."""
        return [t for t in self.topics if getattr(t, platform, None) is not None]

    def get(self, name: str) -> MonitoredTopic:
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise KeyError(name)


def matched_keywords(text: str, keywords: Iterable[str]) -> tuple[str, ...]:
    """Keywords found in ``text``: case-insensitive, whole words (``cup`` does not match ``cupboard``)."""
    folded = text.casefold()
    found = []
    for keyword in keywords:
        k = keyword.casefold().strip()
        if k and re.search(r"(?<![\w#@])" + re.escape(k) + r"(?!\w)", folded):
            found.append(keyword)
    return tuple(found)


def twitter_query_from_keywords(keywords: Iterable[str]) -> str:
    terms = [f'"{k}"' if " " in k else k for k in keywords]
    return ("(" + " OR ".join(terms) + ")" if len(terms) > 1 else terms[0]) + " -is:retweet"


def load_topics(path: str | Path) -> TopicsConfig:
    path = Path(path)
    try:
        raw_text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopicsConfigError(f"cannot read topics file {path}: {exc.strerror or exc}") from exc
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            data = tomllib.loads(raw_text)
        except tomllib.TOMLDecodeError as exc:
            raise TopicsConfigError(f"{path}: not valid TOML: {exc}") from exc
    else:
        import yaml

        try:
            data = yaml.safe_load(raw_text)
        except yaml.YAMLError as exc:
            raise TopicsConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return parse_topics(data)
    except TopicsConfigError as exc:
        raise TopicsConfigError(f"{path}: {exc}") from None


def parse_topics(data: Any) -> TopicsConfig:
    if not isinstance(data, Mapping) or not isinstance(data.get("topics"), Mapping) or not data["topics"]:
        raise TopicsConfigError("expected a top-level 'topics' mapping with at least one topic")
    topics = []
    for name, spec in data["topics"].items():
        where = f"topics.{name}"
        if not isinstance(name, str) or not TOPIC_NAME.match(name):
            raise TopicsConfigError(f"{where}: topic names are 1-128 letters, digits, '_', '.', '-'")
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise TopicsConfigError(f"{where}: must be a mapping")
        unknown = set(spec) - {"keywords", "twitter", "reddit", "bluesky", "mastodon", "languages", "alerts"}
        if unknown:
            raise TopicsConfigError(f"{where}: unknown keys {sorted(unknown)}")
        keywords = _strings(spec.get("keywords", []), f"{where}.keywords")
        topics.append(MonitoredTopic(
            name=name,
            keywords=keywords,
            twitter=_twitter(spec.get("twitter"), keywords, f"{where}.twitter"),
            reddit=_reddit(spec.get("reddit"), keywords, f"{where}.reddit"),
            bluesky=_bluesky(spec.get("bluesky"), keywords, f"{where}.bluesky"),
            mastodon=_mastodon(spec.get("mastodon"), keywords, f"{where}.mastodon"),
            languages=_languages(spec.get("languages", list(DEFAULT_LANGUAGES)), f"{where}.languages"),
            alerts=_alerts(spec.get("alerts"), f"{where}.alerts"),
        ))
    return TopicsConfig(tuple(topics))


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise TopicsConfigError(f"{where}: must be a list of non-empty strings")
    return tuple(v.strip() for v in value)


def _languages(value: Any, where: str) -> tuple[str, ...]:
    """Lower-case language codes in file order, or ``("*",)``; a name like ``English`` is refused."""
    codes = [c.lower() for c in _strings(value, where)]
    if not codes:
        raise TopicsConfigError(f"{where}: must name at least one language (e.g. [en]) or be [\"*\"] for all")
    if ANY_LANGUAGE in codes:
        if len(codes) > 1:
            raise TopicsConfigError(f"{where}: '*' (every language) cannot be combined with codes")
        return (ANY_LANGUAGE,)
    for code in codes:
        if not LANGUAGE_CODE.match(code):
            raise TopicsConfigError(f"{where}: {code!r} is not an ISO 639-1 language code like 'en' or 'fr'")
    return tuple(dict.fromkeys(codes))


def _duration_s(value: Any, where: str) -> int:
    """``30m`` / ``2h`` / ``1d`` / ``45s`` or a whole number of seconds, >= 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = DURATION.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise TopicsConfigError(f"{where}: must be seconds (>= 0) or a duration like 30s, 15m, 2h, 1d")
    return int(match.group(1)) * DURATION_UNITS[match.group(2)]


def _alerts(value: Any, where: str) -> AlertPolicy:
    if value is None:
        return AlertPolicy()
    if value is False:
        return AlertPolicy(enabled=False)
    if not isinstance(value, Mapping):
        raise TopicsConfigError(f"{where}: must be a mapping (enabled, sensitivity, cooldown, min_volume, window)")
    unknown = set(value) - {"enabled", "sensitivity", "cooldown", "min_volume", "window"}
    if unknown:
        raise TopicsConfigError(f"{where}: unknown keys {sorted(unknown)}")
    enabled = value.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise TopicsConfigError(f"{where}.enabled: must be true or false")
    sensitivity = value.get("sensitivity")
    if sensitivity is not None and sensitivity not in SENSITIVITY_PRESETS:
        raise TopicsConfigError(f"{where}.sensitivity: must be one of {', '.join(SENSITIVITY_PRESETS)}")
    min_volume = value.get("min_volume")
    if min_volume is not None and (not isinstance(min_volume, int) or isinstance(min_volume, bool) or min_volume < 1):
        raise TopicsConfigError(f"{where}.min_volume: must be a whole number >= 1")
    window = value.get("window")
    if window is not None and window != "auto" and (_duration_s(window, f"{where}.window") <= 0
                                                    or not isinstance(window, str)):
        raise TopicsConfigError(f"{where}.window: must be auto or a window length like 5m")
    cooldown = value.get("cooldown")
    return AlertPolicy(enabled=enabled, sensitivity=sensitivity,
                       cooldown_s=None if cooldown is None else _duration_s(cooldown, f"{where}.cooldown"),
                       min_volume=min_volume, window=window)


def _section(value: Any, where: str) -> Mapping[str, Any] | None:
    """None = derive from keywords, False = off, mapping = explicit."""
    if value is False:
        return None
    if value is None or value is True:
        return {}
    if not isinstance(value, Mapping):
        raise TopicsConfigError(f"{where}: must be a mapping or false")
    return value


def _twitter(value: Any, keywords: tuple[str, ...], where: str) -> TwitterQuery | None:
    section = _section(value, where)
    if section is None:
        return None
    query = section.get("query")
    if query is None:
        if not keywords:
            return None
        query = twitter_query_from_keywords(keywords)
    if not isinstance(query, str) or not query.strip() or len(query) > 1024:
        raise TopicsConfigError(f"{where}.query: must be a non-empty string of at most 1024 characters")
    return TwitterQuery(query.strip())


def _reddit(value: Any, keywords: tuple[str, ...], where: str) -> RedditQuery | None:
    section = _section(value, where)
    if section is None:
        return None
    subreddits = tuple(s.removeprefix("r/") for s in _strings(section.get("subreddits", []), f"{where}.subreddits"))
    for sub in subreddits:
        if not SUBREDDIT.match(sub):
            raise TopicsConfigError(f"{where}.subreddits: {sub!r} is not a subreddit name")
    query = section.get("query")
    if query is None and keywords and (value is None or "subreddits" not in section):
        query = " OR ".join(f'"{k}"' if " " in k else k for k in keywords)
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise TopicsConfigError(f"{where}.query: must be a non-empty string")
    if not subreddits and not query:
        return None
    return RedditQuery(subreddits=subreddits, query=query.strip() if query else None)


def _bluesky(value: Any, keywords: tuple[str, ...], where: str) -> BlueskyQuery | None:
    section = _section(value, where)
    if section is None:
        return None
    words = _strings(section["keywords"], f"{where}.keywords") if "keywords" in section else keywords
    return BlueskyQuery(words) if words else None


def _mastodon(value: Any, keywords: tuple[str, ...], where: str) -> MastodonQuery | None:
    section = _section(value, where)
    if section is None:
        return None
    hashtags = tuple(h.lstrip("#") for h in _strings(section.get("hashtags", []), f"{where}.hashtags"))
    words = _strings(section["keywords"], f"{where}.keywords") if "keywords" in section else ()
    if not hashtags and not words:
        words = keywords
    if not hashtags and not words:
        return None
    return MastodonQuery(hashtags=hashtags, keywords=words)
