"""Mastodon: the streaming API (server-sent events) with REST catch-up after every reconnect.

Stream choice: when the topics name exactly one hashtag and no keywords, ``/api/v1/streaming/hashtag``
(``?tag=``) gives just that; otherwise ``/api/v1/streaming/public`` and the topics are matched here
(status hashtags, then keywords in the text).  ``--local`` uses the ``/local`` variants.

SSE has ``Last-Event-ID`` for resuming, but Mastodon does not send event ids, so the resume point is the
newest status id seen (ids are time-ordered, compared as integers).  Before every (re)connect with a
cursor, the matching REST timeline (``/api/v1/timelines/tag/:tag`` or ``/timelines/public``) is paged
with ``min_id`` = cursor: unlike ``since_id`` (which returns the *newest* 40 after the id and can leave a
hole in a busy hour), ``min_id`` returns the 40 *immediately* after it, so paging forward is gapless.
The de-dup window absorbs the overlap with the stream.

Post id: the status ``uri`` (the ActivityPub id, the same on every instance), so two ingest services
reading different instances do not store one post twice.  Boosts are skipped (the original is the post).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import requests

from connectors.base import BadPayload, Connector, Item, RateBudget, TransientError
from connectors.credentials import Secret
from connectors.cursor import later_cursor
from connectors.http import (
    NETWORK_ERRORS,
    ResponseSlot,
    check_response,
    complete_lines,
    new_session,
    stream_chunks,
)
from connectors.post import MAX_TEXT_CHARS, MediaRef, Post
from connectors.topics import MonitoredTopic, matched_keywords

log = logging.getLogger(__name__)

PAGE_LIMIT = 40  # the REST timelines' maximum


class _TextExtractor(HTMLParser):
    """Status ``content`` is HTML: keep the text, turn <br> and paragraph ends into newlines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return re.sub(r"\n{3,}", "\n\n", "".join(parser.parts)).strip()


