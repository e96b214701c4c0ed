"""Alert delivery through the PostgreSQL outbox (stream/alert_delivery.py) and the `alerts` commands.

Real PostgreSQL (both back ends), a real embedded Kafka broker for the Kafka destination, and a local
HTTP receiver standing in for the analyst's webhook (the one outside-world fake).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from connectors.broker import (
    BrokerTarget,
    ensure_topics,
    kafka_python_consumer_config,
    kafka_python_producer_config,
)
from stream import metrics
from stream.alert_delivery import (
    PAYLOAD_SCHEMA,
    AlertDeliverer,
    DeliveryPolicy,
    WebhookSender,
    alert_payload,
    enqueue_alert_delivery,
    slack_escape,
    slack_message,
)
from stream.alerts_cli import AlertsCommandError, parse_duration
from stream.cli import main as cli_main
from stream.embedded import free_port

SECRET = "s3cret-for-tests"
T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
FAST = DeliveryPolicy(backoff_base_s=0.2, backoff_cap_s=0.5, lease_s=30.0)


class Receiver:
    """A webhook receiver on a fixed port: records every request; answers ``status`` (or is down)."""

    def __init__(self, port: int | None = None, status: int = 200, delay_s: float = 0.0) -> None:
        self.port = port or free_port()
        self.status = status
        self.delay_s = delay_s
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                time.sleep(receiver.delay_s)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def engine(migrated_db: str) -> Iterator[Engine]:
    e = create_engine(migrated_db)
    yield e
    e.dispose()


def store_alert(engine: Engine, topic: str = "acme", *, event: str = "opened", historical: bool = False,
                incident_id: int | None = None, evidence: dict[str, Any] | None = None,
                minute: int = 15) -> tuple[int, int]:
    """An incident and one of its alerts, enqueued in the same transaction (as the detector does)."""
    start = T0 + timedelta(minutes=minute)
    with engine.begin() as conn:
        if incident_id is None:
            incident_id = conn.execute(text(
                "INSERT INTO alert_incidents (topic, kind, model_version, window_seconds, started_at, "
                "last_window_start, observed, expected, score, n_posts, n_negative, historical, evidence) "
                "VALUES (:t, 'negative_spike', 'mv-test', 60, :s, :s, 0.7, 0.2, 9.0, 100, 70, :h, "
                "CAST(:e AS jsonb)) RETURNING id"),
                {"t": topic, "s": start, "h": historical, "e": json.dumps(evidence or {})}).scalar_one()
        alert_id = conn.execute(text(
            "INSERT INTO alerts (topic, kind, window_start, window_seconds, model_version, observed, expected, "
            "score, n_posts, n_negative, evidence, incident_id, event, historical) VALUES (:t, 'negative_spike', "
            ":s, 60, 'mv-test', 0.7, 0.2, 9.0, 100, 70, CAST(:e AS jsonb), :i, :ev, :h) RETURNING id"),
            {"t": topic, "s": start, "e": json.dumps(evidence or {"terms": [{"term": "outage"}]}),
             "i": incident_id, "ev": event, "h": historical}).scalar_one()
        enqueue_alert_delivery(conn, alert_id)
    return incident_id, alert_id


def deliveries(engine: Engine, alert_id: int) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r.destination: dict(r._mapping) for r in conn.execute(
            text("SELECT * FROM alert_deliveries WHERE alert_id = :a"), {"a": alert_id})}


def attempts(engine: Engine, alert_id: int, destination: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(
            "SELECT t.* FROM alert_delivery_attempts t JOIN alert_deliveries d ON d.id = t.delivery_id "
            "WHERE d.alert_id = :a AND d.destination = :d ORDER BY t.attempt"), {"a": alert_id, "d": destination})]


def kafka_publisher(broker: BrokerTarget, topic: str) -> tuple[Any, KafkaProducer]:
    producer = KafkaProducer(**kafka_python_producer_config(broker))

    async def publish(key: bytes, value: bytes) -> None:
        future = producer.send(topic, key=key, value=value)
        await asyncio.get_running_loop().run_in_executor(None, lambda: future.get(timeout=15))

    return publish, producer


def read_all(broker: BrokerTarget, topic: str, timeout_s: float = 60.0) -> list[tuple[bytes, bytes]]:
    """Every record on ``topic`` up to its end offsets now.  (Reading until 1.5 s went by without a record
    could return nothing: a fresh consumer on a loaded machine can take longer than that to fetch at all.)"""
    consumer = KafkaConsumer(**kafka_python_consumer_config(broker, None))
    try:
        deadline = time.monotonic() + timeout_s
        while not (partitions := consumer.partitions_for_topic(topic)):
            assert time.monotonic() < deadline, f"no partitions for {topic} in {timeout_s}s"
            time.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[tuple[bytes, bytes]] = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"{topic} not read to its end offsets {ends} in {timeout_s}s"
            got = [m for ms in consumer.poll(timeout_ms=200).values() for m in ms]
            out += [(m.key, m.value) for m in got]
        return out
    finally:
        consumer.close()


def counter(destination: str, outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("sentistream_alert_deliveries_total",
                                             {"destination": destination, "outcome": outcome}) or 0.0


# --------------------------------------------------------------------------------------------------
# Exactly once with competing deliverers, retries across restarts
# --------------------------------------------------------------------------------------------------

def test_two_deliverers_on_one_pending_alert_deliver_it_once(
        engine: Engine, migrated_db: str, broker: BrokerTarget) -> None:
    """Two deliverers (own engines, own threads, own event loops) race for one alert: one webhook request,
    one Kafka record, one attempt each, recorded as delivered."""
    topic = "sentiment.alerts.test"
    ensure_topics(broker, [topic], 1)
    receiver = Receiver(delay_s=0.5).start()  # a slow receiver widens the window for a double send
    incident_id, alert_id = store_alert(engine)
    barrier = threading.Barrier(2)
    reports: list[dict[str, int]] = []

    def deliver() -> None:
        own_engine = create_engine(migrated_db)
        publish, producer = kafka_publisher(broker, topic)
        try:
            deliverer = AlertDeliverer(own_engine, publish=publish, policy=FAST,
                                       webhook=WebhookSender(receiver.url, secret=SECRET))
            barrier.wait()
            for _ in range(3):  # keep polling: a second pass must find nothing left to send
                reports.append(asyncio.run(deliverer.deliver_due()).outcomes)
        finally:
            producer.close()
            own_engine.dispose()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        receiver.stop()
    assert len(receiver.requests) == 1, reports
    assert sum(r.get("delivered", 0) for r in reports) == 2, reports  # webhook + kafka, once each
    rows = deliveries(engine, alert_id)
    assert {d: (r["state"], r["attempts"]) for d, r in rows.items()} == {"kafka": ("delivered", 1),
                                                                         "webhook": ("delivered", 1)}
    assert all(r["delivered_at"] is not None and r["claimed_until"] is None for r in rows.values())
    records = read_all(broker, topic)
    assert len(records) == 1
    key, value = records[0]
    document = json.loads(value)
    assert key == f"incident:{incident_id}".encode()
    assert (document["schema"], document["alert_id"], document["incident_id"]) == (PAYLOAD_SCHEMA, alert_id, incident_id)
    with engine.connect() as conn:  # the pre-outbox columns follow
        assert conn.execute(text("SELECT published_at IS NOT NULL AND webhook_status = 'sent' FROM alerts "
                                 "WHERE id = :a"), {"a": alert_id}).scalar_one()


def test_a_webhook_down_for_a_while_gets_the_alert_once_it_is_back_even_after_a_restart(engine: Engine) -> None:
    """Connection refused, then 503, then up: attempts are spaced by the schedule stored in the row, a new
    deliverer (a restarted worker) continues it, and the receiver gets exactly one request once it answers."""
    _, alert_id = store_alert(engine)
    port = free_port()
    # The first backoff is long, so "not due yet" holds however slow the machine is; the test then moves
    # the stored retry time to now (the row's clock is the database's: nothing else can fast-forward it).
    first = AlertDeliverer(engine, webhook=WebhookSender(f"http://127.0.0.1:{port}/hook", timeout_s=2),
                           policy=DeliveryPolicy(backoff_base_s=60.0, backoff_cap_s=60.0, lease_s=30.0))
    policy = DeliveryPolicy(backoff_base_s=0.5, backoff_cap_s=1.0, lease_s=30.0)
    failed_before = counter("webhook", "failed")

    assert asyncio.run(first.deliver_due()).outcomes.get("failed") == 1  # nobody listening
    row = deliveries(engine, alert_id)["webhook"]
    assert (row["state"], row["attempts"], row["delivered_at"]) == ("pending", 1, None)
    assert "ClientConnectorError" in row["last_error"] or "Connect" in row["last_status"]
    assert row["next_attempt_at"] > row["last_attempt_at"]  # backoff kept in the row
    assert asyncio.run(first.deliver_due()).handled == 0  # not due yet: no hammering
    assert counter("webhook", "failed") == failed_before + 1

    receiver = Receiver(port=port, status=503).start()  # up, but unhealthy
    try:
        with engine.begin() as conn:  # the backoff has passed
            conn.execute(text("UPDATE alert_deliveries SET next_attempt_at = clock_timestamp() WHERE id = :d"),
                         {"d": row["id"]})
        restarted = AlertDeliverer(engine, webhook=WebhookSender(receiver.url, timeout_s=2), policy=policy)
        assert asyncio.run(restarted.deliver_due()).outcomes == {"failed": 1}
        assert deliveries(engine, alert_id)["webhook"]["last_status"] == "HTTP 503"
        receiver.status = 200
        deadline = time.monotonic() + 20
        while deliveries(engine, alert_id)["webhook"]["state"] == "pending" and time.monotonic() < deadline:
            asyncio.run(restarted.deliver_due())
            time.sleep(0.2)
        asyncio.run(restarted.deliver_due())  # and nothing more after it went out
    finally:
        receiver.stop()
    row = deliveries(engine, alert_id)["webhook"]
    assert (row["state"], row["attempts"]) == ("delivered", 3)
    assert [r.get("X-Sentistream-Delivery") for r, _ in receiver.requests].count(str(row["id"])) == 2  # 503 + 200
    assert [(a["attempt"], a["outcome"]) for a in attempts(engine, alert_id, "webhook")] == [
        (1, "failed"), (2, "failed"), (3, "delivered")]


def test_a_delivery_that_keeps_failing_gives_up_at_the_max_age_and_is_counted(engine: Engine) -> None:
    _, alert_id = store_alert(engine)
    receiver = Receiver(status=500).start()
    expired_before = counter("webhook", "expired")
    try:
        deliverer = AlertDeliverer(engine, webhook=WebhookSender(receiver.url, timeout_s=2),
                                   policy=DeliveryPolicy(max_age_s=10.0, backoff_base_s=30.0, lease_s=30.0))
        # the next try would be too late (the Kafka row is skipped: no producer in this test)
        assert asyncio.run(deliverer.deliver_due()).outcomes == {"expired": 1, "skipped": 1}
        assert asyncio.run(deliverer.deliver_due()).handled == 0
    finally:
        receiver.stop()
    row = deliveries(engine, alert_id)["webhook"]
    assert (row["state"], row["attempts"], row["last_status"]) == ("failed", 1, "HTTP 500")
    assert counter("webhook", "expired") == expired_before + 1


def test_a_claim_whose_deliverer_died_is_taken_over_when_its_lease_ends(engine: Engine, receiver: Receiver) -> None:
    _, alert_id = store_alert(engine)
    with engine.begin() as conn:  # a deliverer claimed it and was killed before sending
        conn.execute(text("UPDATE alert_deliveries SET claimed_until = clock_timestamp() + interval '1 hour', "
                          "claim_token = 'dead' WHERE alert_id = :a"), {"a": alert_id})
    deliverer = AlertDeliverer(engine, webhook=WebhookSender(receiver.url), policy=FAST)
    assert asyncio.run(deliverer.deliver_due()).handled == 0
    with engine.begin() as conn:  # its lease ends (moved, not slept: a slow machine cannot outrun it)
        conn.execute(text("UPDATE alert_deliveries SET claimed_until = clock_timestamp() - interval '1 second' "
                          "WHERE alert_id = :a"), {"a": alert_id})
    assert asyncio.run(deliverer.deliver_due()).outcomes.get("delivered") == 1
    assert len(receiver.requests) == 1


# --------------------------------------------------------------------------------------------------
# Payload, signature, format
# --------------------------------------------------------------------------------------------------

def test_the_signature_verifies_and_the_body_is_the_documented_v1_document(engine: Engine, receiver: Receiver) -> None:
    evidence = {"terms": [{"term": "outage", "score": 4.2}, {"term": "#skywaysdown", "score": 3.1}],
                "examples": [{"platform": "bluesky", "post_id": "p1", "author": "ann", "url": "https://x.test/p1",
                              "text": "everything is down", "created_at": "2026-11-25T08:15:03+00:00"}]}
    incident_id, alert_id = store_alert(engine, evidence=evidence)
    deliverer = AlertDeliverer(engine, webhook=WebhookSender(receiver.url, secret=SECRET), policy=FAST)
    assert asyncio.run(deliverer.deliver_due()).outcomes == {"delivered": 1, "skipped": 1}  # no Kafka here
    (headers, body), = receiver.requests
    timestamp = headers["X-Sentistream-Timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers["X-Sentistream-Signature"] == expected
    assert abs(int(timestamp) - time.time()) < 120
    forged = "sha256=" + hmac.new(b"wrong", f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers["X-Sentistream-Signature"] != forged
    document = json.loads(body)
    assert document["schema"] == "sentistream.alert/v1"
    assert (document["alert_id"], document["incident_id"], document["event"]) == (alert_id, incident_id, "opened")
    assert (document["topic"], document["kind"], document["model_version"]) == ("acme", "negative_spike", "mv-test")
    assert document["window"] == {"start": "2026-11-25T08:15:00+00:00", "end": "2026-11-25T08:16:00+00:00",
                                  "seconds": 60}
    assert document["numbers"] == {"observed": 0.7, "expected": 0.2, "score": 9.0, "n_posts": 100, "n_negative": 70}
    assert document["explanation"] == evidence
    assert document["incident"]["id"] == incident_id and "70% negative of 100 posts" in document["summary"]
    assert deliveries(engine, alert_id)["kafka"]["state"] == "skipped"


def test_slack_format_carries_the_summary_terms_examples_and_the_ack_command(engine: Engine, receiver: Receiver) -> None:
    evidence = {"negative_share": {"observed": 0.7}, "explanation": {  # nested, as the detector stores it
        "terms": [{"term": "outage"}], "hashtags": [{"term": "#skywaysdown"}],
        "examples": [{"platform": "bluesky", "post_id": "p9", "text": "checkin is broken", "url": "https://x.test/9"}]}}
    incident_id, _ = store_alert(engine, evidence=evidence)
    deliverer = AlertDeliverer(engine, webhook=WebhookSender(receiver.url, format="slack"), policy=FAST)
    asyncio.run(deliverer.deliver_due())
    (headers, body), = receiver.requests
    message = json.loads(body)
    assert "X-Sentistream-Signature" not in headers  # no secret, no signature
    assert "70% negative" in message["text"]
    flat = json.dumps(message["blocks"])
    assert "outage" in flat and "#skywaysdown" in flat and "checkin is broken" in flat and "<https://x.test/9|link>" in flat
    assert f"sentistream alerts ack {incident_id}" in flat


def test_slack_messages_cannot_be_steered_by_post_text() -> None:
    """A post's text or URL is hostile: no channel-wide ping, no disguised link reaches Slack's mrkdwn."""
    hostile = {"explanation": {"terms": [{"term": "<!here>"}], "examples": [
        {"platform": "x", "post_id": "1", "author": "<@U123>", "text": "<!channel> refund & <https://evil.test|bank>",
         "url": "https://evil.test/a|<!everyone>"},
        {"platform": "x", "post_id": "2", "text": "ok", "url": "javascript:alert(1)"}]}}
    row = {"id": 1, "incident_id": 2, "event": "opened", "topic": "<!channel>", "kind": "negative_spike",
           "model_version": "m", "window_start": T0, "window_seconds": 60, "observed": 0.5, "expected": 0.1,
           "score": 4.0, "n_posts": 30, "n_negative": 15, "evidence": hostile, "created_at": T0}
    body = json.dumps(slack_message(alert_payload(row)))
    for raw in ("<!channel>", "<!here>", "<!everyone>", "<@U123>", "<https://evil", "javascript:"):
        assert raw not in body, raw
    assert "&lt;!channel&gt; refund &amp; &lt;https://evil.test|bank&gt;" in body


def test_an_unknown_webhook_format_is_refused() -> None:
    with pytest.raises(ValueError, match="json, slack"):
        WebhookSender("http://127.0.0.1:1/x", format="xml")


def test_the_webhook_gets_opened_and_resolved_events_and_kafka_all(engine: Engine, receiver: Receiver,
                                                                  broker: BrokerTarget) -> None:
    topic = "sentiment.alerts.events"
    ensure_topics(broker, [topic], 1)
    incident_id, _ = store_alert(engine, event="opened")
    store_alert(engine, event="updated", incident_id=incident_id, minute=16)
    store_alert(engine, event="resolved", incident_id=incident_id, minute=17)
    publish, producer = kafka_publisher(broker, topic)
    try:
        deliverer = AlertDeliverer(engine, publish=publish, webhook=WebhookSender(receiver.url), policy=FAST)
        assert asyncio.run(deliverer.deliver_due()).outcomes == {"delivered": 5, "skipped": 1}
    finally:
        producer.close()
    assert [json.loads(b)["event"] for _, b in receiver.requests] == ["opened", "resolved"]
    records = read_all(broker, topic)
    assert sorted(json.loads(v)["event"] for _, v in records) == ["opened", "resolved", "updated"]
    assert {k for k, _ in records} == {f"incident:{incident_id}".encode()}  # one partition, in order


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                           | st.text(), lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(evidence=st.dictionaries(st.sampled_from(["terms", "examples", "posts", "top_terms", "x"]) | st.text(max_size=8),
                                json_values, max_size=5),
       topic=st.text(min_size=1, max_size=300), secret=st.text(min_size=1, max_size=50))
def test_any_stored_explanation_renders_in_both_formats_and_signs(evidence: dict[str, Any], topic: str,
                                                                 secret: str) -> None:
    """Hostile evidence (odd types where lists are expected, huge topics, unicode) never breaks a payload:
    the JSON round-trips, Slack's limits hold, the signature verifies."""
    row = {"id": 1, "incident_id": 2, "event": "opened", "topic": topic, "kind": "negative_spike",
           "model_version": "m", "window_start": T0, "window_seconds": 60, "observed": 0.5, "expected": 0.1,
           "score": 4.0, "n_posts": 30, "n_negative": 15, "evidence": evidence, "created_at": T0}
    payload = alert_payload(row)
    for fmt in ("json", "slack"):
        body, headers = WebhookSender("http://127.0.0.1:1/x", secret=secret, format=fmt).render(payload, 7, now=1e9)
        document = json.loads(body)
        expected = hmac.new(secret.encode(), b"1000000000." + body, hashlib.sha256).hexdigest()
        assert headers["X-Sentistream-Signature"] == f"sha256={expected}"
        if fmt == "json":
            assert document["explanation"] == json.loads(json.dumps(evidence))
        else:
            assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in document["blocks"])
            assert len(document["blocks"][0]["text"]["text"]) <= 150
    assert slack_message(payload)["text"] == slack_escape(payload["summary"])[:3000]


