"""Bluesky: the Jetstream WebSocket firehose (JSON, no auth), posts filtered by topic keywords here.

``wss://<jetstream>/subscribe?wantedCollections=app.bsky.feed.post`` sends every new post on the network
as ``{"did", "time_us", "kind": "commit", "commit": {"operation": "create", "collection", "rkey",
"record": {...}, "cid"}}`` (plus ``identity``/``account`` events).  Jetstream has no keyword filter, so
the topics' keywords (and the post's ``#tag`` facets) are matched here; the first matching topic wins.

Resume: ``time_us`` is Jetstream's cursor (microseconds, unique and increasing per instance).  After a
drop or a restart we reconnect with ``cursor=<last time_us handled>`` and skip events at or before it, so
nothing between the drop and the reconnect is lost and nothing is published twice.

Images: a blob reference (``image.ref.$link``, the blob CID) becomes the CDN URL
``https://cdn.bsky.app/img/feed_fullsize/plain/<did>/<cid>@jpeg``; a video gives its thumbnail and HLS
playlist from ``video.bsky.app``; ``recordWithMedia`` (a quote with pictures) is unwrapped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from connectors.base import BadPayload, Connector, Item, TransientError, decode_json, error_for_status
from connectors.cursor import later_cursor
from connectors.post import MAX_TEXT_CHARS, MediaRef, Post
from connectors.topics import MonitoredTopic, matched_keywords

log = logging.getLogger(__name__)

JETSTREAM_URL = "wss://jetstream2.us-east.bsky.network/subscribe"
POST_COLLECTION = "app.bsky.feed.post"
CDN = "https://cdn.bsky.app/img"
VIDEO_CDN = "https://video.bsky.app/watch"


def blob_cid(blob: Any) -> str | None:
    """The CID of a blob: ``{"$type": "blob", "ref": {"$link": cid}}`` or the legacy ``{"cid": cid}``."""
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    if isinstance(ref, dict) and isinstance(ref.get("$link"), str):
        return ref["$link"]
    return blob.get("cid") if isinstance(blob.get("cid"), str) else None


def embed_media(did: str, embed: Any) -> list[MediaRef]:
    """Media of a post's embed, as CDN URLs; a blob without a CID is skipped (missing media)."""
    if not isinstance(embed, dict):
        return []
    kind = embed.get("$type")
    refs: list[MediaRef] = []
    if kind == "app.bsky.embed.images":
        for image in embed.get("images") or []:
            cid = blob_cid((image or {}).get("image")) if isinstance(image, dict) else None
            if cid:
                refs.append(MediaRef(f"{CDN}/feed_fullsize/plain/{did}/{cid}@jpeg", "image", image.get("alt") or None))
    elif kind == "app.bsky.embed.video":
        cid = blob_cid(embed.get("video"))
        if cid:
            refs.append(MediaRef(f"{VIDEO_CDN}/{did}/{cid}/thumbnail.jpg", "video_thumbnail", embed.get("alt") or None))
            refs.append(MediaRef(f"{VIDEO_CDN}/{did}/{cid}/playlist.m3u8", "video", embed.get("alt") or None))
    elif kind == "app.bsky.embed.recordWithMedia":
        refs.extend(embed_media(did, embed.get("media")))
    elif kind == "app.bsky.embed.external":
        cid = blob_cid((embed.get("external") or {}).get("thumb"))
        if cid:
            refs.append(MediaRef(f"{CDN}/feed_thumbnail/plain/{did}/{cid}@jpeg", "image", None))
    return refs


def facet_tags(record: dict[str, Any]) -> list[str]:
    tags = []
    for facet in record.get("facets") or []:
        for feature in (facet or {}).get("features") or [] if isinstance(facet, dict) else []:
            if isinstance(feature, dict) and feature.get("$type") == "app.bsky.richtext.facet#tag":
                tags.append(str(feature.get("tag", "")))
    return [t for t in tags if t]


