"""HTTP plumbing shared by the HTTP connectors: sessions, status mapping, and long-lived response bodies.

Why our own line splitter instead of ``Response.iter_lines``: at an abrupt end of a stream it hands back
the partial last line as if it were whole; a truncated JSON document must be reported as truncated, not
parsed.  Why a socket shutdown in ``interrupt``: ``Response.close()`` from another thread does not wake a
thread blocked in ``recv``; ``shutdown(SHUT_RDWR)`` does, so SIGTERM stops a quiet stream at once.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator

import requests

from connectors.base import BadPayload, SourceError, TransientError, error_for_status

log = logging.getLogger(__name__)

USER_AGENT = "sentistream/0.1 (+https://github.com/sentistream/sentistream; multimodal sentiment monitoring)"

#: requests' transport errors: all retried on the network schedule.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (requests.ConnectionError, requests.Timeout,
                                                   requests.exceptions.ChunkedEncodingError, OSError, EOFError)


def new_session(user_agent: str = USER_AGENT) -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = user_agent
    return session


def check_response(response: requests.Response, platform: str,
                   retry_after: Callable[[requests.Response], float | None] | None = None) -> None:
    """Raise the SourceError for a non-2xx response (body snippet included, never request headers)."""
    if response.status_code < 300:
        return
    try:
        detail = response.text[:300]
    except (requests.RequestException, OSError):
        detail = ""
    wait = retry_after(response) if retry_after is not None and response.status_code == 429 else None
    error: SourceError = error_for_status(response.status_code, platform, detail.strip(), wait)
    response.close()
    raise error


def complete_lines(chunks: Iterable[bytes], *, max_line_bytes: int = 8 * 1024 * 1024,
                   ) -> Iterator[bytes | BadPayload]:
    """Split a byte stream into complete ``\\n``-terminated lines (``\\r`` stripped).

    An unterminated tail at the end of the stream is yielded as a BadPayload ("truncated"), and a line
    over ``max_line_bytes`` is dropped as a BadPayload, so a broken server cannot grow memory forever.
    """
    buffer = bytearray()
    try:
        for chunk in chunks:
            if not chunk:
                continue
            buffer += chunk
            while True:
                end = buffer.find(b"\n")
                if end < 0:
                    break
                line = bytes(buffer[:end]).rstrip(b"\r")
                del buffer[: end + 1]
                yield line
            if len(buffer) > max_line_bytes:
                yield BadPayload(f"line longer than {max_line_bytes} bytes",
                                 bytes(buffer[:200]).decode("utf-8", "replace"))
                buffer.clear()
    except Exception:
        if buffer.strip():  # the connection broke inside a message: report the fragment, then the error
            yield BadPayload("connection lost inside a message (truncated)",
                             bytes(buffer[:200]).decode("utf-8", "replace"))
        raise
    if buffer.strip():
        yield BadPayload("stream ended inside a message (truncated)", bytes(buffer[:200]).decode("utf-8", "replace"))


class ResponseSlot:
    """The long-lived response a fetch() is reading, so stop() can cut it from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._response: requests.Response | None = None

    def set(self, response: requests.Response | None) -> None:
        with self._lock:
            self._response = response

    def cut(self) -> None:
        with self._lock:
            response = self._response
        if response is None:
            return
        sock = getattr(getattr(response.raw, "connection", None), "sock", None)
        if sock is None:
            response.close()
            return
        try:
            # Only wake the reader (it sees EOF); it closes the response itself.  Closing it from this
            # thread would pull the file object from under a read in progress.
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def stream_chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives; a read timeout (no heartbeat) surfaces as a network TransientError."""
    try:
        yield from response.iter_content(chunk_size=None)
    except requests.exceptions.ConnectionError as exc:
        if "timed out" in str(exc).lower():
            raise TransientError("no data or heartbeat within the read timeout; reconnecting",
                                 kind="network") from exc
        raise
