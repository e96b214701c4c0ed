"""The ingest CLI: replay in-process, and a platform service as a real process stopped by SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from connectors import cli
from connectors.broker import BrokerTarget
from stream.settings import Settings
from tests.connectors.conftest import read_topic
from tests.connectors.fakes import FakeServer, Request, Responder, wait_until
from tests.connectors.test_mastodon import sse, status

REPO = Path(__file__).resolve().parents[2]
TOKEN = "cli-secret-token-987"


def _parser(target: BrokerTarget) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentistream")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub, lambda need_database=True: (target, ""))
    return parser


def test_replay_command_reports_invalid_lines(tmp_path: Path, broker_target: BrokerTarget, topic: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "feed.jsonl"
    good = {"platform": "replay", "post_id": "a1", "text": "hello", "created_at": "2026-01-01T00:00:00Z"}
    path.write_text(json.dumps(good) + "\n{oops\n" + json.dumps(dict(good, post_id="a2")) + "\n")
    args = _parser(broker_target).parse_args(["ingest", "replay", str(path), "--kafka-topic", topic, "--rate", "100/s"])
    assert args.func(args, None) == 0
    out, err = capsys.readouterr()
    rejects = tmp_path / "feed.jsonl.rejects"
    assert f"replayed 2 posts to {topic}; 1 invalid lines skipped (written to {rejects} with line numbers)" in out
    assert f"{path}:2: skipped: not valid JSON" in err
    assert sorted(k for k, _ in read_topic(broker_target, topic, expect=2)) == ["replay:a1", "replay:a2"]
    (kept,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert kept["line"] == 2 and kept["raw"] == "{oops" and kept["reason"].startswith("not valid JSON")


def test_replay_refuses_a_rejects_path_it_cannot_write_before_sending(
        tmp_path: Path, broker_target: BrokerTarget, topic: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_text(json.dumps({"platform": "replay", "post_id": "a1", "text": "hello",
                                "created_at": "2026-01-01T00:00:00Z"}) + "\n")
    args = _parser(broker_target).parse_args(["ingest", "replay", str(path), "--kafka-topic", topic,
                                              "--rejects", str(tmp_path / "no-such-dir" / "r")])
    assert args.func(args, None) == cli.EXIT_CONFIG
    assert "cannot write the rejects file" in capsys.readouterr().err
    assert read_topic(broker_target, topic, settle_s=0.3, timeout_s=3) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder; needs a normal user")
def test_replay_from_a_read_only_folder_keeps_rejects_in_the_state_directory(
        tmp_path: Path, broker_target: BrokerTarget, topic: str, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "mounted"
    inputs.mkdir()
    path = inputs / "feed.jsonl"
    path.write_text("{oops\n")
    inputs.chmod(0o555)
    try:
        args = _parser(broker_target).parse_args(["ingest", "replay", str(path), "--kafka-topic", topic])
        assert args.func(args, Settings(home=tmp_path / "home")) == 0
    finally:
        inputs.chmod(0o755)
    kept = tmp_path / "home" / "rejects" / "feed.jsonl.rejects"
    assert f"written to {kept}" in capsys.readouterr().out
    assert json.loads(kept.read_text())["line"] == 1


def _cli(tmp_path: Path, *argv: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    """`sentistream ...` as a user runs it: no broker configured, a private state directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    env.update(SENTISTREAM_HOME=str(tmp_path / "home"), SENTISTREAM_DATABASE_URL="postgresql://nobody@127.0.0.1:1/x",
               **env_extra)
    return subprocess.run([sys.executable, "-m", "stream.cli", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("source", ["replay", "mastodon"])
def test_ingest_without_a_broker_refuses_instead_of_starting_a_private_one(tmp_path: Path, source: str) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps({"platform": "replay", "post_id": "a1", "text": "hello",
                                "created_at": "2026-01-01T00:00:00Z"}) + "\n")
    topics = tmp_path / "topics.yaml"
    topics.write_text("topics:\n  metro-strike:\n    keywords: [metro strike]\n")
    argv = ["ingest", "replay", str(feed)] if source == "replay" else [
        "ingest", "mastodon", "--topics", str(topics), "--instance", "http://127.0.0.1:1"]
    done = _cli(tmp_path, *argv)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "no Kafka broker to send posts to" in done.stderr
    assert "Start `sentistream worker` first" in done.stderr and "SENTISTREAM_KAFKA" in done.stderr
    assert "replayed" not in done.stdout
    assert not (tmp_path / "home" / "run" / "broker.log").exists()  # no embedded broker was started


def test_ingest_sends_to_the_embedded_broker_a_running_worker_advertises(tmp_path: Path) -> None:
    from stream.embedded import services

    feed = tmp_path / "feed.jsonl"
    feed.write_text("".join(json.dumps({"platform": "replay", "post_id": f"w{i}", "text": "hello",
                                        "created_at": "2026-01-01T00:00:00Z"}) + "\n" for i in range(3)))
    # What `sentistream worker` does at start: an embedded broker, advertised in <home>/run/broker.json.
    with services(Settings(home=tmp_path / "home"), need_database=False) as worker_side:
        done = _cli(tmp_path, "ingest", "replay", str(feed), "--kafka-topic", "posts.joined")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "replayed 3 posts to posts.joined" in done.stdout
        records = read_topic(worker_side.broker, "posts.joined", expect=3)
    assert sorted(k for k, _ in records) == ["replay:w0", "replay:w1", "replay:w2"]


def test_replay_command_rejects_a_bad_rate(tmp_path: Path, broker_target: BrokerTarget,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_text("")
    args = _parser(broker_target).parse_args(["ingest", "replay", str(path), "--rate", "fast"])
    assert args.func(args, None) == cli.EXIT_CONFIG
    assert "rate 'fast'" in capsys.readouterr().err


def _ingest(tmp_path: Path, target: BrokerTarget, db: str, server: FakeServer, topic: str) -> subprocess.Popen[str]:
    topics = tmp_path / "topics.yaml"
    topics.write_text("topics:\n  metro-strike:\n    keywords: [metro strike]\n    mastodon:\n      hashtags: [metrostrike]\n")
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"# mastodon\nMASTODON_ACCESS_TOKEN='{TOKEN}'\n")
    env = dict(os.environ, SENTISTREAM_KAFKA=target.bootstrap_servers, SENTISTREAM_KAFKA_IS_TANSU="1",
               SENTISTREAM_DATABASE_URL=db, SENTISTREAM_HOME=str(tmp_path / "home"), SENTISTREAM_LOG_LEVEL="debug")
    env.pop("MASTODON_ACCESS_TOKEN", None)
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from stream.cli import main; sys.exit(main())",
         "ingest", "mastodon", "--topics", str(topics), "--secrets-file", str(secrets),
         "--instance", server.url, "--kafka-topic", topic],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_service_stops_on_sigterm_after_flushing_and_resumes_from_its_cursor(
        tmp_path: Path, broker_target: BrokerTarget, topic: str, cursor_db: str) -> None:
    timeline = [status(101, "metro strike day one"), status(102, "metro strike day two")]
    streamed = []

    def handle(req: Request, res: Responder) -> None:
        assert req.headers["authorization"] == f"Bearer {TOKEN}"
        if req.path == "/api/v1/timelines/tag/metrostrike":
            min_id = int(req.q("min_id") or 0)
            res.send_json(200, sorted((s for s in timeline if int(s["id"]) > min_id), key=lambda s: -int(s["id"])))
        elif req.path == "/api/v1/streaming/hashtag":
            res.start_stream(content_type="text/event-stream")
            if not streamed:
                for s in timeline:
                    res.chunk(sse("update", s))
            streamed.append(True)
            while not server.closing.is_set():
                res.chunk(b":thump\n")
                time.sleep(0.1)

    with FakeServer(handle) as server:
        first = _ingest(tmp_path, broker_target, cursor_db, server, topic)
        assert wait_until(lambda: len(read_topic(broker_target, topic, settle_s=0.3, timeout_s=2)) == 2, timeout_s=40)
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=30)
        assert first.returncode == 0, err[-2000:]
        assert "stopped after publishing 2 posts" in out
        assert TOKEN not in out + err

        engine = create_engine(cursor_db)
        with engine.connect() as conn:
            saved = conn.execute(text("SELECT cursor FROM source_cursors WHERE source = 'mastodon'")).scalar_one()
        engine.dispose()
        assert saved == "102"

        timeline.append(status(103, "metro strike day three"))  # posted while the service was down
        second = _ingest(tmp_path, broker_target, cursor_db, server, topic)
        assert wait_until(lambda: len(read_topic(broker_target, topic, settle_s=0.3, timeout_s=2)) >= 3, timeout_s=40)
        second.send_signal(signal.SIGTERM)
        out, err = second.communicate(timeout=30)
        assert second.returncode == 0, err[-2000:]
        catchups = [r.q("min_id") for r in server.requests_to("/api/v1/timelines/tag/metrostrike")]

    assert catchups == ["102"]  # the first run had no cursor; the second resumed from the saved one
    records = read_topic(broker_target, topic, expect=3)
    assert sorted(p.post_id.rsplit("/", 1)[-1] for _, p in records) == ["101", "102", "103"]


def test_service_exits_non_zero_on_401_with_a_clear_message(
        tmp_path: Path, broker_target: BrokerTarget, topic: str, cursor_db: str) -> None:
    def handle(req: Request, res: Responder) -> None:
        res.send_json(401, {"error": "The access token is invalid"})

    with FakeServer(handle) as server:
        proc = _ingest(tmp_path, broker_target, cursor_db, server, topic)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == cli.EXIT_CONFIG
    assert "error: mastodon refused our credentials (HTTP 401)" in err
    assert "The access token is invalid" in err
    assert TOKEN not in out + err
