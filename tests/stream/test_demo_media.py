"""DemoMediaServer: real HTTP on loopback, real JPEGs, and every image the sample feed links to."""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from PIL import Image

from connectors.samples import MEDIA_HOST_PLACEHOLDER, SAMPLE_POSTS
from stream.demo_media import SKIMAGE_PHOTOS, DemoMediaServer


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request(method, parts.path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def media() -> Iterator[DemoMediaServer]:
    with DemoMediaServer() as server:
        yield server


def test_serves_every_photo_as_an_rgb_jpeg_of_512_px(media: DemoMediaServer) -> None:
    assert media.host == "127.0.0.1" and media.base_url == f"http://127.0.0.1:{media.port}"
    for name in SKIMAGE_PHOTOS:
        status, headers, body = fetch(media.url_for(name))
        assert status == 200, name
        assert headers["content-type"] == "image/jpeg"
        assert int(headers["content-length"]) == len(body)
        image = Image.open(io.BytesIO(body))
        assert image.format == "JPEG" and image.mode == "RGB"
        assert max(image.size) == 512, (name, image.size)


def test_photos_differ_from_each_other(media: DemoMediaServer) -> None:
    bodies = {fetch(media.url_for(name))[2] for name in SKIMAGE_PHOTOS}
    assert len(bodies) == len(SKIMAGE_PHOTOS)


def test_head_answers_headers_only(media: DemoMediaServer) -> None:
    _, get_headers, body = fetch(media.url_for("coffee"))
    status, headers, head_body = fetch(media.url_for("coffee"), method="HEAD")
    assert status == 200 and head_body == b""
    assert headers["content-length"] == get_headers["content-length"] == str(len(body))


@pytest.mark.parametrize("path", ["/img/nope.jpg", "/img/coffee.png", "/coffee.jpg", "/img/../img/coffee.jpg",
                                  "/", "/img/"])
def test_unknown_paths_are_404(media: DemoMediaServer, path: str) -> None:
    status, _, _ = fetch(media.base_url + path)
    assert status == 404


def test_concurrent_requests_are_served(media: DemoMediaServer) -> None:
    urls = [media.url_for(name) for name in SKIMAGE_PHOTOS] * 3
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda u: fetch(u)[0], urls))
    assert statuses == [200] * len(urls)


def test_substitute_points_every_sample_image_at_the_server(media: DemoMediaServer) -> None:
    assert MEDIA_HOST_PLACEHOLDER == "{MEDIA_HOST}"
    urls = set()
    for line in SAMPLE_POSTS.read_text(encoding="utf-8").splitlines():
        filled = media.substitute(line)
        assert MEDIA_HOST_PLACEHOLDER not in filled
        urls.update(m["url"] for m in json.loads(filled)["media"])
    assert urls, "the sample feed links no images"
    for url in sorted(urls):
        assert url.startswith(media.base_url + "/img/")
        assert fetch(url)[0] == 200, url
    assert {re.search(r"/img/(\w+)\.jpg$", u).group(1) for u in urls} <= set(SKIMAGE_PHOTOS)


def test_stop_closes_the_port_and_restart_gets_a_new_server() -> None:
    server = DemoMediaServer(names=("chelsea",), max_side=128).start()
    port = server.port
    status, _, body = fetch(server.url_for("chelsea"))
    assert status == 200 and max(Image.open(io.BytesIO(body)).size) == 128
    assert fetch(server.url_for("coffee"))[0] == 404  # only the names asked for
    server.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with pytest.raises(RuntimeError):
        _ = server.port
    server.stop()  # idempotent


def test_unknown_photo_name_is_rejected_up_front() -> None:
    with pytest.raises(ValueError, match="no skimage photo"):
        DemoMediaServer(names=("lena",))