# --------------------------------------------------------------------------------------------------
# Not delivered: muted, acked, historical
# --------------------------------------------------------------------------------------------------

def test_muted_acked_and_historical_alerts_are_not_delivered_and_say_why(
        engine: Engine, receiver: Receiver, migrated_db: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SENTISTREAM_DATABASE_URL", migrated_db)
    _, muted_alert = store_alert(engine, topic="muted-topic")
    acked_incident, acked_alert = store_alert(engine, topic="acked-topic")
    _, historical_alert = store_alert(engine, topic="replayed", historical=True)
    _, normal_alert = store_alert(engine, topic="normal")
    assert cli_main(["alerts", "mute", "muted-topic", "--for", "2h", "--by", "ann"]) == 0
    assert cli_main(["alerts", "ack", str(acked_incident), "--by", "bob"]) == 0
    suppressed_before = counter("webhook", "suppressed")

    deliverer = AlertDeliverer(engine, webhook=WebhookSender(receiver.url), policy=FAST)
    asyncio.run(deliverer.deliver_due())
    assert [json.loads(b)["alert_id"] for _, b in receiver.requests] == [normal_alert]
    states = {a: deliveries(engine, a)["webhook"] for a in (muted_alert, acked_alert, historical_alert)}
    assert {a: r["state"] for a, r in states.items()} == dict.fromkeys(states, "suppressed")
    assert states[muted_alert]["last_error"].startswith("muted: topic 'muted-topic' is muted until")
    assert states[acked_alert]["last_error"].startswith("acked by bob")
    assert states[historical_alert]["last_error"].startswith("historical")
    assert all(r["attempts"] == 0 for r in states.values())
    assert counter("webhook", "suppressed") == suppressed_before + 2  # historical was closed at enqueue

    assert cli_main(["alerts", "unmute", "muted-topic"]) == 0
    _, after = store_alert(engine, topic="muted-topic", minute=40)
    asyncio.run(deliverer.deliver_due())
    assert [json.loads(b)["alert_id"] for _, b in receiver.requests] == [normal_alert, after]
    assert "unmuted" in capsys.readouterr().out


def test_enqueue_is_idempotent_and_refuses_unknown_destinations(engine: Engine) -> None:
    _, alert_id = store_alert(engine)
    with engine.begin() as conn:
        assert enqueue_alert_delivery(conn, alert_id) == 0  # a replayed batch adds nothing
        assert enqueue_alert_delivery(conn, alert_id + 1000) == 0  # no such alert: nothing queued
        with pytest.raises(ValueError, match="unknown alert destination"):
            enqueue_alert_delivery(conn, alert_id, ("pager",))
    assert set(deliveries(engine, alert_id)) == {"kafka", "webhook"}


# --------------------------------------------------------------------------------------------------
# The alerts commands against a migrated database
# --------------------------------------------------------------------------------------------------

def test_alerts_list_show_ack_mute_from_the_command_line(
        engine: Engine, receiver: Receiver, migrated_db: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SENTISTREAM_DATABASE_URL", migrated_db)
    evidence = {"baseline_windows": 30, "negative_share": {"observed": 0.7, "baseline": 0.2, "z_binomial": 8.1},
                "explanation": {"terms": [{"term": "outage", "z": 4.2}], "hashtags": [{"term": "#down", "z": 3.0}],
                                "examples": [{"platform": "bluesky", "post_id": "p1", "author": "ann",
                                              "created_at": "2026-11-25T08:15:03+00:00", "url": "https://x.test/p1",
                                              "text": "\x1b[2J\x1b[31mall flights down\nreally"}]}}
    incident_id, alert_id = store_alert(engine, topic="airline", evidence=evidence)
    with engine.begin() as conn:  # the incident carries the detector's evidence too
        conn.execute(text("UPDATE alert_incidents SET evidence = CAST(:e AS jsonb) WHERE id = :i"),
                     {"e": json.dumps(evidence), "i": incident_id})
    with engine.begin() as conn:  # recent, so `list --since 7d` sees it
        conn.execute(text("UPDATE alert_incidents SET last_window_start = now(), started_at = now()"))
    other, _ = store_alert(engine, topic="bank")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alert_incidents SET status = 'resolved', last_window_start = now() WHERE id = :i"),
                     {"i": other})
    asyncio.run(AlertDeliverer(engine, webhook=WebhookSender(receiver.url), policy=FAST).deliver_due())
    capsys.readouterr()

    assert cli_main(["alerts", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["ID", "TOPIC", "KIND"]
    assert "airline" in out and "bank" in out and "70% vs 20%" in out and "webhook delivered" in out
    assert "TOP TERMS" in out and "outage" in out

    assert cli_main(["alerts", "list", "--state", "open", "--topic", "airline"]) == 0
    out = capsys.readouterr().out
    assert "airline" in out and "bank" not in out
    assert cli_main(["alerts", "list", "--topic", "nobody"]) == 0
    assert "no incidents for topic 'nobody'" in capsys.readouterr().out

    assert cli_main(["alerts", "show", str(incident_id)]) == 0
    out = capsys.readouterr().out
    assert f"incident {incident_id}: negative_spike in 'airline' (open)" in out
    assert "outage (4.2)" in out and "#down (3.0)" in out and "baseline_windows: 30" in out
    assert "negative share  70% vs baseline 20% (z binomial 8.1" in out
    assert "by ann] " in out and "all flights down really" in out and "https://x.test/p1" in out
    assert "\x1b" not in out  # a post cannot drive the analyst's terminal
    assert f"alert {alert_id}" in out and "webhook  delivered" in out and "#1" in out
    assert "kafka    skipped" in out

    assert cli_main(["alerts", "show", str(incident_id), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == incident_id and shown["deliveries"][1]["attempt_log"][0]["outcome"] == "delivered"

    assert cli_main(["alerts", "ack", str(incident_id), "--by", "carol"]) == 0
    assert "acknowledged by carol" in capsys.readouterr().out
    assert cli_main(["alerts", "ack", str(incident_id)]) == 0
    assert "already acknowledged by carol" in capsys.readouterr().out
    assert cli_main(["alerts", "list"]) == 0
    assert "open, acked" in capsys.readouterr().out

    assert cli_main(["alerts", "mute", "airline", "--for", "1h30m"]) == 0
    out = capsys.readouterr().out
    assert "muted until" in out and "check the spelling" not in out
    with engine.connect() as conn:
        left = conn.execute(text("SELECT muted_until - now() FROM alert_mutes WHERE topic = 'airline'")).scalar_one()
    assert timedelta(minutes=89) < left <= timedelta(minutes=90)
    assert cli_main(["alerts", "mute", "airlnie", "--for", "2h"]) == 0
    assert "check the spelling" in capsys.readouterr().out
    assert cli_main(["alerts", "unmute", "bank"]) == 0
    assert "was not muted" in capsys.readouterr().out


def test_alerts_commands_give_clear_errors(migrated_db: str, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SENTISTREAM_DATABASE_URL", migrated_db)
    assert cli_main(["alerts", "show", "999999"]) == 2
    assert "no incident 999999" in capsys.readouterr().err
    assert cli_main(["alerts", "ack", "424242"]) == 2
    assert "no incident 424242" in capsys.readouterr().err
    assert cli_main(["alerts", "mute", "acme", "--for", "soon"]) == 2
    assert "duration 'soon' must look like" in capsys.readouterr().err
    assert cli_main(["alerts", "mute", "acme", "--for", "0h"]) == 2
    assert "longer than zero" in capsys.readouterr().err
    assert cli_main(["alerts", "list", "--since", "99999d"]) == 2
    assert "longer than a year" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main(["alerts", "show", "abc"])
    assert exc.value.code == 2 and "incident id must be a number" in capsys.readouterr().err


@given(st.lists(st.tuples(st.integers(0, 500), st.sampled_from("smhdw")), min_size=1, max_size=4))
def test_durations_add_up_their_parts(parts: list[tuple[int, str]]) -> None:
    spec = "".join(f"{n}{u}" for n, u in parts)
    seconds = sum(n * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[u] for n, u in parts)
    if 0 < seconds <= 366 * 86400:
        assert parse_duration(spec) == timedelta(seconds=seconds)
    else:
        with pytest.raises(AlertsCommandError):
            parse_duration(spec)


@given(st.text(max_size=20))
def test_anything_else_is_not_a_duration_or_parses_exactly(spec: str) -> None:
    try:
        value = parse_duration(spec)
    except AlertsCommandError as exc:
        assert "duration" in str(exc)
    else:
        assert timedelta(0) < value <= timedelta(days=366)


# --------------------------------------------------------------------------------------------------
# End to end: two real workers, one incident, one webhook delivery
# --------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_workers_deliver_each_alert_once_to_the_webhook_and_kafka(
        broker: BrokerTarget, embedded_db: str, worker_factory: Any) -> None:
    """Two `sentistream worker` processes (real Faust producers, real timers) race for the same outbox:
    every alert reaches the receiver once, signed, and the alerts topic once; nothing is left pending."""
    from tests.stream.conftest import scalar, wait_for

    ensure_topics(broker, ["posts.raw", "posts.deadletter", "sentiment.alerts"], partitions=4)
    receiver = Receiver(delay_s=0.2).start()
    engine = create_engine(embedded_db)
    try:
        common = {"scoring": "false", "media_enabled": "false", "alert_webhook_url": receiver.url,
                  "alert_webhook_secret": SECRET, "alert_delivery_interval_s": "0.5"}
        workers = [worker_factory(broker, embedded_db, name=f"w{i}", **common) for i in range(2)]
        logs = lambda: "\n".join(w.log()[-4000:] for w in workers)  # noqa: E731 - a closure for the failure text
        wait_for(lambda: all("worker consuming" in w.log() for w in workers), 120, "both workers up", logs)
        time.sleep(2)  # their agents (and deliverers) are running
        alert_ids = [store_alert(engine, topic=f"topic-{n}", minute=n)[1] for n in range(6)]
        wait_for(lambda: scalar(embedded_db, "SELECT count(*) FROM alert_deliveries WHERE state = 'delivered'")
                 == 2 * len(alert_ids), 90, "every alert delivered to both destinations", logs)
        time.sleep(2)  # both deliverers tick a few more times: nothing may go out again
        for w in workers:
            assert w.stop() == 0, w.log()
        records = read_all(broker, "sentiment.alerts")
    finally:
        receiver.stop()
        engine.dispose()
    sent = sorted(json.loads(b)["alert_id"] for _, b in receiver.requests)
    assert sent == sorted(alert_ids)
    for headers, body in receiver.requests:
        expected = hmac.new(SECRET.encode(), headers["X-Sentistream-Timestamp"].encode() + b"." + body,
                            hashlib.sha256).hexdigest()
        assert headers["X-Sentistream-Signature"] == f"sha256={expected}"
    assert sorted(json.loads(v)["alert_id"] for _, v in records) == sorted(alert_ids)
    assert scalar(embedded_db, "SELECT max(attempts) FROM alert_deliveries") == 1


@pytest.mark.slow
def test_two_scoring_workers_one_planted_incident_one_signed_webhook_delivery(
        broker: BrokerTarget, embedded_db: str, worker_factory: Any) -> None:
    """The whole path: two workers score a feed with one planted negative burst, the detector opens one
    incident and queues it in the outbox, and the receiver gets its opening exactly once, signed."""
    from connectors.post import Post
    from model.checkpoint import DEFAULT_CHECKPOINT
    from tests.stream.conftest import scalar, wait_for
    from tests.stream.test_scoring_e2e import NEGATIVE, POSITIVE, publish

    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=27)  # recent: not historical
    posts = [Post(platform="bluesky", post_id=f"spiky-{minute}-{j}", topic="spiky",
                  text=NEGATIVE[j % 4] if minute == 20 else POSITIVE[(j + 1) % 4],
                  created_at=start + timedelta(minutes=minute, seconds=2 * j))
             for minute in range(26) for j in range(24)]
    receiver = Receiver().start()
    try:
        publish(broker, posts)
        common = {"checkpoint": str(DEFAULT_CHECKPOINT), "media_enabled": "false", "windows": "1m,1h",
                  "alert_webhook_url": receiver.url, "alert_webhook_secret": SECRET,
                  "alert_delivery_interval_s": "1"}
        workers = [worker_factory(broker, embedded_db, name=f"w{i}", **common) for i in range(2)]
        logs = lambda: "\n".join(w.log()[-4000:] for w in workers)  # noqa: E731 - a closure for the failure text
        wait_for(lambda: scalar(embedded_db, "SELECT count(*) FROM sentiments") == len(posts), 300,
                 "every post scored", logs)
        wait_for(lambda: scalar(embedded_db, "SELECT count(*) FROM alerts WHERE event = 'opened'") == 1
                 and scalar(embedded_db, "SELECT count(*) FROM alert_deliveries WHERE state = 'pending'") == 0,
                 120, "one opened alert, nothing pending", logs)
        time.sleep(3)  # both deliverers tick a few more times: nothing may go out again
        for w in workers:
            assert w.stop() == 0, w.log()
    finally:
        receiver.stop()
    opened = [(h, b) for h, b in receiver.requests if json.loads(b)["event"] == "opened"]
    assert len(opened) == 1, [json.loads(b) for _, b in receiver.requests]
    headers, body = opened[0]
    expected = hmac.new(SECRET.encode(), headers["X-Sentistream-Timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["X-Sentistream-Signature"] == f"sha256={expected}"
    assert (json.loads(body)["topic"], json.loads(body)["kind"]) == ("spiky", "negative_spike")
    # The worker's model says which words it attended to in each example post: words of that post.
    examples = json.loads(body)["explanation"]["explanation"]["examples"]
    assert examples and all(e["text"] in NEGATIVE for e in examples)
    for e in examples:
        assert e["attended_words"] and {w["word"] for w in e["attended_words"]} <= set(
            re.findall(r"\w+", e["text"].casefold())), e
    sent = [json.loads(b)["alert_id"] for _, b in receiver.requests]
    assert len(sent) == len(set(sent))


@pytest.mark.slow
def test_a_worker_restarted_while_the_webhook_was_down_delivers_once_it_is_back(
        broker: BrokerTarget, embedded_db: str, worker_factory: Any) -> None:
    """The retry schedule lives in the row: a worker fails against a dead receiver and stops; the receiver
    comes up; a new worker sends the alert once, and both attempts are on record."""
    from tests.stream.conftest import scalar, wait_for

    ensure_topics(broker, ["posts.raw", "posts.deadletter", "sentiment.alerts"], partitions=4)
    port = free_port()
    engine = create_engine(embedded_db)
    settings_ = {"scoring": "false", "media_enabled": "false", "alert_webhook_url": f"http://127.0.0.1:{port}/hook",
                 "alert_delivery_interval_s": "0.5", "alert_webhook_timeout_s": "2"}
    try:
        first = worker_factory(broker, embedded_db, name="before", **settings_)
        _, alert_id = store_alert(engine)
        wait_for(lambda: scalar(embedded_db, "SELECT attempts FROM alert_deliveries WHERE destination = 'webhook'")
                 == 1, 120, "a failed attempt against the dead receiver", first.log)
        assert first.stop() == 0, first.log()
        row = deliveries(engine, alert_id)["webhook"]
        assert (row["state"], row["delivered_at"]) == ("pending", None) and row["last_error"]
        assert deliveries(engine, alert_id)["kafka"]["state"] == "delivered"

        receiver = Receiver(port=port).start()
        try:
            second = worker_factory(broker, embedded_db, name="after", **settings_)
            wait_for(lambda: deliveries(engine, alert_id)["webhook"]["state"] == "delivered", 120,
                     "the webhook delivery after the restart", second.log)
            time.sleep(2)  # more ticks: nothing goes out again
            assert second.stop() == 0, second.log()
        finally:
            receiver.stop()
    finally:
        engine.dispose()
    assert len(receiver.requests) == 1
    assert [(a["attempt"], a["outcome"]) for a in attempts(engine, alert_id, "webhook")] == [
        (1, "failed"), (2, "delivered")]
