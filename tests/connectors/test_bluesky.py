"""BlueskyConnector against a local Jetstream fake (websockets server, real event shapes), real Kafka."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.sync.server import ServerConnection, serve

from connectors.base import BackoffPolicy
from connectors.bluesky import BlueskyConnector
from connectors.broker import BrokerTarget
from connectors.cursor import InMemoryCursorStore
from connectors.publisher import KafkaPublisher
from connectors.topics import parse_topics
from tests.connectors.conftest import read_topic
from tests.connectors.fakes import ConnectorThread, wait_until

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
TOPICS = parse_topics({"topics": {
    "skyways": {"keywords": ["skyways"], "bluesky": {"keywords": ["skyways", "#skyways"]}},
    "starfall": {"keywords": ["starfall"]},
}})
FAST = BackoffPolicy(max_wait_s=0.3, healthy_after_s=60)


def post_event(time_us: int, rkey: str, text: str, *, embed: dict[str, Any] | None = None,
               facets: list[Any] | None = None, operation: str = "create", **record_extra: Any) -> str:
    record: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-03-14T15:00:00.000Z",
                              "langs": ["en"]}
    if embed:
        record["embed"] = embed
    if facets:
        record["facets"] = facets
    record.update(record_extra)
    commit: dict[str, Any] = {"rev": f"3l{rkey}", "operation": operation, "collection": "app.bsky.feed.post",
                              "rkey": rkey}
    if operation != "delete":
        commit.update(record=record, cid=f"bafyreib{rkey}")
    return json.dumps({"did": DID, "time_us": time_us, "kind": "commit", "commit": commit})


def blob(cid: str, mime: str = "image/jpeg") -> dict[str, Any]:
    return {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime, "size": 123456}


IMAGES = {"$type": "app.bsky.embed.images", "images": [
    {"alt": "queue at the gate", "image": blob("bafkreiaaa"), "aspectRatio": {"width": 4, "height": 3}},
    {"alt": "", "image": {"cid": "bafkreilegacy", "mimeType": "image/jpeg"}}]}
BROKEN_IMAGE = {"$type": "app.bsky.embed.images", "images": [{"alt": "no blob", "image": {"$type": "blob"}}]}
QUOTE_WITH_VIDEO = {"$type": "app.bsky.embed.recordWithMedia",
                    "record": {"$type": "app.bsky.embed.record", "record": {"uri": "at://x/app.bsky.feed.post/1", "cid": "b"}},
                    "media": {"$type": "app.bsky.embed.video", "video": blob("bafkreivid", "video/mp4"), "alt": "boarding"}}
TAG_FACET = [{"index": {"byteStart": 0, "byteEnd": 8},
              "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "skyways"}]}]


@contextmanager
def jetstream(script: Callable[[ServerConnection, dict[str, list[str]], int], None]) -> Iterator[tuple[str, list[dict[str, list[str]]], set[int]]]:
    """A websockets server; ``script(connection, query, n)`` plays connection number n."""
    queries: list[dict[str, list[str]]] = []
    reject: set[int] = set()

    def process_request(connection: ServerConnection, request: Any) -> Any:
        n = len(queries)
        queries.append(parse_qs(urlsplit(request.path).query))
        if n in reject:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "jetstream overloaded\n")
        return None

    def handler(connection: ServerConnection) -> None:
        script(connection, queries[-1], len(queries) - 1)

    server = serve(handler, "127.0.0.1", 0, process_request=process_request, compression=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.socket.getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/subscribe", queries, reject
    finally:
        server.shutdown()


def test_jetstream_filters_maps_and_resumes_by_time_us(broker_target: BrokerTarget, topic: str) -> None:
    done = threading.Event()

    def script(ws: ServerConnection, query: dict[str, list[str]], n: int) -> None:
        assert query["wantedCollections"] == ["app.bsky.feed.post"]
        if n == 0:
            assert "cursor" not in query
            ws.send(json.dumps({"did": DID, "time_us": 1_700_000_000_000_001, "kind": "identity",
                                "identity": {"did": DID, "handle": "alice.bsky.social", "seq": 1, "time": "2026-03-14T15:00:00Z"}}))
            ws.send(post_event(1_700_000_000_000_002, "3kaa", "SkyWays lost my bag", embed=IMAGES))
            ws.send(post_event(1_700_000_000_000_003, "3kab", "nothing to see here"))
            ws.send('{"did": "did:plc:x", "time_us": 17000000000000, "kind": "commit", "commit": {')  # truncated
            ws.send(post_event(1_700_000_000_000_004, "3kac", "#skyways again", facets=TAG_FACET,
                               embed=BROKEN_IMAGE, future_field={"x": 1}))
            ws.send(post_event(1_700_000_000_000_005, "3kaa", "", operation="delete"))
            ws.send(post_event(1_700_000_000_000_006, "3kad", "starfall spoilers!"))
            time.sleep(0.2)
            ws.socket.close()  # drop without a close frame
        else:
            assert query["cursor"] == ["1700000000000006"]
            ws.send(post_event(1_700_000_000_000_006, "3kad", "starfall spoilers!"))  # replay of the cursor event
            ws.send(post_event(1_700_000_000_000_007, "3kae", "skyways boarding video", embed=QUOTE_WITH_VIDEO))
            done.wait(15)

    store = InMemoryCursorStore()
    with jetstream(script) as (url, queries, reject), KafkaPublisher(broker_target, topic) as publisher:
        reject.add(1)  # the first reconnect is refused with 503: backoff, then the third connection works
        connector = BlueskyConnector(publisher, store, TOPICS, jetstream_url=url, backoff=FAST)
        with ConnectorThread(connector) as runner:
            assert wait_until(lambda: connector.stats.published >= 4, timeout_s=20)
            stats = runner.stop()
            done.set()

    assert len(queries) == 3
    records = read_topic(broker_target, topic, expect=4)
    keys = sorted(k for k, _ in records)
    assert keys == [f"bluesky:at://{DID}/app.bsky.feed.post/{r}" for r in ("3kaa", "3kac", "3kad", "3kae")]
    posts = {p.post_id.rsplit("/", 1)[-1]: p for _, p in records}
    assert [(m.url, m.alt) for m in posts["3kaa"].media] == [
        (f"https://cdn.bsky.app/img/feed_fullsize/plain/{DID}/bafkreiaaa@jpeg", "queue at the gate"),
        (f"https://cdn.bsky.app/img/feed_fullsize/plain/{DID}/bafkreilegacy@jpeg", None)]
    assert posts["3kaa"].url == f"https://bsky.app/profile/{DID}/post/3kaa" and posts["3kaa"].lang == "en"
    assert posts["3kac"].media == () and posts["3kac"].keywords == ("#skyways",)
    assert posts["3kad"].topic == "starfall"
    assert [(m.kind, m.url) for m in posts["3kae"].media] == [
        ("video_thumbnail", f"https://video.bsky.app/watch/{DID}/bafkreivid/thumbnail.jpg"),
        ("video", f"https://video.bsky.app/watch/{DID}/bafkreivid/playlist.m3u8")]
    assert stats.bad_payloads == 1
    assert stats.reconnects.get("network", 0) >= 1 and stats.reconnects.get("http", 0) == 1
    assert store.load("bluesky") == "1700000000000007"
