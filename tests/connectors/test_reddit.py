"""RedditConnector against a local fake of Reddit's OAuth2 + listing API (real shapes), real Kafka."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from connectors.base import AuthError, BackoffPolicy
from connectors.broker import BrokerTarget
from connectors.credentials import Secret
from connectors.cursor import InMemoryCursorStore
from connectors.publisher import KafkaPublisher
from connectors.reddit import RedditConnector, RedditCredentials
from connectors.topics import parse_topics
from tests.connectors.conftest import read_topic
from tests.connectors.fakes import ConnectorThread, FakeServer, Request, Responder, wait_until

TOPICS = parse_topics({"topics": {
    "skyways": {"keywords": ["skyways", "lost bag"], "reddit": {"subreddits": ["travel", "flights"], "query": "skyways"}},
    "acme": {"keywords": ["acme"], "reddit": {"subreddits": ["Android"]}},
}})
CREDS = RedditCredentials(client_id=Secret("cid-123"), client_secret=Secret("csecret-456"),
                          username="sentibot", password=Secret("hunter2"))
FAST = BackoffPolicy(max_wait_s=0.3)
T0 = 1_772_000_000.0


def link(pid: str, title: str, age_s: float, **extra: Any) -> dict[str, Any]:
    data = {"id": pid, "name": f"t3_{pid}", "title": title, "selftext": "", "author": "flyer42",
            "created_utc": T0 + age_s, "subreddit": "travel", "permalink": f"/r/travel/comments/{pid}/slug/",
            "url": f"https://www.reddit.com/r/travel/comments/{pid}/slug/", "score": 3, "over_18": False,
            "is_video": False, "all_awardings": [], "link_flair_richtext": []}
    data.update(extra)
    return {"kind": "t3", "data": data}


GALLERY = link("p3", "SkyWays lost bag, photos", 30, is_gallery=True, url="https://www.reddit.com/gallery/p3",
               gallery_data={"items": [{"media_id": "m2", "id": 2, "caption": "the tag"}, {"media_id": "m1", "id": 1}]},
               media_metadata={"m1": {"status": "valid", "e": "Image", "m": "image/jpg",
                                      "s": {"u": "https://preview.redd.it/m1.jpg?width=640&amp;s=abc", "x": 640, "y": 480}},
                               "m2": {"status": "valid", "e": "Image", "m": "image/png",
                                      "s": {"u": "https://preview.redd.it/m2.png?width=800&s=def", "x": 800, "y": 600}},
                               "m3": {"status": "failed"}})
PREVIEW = link("p2", "SkyWays delay again", 20, post_hint="link", url="https://news.example/article",
               preview={"images": [{"source": {"url": "https://external-preview.redd.it/x.jpg?auto=webp&amp;s=1",
                                               "width": 1200, "height": 630}, "resolutions": [], "id": "x"}],
                        "enabled": False})
SELF = link("p1", "Is SkyWays any good?", 10, selftext="Flying next week &amp; worried.")


def listing(children: list[Any], after: str | None = None) -> dict[str, Any]:
    return {"kind": "Listing", "data": {"after": after, "dist": len(children), "modhash": "", "geo_filter": "",
                                        "children": children, "before": None}}


def test_polls_pages_and_recovers_from_faults(broker_target: BrokerTarget, topic: str) -> None:
    token_calls: list[Request] = []
    search_calls: list[Request] = []

    def handle(req: Request, res: Responder) -> None:
        assert req.headers["user-agent"] == "python:sentistream:v0.1.0 (by /u/sentibot)"
        if req.path == "/api/v1/access_token":
            token_calls.append(req)
            expected = base64.b64encode(b"cid-123:csecret-456").decode()
            assert req.headers["authorization"] == f"Basic {expected}"
            assert b"grant_type=password" in req.body and b"username=sentibot" in req.body
            res.send_json(200, {"access_token": "tok-1", "token_type": "bearer", "expires_in": 86400, "scope": "*"})
            return
        assert req.headers["authorization"] == "bearer tok-1"
        limits = {"X-Ratelimit-Used": "3", "X-Ratelimit-Remaining": "97.0", "X-Ratelimit-Reset": "420"}
        if req.path == "/r/Android/new":
            res.send_json(200, listing([]), headers=limits)
            return
        assert req.path == "/r/travel+flights/search"
        assert req.q("q") == "skyways" and req.q("restrict_sr") == "1" and req.q("sort") == "new"
        assert req.q("raw_json") == "1"
        search_calls.append(req)
        n = len(search_calls) - 1
        if n == 0:
            assert req.q("after") is None
            res.send_json(200, listing([GALLERY, PREVIEW, SELF]), headers=limits)
        elif n == 1:
            res.send_bytes(200, b'{"kind": "Listing", "data": {"children": [{"kind": "t3", "da', headers=limits)
        elif n == 2:
            res.send_bytes(503, b"<html>upstream connect error</html>", "text/html")
        elif n == 3:
            res.send_json(429, {"message": "Too Many Requests", "error": 429},
                          headers={"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "1"})
        elif n == 4:  # newest page, then one more page back to the post we stopped at
            assert req.q("after") is None and req.q("limit") == "100"
            res.send_json(200, listing([link("p6", "skyways six", 60, unknown={"a": 1}), {"kind": "t3", "data": {"id": "zz"}},
                                        link("p5", "skyways five", 50)], after="t3_p5"), headers=limits)
        elif n == 5:
            assert req.q("after") == "t3_p5"
            res.send_json(200, listing([link("p4", "skyways four", 40), GALLERY], after="t3_p3"), headers=limits)
        else:  # p6 was removed by moderators: the anchor is gone, created_utc still bounds the walk
            res.send_json(200, listing([link("p7", "skyways seven", 70), link("p5", "skyways five", 50),
                                        link("p4", "skyways four", 40)], after="t3_p4"), headers=limits)

    store = InMemoryCursorStore()
    with FakeServer(handle) as server, KafkaPublisher(broker_target, topic) as publisher:
        connector = RedditConnector(publisher, store, TOPICS, credentials=CREDS, api_url=server.url,
                                    backoff=FAST, poll_interval_s=0.05)
        connector.budget.min_interval_s = 0.0
        with ConnectorThread(connector) as runner:
            assert wait_until(lambda: connector.stats.published >= 7, timeout_s=30)
            assert wait_until(lambda: len(search_calls) >= 8, timeout_s=10)
            stats = runner.stop()

    records = read_topic(broker_target, topic, expect=7)
    assert sorted(k for k, _ in records) == [f"reddit:p{i}" for i in range(1, 8)]
    posts = {p.post_id: p for _, p in records}
    assert [m.url for m in posts["p3"].media] == ["https://preview.redd.it/m2.png?width=800&s=def",
                                                  "https://preview.redd.it/m1.jpg?width=640&s=abc"]
    assert posts["p3"].media[0].alt == "the tag"
    assert posts["p3"].keywords == ("skyways", "lost bag")
    assert [(m.kind, m.url) for m in posts["p2"].media] == [("image", "https://external-preview.redd.it/x.jpg?auto=webp&s=1")]
    assert posts["p1"].text == "Is SkyWays any good?\n\nFlying next week & worried."
    assert posts["p1"].url == "https://www.reddit.com/r/travel/comments/p1/slug/"
    assert posts["p1"].author == "flyer42" and posts["p1"].topic == "skyways"
    assert len(token_calls) == 1  # the token is cached until it expires
    assert stats.bad_payloads >= 1
    assert stats.reconnects.get("http", 0) >= 2 and stats.reconnects.get("rate_limit") == 1
    assert '"name": "t3_p7"' in (store.load("reddit") or "")


def test_bad_client_credentials_fail_clearly(broker_target: BrokerTarget, topic: str) -> None:
    def handle(req: Request, res: Responder) -> None:
        res.send_json(401, {"message": "Unauthorized", "error": 401})

    with FakeServer(handle) as server, KafkaPublisher(broker_target, topic) as publisher:
        connector = RedditConnector(publisher, InMemoryCursorStore(), TOPICS, credentials=CREDS,
                                    api_url=server.url, backoff=FAST)
        with pytest.raises(AuthError) as info:
            connector.run()
    assert "HTTP 401" in str(info.value)
    assert "csecret-456" not in str(info.value) and "hunter2" not in str(info.value)


def test_wrong_password_answered_with_200_invalid_grant_is_fatal(broker_target: BrokerTarget, topic: str) -> None:
    def handle(req: Request, res: Responder) -> None:
        res.send_json(200, {"error": "invalid_grant"})

    with FakeServer(handle) as server, KafkaPublisher(broker_target, topic) as publisher:
        connector = RedditConnector(publisher, InMemoryCursorStore(), TOPICS, credentials=CREDS,
                                    api_url=server.url, backoff=FAST)
        with pytest.raises(AuthError, match="invalid_grant"):
            connector.run()


def test_expired_token_is_refreshed_once(broker_target: BrokerTarget, topic: str) -> None:
    tokens = ["tok-1", "tok-2"]
    issued: list[str] = []

    def handle(req: Request, res: Responder) -> None:
        if req.path == "/api/v1/access_token":
            issued.append(tokens[len(issued)])
            res.send_json(200, {"access_token": issued[-1], "token_type": "bearer", "expires_in": 86400, "scope": "*"})
        elif req.headers["authorization"] == "bearer tok-1":
            res.send_json(401, {"message": "Unauthorized", "error": 401})  # revoked early by Reddit
        elif req.path == "/r/travel+flights/search":
            res.send_json(200, listing([SELF]))
        else:
            res.send_json(200, listing([]))

    with FakeServer(handle) as server, KafkaPublisher(broker_target, topic) as publisher:
        connector = RedditConnector(publisher, InMemoryCursorStore(), TOPICS, credentials=CREDS,
                                    api_url=server.url, backoff=FAST, poll_interval_s=0.05)
        connector.budget.min_interval_s = 0.0
        with ConnectorThread(connector) as runner:
            assert wait_until(lambda: connector.stats.published >= 1, timeout_s=15)
            runner.stop()
    assert issued == ["tok-1", "tok-2"]
    assert [k for k, _ in read_topic(broker_target, topic, expect=1)] == ["reddit:p1"]
