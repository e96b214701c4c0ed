"""X/Twitter API v2: recent-search polling with since_id (default), and the filtered stream with rules.

Why search is the default: recent search works from the Basic tier up, the filtered stream needs Pro
(connectors/platform_access.py).  A new user with a Basic key gets posts instead of a 403; a Pro user
opts in with ``--mode stream`` for lower latency.

* Stream mode: the topics become stream rules tagged ``sentistream:<topic>`` (ours are added/removed
  to match the config; rules with other tags are left alone).  ``GET /2/tweets/search/stream`` is read
  line by line; a blank line is the keep-alive sent every ~20 s, so the read timeout (default 30 s)
  detects a silent dead connection.  After every (re)connect with a saved cursor, a recent-search
  catch-up per topic fills the gap the disconnect left; the de-dup window absorbs the overlap.
* Search mode: ``GET /2/tweets/search/recent`` per topic with ``since_id``, all ``next_token`` pages
  collected first, then published oldest first, so the cursor only ever moves past published tweets.

Both request ``expansions=attachments.media_keys,author_id``: photos give ``url``, videos and GIFs
give ``preview_image_url`` (an image the model can see) and mp4 ``variants``.

Backoff is what X prescribes: network errors linear (+250 ms, max 16 s), HTTP errors exponential
(5 s doubling, max 320 s), 429 waits until ``x-rate-limit-reset`` (epoch seconds) or from 60 s doubling.

Cursor: JSON ``{"*": max id seen on the stream, "<topic>": max id seen by that topic's search}``; tweet
ids are time-ordered snowflakes, compared as integers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import requests

from connectors.base import BadPayload, ConfigError, Connector, Item, RateBudget, TransientError, decode_json
from connectors.credentials import Secret
from connectors.http import (
    NETWORK_ERRORS,
    ResponseSlot,
    check_response,
    complete_lines,
    new_session,
    stream_chunks,
)
from connectors.post import MediaRef, Post
from connectors.topics import MonitoredTopic, matched_keywords

log = logging.getLogger(__name__)

API_URL = "https://api.x.com"
RULE_TAG_PREFIX = "sentistream:"
FIELDS = {
    "expansions": "attachments.media_keys,author_id",
    "tweet.fields": "created_at,lang,author_id,attachments,entities,conversation_id",
    "media.fields": "url,preview_image_url,type,variants,alt_text,width,height",
    "user.fields": "username,name",
}


def _rate_limit_reset(response: requests.Response) -> float | None:
    """Seconds until ``x-rate-limit-reset`` (epoch seconds), or None when the header is absent."""
    reset = response.headers.get("x-rate-limit-reset")
    try:
        return max(0.0, float(reset) - time.time()) if reset is not None else None
    except ValueError:
        return None


class TwitterConnector(Connector):
    platform = "twitter"
    network_errors = NETWORK_ERRORS

    def __init__(self, *args: Any, bearer_token: Secret, mode: str = "search", api_url: str = API_URL,
                 read_timeout_s: float = 30.0, max_search_pages: int = 50, sync_rules: bool = True,
                 **kwargs: Any) -> None:
        kwargs.setdefault("poll_interval_s", 15.0)  # recent search: 450 requests / 15 min (app auth)
        super().__init__(*args, **kwargs)
        if mode not in {"stream", "search"}:
            raise ValueError(f"mode must be 'stream' or 'search', got {mode!r}")
        self.mode = mode
        self.polling = mode == "search"
        self.api_url = api_url.rstrip("/")
        self.read_timeout_s = read_timeout_s
        self.max_search_pages = max_search_pages
        self.sync_rules = sync_rules
        self.session = new_session()
        self.session.headers["Authorization"] = f"Bearer {bearer_token.reveal()}"
        self.budget = RateBudget(min_interval_s=0.0)
        self._slot = ResponseSlot()
        self._topics = self.topics.for_platform("twitter")
        if not self._topics:
            raise ValueError("no topic in the topics file has a twitter query")
        self._topic_by_name = {t.name: t for t in self._topics}

    # -- rules (stream mode) ----------------------------------------------------------------------

    def prepare(self) -> None:
        if self.mode == "stream" and self.sync_rules:
            self.sync_stream_rules()

    def list_rules(self) -> list[dict[str, Any]]:
        response = self._request("GET", "/2/tweets/search/stream/rules")
        return list(response.json().get("data") or [])

    def sync_stream_rules(self) -> dict[str, int]:
        """Make our tagged rules equal the topics config; returns how many were added and deleted."""
        existing = self.list_rules()
        wanted = {(t.twitter.query, RULE_TAG_PREFIX + t.name) for t in self._topics if t.twitter}
        ours = [r for r in existing if str(r.get("tag", "")).startswith(RULE_TAG_PREFIX)]
        have = {(r.get("value"), r.get("tag")) for r in ours}
        stale = [r["id"] for r in ours if (r.get("value"), r.get("tag")) not in wanted]
        missing = [{"value": v, "tag": tag} for v, tag in sorted(wanted - have)]
        if stale:
            self._request("POST", "/2/tweets/search/stream/rules", json={"delete": {"ids": stale}})
        if missing:
            body = self._request("POST", "/2/tweets/search/stream/rules", json={"add": missing}).json()
            errors = body.get("errors") or []
            if errors:
                raise ConfigError(f"twitter rejected stream rules: {json.dumps(errors)[:500]}")
        log.info("twitter: stream rules synced (%d added, %d deleted, %d kept)",
                 len(missing), len(stale), len(have & wanted))
        return {"added": len(missing), "deleted": len(stale)}

    # -- fetching ---------------------------------------------------------------------------------

    def fetch(self, cursor: str | None) -> Iterator[Item | BadPayload | None]:
        state = self._cursor_state(cursor)
        if self.mode == "search":
            yield from self._search_all(state)
            return
        if state:
            yield from self._search_all(state)  # catch-up for the time we were disconnected
        yield from self._stream()

    def _stream(self) -> Iterator[Item | BadPayload | None]:
        response = self._open("GET", "/2/tweets/search/stream", params=FIELDS, stream=True,
                              timeout=(10, self.read_timeout_s))
        self._slot.set(response)
        try:
            log.info("twitter: filtered stream connected")
            for line in complete_lines(stream_chunks(response)):
                if isinstance(line, BadPayload):
                    yield line
                    continue
                if not line.strip():
                    yield None  # keep-alive: lets the base checkpoint a quiet stream
                    continue
                entry = decode_json(line)
                if isinstance(entry, Item):
                    entry.cursor = self._stream_cursor(entry.payload)
                yield entry
        finally:
            self._slot.set(None)
            response.close()

    def _search_all(self, state: dict[str, str]) -> Iterator[Item]:
        for topic in self._topics:
            since = _max_id(state.get(topic.name), state.get("*"))
            yield from self._search_topic(topic, since)

    def _search_topic(self, topic: MonitoredTopic, since_id: str | None) -> Iterator[Item]:
        assert topic.twitter is not None
        params = dict(FIELDS, query=topic.twitter.query, max_results="100")
        if since_id:
            params["since_id"] = since_id
        pages: list[dict[str, Any]] = []
        next_token: str | None = None
        for _ in range(self.max_search_pages):
            if next_token:
                params["next_token"] = next_token
            body = self._request("GET", "/2/tweets/search/recent", params=params).json()
            pages.append(body)
            next_token = (body.get("meta") or {}).get("next_token")
            if not next_token:
                break
        else:
            log.warning("twitter: search for %s stopped after %d pages; older tweets are skipped",
                        topic.name, self.max_search_pages)
        tweets: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for body in pages:
            includes = body.get("includes") or {}
            tweets.extend((tweet, includes) for tweet in body.get("data") or [] if isinstance(tweet, dict))
        tweets.sort(key=lambda pair: _int_id(pair[0].get("id")))
        for tweet, includes in tweets:  # oldest first: the cursor never passes an unpublished tweet
            payload = {"data": tweet, "includes": includes,
                       "matching_rules": [{"tag": RULE_TAG_PREFIX + topic.name}]}
            tweet_id = str(tweet.get("id", ""))
            yield Item(payload, json.dumps({topic.name: tweet_id}) if tweet_id.isdigit() else None)

    def _stream_cursor(self, payload: Any) -> str | None:
        tweet_id = str(((payload or {}).get("data") or {}).get("id", "")) if isinstance(payload, dict) else ""
        return json.dumps({"*": tweet_id}) if tweet_id.isdigit() else None

    def merge_cursor(self, current: str | None, new: str) -> str:
        state = self._cursor_state(current)
        for key, value in self._cursor_state(new).items():
            state[key] = _max_id(state.get(key), value) or value
        return json.dumps(state, sort_keys=True)

    @staticmethod
    def _cursor_state(cursor: str | None) -> dict[str, str]:
        if not cursor:
            return {}
        try:
            state = json.loads(cursor)
        except json.JSONDecodeError:
            return {"*": cursor} if cursor.isdigit() else {}
        return {str(k): str(v) for k, v in state.items()} if isinstance(state, dict) else {}

    # -- HTTP -------------------------------------------------------------------------------------

    def _open(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        wait = self.budget.seconds_until_allowed()
        if wait > 0 and self.wait(wait):
            raise TransientError("stopping", kind="network")
        kwargs.setdefault("timeout", (10, 30))
        response = self.session.request(method, self.api_url + path, **kwargs)
        self.budget.mark_request()
        remaining = response.headers.get("x-rate-limit-remaining")
        reset = response.headers.get("x-rate-limit-reset")
        try:
            self.budget.note(float(remaining) if remaining is not None else None,
                             float(reset) if reset is not None else None)
        except ValueError:
            pass
        check_response(response, "twitter", _rate_limit_reset)
        return response

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self._open(method, path, **kwargs)
        try:
            response.json()
        except ValueError as exc:
            raise TransientError(f"twitter answered {path} with invalid JSON", kind="http") from exc
        return response

    def interrupt(self) -> None:
        self._slot.cut()

    # -- mapping ----------------------------------------------------------------------------------

    def to_post(self, payload: Any) -> Post | None:
        if not isinstance(payload, dict):
            raise TypeError(f"expected a JSON object, got {type(payload).__name__}")
        tweet = payload.get("data")
        if tweet is None:
            if payload.get("errors"):
                log.warning("twitter: stream message: %s", json.dumps(payload["errors"])[:300])
                return None
            raise ValueError("message has neither data nor errors")
        includes = payload.get("includes") or {}
        topic = self._topic_for(payload.get("matching_rules") or [])
        if topic is None:
            return None
        tweet_id = str(tweet["id"])
        text = tweet.get("text") or ""
        users = {u.get("id"): u for u in includes.get("users") or [] if isinstance(u, dict)}
        author_id = tweet.get("author_id")
        username = (users.get(author_id) or {}).get("username")
        url = f"https://x.com/{username}/status/{tweet_id}" if username else f"https://x.com/i/web/status/{tweet_id}"
        created = tweet.get("created_at") or datetime.now(UTC).isoformat()
        return Post.from_dict({
            "platform": "twitter",
            "post_id": tweet_id,
            "text": text,
            "created_at": created,
            "author": username or (str(author_id) if author_id else None),
            "lang": tweet.get("lang"),
            "url": url,
            "topic": topic.name,
            "keywords": list(matched_keywords(text, topic.keywords)),
            "media": [m.to_dict() for m in _media(tweet, includes)],
            "raw": {"data": tweet, "matching_rules": payload.get("matching_rules")},
        })

    def _topic_for(self, matching_rules: list[Any]) -> MonitoredTopic | None:
        for rule in matching_rules:
            tag = str((rule or {}).get("tag") or "") if isinstance(rule, dict) else ""
            name = tag.removeprefix(RULE_TAG_PREFIX)
            if tag.startswith(RULE_TAG_PREFIX) and name in self._topic_by_name:
                return self._topic_by_name[name]
        return None


def _media(tweet: dict[str, Any], includes: dict[str, Any]) -> list[MediaRef]:
    """Photos by ``url``; videos/GIFs by ``preview_image_url`` plus the best mp4; missing keys skipped."""
    by_key = {m.get("media_key"): m for m in includes.get("media") or [] if isinstance(m, dict)}
    refs: list[MediaRef] = []
    for key in (tweet.get("attachments") or {}).get("media_keys") or []:
        media = by_key.get(key)
        if media is None:
            log.debug("twitter: tweet %s references media %s that is not in includes", tweet.get("id"), key)
            continue
        alt = media.get("alt_text")
        if media.get("type") == "photo" and media.get("url"):
            refs.append(MediaRef(media["url"], "image", alt))
        elif media.get("type") in {"video", "animated_gif"}:
            if media.get("preview_image_url"):
                refs.append(MediaRef(media["preview_image_url"], "video_thumbnail", alt))
            mp4 = [v for v in media.get("variants") or [] if isinstance(v, dict)
                   and v.get("content_type") == "video/mp4" and v.get("url")]
            if mp4:
                best = max(mp4, key=lambda v: v.get("bit_rate") or 0)
                refs.append(MediaRef(best["url"], "video", alt))
    return refs


def _int_id(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _max_id(a: str | None, b: str | None) -> str | None:
    candidates = [x for x in (a, b) if x and str(x).isdigit()]
    return max(candidates, key=int) if candidates else None
