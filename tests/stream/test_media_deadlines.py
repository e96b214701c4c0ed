"""Media deadlines (issue #10 item 4) against real HTTP servers on 127.0.0.1.

SENTISTREAM_MEDIA_TIMEOUT_S bounds one fetch in total (connect, redirects, headers, body, retries); a
batch has SENTISTREAM_MEDIA_BATCH_BUDGET_S for all its pictures; SENTISTREAM_MEDIA_PER_HOST keeps one
hanging host from taking every fetch slot.  Elapsed times are only asserted as upper bounds with the
issue's one-second margin ("cut within timeout + 1 s"); the machine running these is shared.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image
from sqlalchemy import text
from sqlalchemy.engine import Engine

from connectors.post import MediaRef, Post
from stream.media import MediaFetcher, MediaResult
from stream.settings import Settings
from tests.stream.local_http import LocalServer, send
from tests.stream.pg_module import db_fixture, s4_engine_fixture  # noqa: F401 - fixtures

TIMEOUT_S = 1.5
MARGIN_S = 1.0


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 160, 30)).save(buf, format="JPEG")
    return buf.getvalue()


JPEG = _jpeg()


class _Hostile:
    """Routes that never finish on their own; ``release`` lets their threads end at teardown."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def hang(self, handler, hit: int) -> None:  # accepts the connection, never answers
        self.released.wait(60)

    def trickle(self, handler, hit: int) -> None:  # headers, then one byte per 0.1 s (no read timeout fires)
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", "1000000")
        handler.end_headers()
        while not self.released.wait(0.1):
            handler.wfile.write(b"\xff")
            handler.wfile.flush()

    def endless(self, handler, hit: int) -> None:  # no length, a body that never ends (under the byte cap)
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.end_headers()
        while not self.released.wait(0.02):
            handler.wfile.write(b"\x00" * 512)
            handler.wfile.flush()

    def slow_redirect(self, handler, hit: int) -> None:  # every hop answers in time, the chain does not
        time.sleep(0.6)
        hop = int(handler.path.rsplit("/", 1)[1])
        send(handler, 302, b"", None, {"Location": f"/redirect/{hop + 1}"})


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[LocalServer, LocalServer]]:
    """A slow host (hostile routes, 24 hanging URLs) and a healthy host (a good picture)."""
    h = _Hostile()
    routes = {"/hang": h.hang, "/trickle": h.trickle, "/endless": h.endless,
              **{f"/redirect/{i}": h.slow_redirect for i in range(8)},
              **{f"/hang-{i}.jpg": h.hang for i in range(24)}}
    healthy = {"/good.jpg": lambda hd, n: send(hd, 200, JPEG, "image/jpeg")}
    with LocalServer(routes) as slow, LocalServer(healthy) as fast:
        yield slow, fast
        h.released.set()


def _settings(slow: LocalServer, fast: LocalServer, **overrides: object) -> Settings:
    values: dict[str, object] = dict(media_timeout_s=TIMEOUT_S, media_retries=2, media_concurrency=8,
                                     media_per_host=2, media_batch_budget_s=0.0,
                                     media_allow_hosts=(f"127.0.0.1:{slow.port}", f"127.0.0.1:{fast.port}"))
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def _timed_fetch(settings: Settings, urls: list[str]) -> tuple[list[MediaResult], float]:
    async def go() -> list[MediaResult]:
        async with MediaFetcher.from_settings(settings) as fetcher:
            return await fetcher.fetch_many(urls)

    started = time.monotonic()
    results = asyncio.run(go())
    return results, time.monotonic() - started


@pytest.mark.parametrize("path", ["/hang", "/trickle", "/endless", "/redirect/0"])
def test_the_timeout_is_a_total_deadline_for_one_fetch(hostile, path: str) -> None:
    slow, fast = hostile
    (result,), elapsed = _timed_fetch(_settings(slow, fast), [slow.url(path)])
    assert result.status == "timeout", result
    assert "deadline" in (result.error or "")
    assert elapsed < TIMEOUT_S + MARGIN_S, f"{path} took {elapsed:.2f}s for a {TIMEOUT_S}s deadline"


