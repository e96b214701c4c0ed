"""MastodonConnector against a local fake of the streaming (SSE) and REST timeline APIs, real Kafka."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.base import AuthError, BackoffPolicy
from connectors.broker import BrokerTarget
from connectors.credentials import Secret
from connectors.cursor import InMemoryCursorStore
from connectors.mastodon import MastodonConnector, html_to_text
from connectors.publisher import KafkaPublisher
from connectors.topics import parse_topics
from tests.connectors.conftest import read_topic
from tests.connectors.fakes import ConnectorThread, FakeServer, Request, Responder, wait_until

HOST = "mastodon.example"
TOKEN = "mastodon-token-abcdef"
FAST = BackoffPolicy(max_wait_s=0.3, healthy_after_s=60)


def status(sid: int, text: str, *, tags: tuple[str, ...] = ("metrostrike",), media: list[dict[str, Any]] | None = None,
           reblog: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    created = datetime(2026, 3, 14, 15, 0, tzinfo=UTC) + timedelta(minutes=sid - 100)
    content = f"<p>{text}" + "".join(
        f' <a href="https://{HOST}/tags/{t}" class="mention hashtag" rel="tag">#<span>{t}</span></a>' for t in tags) + "</p>"
    data: dict[str, Any] = {
        "id": str(sid), "created_at": created.isoformat().replace("+00:00", ".000Z"), "in_reply_to_id": None,
        "sensitive": False, "spoiler_text": "", "visibility": "public", "language": "en",
        "uri": f"https://{HOST}/users/mike/statuses/{sid}", "url": f"https://{HOST}/@mike/{sid}",
        "replies_count": 0, "reblogs_count": 0, "favourites_count": 0, "content": content, "reblog": reblog,
        "account": {"id": "1", "username": "mike", "acct": "mike", "display_name": "Mike", "url": f"https://{HOST}/@mike"},
        "media_attachments": media or [], "mentions": [], "emojis": [], "card": None, "poll": None,
        "tags": [{"name": t, "url": f"https://{HOST}/tags/{t}"} for t in tags],
    }
    data.update(extra)
    return data


IMAGE = {"id": "22", "type": "image", "url": f"https://files.{HOST}/media/22.jpg",
         "preview_url": f"https://files.{HOST}/media/small/22.jpg", "remote_url": None,
         "description": "crowded platform", "blurhash": "UFA"}
VIDEO = {"id": "23", "type": "video", "url": f"https://files.{HOST}/media/23.mp4",
         "preview_url": f"https://files.{HOST}/media/small/23.png", "remote_url": None, "description": None}


def sse(event: str, payload: Any) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"event: {event}\ndata: {data}\n\n".encode()


def test_hashtag_stream_catches_up_and_resumes_without_duplicates(broker_target: BrokerTarget, topic: str) -> None:
    topics = parse_topics({"topics": {"metro-strike": {"keywords": ["metro strike"],
                                                       "mastodon": {"hashtags": ["#MetroStrike"]}}}})
    timeline = [status(101, "first"), status(102, "second")]  # what the server has before we connect

    def handle(req: Request, res: Responder) -> None:
        assert req.headers.get("authorization") == f"Bearer {TOKEN}"
        if req.path == "/api/v1/timelines/tag/metrostrike":
            min_id = int(req.q("min_id") or 0)
            assert req.q("limit") == "40"
            newer = sorted((s for s in timeline if int(s["id"]) > min_id), key=lambda s: -int(s["id"]))
            res.send_json(200, newer[:40], headers={"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "299"})
        elif req.path == "/api/v1/streaming/hashtag":
            assert req.q("tag") == "metrostrike"
            n = req.number_for_path
            if n == 0:
                res.start_stream(content_type="text/event-stream")
                res.chunk(b":)\n")
                res.chunk(sse("update", status(103, "Metro strike day two", media=[IMAGE])))
                res.chunk(b":thump\n")
                res.chunk(sse("delete", "99"))
                res.chunk(b"event: update\ndata: {\"id\": \"x\", broken\n\n")
                whole = sse("update", status(104, "Platform closed", unknown_field=[1, 2]))
                res.chunk(whole[:50])
                res.chunk(whole[50:])
                timeline.append(status(105, "posted while we were away"))
                res.chunk(sse("update", status(105, "posted while we were away"))[:60])  # cut mid-event
                res.abort()
            elif n == 1:
                reset = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
                res.send_json(429, {"error": "Too many requests"},
                              headers={"X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0",
                                       "X-RateLimit-Reset": reset})
            else:
                res.start_stream(content_type="text/event-stream")
                res.chunk(sse("update", status(105, "posted while we were away")))  # also seen in catch-up
                res.chunk(sse("update", status(200, "boosted", reblog=status(90, "old one"))))
                res.chunk(sse("status.update", status(103, "Metro strike day two (edited)", media=[IMAGE])))
                res.chunk(sse("update", status(201, "video from the platform", media=[VIDEO])))
                while not server.closing.is_set():
                    res.chunk(b":thump\n")
                    time.sleep(0.1)

    store = InMemoryCursorStore({"mastodon": "100"})
    with FakeServer(handle) as server, KafkaPublisher(broker_target, topic) as publisher:
        connector = MastodonConnector(publisher, store, topics, instance_url=server.url,
                                      access_token=Secret(TOKEN), backoff=FAST)
        with ConnectorThread(connector) as runner:
            assert wait_until(lambda: connector.stats.published >= 6, timeout_s=20)
            stats = runner.stop()
        catchups = [r.q("min_id") for r in server.requests_to("/api/v1/timelines/tag/metrostrike")]

    assert catchups[0] == "100" and "104" in catchups  # resumed from the saved cursor, then from the stream
    records = read_topic(broker_target, topic, expect=6)
    ids = sorted(p.post_id.rsplit("/", 1)[-1] for _, p in records)
    assert ids == ["101", "102", "103", "104", "105", "201"]
    posts = {p.post_id.rsplit("/", 1)[-1]: p for _, p in records}
    assert posts["103"].post_id == f"https://{HOST}/users/mike/statuses/103"
    assert posts["103"].text == "Metro strike day two #metrostrike"
    assert posts["103"].author == f"mike@{HOST}" and posts["103"].topic == "metro-strike"
    assert "#MetroStrike" in posts["103"].keywords and "metro strike" in posts["103"].keywords
    assert [(m.kind, m.url, m.alt) for m in posts["103"].media] == [("image", IMAGE["url"], "crowded platform")]
    assert [m.kind for m in posts["201"].media] == ["video_thumbnail", "video"]
    assert stats.bad_payloads >= 2 and stats.duplicates >= 2
    assert stats.reconnects.get("rate_limit") == 1
    assert store.load("mastodon") == "201"


def test_public_stream_matches_keywords_and_skips_the_rest(broker_target: BrokerTarget, topic: str) -> None:
    topics = parse_topics({"topics": {
        "metro-strike": {"keywords": ["tube strike"], "mastodon": {"hashtags": ["metrostrike"], "keywords": ["tube strike"]}},
        "cup-final": {"keywords": ["cup final"]}}})

    def handle(req: Request, res: Responder) -> None:
        assert req.path == "/api/v1/streaming/public"
        assert "authorization" not in req.headers
        if req.number_for_path == 0:
            res.start_stream(content_type="text/event-stream")
            res.chunk(sse("update", status(301, "The tube strike is over", tags=())))
            res.chunk(sse("update", status(302, "Lovely weather", tags=())))
            res.chunk(sse("update", status(303, "Cup Final tickets!", tags=("football",))))
            while not server.closing.is_set():
                res.chunk(b":thump\n")
                time.sleep(0.1)

    with FakeServer(handle) as server, KafkaPublisher(broker_target, topic) as publisher:
        connector = MastodonConnector(publisher, InMemoryCursorStore(), topics, instance_url=server.url, backoff=FAST)
        with ConnectorThread(connector) as runner:
            assert wait_until(lambda: connector.stats.published + connector.stats.skipped >= 3, timeout_s=20)
            runner.stop()
    records = read_topic(broker_target, topic, expect=2)
    assert sorted((p.topic, p.keywords) for _, p in records) == [
        ("cup-final", ("cup final",)), ("metro-strike", ("tube strike",))]


def test_unauthorized_is_fatal(broker_target: BrokerTarget, topic: str) -> None:
    topics = parse_topics({"topics": {"t": {"mastodon": {"hashtags": ["x"]}}}})

    def handle(req: Request, res: Responder) -> None:
        res.send_json(401, {"error": "This method requires an authenticated user"})

    with FakeServer(handle) as server, KafkaPublisher(broker_target, topic) as publisher:
        connector = MastodonConnector(publisher, InMemoryCursorStore(), topics, instance_url=server.url,
                                      access_token=Secret(TOKEN), backoff=FAST)
        with pytest.raises(AuthError, match="HTTP 401"):
            connector.run()
        assert len(server.requests) == 1


def test_html_to_text_keeps_line_structure() -> None:
    assert html_to_text("<p>one<br>two &amp; three</p><p>four</p>") == "one\ntwo & three\n\nfour"


def test_broker_restart_mid_stream_loses_nothing_and_holds_the_cursor(tmp_path: Any, topic: str) -> None:
    """The broker stops while posts keep arriving: they are held, the cursor does not move past them
    (the checkpoint's flush blocks the connector: backpressure), and they reach the broker once it is
    back.  Tansu keeps its log in memory, so only what arrives during and after the outage can be
    checked on the restarted broker."""
    from connectors.broker import BrokerTarget
    from stream.embedded import EmbeddedBroker, free_port

    topics = parse_topics({"topics": {"metro-strike": {"mastodon": {"hashtags": ["metrostrike"]}}}})
    phase = {"n": 0}

    def handle(req: Request, res: Responder) -> None:
        res.start_stream(content_type="text/event-stream")
        sent = 0
        while not server.closing.is_set():
            target = {0: 0, 1: 2, 2: 5, 3: 8}[phase["n"]]
            while sent < target:
                sent += 1
                res.chunk(sse("update", status(400 + sent, f"update {sent}")))
            res.chunk(b":thump\n")
            time.sleep(0.05)

    port = free_port()
    broker = EmbeddedBroker(tmp_path / "b", port=port).start()
    target = BrokerTarget(broker.bootstrap_servers, embedded=True)
    store = InMemoryCursorStore()
    try:
        with FakeServer(handle) as server, KafkaPublisher(target, topic, resend_backoff_s=(0.1, 0.5),
                                                                flush_timeout_s=60) as publisher:
            connector = MastodonConnector(publisher, store, topics, instance_url=server.url, backoff=FAST,
                                          checkpoint_interval_s=0.2)
            with ConnectorThread(connector) as runner:
                phase["n"] = 1
                assert wait_until(lambda: store.load("mastodon") == "402", timeout_s=20)
                broker.stop()
                phase["n"] = 2  # 403..405 arrive while the broker is down
                assert wait_until(lambda: connector.stats.published >= 3, timeout_s=20)
                time.sleep(1.0)  # checkpoints are due every 0.2 s: the flush now waits for the broker
                assert store.load("mastodon") == "402"  # not saved past posts Kafka has not acknowledged
                broker = EmbeddedBroker(tmp_path / "b", port=port).start()
                phase["n"] = 3
                assert wait_until(lambda: store.load("mastodon") == "408", timeout_s=30)
                runner.stop()
        records = read_topic(target, topic, expect=6, timeout_s=15)
        assert {p.post_id.rsplit("/", 1)[-1] for _, p in records} >= {str(i) for i in range(403, 409)}
    finally:
        broker.stop()
