"""Stream fixtures: a real embedded broker per test and a real `sentistream worker` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from connectors.broker import BrokerTarget
from connectors.post import MediaRef, Post
from stream.embedded import EmbeddedBroker, free_port


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerTarget]:
    """A fresh Tansu broker per test: topics and offsets never leak between tests."""
    with EmbeddedBroker(tmp_path / "broker") as b:
        yield BrokerTarget(b.bootstrap_servers, embedded=True)


def make_posts(n: int, *, topic: str = "acme", start: datetime | None = None, prefix: str = "p",
               images: Callable[[int], list[MediaRef]] | None = None) -> list[Post]:
    start = start or datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    return [
        Post(platform="replay", post_id=f"{prefix}{i}", text=f"post number {i} about {topic}",
             created_at=start + timedelta(seconds=i), topic=topic,
             media=tuple(images(i)) if images else ())
        for i in range(n)
    ]


def write_jsonl(path: Path, posts: list[Post], extra_lines: list[str] = ()) -> Path:
    lines = [p.to_json().decode() for p in posts] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


class WorkerProcess:
    """`sentistream worker` as a child process, configured only through SENTISTREAM_* variables."""

    def __init__(self, broker: BrokerTarget, database_url: str, home: Path, **settings: str) -> None:
        self.env = dict(os.environ)
        self.env.update({
            "SENTISTREAM_KAFKA": broker.bootstrap_servers,
            "SENTISTREAM_KAFKA_IS_TANSU": "1" if broker.embedded else "0",
            "SENTISTREAM_DATABASE_URL": database_url,
            "SENTISTREAM_HOME": str(home),
            "SENTISTREAM_WEB_PORT": str(free_port()),
            "SENTISTREAM_LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
        })
        self.env.update({f"SENTISTREAM_{k.upper()}": v for k, v in settings.items()})
        self.home = home
        self.log_path = home / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"worker did not stop on SIGTERM within {timeout_s}s; log:\n{self.log()}") from exc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def factory(broker: BrokerTarget, database_url: str, name: str = "worker", **settings: str) -> WorkerProcess:
        w = WorkerProcess(broker, database_url, tmp_path / name, **settings).start()
        started.append(w)
        return w

    yield factory
    for w in started:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(5)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, on_fail: Callable[[], str] = str,
             interval_s: float = 0.25) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{on_fail()}")


def scalar(database_url: str, sql: str, **params: object) -> object:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()
