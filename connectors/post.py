"""The normalized post: the one record every connector produces and the stream worker consumes.

It travels on Kafka as schema-versioned JSON, keyed by ``platform:post_id``.  Keeping it a frozen
dataclass with its own validation (rather than a Faust Record) means connectors never import the stream
package, and a malformed message is rejected with a reason that can go to the dead-letter topic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 1
PLATFORMS = frozenset({"twitter", "reddit", "bluesky", "mastodon", "replay"})
MEDIA_KINDS = frozenset({"image", "video", "video_thumbnail", "audio", "gif"})
DEFAULT_TOPIC = "unassigned"
MAX_TEXT_CHARS = 40_000


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
        kind = data.get("kind", data.get("type", "image")) or "image"
        if kind not in MEDIA_KINDS:
            raise PostDecodeError(f"media kind {kind!r} is not one of {sorted(MEDIA_KINDS)}")
        alt = data.get("alt")
        return cls(url=url.strip(), kind=kind, alt=alt if isinstance(alt, str) else None)


def parse_timestamp(value: Any, field_name: str = "created_at") -> datetime:
    """Parse ISO-8601 strings (``Z`` allowed) or epoch seconds into an aware UTC datetime."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        dt = datetime.fromtimestamp(float(value), tz=UTC)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError as exc:
            raise PostDecodeError(f"{field_name} is not an ISO-8601 timestamp: {value!r}") from exc
    else:
        raise PostDecodeError(f"{field_name} is missing or not a timestamp")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


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
        if not isinstance(data, Mapping):
            raise PostDecodeError(f"post must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
            raise PostDecodeError(f"unsupported schema_version {version!r} (this build reads <= {SCHEMA_VERSION})")
        platform = data.get("platform")
        if not isinstance(platform, str) or platform not in PLATFORMS:
            raise PostDecodeError(f"platform {platform!r} is not one of {sorted(PLATFORMS)}")
        post_id = data.get("post_id", data.get("id"))
        if isinstance(post_id, int) and not isinstance(post_id, bool):
            post_id = str(post_id)
        if not isinstance(post_id, str) or not post_id.strip() or len(post_id) > 256:
            raise PostDecodeError("post_id is missing, empty or longer than 256 characters")
        text = data.get("text")
        if not isinstance(text, str):
            raise PostDecodeError("text is missing or not a string")
        if len(text) > MAX_TEXT_CHARS:
            raise PostDecodeError(f"text is longer than {MAX_TEXT_CHARS} characters")
        created_at = parse_timestamp(data.get("created_at"))
        topic = data.get("topic") or DEFAULT_TOPIC
        if not isinstance(topic, str) or len(topic) > 128:
            raise PostDecodeError("topic must be a string of at most 128 characters")
        keywords = data.get("keywords") or ()
        if isinstance(keywords, str):
            keywords = (keywords,)
        if not isinstance(keywords, Sequence) or not all(isinstance(k, str) for k in keywords):
            raise PostDecodeError("keywords must be a list of strings")
        media_raw = data.get("media") or ()
        if not isinstance(media_raw, Sequence) or isinstance(media_raw, str):
            raise PostDecodeError("media must be a list")
        raw = data.get("raw")
        if raw is not None and not isinstance(raw, Mapping):
            raise PostDecodeError("raw must be an object when present")
        ingested = data.get("ingested_at")
        return cls(
            platform=platform,
            post_id=post_id.strip(),
            text=text,
            created_at=created_at,
            author=_optional_str(data, "author"),
            lang=_optional_str(data, "lang"),
            url=_optional_str(data, "url"),
            topic=topic.strip() or DEFAULT_TOPIC,
            keywords=tuple(keywords),
            media=tuple(MediaRef.from_dict(m) for m in media_raw),
            raw=raw,
            ingested_at=parse_timestamp(ingested, "ingested_at") if ingested else datetime.now(UTC),
            schema_version=version,
        )

    @classmethod
    def from_json(cls, payload: bytes | str) -> Post:
        """Decode a Kafka value or a JSONL line."""
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PostDecodeError(f"not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PostDecodeError(f"{name} must be a string when present")
    return value
