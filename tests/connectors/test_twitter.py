"""TwitterConnector against a local fake of the X API v2 (real request/response shapes) and real Kafka."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from connectors.base import AuthError, BackoffPolicy
from connectors.broker import BrokerTarget
from connectors.credentials import Secret
from connectors.cursor import InMemoryCursorStore
from connectors.publisher import KafkaPublisher
from connectors.topics import parse_topics
from connectors.twitter import TwitterConnector
from tests.connectors.conftest import read_topic
from tests.connectors.fakes import ConnectorThread, FakeServer, Request, Responder, wait_until

TOKEN = "AAAA-test-bearer-token-0123456789"
TOPICS = parse_topics({"topics": {
    "skyways": {"keywords": ["skyways", "delay"], "twitter": {"query": "skyways -is:retweet"}},
    "starfall": {"keywords": ["starfall"]},
}})
FAST = BackoffPolicy(max_wait_s=0.3, healthy_after_s=60)


def tweet(tid: str, text: str, *, media: list[str] | None = None, author: str = "42", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": tid, "text": text, "created_at": "2026-03-01T12:00:00.000Z",
                            "author_id": author, "lang": "en", "edit_history_tweet_ids": [tid]}
    if media:
        data["attachments"] = {"media_keys": media}
    data.update(extra)
    return data


USERS = [{"id": "42", "name": "Alice", "username": "alice"}]
PHOTO = {"media_key": "3_100", "type": "photo", "url": "https://pbs.twimg.com/media/photo100.jpg",
         "alt_text": "a delayed plane", "width": 800, "height": 600}
VIDEO = {"media_key": "13_200", "type": "video", "preview_image_url": "https://pbs.twimg.com/thumb200.jpg",
         "variants": [{"content_type": "application/x-mpegURL", "url": "https://video.twimg.com/200.m3u8"},
                      {"bit_rate": 256000, "content_type": "video/mp4", "url": "https://video.twimg.com/200_lo.mp4"},
                      {"bit_rate": 2176000, "content_type": "video/mp4", "url": "https://video.twimg.com/200_hi.mp4"}]}


def message(data: dict[str, Any], topic: str = "skyways", media: list[dict[str, Any]] | None = None) -> bytes:
    includes: dict[str, Any] = {"users": USERS}
    if media:
        includes["media"] = media
    return json.dumps({"data": data, "includes": includes,
                       "matching_rules": [{"id": "1790000000000000001", "tag": f"sentistream:{topic}"}]}).encode() + b"\r\n"


def _connector(server: FakeServer, publisher: KafkaPublisher, store: InMemoryCursorStore, **kw: Any) -> TwitterConnector:
    return TwitterConnector(publisher, store, TOPICS, bearer_token=Secret(TOKEN), api_url=server.url,
                            backoff=kw.pop("backoff", FAST), read_timeout_s=kw.pop("read_timeout_s", 5),
                            mode=kw.pop("mode", "stream"), **kw)


def test_stream_survives_faults_and_publishes_each_tweet_once(broker_target: BrokerTarget, topic: str) -> None:
    release = []
    rules_posts: list[Any] = []

    def handle(req: Request, res: Responder) -> None:
        assert req.headers["authorization"] == f"Bearer {TOKEN}"
        if req.path == "/2/tweets/search/stream/rules" and req.method == "GET":
            res.send_json(200, {"data": [
                {"id": "111", "value": "old query", "tag": "sentistream:skyways"},
                {"id": "222", "value": "someone else's rule", "tag": "other-app"}],
                "meta": {"sent": "2026-03-01T12:00:00.000Z", "result_count": 2}})
        elif req.path == "/2/tweets/search/stream/rules":
            body = req.json()
            rules_posts.append(body)
            if "add" in body:
                res.send_json(201, {"data": [{"id": str(900 + i), **r} for i, r in enumerate(body["add"])],
                                    "meta": {"sent": "2026-03-01T12:00:00.000Z",
                                             "summary": {"created": len(body["add"]), "not_created": 0,
                                                         "valid": len(body["add"]), "invalid": 0}}})
            else:
                res.send_json(200, {"meta": {"sent": "2026-03-01T12:00:00.000Z",
                                             "summary": {"deleted": 1, "not_deleted": 0}}})
        elif req.path == "/2/tweets/search/recent":
            # catch-up after a reconnect, since the newest tweet seen: finds the one the drop missed
            since = req.q("since_id")
            assert since is not None and int(since) >= 1005
            assert req.q("expansions") == "attachments.media_keys,author_id"
            data = [t for t in [tweet("1008", "caught up skyways tweet")] if int(t["id"]) > int(since)]
            if req.q("query") != "skyways -is:retweet":
                data = []
            res.send_json(200, {"data": data, "includes": {"users": USERS},
                                "meta": {"newest_id": "1008", "oldest_id": "1008", "result_count": len(data)}}
                          if data else {"meta": {"result_count": 0}})
        elif req.path == "/2/tweets/search/stream":
            n = req.number_for_path
            if n == 0:
                res.start_stream()
                res.chunk(message(tweet("1001", "SkyWays flight delayed", media=["3_100"]), media=[PHOTO]))
                res.chunk(b"\r\n")  # keep-alive
                second = message(tweet("1002", "skyways delay again, no media", media=["3_999"]))
                res.chunk(second[:30])  # one message split over two chunks
                res.chunk(second[30:])
                res.chunk(b'{"data": {"id": "1003", "text": oops}\r\n')  # malformed JSON
                res.chunk(message(tweet("1005", "starfall finale", unknown_field={"x": 1}), topic="starfall"))
                res.chunk(message(tweet("1006", "truncated tweet"))[:40])  # cut mid-message
                res.abort()
            elif n == 1:
                res.send_json(503, {"title": "Service Unavailable", "detail": "try later", "type": "about:blank"})
            else:
                res.start_stream()
                res.chunk(message(tweet("1002", "skyways delay again, no media")))  # duplicate after resume
                res.chunk(message(tweet("1006", "truncated tweet, now whole")))
                res.chunk(message(tweet("1007", "skyways video", media=["13_200"]), media=[VIDEO]))
                res.chunk(json.dumps({"errors": [{"title": "operational-disconnect",
                                                  "disconnect_type": "UpstreamOperationalDisconnect"}]}) + "\r\n")
                while not release and not server.closing.is_set():
                    res.chunk(b"\r\n")
                    time.sleep(0.1)

    store = InMemoryCursorStore()
    with FakeServer(handle) as server, KafkaPublisher(broker_target, topic) as publisher:
        connector = _connector(server, publisher, store)
        with ConnectorThread(connector) as runner:
            assert wait_until(lambda: connector.stats.published >= 6, timeout_s=20)
            stats = runner.stop()
            release.append(True)

    records = read_topic(broker_target, topic, expect=6)
    keys = [key for key, _ in records]
    assert sorted(keys) == ["twitter:1001", "twitter:1002", "twitter:1005", "twitter:1006",
                            "twitter:1007", "twitter:1008"]
    posts = {p.post_id: p for _, p in records}
    assert posts["1001"].media[0].url == PHOTO["url"] and posts["1001"].media[0].alt == "a delayed plane"
    assert posts["1001"].author == "alice" and posts["1001"].url == "https://x.com/alice/status/1001"
    assert posts["1001"].keywords == ("skyways",)
    assert posts["1002"].media == ()  # media key missing from includes: the tweet still goes through
    assert posts["1005"].topic == "starfall"
    assert [(m.kind, m.url) for m in posts["1007"].media] == [
        ("video_thumbnail", "https://pbs.twimg.com/thumb200.jpg"), ("video", "https://video.twimg.com/200_hi.mp4")]
    assert stats.bad_payloads >= 2  # the malformed line and the truncated one
    assert stats.duplicates >= 1
    assert stats.reconnects.get("network", 0) >= 1 and stats.reconnects.get("http", 0) >= 1
    # rules: the stale rule of ours deleted, the missing ones added, the foreign rule untouched
    assert {"delete": {"ids": ["111"]}} in rules_posts
    added = next(b["add"] for b in rules_posts if "add" in b)
    assert {"value": "skyways -is:retweet", "tag": "sentistream:skyways"} in added
    assert {"value": "starfall -is:retweet", "tag": "sentistream:starfall"} in added
    state = json.loads(store.load("twitter"))
    assert state["*"] == "1007" and state["skyways"] == "1008"


def test_unauthorized_is_fatal_with_a_clear_message(broker_target: BrokerTarget, topic: str) -> None:
    def handle(req: Request, res: Responder) -> None:
        res.send_json(401, {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"})

    with FakeServer(handle) as server, KafkaPublisher(broker_target, topic) as publisher:
        connector = _connector(server, publisher, InMemoryCursorStore())
        with pytest.raises(AuthError) as info:
            connector.run()
        assert len(server.requests) == 1  # no retry loop against a bad token
    assert "HTTP 401" in str(info.value) and "credentials" in str(info.value)
    assert TOKEN not in str(info.value)


def test_search_honours_429_reset_then_pages_since_id(broker_target: BrokerTarget, topic: str) -> None:
    reset_at: list[float] = []

    def handle(req: Request, res: Responder) -> None:
        if req.path != "/2/tweets/search/recent":
            return
        if req.index == 0:
            reset_at.append(time.time() + 1.5)
            res.send_json(429, {"title": "Too Many Requests", "detail": "Too Many Requests", "status": 429},
                          headers={"x-rate-limit-limit": "450", "x-rate-limit-remaining": "0",
                                   "x-rate-limit-reset": str(int(reset_at[0]) + 1)})
            return
        headers = {"x-rate-limit-limit": "450", "x-rate-limit-remaining": "448",
                   "x-rate-limit-reset": str(int(time.time()) + 900)}
        if req.q("query") != "skyways -is:retweet":
            res.send_json(200, {"meta": {"result_count": 0}}, headers=headers)
        elif req.q("since_id") is None and req.q("next_token") is None:  # newest page first
            res.send_json(200, {"data": [tweet("2003", "skyways three"), tweet("2002", "skyways two")],
                                "includes": {"users": USERS},
                                "meta": {"newest_id": "2003", "oldest_id": "2002", "result_count": 2,
                                         "next_token": "b26v89c19zqg8o3fpzbkk"}}, headers=headers)
        elif req.q("next_token") == "b26v89c19zqg8o3fpzbkk":
            res.send_json(200, {"data": [tweet("2001", "skyways one")], "includes": {"users": USERS},
                                "meta": {"newest_id": "2001", "oldest_id": "2001", "result_count": 1}},
                          headers=headers)
        else:
            assert req.q("since_id") == "2003"
            res.send_json(200, {"data": [tweet("2004", "skyways four")], "includes": {"users": USERS},
                                "meta": {"newest_id": "2004", "oldest_id": "2004", "result_count": 1}},
                          headers=headers)

    store = InMemoryCursorStore()
    backoff = BackoffPolicy(max_wait_s=3.0)
    with FakeServer(handle) as server, KafkaPublisher(broker_target, topic) as publisher:
        connector = _connector(server, publisher, store, mode="search", backoff=backoff, poll_interval_s=0.2)
        with ConnectorThread(connector) as runner:
            assert wait_until(lambda: connector.stats.published >= 4, timeout_s=20)
            runner.stop()
        searches = server.requests_to("/2/tweets/search/recent")
    assert len(reset_at) == 1
    assert searches[1].at >= reset_at[0] - 0.05  # the retry waited for the announced reset
    assert searches[1].at - searches[0].at < 4.0  # ... and not for the 60 s default schedule
    assert json.loads(store.load("twitter"))["skyways"] == "2004"
    records = read_topic(broker_target, topic, expect=4)
    assert sorted(k for k, _ in records) == ["twitter:2001", "twitter:2002", "twitter:2003", "twitter:2004"]


def test_a_stalled_stream_is_detected_by_the_read_timeout(broker_target: BrokerTarget, topic: str) -> None:
    """No tweet and no keep-alive for longer than the read timeout: reconnect instead of hanging."""

    def handle(req: Request, res: Responder) -> None:
        if req.path == "/2/tweets/search/recent":
            res.send_json(200, {"meta": {"result_count": 0}})
        elif req.path == "/2/tweets/search/stream":
            res.start_stream()
            if req.number_for_path == 0:
                res.chunk(message(tweet("3001", "skyways before the stall")))
                server.closing.wait(10)  # silence: not even the keep-alive newline
            else:
                res.chunk(message(tweet("3002", "skyways after the reconnect")))
                while not server.closing.is_set():
                    res.chunk(b"\r\n")
                    time.sleep(0.1)

    with FakeServer(handle) as server, KafkaPublisher(broker_target, topic) as publisher:
        connector = _connector(server, publisher, InMemoryCursorStore(), sync_rules=False, read_timeout_s=1.0)
        with ConnectorThread(connector) as runner:
            assert wait_until(lambda: connector.stats.published >= 2, timeout_s=15)
            stats = runner.stop()
    assert stats.reconnects.get("network", 0) >= 1
    assert sorted(k for k, _ in read_topic(broker_target, topic, expect=2)) == ["twitter:3001", "twitter:3002"]
