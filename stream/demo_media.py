"""Loopback image server for ``sentistream demo``: the pictures the sample posts link to.

The sample feed's image URLs read ``http://{MEDIA_HOST}/img/<name>.jpg``; the demo starts this server
on a free port of 127.0.0.1 and substitutes the placeholder, so the worker fetches real JPEGs over real
HTTP without the demo touching the internet.  (The worker's media fetcher blocks private addresses by
default; the demo has to allow this server's ``host_port`` through ``media_allow_hosts``.)

The pictures are photographs shipped inside scikit-image's ``skimage.data`` module (present in the
wheel, so nothing is downloaded), all free to redistribute according to skimage's own docstrings:

==========  ======================  ====================================================================
name        skimage.data function   licence as stated by scikit-image
==========  ======================  ====================================================================
astronaut   ``astronaut``           public domain (NASA Great Images; "no known copyright restrictions")
chelsea     ``chelsea``             CC0, photographer Stefan van der Walt
coffee      ``coffee``              CC0, photographer Rachel Michetti (courtesy of Pikolo Espresso Bar)
rocket      ``rocket``              public domain (SpaceX launch photo released into the public domain)
hubble      ``hubble_deep_field``   public domain (NASA/HubbleSite, "may be freely used")
camera      ``camera``              CC0, photographer Lav Varshney
coins       ``coins``               no known copyright restrictions (Brooklyn Museum collection)
grass       ``grass``               CC0 (DeviantArt, linolafett)
gravel      ``gravel``              CC0 (CC0Textures)
brick       ``brick``               CC0 (CC0Textures)
==========  ======================  ====================================================================

The JPEGs are rendered once on ``start()`` (longest side ``max_side`` px, RGB), kept in memory and
served by a threaded ``http.server``: a handful of images, a local reader, no framework needed.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType

log = logging.getLogger(__name__)

MEDIA_HOST_PLACEHOLDER = "{MEDIA_HOST}"
IMAGE_PREFIX = "/img/"

# Served name -> skimage.data function.  Only photos that ship inside the scikit-image wheel.
SKIMAGE_PHOTOS: Mapping[str, str] = MappingProxyType({
    "astronaut": "astronaut",
    "chelsea": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "hubble": "hubble_deep_field",
    "camera": "camera",
    "coins": "coins",
    "grass": "grass",
    "gravel": "gravel",
    "brick": "brick",
})


def render_jpeg(name: str, max_side: int = 512, quality: int = 85) -> bytes:
    """One skimage photo as an RGB JPEG whose longest side is ``max_side`` pixels."""
    import numpy as np
    import skimage.data
    from PIL import Image

    pixels = np.asarray(getattr(skimage.data, SKIMAGE_PHOTOS[name])())
    if pixels.dtype != np.uint8:
        pixels = (pixels.astype(np.float64) * (255.0 / max(float(pixels.max()), 1.0))).astype(np.uint8)
    image = Image.fromarray(pixels).convert("RGB")  # grayscale photos become 3-channel like real uploads
    scale = max_side / max(image.size)
    if scale != 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class _ImageHandler(BaseHTTPRequestHandler):
    server: _ImageHTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        body = None
        if path.startswith(IMAGE_PREFIX) and path.endswith(".jpg"):
            body = self.server.images.get(path[len(IMAGE_PREFIX):-len(".jpg")])
        if body is None:
            message = b"not found\n"
            self.send_response(HTTPStatus.NOT_FOUND)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            if send_body:
                self.wfile.write(message)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "public, max-age=3600")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("demo media: " + format, *args)


class _ImageHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], images: Mapping[str, bytes]) -> None:
        super().__init__(address, _ImageHandler)
        self.images = images


class DemoMediaServer:
    """Serves ``/img/<name>.jpg`` on a free loopback port for as long as it is started.

    >>> with DemoMediaServer() as media:
    ...     line = media.substitute('{"url": "http://{MEDIA_HOST}/img/coffee.jpg"}')
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_side: int = 512,
                 names: tuple[str, ...] | None = None) -> None:
        self.host = host
        self._requested_port = port
        self.max_side = max_side
        self.names = tuple(SKIMAGE_PHOTOS) if names is None else names
        unknown = set(self.names) - set(SKIMAGE_PHOTOS)
        if unknown:
            raise ValueError(f"no skimage photo for {sorted(unknown)}; known: {sorted(SKIMAGE_PHOTOS)}")
        self._server: _ImageHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("DemoMediaServer is not started")
        return int(self._server.server_address[1])

    @property
    def host_port(self) -> str:
        """What replaces ``{MEDIA_HOST}``: ``127.0.0.1:<port>``."""
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host_port}"

    def url_for(self, name: str) -> str:
        return f"{self.base_url}{IMAGE_PREFIX}{name}.jpg"

    def substitute(self, line: str) -> str:
        """Fill the ``{MEDIA_HOST}`` placeholder of a sample line (or any text) with this server."""
        return line.replace(MEDIA_HOST_PLACEHOLDER, self.host_port)

    def start(self) -> DemoMediaServer:
        if self._server is not None:
            return self
        images = MappingProxyType({name: render_jpeg(name, self.max_side) for name in self.names})
        self._server = _ImageHTTPServer((self.host, self._requested_port), images)
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-media", daemon=True)
        self._thread.start()
        log.info("demo media server on %s serving %d images", self.base_url, len(images))
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        log.info("demo media server stopped")

    def __enter__(self) -> DemoMediaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