class BlueskyConnector(Connector):
    platform = "bluesky"
    network_errors = (ConnectionClosed, InvalidHandshake, OSError, EOFError, TimeoutError)

    def __init__(self, *args: Any, jetstream_url: str = JETSTREAM_URL, read_timeout_s: float = 60.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jetstream_url = jetstream_url
        self.read_timeout_s = read_timeout_s
        self._topics = self.topics.for_platform("bluesky")
        if not self._topics:
            raise ValueError("no topic in the topics file has bluesky keywords")
        self._ws: ClientConnection | None = None
        self._ws_lock = threading.Lock()

    def subscribe_url(self, cursor: str | None) -> str:
        params = [("wantedCollections", POST_COLLECTION)]
        if cursor:
            params.append(("cursor", cursor))
        return f"{self.jetstream_url}?{urlencode(params)}"

    def fetch(self, cursor: str | None) -> Iterator[Item | BadPayload]:
        resume = int(cursor) if cursor and cursor.isdigit() else None
        try:
            ws = connect(self.subscribe_url(cursor), open_timeout=10, close_timeout=2, proxy=None,
                         max_size=4 * 1024 * 1024, user_agent_header="sentistream/0.1 (jetstream consumer)")
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = (exc.response.body or b"").decode("utf-8", "replace")
            raise error_for_status(status, "bluesky jetstream", body) from exc
        with self._ws_lock:
            self._ws = ws
        log.info("bluesky: jetstream connected%s", f" (resuming at time_us {cursor})" if cursor else "")
        try:
            while True:
                try:
                    message = ws.recv(timeout=self.read_timeout_s)
                except TimeoutError as exc:
                    raise TransientError(f"no jetstream event for {self.read_timeout_s:.0f}s; reconnecting",
                                         kind="network") from exc
                entry = decode_json(message)
                if isinstance(entry, Item):
                    time_us = entry.payload.get("time_us") if isinstance(entry.payload, dict) else None
                    if isinstance(time_us, int):
                        if resume is not None and time_us <= resume:
                            continue  # replayed from the cursor: already handled
                        entry.cursor = str(time_us)
                yield entry
        finally:
            with self._ws_lock:
                self._ws = None
            ws.close()

    def interrupt(self) -> None:
        with self._ws_lock:
            ws = self._ws
        if ws is not None:
            ws.close()

    def merge_cursor(self, current: str | None, new: str) -> str:
        return later_cursor(current, new)

    def to_post(self, payload: Any) -> Post | None:
        if not isinstance(payload, dict):
            raise TypeError(f"expected a JSON object, got {type(payload).__name__}")
        if payload.get("kind") != "commit":
            return None  # identity / account events
        commit = payload["commit"]
        if commit.get("collection") != POST_COLLECTION or commit.get("operation") != "create":
            return None
        record = commit["record"]
        did, rkey = str(payload["did"]), str(commit["rkey"])
        text = record.get("text")
        if not isinstance(text, str):
            raise ValueError("post record has no text")
        tags = facet_tags(record)
        topic, keywords = self._match(text, tags)
        if topic is None:
            return None
        langs = record.get("langs") or []
        return Post.from_dict({
            "platform": "bluesky",
            "post_id": f"at://{did}/{POST_COLLECTION}/{rkey}",
            "text": text[:MAX_TEXT_CHARS],
            "created_at": record.get("createdAt") or payload["time_us"] / 1e6,
            "author": did,
            "lang": langs[0] if langs and isinstance(langs[0], str) else None,
            "url": f"https://bsky.app/profile/{did}/post/{rkey}",
            "topic": topic.name,
            "keywords": list(keywords),
            "media": [m.to_dict() for m in embed_media(did, record.get("embed"))],
            "raw": {"did": did, "rkey": rkey, "cid": commit.get("cid"), "time_us": payload.get("time_us"),
                    "tags": tags, "reply": bool(record.get("reply"))},
        })

    def _match(self, text: str, tags: list[str]) -> tuple[MonitoredTopic | None, tuple[str, ...]]:
        haystack = text + "".join(f" #{t}" for t in tags)
        for topic in self._topics:
            assert topic.bluesky is not None
            found = matched_keywords(haystack, topic.bluesky.keywords)
            if found:
                return topic, found
        return None, ()