def test_hanging_urls_on_one_host_cannot_starve_a_picture_on_another(hostile) -> None:
    slow, fast = hostile
    budget = 4.0
    urls = [slow.url(f"/hang-{i}.jpg") for i in range(24)] + [fast.url("/good.jpg")]
    results, elapsed = _timed_fetch(_settings(slow, fast, media_batch_budget_s=budget), urls)
    assert results[-1].status == "ok" and results[-1].image is not None
    assert {r.status for r in results[:-1]} == {"timeout"}
    assert elapsed < budget + MARGIN_S
    # Two at a time on the slow host, each cut at its deadline: far fewer than 24 were even started.
    started = sum(1 for i in range(24) if slow.hits[f"/hang-{i}.jpg"])
    assert started <= 2 * (int(budget / TIMEOUT_S) + 1)


def test_the_per_host_cap_bounds_requests_in_flight_on_one_host(hostile) -> None:
    slow, fast = hostile
    routes = {f"/slow-ok-{i}.jpg": (lambda hd, n: (time.sleep(0.3), send(hd, 200, JPEG, "image/jpeg")))
              for i in range(6)}
    with LocalServer(routes) as busy:  # its own server: the hostile one still holds released-later threads
        settings = _settings(slow, fast, media_timeout_s=10.0, media_per_host=2,
                             media_allow_hosts=(f"127.0.0.1:{busy.port}",))
        results, _ = _timed_fetch(settings, [busy.url(f"/slow-ok-{i}.jpg") for i in range(6)])
        assert [r.status for r in results] == ["ok"] * 6
        assert busy.max_in_flight <= 2  # the global cap (8) alone would let all six run at once


@pytest.fixture(scope="module")
def shipped_scorer() -> object:
    from model.scorer import Scorer

    return Scorer.from_checkpoint(device="cpu")


def test_a_spent_batch_budget_records_timeout_and_scores_those_posts_text_only(
        hostile, db: Engine, shipped_scorer: object) -> None:
    from stream.pipeline import RawMessage
    from stream.worker import build_processor

    slow, fast = hostile
    budget = 1.5
    # The per-fetch deadline is long: only the batch budget can cut the hanging pictures.
    settings = _settings(slow, fast, media_timeout_s=30.0, media_batch_budget_s=budget, windows=("1m",))
    t0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    texts = ["I love this new phone, the camera is wonderful", "The service was awful and I am very angry",
             "What a great day at the beach with friends"]
    media = [(MediaRef(fast.url("/good.jpg")),), (MediaRef(slow.url("/hang-0.jpg")),),
             (MediaRef(slow.url("/hang-1.jpg")), MediaRef(slow.url("/hang-2.jpg")))]
    posts = [Post(platform="replay", post_id=f"budget-{i}", text=t, topic="acme",
                  created_at=t0 + timedelta(seconds=i), media=m) for i, (t, m) in enumerate(zip(texts, media, strict=True))]
    messages = [RawMessage("posts.raw", 0, i, p.key.encode(), p.to_json()) for i, p in enumerate(posts)]

    async def go() -> tuple[object, float]:
        fetcher = MediaFetcher.from_settings(settings)
        await fetcher.start()
        try:
            processor = build_processor(settings, db.url.render_as_string(hide_password=False),
                                        scorer=shipped_scorer, media_fetcher=fetcher)
            report = await processor.process(messages)
            return report, report.stage_seconds["media"]
        finally:
            await fetcher.close()

    report, media_s = asyncio.run(go())
    assert media_s < budget + MARGIN_S
    assert report.scored == 3 and not report.dead_letters
    with db.connect() as conn:
        media_rows = dict(conn.execute(text(
            "SELECT m.url, m.status || ':' || coalesce(m.error, '') FROM post_media m")).all())
        modalities = dict(conn.execute(text(
            "SELECT p.post_id, s.modalities FROM posts p JOIN sentiments s ON s.post_pk = p.id")).all())
    assert media_rows[fast.url("/good.jpg")] == "ok:"
    for path in ("/hang-0.jpg", "/hang-1.jpg", "/hang-2.jpg"):
        status, error = media_rows[slow.url(path)].split(":", 1)
        assert status == "timeout" and "budget" in error
    assert modalities == {"budget-0": ["text", "image"], "budget-1": ["text"], "budget-2": ["text"]}
