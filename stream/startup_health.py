"""The worker's ``/health`` while it is still starting: 503 with what it is waiting for.

Why: start-up can take a while (the database or the broker is not up yet, the model is loading), and a
restart policy or an operator polling ``/health`` should see "waiting for broker at HOST:PORT" rather
than a refused connection, which looks the same as a dead process.  A tiny standard-library HTTP server
holds the web port until Faust's own web server takes it over (``stop`` frees the port first).

While it is active, SIGTERM (``docker stop``, a restart policy giving up) ends the wait cleanly: exit 0
through the normal unwinding, so embedded services started so far are stopped, instead of the default
abrupt termination.  Faust installs its own handlers once it runs.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class StartupHealth:
    """A background HTTP server answering every GET with 503 and the current start-up step."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {"status": "starting", "waiting_for": None, "detail": None}
        self._started = time.monotonic()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._previous_sigterm: Any = None

    def start(self) -> StartupHealth:
        """Serve in a daemon thread; a port already taken is logged and start-up goes on without it."""
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._stop_waiting)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = json.dumps(owner.status()).encode()
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                log.debug("startup /health: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            log.warning("cannot serve start-up /health on %s:%d (%s)", self.host, self.port, exc)
            return self
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="startup-health", daemon=True)
        self._thread.start()
        return self

    def waiting_for(self, what: str, detail: str | None = None) -> None:
        with self._lock:
            self._status.update(waiting_for=what, detail=detail)
        log.info("start-up: waiting for %s%s", what, f" ({detail})" if detail else "")

    def set_detail(self, detail: str) -> None:
        """The latest "cannot reach ..., retrying in Ns" line (``wait_until_reachable``'s ``on_waiting``)."""
        with self._lock:
            self._status["detail"] = detail

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {**self._status, "seconds_starting": round(time.monotonic() - self._started, 1)}

    def _stop_waiting(self, signum: int, frame: Any) -> None:
        log.info("SIGTERM while starting (waiting for %s): stopping", self.status()["waiting_for"] or "nothing")
        raise SystemExit(0)

    def stop(self) -> None:
        """Free the port (Faust's web server binds it next) and give SIGTERM back to its old handler."""
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> StartupHealth:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
