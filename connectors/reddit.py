"""Reddit: OAuth2 (application-only or script app) and polling of subreddit listings and searches.

Each topic is one feed: ``/r/a+b/search?q=…&restrict_sr=1&sort=new`` when it has subreddits and a query,
``/r/a+b/new`` with subreddits only, ``/search?q=…&sort=new`` with a query only.

Paging: a poll reads the feed newest first and follows ``after`` (the fullname of the last child) until
it reaches the post it stopped at last time (by fullname, or by ``created_utc`` when that post has been
removed), then publishes what it found oldest first, so the cursor only moves past published posts.
Why not ``before=<newest fullname>``: when that post is removed or deleted, Reddit answers ``before``
with an empty listing forever, and the feed silently stops.

Limits: Reddit allows ~100 requests per minute per OAuth client and reports ``X-Ratelimit-Remaining`` /
``X-Ratelimit-Reset`` (seconds to the end of the period); at zero remaining the next request waits for
the reset, a 429 waits for the reset too.  The User-Agent is descriptive
(``<platform>:<app id>:<version> (by /u/<user>)``), as Reddit requires; default ones are throttled.

Media: galleries (``gallery_data`` order, ``media_metadata`` sources), a direct image link, otherwise
the ``preview`` source image; hosted videos give their fallback mp4 and preview as thumbnail.

Cursor: JSON ``{"<topic>": {"name": "t3_…", "created_utc": 1.7e9}}``.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests

from connectors.base import AuthError, BadPayload, Connector, Item, RateBudget, TransientError
from connectors.credentials import Credentials, Secret
from connectors.http import NETWORK_ERRORS, check_response, new_session
from connectors.post import MAX_TEXT_CHARS, MediaRef, Post
from connectors.topics import MonitoredTopic, matched_keywords

log = logging.getLogger(__name__)

AUTH_URL = "https://www.reddit.com"
API_URL = "https://oauth.reddit.com"
PAGE_LIMIT = 100


@dataclass(frozen=True)
class RedditCredentials:
    client_id: Secret
    client_secret: Secret
    username: str | None = None
    password: Secret | None = None
    user_agent: str | None = None

    @classmethod
    def from_lookup(cls, credentials: Credentials) -> RedditCredentials:
        return cls(
            client_id=credentials.require("REDDIT_CLIENT_ID", "Reddit OAuth2 (the app id under the app name)"),
            client_secret=credentials.require("REDDIT_CLIENT_SECRET", "Reddit OAuth2 (the app secret)"),
            username=credentials.plain("REDDIT_USERNAME"),
            password=credentials.get("REDDIT_PASSWORD"),
            user_agent=credentials.plain("REDDIT_USER_AGENT"),
        )

    def describe_user_agent(self) -> str:
        return self.user_agent or f"python:sentistream:v0.1.0 (by /u/{self.username or 'sentistream'})"


@dataclass(frozen=True)
class Feed:
    topic: MonitoredTopic
    path: str
    params: dict[str, str]


def _reset_seconds(response: requests.Response) -> float | None:
    try:
        value = response.headers.get("X-Ratelimit-Reset")
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class RedditConnector(Connector):
    platform = "reddit"
    polling = True
    network_errors = NETWORK_ERRORS

    def __init__(self, *args: Any, credentials: RedditCredentials, api_url: str = API_URL,
                 auth_url: str | None = None, max_pages: int = 10, first_poll_limit: int = 25,
                 **kwargs: Any) -> None:
        kwargs.setdefault("poll_interval_s", 30.0)
        super().__init__(*args, **kwargs)
        self.credentials = credentials
        self.api_url = api_url.rstrip("/")
        # A test or proxy URL serves both; the real API splits token (www) and data (oauth) hosts.
        self.auth_url = (auth_url or (AUTH_URL if api_url == API_URL else api_url)).rstrip("/")
        self.max_pages = max_pages
        self.first_poll_limit = first_poll_limit
        self.session = new_session(credentials.describe_user_agent())
        self.budget = RateBudget(min_interval_s=0.6)  # 100 requests per minute
        self._token: str | None = None
        self._token_expires = 0.0
        self.feeds = [self._feed(t) for t in self.topics.for_platform("reddit")]
        if not self.feeds:
            raise ValueError("no topic in the topics file has a reddit query")

    @staticmethod
    def _feed(topic: MonitoredTopic) -> Feed:
        query = topic.reddit
        assert query is not None
        base = {"raw_json": "1"}
        subs = "+".join(query.subreddits)
        if subs and query.query:
            return Feed(topic, f"/r/{subs}/search", dict(base, q=query.query, restrict_sr="1", sort="new"))
        if subs:
            return Feed(topic, f"/r/{subs}/new", base)
        return Feed(topic, "/search", dict(base, q=query.query or "", sort="new"))

    # -- OAuth2 -------------------------------------------------------------------------------------

    def _access_token(self) -> str:
        if self._token and time.time() < self._token_expires:
            return self._token
        c = self.credentials
        if c.username and c.password is not None:
            data = {"grant_type": "password", "username": c.username, "password": c.password.reveal()}
        else:
            data = {"grant_type": "client_credentials"}
        response = self.session.post(f"{self.auth_url}/api/v1/access_token", data=data, timeout=(10, 30),
                                     auth=(c.client_id.reveal(), c.client_secret.reveal()))
        check_response(response, "reddit (token)", _reset_seconds)
        try:
            body = response.json()
        except ValueError as exc:
            raise TransientError("reddit token endpoint answered invalid JSON", kind="http") from exc
        if "access_token" not in body:
            # Reddit answers a wrong password with 200 {"error": "invalid_grant"}.
            raise AuthError(f"reddit refused the OAuth2 grant ({body.get('error', 'no access_token')}); "
                            "check REDDIT_CLIENT_ID/SECRET and, for a script app, REDDIT_USERNAME/PASSWORD")
        self._token = str(body["access_token"])
        self._token_expires = time.time() + float(body.get("expires_in", 3600)) - 60
        log.info("reddit: OAuth2 token obtained (%s, scope %s)", data["grant_type"], body.get("scope"))
        return self._token

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        for attempt in (0, 1):
            wait = self.budget.seconds_until_allowed()
            if wait > 0 and self.wait(wait):
                raise TransientError("stopping", kind="network")
            headers = {"Authorization": f"bearer {self._access_token()}"}
            response = self.session.get(self.api_url + path, params=params, headers=headers, timeout=(10, 30))
            self.budget.mark_request()
            remaining, reset = response.headers.get("X-Ratelimit-Remaining"), _reset_seconds(response)
            if remaining is not None and reset is not None:
                try:
                    self.budget.note(float(remaining), time.time() + reset)
                except ValueError:
                    pass
            if response.status_code == 401 and attempt == 0:
                self._token = None  # expired or revoked: one fresh token, then 401 is fatal
                response.close()
                continue
            check_response(response, "reddit", _reset_seconds)
            try:
                body = response.json()
            except ValueError as exc:
                raise TransientError(f"reddit answered {path} with invalid JSON", kind="http") from exc
            if not isinstance(body, dict) or body.get("kind") != "Listing":
                raise TransientError(f"reddit answered {path} with something other than a Listing", kind="http")
            return body
        raise AssertionError("unreachable")

    # -- polling ------------------------------------------------------------------------------------

    def fetch(self, cursor: str | None) -> Iterator[Item | BadPayload]:
        state = self._state(cursor)
        for feed in self.feeds:
            yield from self._poll(feed, state.get(feed.topic.name))

    def _poll(self, feed: Feed, anchor: dict[str, Any] | None) -> Iterator[Item | BadPayload]:
        found: list[dict[str, Any]] = []
        bad: list[BadPayload] = []
        after: str | None = None
        reached = False
        limit = str(PAGE_LIMIT if anchor else self.first_poll_limit)
        for _ in range(self.max_pages if anchor else 1):
            params = dict(feed.params, limit=limit)
            if after:
                params["after"] = after
            listing = self._get(feed.path, params)
            data = listing.get("data") or {}
            children = data.get("children") or []
            for child in children:
                post = child.get("data") if isinstance(child, dict) and child.get("kind") == "t3" else None
                if (not isinstance(post, dict) or not isinstance(post.get("name"), str)
                        or not isinstance(post.get("created_utc"), int | float)):
                    bad.append(BadPayload("listing child is not a t3 post with name and created_utc",
                                          json.dumps(child)[:200]))
                    continue
                if anchor and (post["name"] == anchor.get("name")
                               or _created(post) < float(anchor.get("created_utc", 0))):
                    reached = True
                    break
                found.append(post)
            after = data.get("after")
            if reached or not after or not children:
                break
        if anchor and not reached and after:
            log.warning("reddit: %s: more than %d pages of new posts; the oldest are skipped",
                        feed.topic.name, self.max_pages)
        yield from bad
        found.sort(key=_created)
        for post in found:  # oldest first
            yield Item({"topic": feed.topic.name, "post": post},
                       json.dumps({feed.topic.name: {"name": post["name"], "created_utc": _created(post)}}))

    def merge_cursor(self, current: str | None, new: str) -> str:
        state = self._state(current)
        state.update(self._state(new))
        return json.dumps(state, sort_keys=True)

    @staticmethod
    def _state(cursor: str | None) -> dict[str, dict[str, Any]]:
        if not cursor:
            return {}
        try:
            state = json.loads(cursor)
        except json.JSONDecodeError:
            return {}
        return {k: v for k, v in state.items() if isinstance(v, dict)} if isinstance(state, dict) else {}

    # -- mapping ------------------------------------------------------------------------------------

    def to_post(self, payload: Any) -> Post | None:
        topic = self.topics.get(payload["topic"])
        post = payload["post"]
        if post.get("removed_by_category") or post.get("author") == "[deleted]" and post.get("selftext") == "[removed]":
            return None
        title = html.unescape(post.get("title") or "")
        body = html.unescape(post.get("selftext") or "")
        text = f"{title}\n\n{body}".strip() if body else title
        author = post.get("author")
        return Post.from_dict({
            "platform": "reddit",
            "post_id": str(post["id"]),
            "text": text[:MAX_TEXT_CHARS],
            "created_at": _created(post),
            "author": None if author in (None, "[deleted]") else str(author),
            "lang": None,
            "url": f"https://www.reddit.com{post['permalink']}" if post.get("permalink") else post.get("url"),
            "topic": topic.name,
            "keywords": list(matched_keywords(text, topic.keywords)),
            "media": [m.to_dict() for m in _media(post)],
            "raw": {"name": post["name"], "subreddit": post.get("subreddit"), "score": post.get("score"),
                    "over_18": post.get("over_18"), "link_url": post.get("url")},
        })


def _created(post: dict[str, Any]) -> float:
    value = post.get("created_utc")
    if not isinstance(value, int | float):
        raise ValueError("post has no numeric created_utc")
    return float(value)


def _url(value: Any) -> str | None:
    return html.unescape(value) if isinstance(value, str) and value.startswith("http") else None


def _media(post: dict[str, Any]) -> list[MediaRef]:
    refs: list[MediaRef] = []
    metadata = post.get("media_metadata") or {}
    if post.get("is_gallery") and isinstance(metadata, dict):
        for item in (post.get("gallery_data") or {}).get("items") or []:
            meta = metadata.get(item.get("media_id")) if isinstance(item, dict) else None
            if not isinstance(meta, dict) or meta.get("status") != "valid":
                continue
            source = meta.get("s") or {}
            caption = item.get("caption")
            if meta.get("e") == "Image" and _url(source.get("u")):
                refs.append(MediaRef(_url(source.get("u")) or "", "image", caption))
            elif meta.get("e") == "AnimatedImage" and _url(source.get("gif")):
                refs.append(MediaRef(_url(source.get("gif")) or "", "gif", caption))
        return refs
    video = ((post.get("secure_media") or post.get("media") or {}).get("reddit_video") or {})
    preview_images = (post.get("preview") or {}).get("images") or []
    preview = _url(((preview_images[0] or {}).get("source") or {}).get("url")) if preview_images else None
    if post.get("is_video") and _url(video.get("fallback_url")):
        if preview:
            refs.append(MediaRef(preview, "video_thumbnail"))
        refs.append(MediaRef(_url(video.get("fallback_url")) or "", "video"))
    elif post.get("post_hint") == "image" and _url(post.get("url")):
        refs.append(MediaRef(_url(post.get("url")) or "", "image"))
    elif preview:
        kind = "video_thumbnail" if post.get("post_hint") in {"rich:video", "hosted:video"} else "image"
        refs.append(MediaRef(preview, kind))
    return refs