def _rate_limit_reset(response: requests.Response) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` (an ISO-8601 time on Mastodon)."""
    reset = response.headers.get("X-RateLimit-Reset")
    if not reset:
        return None
    try:
        when = datetime.fromisoformat(reset.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - datetime.now(when.tzinfo).timestamp())


class MastodonConnector(Connector):
    platform = "mastodon"
    network_errors = NETWORK_ERRORS

    def __init__(self, *args: Any, instance_url: str, access_token: Secret | None = None, local: bool = False,
                 read_timeout_s: float = 90.0, max_catchup_pages: int = 25, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance_url = instance_url.rstrip("/")
        self.host = urlsplit(self.instance_url).hostname or self.instance_url
        self.local = local
        self.read_timeout_s = read_timeout_s
        self.max_catchup_pages = max_catchup_pages
        self.session = new_session()
        if access_token is not None:
            self.session.headers["Authorization"] = f"Bearer {access_token.reveal()}"
        self.budget = RateBudget()
        self._slot = ResponseSlot()
        self._topics = self.topics.for_platform("mastodon")
        if not self._topics:
            raise ValueError("no topic in the topics file has a mastodon query")
        hashtags = {h.lower() for t in self._topics for h in (t.mastodon.hashtags if t.mastodon else ())}
        keyword_topics = [t for t in self._topics if t.mastodon and t.mastodon.keywords]
        self.hashtag = next(iter(hashtags)) if len(hashtags) == 1 and not keyword_topics else None

    # -- endpoints ----------------------------------------------------------------------------------

    def _stream_request(self) -> tuple[str, dict[str, str]]:
        if self.hashtag:
            return ("/api/v1/streaming/hashtag/local" if self.local else "/api/v1/streaming/hashtag",
                    {"tag": self.hashtag})
        return ("/api/v1/streaming/public/local" if self.local else "/api/v1/streaming/public"), {}

    def _timeline_request(self) -> tuple[str, dict[str, str]]:
        params = {"local": "true"} if self.local else {}
        if self.hashtag:
            return f"/api/v1/timelines/tag/{self.hashtag}", params
        return "/api/v1/timelines/public", params

    # -- fetching -----------------------------------------------------------------------------------

    def fetch(self, cursor: str | None) -> Iterator[Item | BadPayload | None]:
        if cursor:
            yield from self._catch_up(cursor)
        yield from self._stream()

    def _catch_up(self, cursor: str) -> Iterator[Item]:
        path, params = self._timeline_request()
        min_id = cursor
        for _ in range(self.max_catchup_pages):
            response = self._get(path, params=dict(params, min_id=min_id, limit=str(PAGE_LIMIT)))
            try:
                statuses = response.json()
            except ValueError as exc:
                raise TransientError(f"mastodon answered {path} with invalid JSON", kind="http") from exc
            if not isinstance(statuses, list) or not statuses:
                return
            statuses = sorted((s for s in statuses if isinstance(s, dict) and str(s.get("id", "")).isdigit()),
                              key=lambda s: int(s["id"]))
            for status in statuses:
                yield Item(status, str(status["id"]))
            min_id = str(statuses[-1]["id"]) if statuses else min_id
            if len(statuses) < PAGE_LIMIT:
                return
        log.warning("mastodon: catch-up stopped after %d pages", self.max_catchup_pages)

    def _stream(self) -> Iterator[Item | BadPayload | None]:
        path, params = self._stream_request()
        response = self._get(path, params=params, stream=True, timeout=(10, self.read_timeout_s),
                             headers={"Accept": "text/event-stream"})
        self._slot.set(response)
        log.info("mastodon: streaming %s from %s", path, self.host)
        try:
            event, data = None, []
            for line in complete_lines(stream_chunks(response)):
                if isinstance(line, BadPayload):
                    yield line
                    continue
                text = line.decode("utf-8", "replace")
                if text.startswith(":"):
                    yield None  # heartbeat comment: lets the base checkpoint a quiet stream
                    continue
                if text == "":
                    if data:
                        yield from self._dispatch(event, "\n".join(data))
                    event, data = None, []
                    continue
                name, _, value = text.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
        finally:
            self._slot.set(None)
            response.close()

    def _dispatch(self, event: str | None, data: str) -> Iterator[Item | BadPayload]:
        if event not in {"update", "status.update"}:
            return  # delete, notification, filters_changed, announcement...: not posts
        try:
            status = json.loads(data)
        except json.JSONDecodeError as exc:
            yield BadPayload(f"{event} event is not valid JSON: {exc}", data[:200])
            return
        status_id = str(status.get("id", "")) if isinstance(status, dict) else ""
        yield Item(status, status_id if status_id.isdigit() else None)

    def _get(self, path: str, **kwargs: Any) -> requests.Response:
        wait = self.budget.seconds_until_allowed()
        if wait > 0 and self.wait(wait):
            raise TransientError("stopping", kind="network")
        kwargs.setdefault("timeout", (10, 30))
        response = self.session.get(self.instance_url + path, **kwargs)
        self.budget.mark_request()
        remaining = response.headers.get("X-RateLimit-Remaining")
        reset_in = _rate_limit_reset(response)
        if remaining is not None and remaining.isdigit() and reset_in is not None:
            self.budget.note(float(remaining), time.time() + reset_in)
        check_response(response, "mastodon", _rate_limit_reset)
        return response

    def interrupt(self) -> None:
        self._slot.cut()

    def merge_cursor(self, current: str | None, new: str) -> str:
        return later_cursor(current, new)

    # -- mapping ------------------------------------------------------------------------------------

    def to_post(self, payload: Any) -> Post | None:
        if not isinstance(payload, dict):
            raise TypeError(f"expected a status object, got {type(payload).__name__}")
        if payload.get("reblog"):
            return None
        text = html_to_text(payload.get("content") or "")
        if payload.get("spoiler_text"):
            text = f"{payload['spoiler_text']}\n\n{text}".strip()
        tags = {str(t.get("name", "")).lower() for t in payload.get("tags") or [] if isinstance(t, dict)}
        topic, keywords = self._match(text, tags)
        if topic is None:
            return None
        account = payload.get("account") or {}
        acct = account.get("acct")
        if acct and "@" not in acct:  # a local account: its domain is the one in its profile URL
            acct = f"{acct}@{urlsplit(account.get('url') or '').hostname or self.host}"
        post_id = payload.get("uri") or ""
        if not post_id or len(post_id) > 256:
            post_id = f"{self.host}:{payload['id']}"
        return Post.from_dict({
            "platform": "mastodon",
            "post_id": post_id,
            "text": text[:MAX_TEXT_CHARS],
            "created_at": payload["created_at"],
            "author": acct,
            "lang": payload.get("language"),
            "url": payload.get("url") or payload.get("uri"),
            "topic": topic.name,
            "keywords": list(keywords),
            "media": [m.to_dict() for m in _media(payload.get("media_attachments") or [])],
            "raw": {"id": payload.get("id"), "uri": payload.get("uri"), "instance": self.host,
                    "tags": sorted(tags), "sensitive": payload.get("sensitive")},
        })

    def _match(self, text: str, tags: set[str]) -> tuple[MonitoredTopic | None, tuple[str, ...]]:
        for topic in self._topics:
            query = topic.mastodon
            assert query is not None
            hit_tags = tuple(f"#{h}" for h in query.hashtags if h.lower() in tags)
            hit_words = matched_keywords(text, query.keywords)
            if hit_tags or hit_words or (self.hashtag and self.hashtag in {h.lower() for h in query.hashtags}):
                also = matched_keywords(text, [k for k in topic.keywords if k not in hit_words])
                return topic, hit_tags + hit_words + also
        return None, ()


def _media(attachments: list[Any]) -> list[MediaRef]:
    refs: list[MediaRef] = []
    for media in attachments:
        if not isinstance(media, dict):
            continue
        kind, alt = media.get("type"), media.get("description")
        url = media.get("url") or media.get("remote_url")
        preview = media.get("preview_url")
        if kind == "image" and url:
            refs.append(MediaRef(url, "image", alt))
        elif kind in {"video", "gifv"}:
            if preview:
                refs.append(MediaRef(preview, "video_thumbnail", alt))
            if url:
                refs.append(MediaRef(url, "video", alt))
        elif kind == "audio" and url:
            refs.append(MediaRef(url, "audio", alt))
    return refs
