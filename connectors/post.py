"""The normalized post: the one record every connector produces and the stream worker consumes.

It travels on Kafka as schema-versioned JSON, keyed by ``platform:post_id``.  Keeping it a frozen
dataclass with its own validation (rather than a Faust Record) means connectors never import the stream
package, and a malformed message is rejected with a reason that can go to the dead-letter topic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

SCHEMA_VERSION = 1
PLATFORMS = frozenset({"twitter", "reddit", "bluesky", "mastodon", "replay"})
MEDIA_KINDS = frozenset({"image", "video", "video_thumbnail", "audio", "gif"})
DEFAULT_TOPIC = "unassigned"

# Decoding limits: a message outside them is a dead letter with a reason, never an exception that
# stops the stream (README, "How it holds together").  Sized for real posts with room to spare.
MAX_MESSAGE_BYTES = 1024 * 1024  # one encoded message (the broker's default max.message.bytes)
MAX_JSON_DEPTH = 32  # nested objects/arrays, ``raw`` included
MAX_INT_DIGITS = 20  # an integer literal: 64-bit ids fit; Python's 4,300-digit limit is never reached
MAX_NUMBER_CHARS = 64  # any other number literal
MAX_TEXT_CHARS = 40_000
MAX_POST_ID_CHARS = 256
MAX_AUTHOR_CHARS = 256
MAX_LANG_CHARS = 35  # the longest BCP-47 tag
MAX_URL_CHARS = 2048
MAX_TOPIC_CHARS = 128
MAX_KEYWORDS = 64
MAX_KEYWORD_CHARS = 128
MAX_MEDIA = 16
MAX_ALT_CHARS = 2000
MAX_TIMESTAMP_CHARS = 64
# Timestamp policy: a time without an offset is UTC; accepted range is [EARLIEST_TIME, now + MAX_CLOCK_SKEW].
EARLIEST_TIME = datetime(2005, 1, 1, tzinfo=UTC)  # before any supported platform existed (Reddit: 2005)
MAX_CLOCK_SKEW = timedelta(days=1)  # a source's clock may run ahead; further ahead is a broken timestamp

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# a whole string (possessive: never backtracks), a bracket, or the quote of an unterminated string
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"|[\[\]{}]|"', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class PostDecodeError(ValueError):
    """A message or line is not a valid Post; ``reason`` says why, for the dead-letter record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MediaRef:
    """A media attachment by URL; fetched later by the worker, never by the connector."""

    url: str
    kind: str = "image"
    alt: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "kind": self.kind, "alt": self.alt}

    @classmethod
    def from_dict(cls, data: Any) -> MediaRef:
        if isinstance(data, str):
            data = {"url": data}
        if not isinstance(data, Mapping):
            raise PostDecodeError(f"media entry must be an object or URL string, got {type(data).__name__}")
        url = data.get("url")
        if not isinstance(url, str) or not url.strip():
            raise PostDecodeError("media entry has no url")
        url = _bounded("media url", url.strip(), MAX_URL_CHARS, controls=False)
        kind = data.get("kind", data.get("type", "image")) or "image"
        if not isinstance(kind, str) or kind not in MEDIA_KINDS:
            raise PostDecodeError(f"media kind {_shown(kind)} is not one of {sorted(MEDIA_KINDS)}")
        alt = data.get("alt")
        if isinstance(alt, str):
            _bounded("media alt text", alt, MAX_ALT_CHARS, controls=True)
        return cls(url=url, kind=kind, alt=alt if isinstance(alt, str) else None)


def parse_timestamp(value: Any, field_name: str = "created_at", now: datetime | None = None) -> datetime:
    """Parse ISO-8601 strings (``Z`` allowed) or epoch seconds into an aware UTC datetime.

    Policy: a time without an offset is UTC; a time before ``EARLIEST_TIME`` or more than
    ``MAX_CLOCK_SKEW`` after ``now`` is rejected (epoch milliseconds land there, and so do year-9999
    placeholders, which would overflow window arithmetic downstream).
    """
    try:
        if isinstance(value, datetime):
            dt = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise PostDecodeError(f"{field_name} is not a finite number")
            dt = datetime.fromtimestamp(float(value), tz=UTC)
        elif isinstance(value, str) and value.strip():
            if len(value) > MAX_TIMESTAMP_CHARS:
                raise PostDecodeError(f"{field_name} is longer than {MAX_TIMESTAMP_CHARS} characters")
            text = value.strip()
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            try:
                dt = datetime.fromisoformat(text)
            except ValueError as exc:
                raise PostDecodeError(f"{field_name} is not an ISO-8601 timestamp: {value!r}") from exc
        else:
            raise PostDecodeError(f"{field_name} is missing or not a timestamp")
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        dt = dt.astimezone(UTC)
    except (OverflowError, OSError, ValueError) as exc:
        if isinstance(exc, PostDecodeError):
            raise
        raise PostDecodeError(f"{field_name} {_shown(value)} is outside the representable time range") from exc
    latest = (now or datetime.now(UTC)) + MAX_CLOCK_SKEW
    if dt < EARLIEST_TIME or dt > latest:
        raise PostDecodeError(f"{field_name} {dt.isoformat()} is outside the accepted range "
                              f"[{EARLIEST_TIME.date().isoformat()}, now + {MAX_CLOCK_SKEW.days} day]")
    return dt


