"""A scriptable HTTP server on 127.0.0.1 that plays a platform's API in tests.

Each test gives it a handler ``(request, responder) -> None`` that answers with the platform's real
response shapes, including the faults: chunked streams cut mid-message, 401/429/5xx with their headers,
keep-alive blank lines.  Every request is recorded for assertions (paths, query, auth header).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    index: int = 0  # 0-based order of arrival
    number_for_path: int = 0  # 0-based order among requests to the same path
    at: float = 0.0  # time.time() of arrival

    def q(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[0]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Responder:
    handler: BaseHTTPRequestHandler
    streaming: bool = False
    done: bool = False
    headers_sent: dict[str, str] = field(default_factory=dict)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(obj).encode(), "application/json", headers)

    def send_bytes(self, status: int, body: bytes, content_type: str = "application/json",
                   headers: dict[str, str] | None = None) -> None:
        h = self.handler
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()
        self.done = True

    def start_stream(self, status: int = 200, content_type: str = "application/json",
                     headers: dict[str, str] | None = None) -> None:
        h = self.handler
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.flush()
        self.streaming = True

    def chunk(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        if not data:
            return
        self.handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.handler.wfile.flush()

    def end(self) -> None:
        self.handler.wfile.write(b"0\r\n\r\n")
        self.handler.wfile.flush()
        self.done = True

    def abort(self) -> None:
        """Drop the connection without ending the chunked body: what a crashed server looks like."""
        try:
            self.handler.wfile.flush()
            self.handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.handler.close_connection = True
        self.done = True


Handler = Callable[[Request, Responder], None]


class FakeServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self.closing = threading.Event()
        server = self

        class _RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with server._lock:
                    same = sum(1 for r in server.requests if r.path == parts.path)
                    request = Request(self.command, parts.path, parse_qs(parts.query),
                                      {k.lower(): v for k, v in self.headers.items()}, body,
                                      len(server.requests), same, time.time())
                    server.requests.append(request)
                responder = Responder(self)
                try:
                    server.handler(request, responder)
                except (BrokenPipeError, ConnectionResetError):
                    return
                except Exception as exc:  # a failed assertion in a handler fails the test, loudly
                    server.errors.append(exc)
                    raise
                if responder.streaming and not responder.done:
                    try:
                        responder.end()
                    except OSError:
                        pass
                elif not responder.done:
                    responder.send_json(404, {"error": "not found in fake"})

            do_GET = do_POST = do_DELETE = _handle  # noqa: N815 - stdlib naming

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _RequestHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        if self.errors and exc[0] is None:
            raise AssertionError(f"the fake server's handler failed: {self.errors[0]!r}") from self.errors[0]


class ConnectorThread:
    """Runs ``connector.run()`` in a thread; ``stop()`` stops it and re-raises what run() raised."""

    def __init__(self, connector: Any) -> None:
        self.connector = connector
        self.error: BaseException | None = None
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.connector.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc

    def __enter__(self) -> ConnectorThread:
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 15.0) -> Any:
        self.connector.stop()
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "connector did not stop"
        if self.error is not None:
            raise self.error
        return self.result

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.connector.stop()
            self.thread.join(15)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
