"""A tiny threaded HTTP server on 127.0.0.1 for tests that stand in for outside HTTP endpoints.

Each route is a function ``(handler, hit_number) -> None`` that writes the response; the server counts
hits per path, so a test can assert that a URL the code should refuse was never requested at all.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[[BaseHTTPRequestHandler, int], None]


class LocalServer:
    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.hits: Counter[str] = Counter()
        self.hosts: list[str] = []
        self.bodies: list[bytes] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep pytest output clean
                return

            def _leave(self) -> None:
                with server._lock:
                    if getattr(self, "_waiting", False):
                        self._waiting = False
                        server.in_flight -= 1

            def send_response(self, code: int, message: str | None = None) -> None:
                # A request is in flight until its answer starts: a client that has the answer may send
                # its next request before this thread runs again, which counted one request too many.
                self._leave()
                super().send_response(code, message)

            def _dispatch(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with server._lock:
                    server.hits[path] += 1
                    hit = server.hits[path]
                    server.hosts.append(self.headers.get("Host", ""))
                    server.bodies.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    self._waiting = True
                try:
                    route = server.routes.get(path)
                    if route is None:
                        send(self, 404, b"not found", "text/plain")
                    else:
                        route(self, hit)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    self._leave()

            do_GET = _dispatch
            do_POST = _dispatch

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def json_bodies(self) -> list[Any]:
        return [json.loads(b) for b in self.bodies if b]

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str | None,
         headers: dict[str, str] | None = None, content_length: int | None = None) -> None:
    handler.send_response(status)
    if content_type is not None:
        handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body) if content_length is None else content_length))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)