@dataclass(frozen=True, slots=True)
class Post:
    """One social-media post, normalized across platforms.

    ``topic`` is the monitored topic the post was collected for (a connector knows it from its query);
    ``keywords`` are the query terms that matched.  ``raw`` keeps the platform payload for audits.
    """

    platform: str
    post_id: str
    text: str
    created_at: datetime
    author: str | None = None
    lang: str | None = None
    url: str | None = None
    topic: str = DEFAULT_TOPIC
    keywords: tuple[str, ...] = ()
    media: tuple[MediaRef, ...] = ()
    raw: Mapping[str, Any] | None = None
    ingested_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        """Kafka key and idempotency key: the same post always lands on the same partition and row."""
        return f"{self.platform}:{self.post_id}"

    @property
    def image_urls(self) -> list[str]:
        return [m.url for m in self.media if m.kind in {"image", "video_thumbnail", "gif"}]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "platform": self.platform,
            "post_id": self.post_id,
            "text": self.text,
            "created_at": self.created_at.isoformat(),
            "author": self.author,
            "lang": self.lang,
            "url": self.url,
            "topic": self.topic,
            "keywords": list(self.keywords),
            "media": [m.to_dict() for m in self.media],
            "raw": dict(self.raw) if self.raw is not None else None,
            "ingested_at": self.ingested_at.isoformat(),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_dict(cls, data: Any) -> Post:
        """Validate and build a Post; raise PostDecodeError with a human-readable reason."""
        return cls._from_mapping(data, check_raw=True)

    @classmethod
    def _from_mapping(cls, data: Any, *, check_raw: bool) -> Post:
        if not isinstance(data, Mapping):
            raise PostDecodeError(f"post must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION or version < 1:
            raise PostDecodeError(f"unsupported schema_version {_shown(version)} "
                                  f"(this build reads 1..{SCHEMA_VERSION})")
        platform = data.get("platform")
        if not isinstance(platform, str) or platform not in PLATFORMS:
            raise PostDecodeError(f"platform {_shown(platform)} is not one of {sorted(PLATFORMS)}")
        post_id = data.get("post_id", data.get("id"))
        if isinstance(post_id, int) and not isinstance(post_id, bool):
            post_id = str(post_id)
        if not isinstance(post_id, str) or not post_id.strip() or len(post_id) > MAX_POST_ID_CHARS:
            raise PostDecodeError(f"post_id is missing, empty or longer than {MAX_POST_ID_CHARS} characters")
        post_id = _bounded("post_id", post_id.strip(), MAX_POST_ID_CHARS, controls=False)
        media_raw = data.get("media") or ()
        if not isinstance(media_raw, Sequence) or isinstance(media_raw, str | bytes):
            raise PostDecodeError("media must be a list")
        if len(media_raw) > MAX_MEDIA:
            raise PostDecodeError(f"media has {len(media_raw)} entries; at most {MAX_MEDIA} are accepted")
        media = tuple(MediaRef.from_dict(m) for m in media_raw)
        text = data.get("text")
        if text is None and media:
            text = ""  # pictures without a caption are a post: scored on the pictures
        if text is None:
            raise PostDecodeError("text is missing and the post has no media")
        if not isinstance(text, str):
            raise PostDecodeError(f"text is missing or not a string (got {type(text).__name__})")
        text = _bounded("text", text, MAX_TEXT_CHARS, controls=True)
        if not text.strip() and not media:
            raise PostDecodeError("text is empty and the post has no media")
        created_at = parse_timestamp(data.get("created_at"))
        topic = data.get("topic") or DEFAULT_TOPIC
        if not isinstance(topic, str) or len(topic) > MAX_TOPIC_CHARS:
            raise PostDecodeError(f"topic must be a string of at most {MAX_TOPIC_CHARS} characters")
        topic = _bounded("topic", topic.strip(), MAX_TOPIC_CHARS, controls=False)
        keywords = data.get("keywords") or ()
        if isinstance(keywords, str):
            keywords = (keywords,)
        if not isinstance(keywords, Sequence) or not all(isinstance(k, str) for k in keywords):
            raise PostDecodeError("keywords must be a list of strings")
        if len(keywords) > MAX_KEYWORDS:
            raise PostDecodeError(f"keywords has {len(keywords)} entries; at most {MAX_KEYWORDS} are accepted")
        for k in keywords:
            _bounded("keyword", k, MAX_KEYWORD_CHARS, controls=False)
        raw = data.get("raw")
        if raw is not None and not isinstance(raw, Mapping):
            raise PostDecodeError("raw must be an object when present")
        if raw is not None and check_raw:  # from_json has checked the whole message already
            check_json_tree(raw, "raw")
        ingested = data.get("ingested_at")
        return cls(
            platform=platform,
            post_id=post_id,
            text=text,
            created_at=created_at,
            author=_optional_str(data, "author", MAX_AUTHOR_CHARS, controls=True),
            lang=_optional_str(data, "lang", MAX_LANG_CHARS, controls=False),
            url=_optional_str(data, "url", MAX_URL_CHARS, controls=False),
            topic=topic or DEFAULT_TOPIC,
            keywords=tuple(keywords),
            media=media,
            raw=raw,
            ingested_at=parse_timestamp(ingested, "ingested_at") if ingested else datetime.now(UTC),
            schema_version=version,
        )

    @classmethod
    def from_json(cls, payload: bytes | str) -> Post:
        """Decode a Kafka value or a JSONL line, strictly (see the limits at the top of this module)."""
        return cls._from_mapping(decode_json(payload), check_raw=False)


def decode_json(payload: bytes | str | bytearray) -> Any:
    """Parse one message as strict JSON: bounded size, depth and numbers; no duplicate keys, no NaN,
    no invalid UTF-8 (CESU-8 and encoded surrogates included), no lone surrogate escapes."""
    size = len(payload)
    if size > MAX_MESSAGE_BYTES:
        raise PostDecodeError(f"message is {size} bytes; at most {MAX_MESSAGE_BYTES} are accepted")
    if isinstance(payload, bytes | bytearray):
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PostDecodeError(f"not valid UTF-8: {exc.reason} at byte {exc.start}") from exc
    else:
        text = payload
        _no_surrogates("message", text)
    if not _depth_within_limit(text):
        raise PostDecodeError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_int=_parse_int,
                          parse_float=_parse_float, parse_constant=_reject_constant)
    except PostDecodeError:
        raise
    except RecursionError as exc:
        raise PostDecodeError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from exc
    except json.JSONDecodeError as exc:
        raise PostDecodeError(f"not valid JSON: {exc}") from exc
    except ValueError as exc:  # anything else the parser refuses is still bad input, not a crash
        raise PostDecodeError(f"not valid JSON: {exc}") from exc
    if _SURROGATE_ESCAPE.search(text):  # only a \uD800-\uDFFF escape makes a lone surrogate
        check_json_tree(data, "message")
    return data


def _depth_within_limit(text: str) -> bool:
    """Bracket depth outside strings, checked before the parser recurses; linear in the message size."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return True
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return False
        elif token == "]" or token == "}":
            depth -= 1
        elif token == '"':
            return True  # an unterminated string: not JSON, and the parser says where
    return True


def check_json_tree(value: Any, where: str) -> None:
    """Reject nesting deeper than ``MAX_JSON_DEPTH`` and strings with lone surrogates, iteratively."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _no_surrogates(where, node)
        elif isinstance(node, Mapping | list | tuple):
            if depth > MAX_JSON_DEPTH:
                raise PostDecodeError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(node, Mapping):
                for k, v in node.items():
                    if isinstance(k, str):
                        _no_surrogates(where, k)
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in node)
        elif isinstance(node, float) and (node != node or node in (float("inf"), float("-inf"))):
            raise PostDecodeError(f"{where}: NaN and Infinity are not JSON numbers")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PostDecodeError(f"duplicate key {_shown(key)} in a JSON object")
        out[key] = value
    return out


def _parse_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise PostDecodeError(f"integer with {digits} digits; at most {MAX_INT_DIGITS} are accepted")
    return int(literal)


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise PostDecodeError(f"number literal of {len(literal)} characters; at most {MAX_NUMBER_CHARS}")
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise PostDecodeError(f"number {literal[:20]} overflows a 64-bit float")
    return value


def _reject_constant(name: str) -> Any:
    raise PostDecodeError(f"{name} is not a JSON number (NaN and Infinity are rejected)")


def _no_surrogates(where: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PostDecodeError(f"{where}: string contains a lone surrogate "
                              f"(U+{ord(value[exc.start]):04X}), which is not valid Unicode text") from exc


def _bounded(name: str, value: str, limit: int, *, controls: bool) -> str:
    """``value`` if it is at most ``limit`` characters of valid text (control characters only if allowed)."""
    if len(value) > limit:
        raise PostDecodeError(f"{name} is longer than {limit} characters ({len(value)})")
    _no_surrogates(name, value)
    if not controls and _CONTROL.search(value):
        raise PostDecodeError(f"{name} contains control characters")
    return value


def _shown(value: Any) -> str:
    """A bounded, printable rendering of a bad value for a reason string."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _optional_str(data: Mapping[str, Any], name: str, limit: int, *, controls: bool) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PostDecodeError(f"{name} must be a string when present")
    return _bounded(name, value, limit, controls=controls)
