"""Alert delivery: a durable outbox in PostgreSQL that any number of workers drain, each alert once.

Why an outbox: sending alerts straight from the batch (the old ``deliver_pending``) claimed nothing, so
two workers, or a retry after a database blip, sent one alert twice; and a webhook that was down for
four seconds lost the alert for good.  Here:

* **Enqueue** (:func:`enqueue_alert_delivery`) writes one ``alert_deliveries`` row per destination
  (``kafka`` = the ``sentiment.alerts`` topic, ``webhook``) in the *same transaction* as the ``alerts``
  row, so an alert that exists is always going to be delivered, and a rolled-back one never is.  The
  key (alert_id, destination) makes enqueueing twice (a replayed batch) a no-op.
* **Claim** (:meth:`AlertDeliverer.deliver_due`): due rows are locked with ``FOR UPDATE SKIP LOCKED``
  and leased (``claimed_until``, ``claim_token``) in one short transaction, then sent outside it.
  Another deliverer skips locked and leased rows, so each row is sent by one deliverer.  A deliverer
  that dies mid-send leaves a lease that expires, and the row is sent again (at-least-once: a receiver
  that must never see a duplicate dedupes on ``X-Sentistream-Delivery``).  The lease is longer than a
  send can take (the HTTP timeout), so a live deliverer never loses its row to another.
* **Retry** with capped exponential backoff kept in the row (``next_attempt_at``), so the schedule
  survives restarts, until the row is ``max_age_s`` old; then it is ``failed``.  Every attempt is a row
  in ``alert_delivery_attempts`` and is summed up in the delivery row (attempts, last_status,
  last_error, delivered_at), and counted in ``sentistream_alert_deliveries_total{destination,outcome}``.
* **Not delivered**: alerts flagged ``historical`` (old windows, e.g. a replay), alerts of an
  acknowledged incident and alerts of a muted topic are closed as ``suppressed`` with the reason, when
  they come due (a mute set after the alert still stops it).  A webhook row with no webhook configured,
  or for an event the webhook does not take (``updated`` by default), is closed as ``skipped``.

The payload is generic and versioned (``"schema": "sentistream.alert/v1"``, see README "Alert
delivery"); the webhook body is that JSON or a Slack message, signed with HMAC-SHA256 over
``timestamp + "." + body`` when a secret is set.  The webhook URL is the operator's setting, not
something a post can choose, so it is not SSRF-filtered.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import BigInteger, Text

from stream import metrics
from stream.settings import Settings

log = logging.getLogger(__name__)

PAYLOAD_SCHEMA = "sentistream.alert/v1"
DESTINATION_KAFKA = "kafka"
DESTINATION_WEBHOOK = "webhook"
DESTINATIONS = (DESTINATION_KAFKA, DESTINATION_WEBHOOK)

SIGNATURE_HEADER = "X-Sentistream-Signature"
TIMESTAMP_HEADER = "X-Sentistream-Timestamp"
DELIVERY_HEADER = "X-Sentistream-Delivery"
EVENT_HEADER = "X-Sentistream-Event"

PENDING, DELIVERED, FAILED, SUPPRESSED, SKIPPED = "pending", "delivered", "failed", "suppressed", "skipped"
WEBHOOK_FORMATS = ("json", "slack")

PublishAlert = Callable[[bytes, bytes], Awaitable[None]]


# --------------------------------------------------------------------------------------------------
# Enqueue: called by the detector inside the transaction that inserts the alert
# --------------------------------------------------------------------------------------------------

def enqueue_alert_delivery(conn: Connection, alert_id: int, destinations: Sequence[str] = DESTINATIONS) -> int:
    """Queue the alert ``alert_id`` for every destination; call it in the transaction that inserted it.

    Idempotent (a replayed batch enqueues nothing new).  A ``historical`` alert gets its rows closed as
    ``suppressed`` at once, so ``alerts show`` says why it never went out.  Returns the rows added.
    """
    unknown = set(destinations) - set(DESTINATIONS)
    if unknown:
        raise ValueError(f"unknown alert destination(s) {sorted(unknown)}; known: {', '.join(DESTINATIONS)}")
    stmt = text("""
        INSERT INTO alert_deliveries (alert_id, destination, state, last_error)
        SELECT a.id, d.destination,
               CASE WHEN a.historical THEN 'suppressed' ELSE 'pending' END,
               CASE WHEN a.historical THEN 'historical: the alert is about windows too old to page for' END
        FROM alerts a CROSS JOIN unnest(:destinations) AS d(destination)
        WHERE a.id = :alert_id
        ON CONFLICT (alert_id, destination) DO NOTHING
    """).bindparams(bindparam("destinations", type_=ARRAY(Text)))
    return conn.execute(stmt, {"alert_id": alert_id, "destinations": list(destinations)}).rowcount


# --------------------------------------------------------------------------------------------------
# Payload: generic v1 JSON, Slack rendering, signature
# --------------------------------------------------------------------------------------------------

def _iso(value: Any) -> str | None:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else None


def alert_payload(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The ``sentistream.alert/v1`` document for one alert row (joined with its incident, ``i_*`` keys).

    Field by field in README "Alert delivery"; new fields may be added within v1, none removed or
    changed in meaning (that would be v2).
    """
    start = alert["window_start"].astimezone(UTC)
    seconds = int(alert["window_seconds"])
    evidence = alert.get("evidence") or {}
    incident = None
    if alert.get("incident_id") is not None:
        incident = {"id": alert["incident_id"], "status": alert.get("i_status"),
                    "started_at": _iso(alert.get("i_started_at")), "resolved_at": _iso(alert.get("i_resolved_at")),
                    "n_windows": alert.get("i_n_windows")}
    payload = {
        "schema": PAYLOAD_SCHEMA,
        "alert_id": alert["id"],
        "incident_id": alert.get("incident_id"),
        "event": alert.get("event") or "opened",
        "topic": alert["topic"],
        "kind": alert["kind"],
        "model_version": alert["model_version"],
        "window": {"start": start.isoformat(), "end": (start + timedelta(seconds=seconds)).isoformat(),
                   "seconds": seconds},
        "numbers": {"observed": alert["observed"], "expected": alert["expected"], "score": alert["score"],
                    "n_posts": alert["n_posts"], "n_negative": alert["n_negative"]},
        "incident": incident,
        "explanation": evidence,
        "created_at": _iso(alert.get("created_at")),
    }
    payload["summary"] = alert_summary(payload)
    return payload


def alert_summary(payload: Mapping[str, Any]) -> str:
    """One line an analyst reads in a notification: what, where, how far from normal."""
    n = payload["numbers"]
    kind = str(payload["kind"]).replace("_", " ")
    event = "" if payload["event"] == "opened" else f" ({payload['event']})"
    if payload["kind"] == "volume_spike":
        figures = f"{n['n_posts']} posts (baseline {n['expected']:.1f})"
    else:
        figures = f"{n['observed']:.0%} negative of {n['n_posts']} posts (baseline {n['expected']:.0%})"
    return (f"{kind.capitalize()}{event} in '{payload['topic']}': {figures} in the {payload['window']['seconds']} s "
            f"window from {payload['window']['start'][:16].replace('T', ' ')} UTC, score {n['score']:.1f}")


def slack_escape(value: object) -> str:
    """Post text is hostile: Slack reads ``<!channel>``, ``<@U…>`` and ``<url|label>`` in mrkdwn, so a post
    could page a whole channel or dress up a link.  Escaping ``& < >`` (Slack's rule) makes it plain text."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_SAFE_URL = re.compile(r"https?://[^\s<>|&]{1,500}")


def _explanation_part(evidence: Mapping[str, Any]) -> Mapping[str, Any]:
    """The detector stores its explanation (terms, examples) under ``explanation``; older rows at the top."""
    inner = evidence.get("explanation")
    return inner if isinstance(inner, Mapping) else evidence


def _example_lines(evidence: Mapping[str, Any], limit: int = 5) -> list[str]:
    """Example posts from whatever list of posts the explanation carries, escaped and trimmed."""
    explanation = _explanation_part(evidence)
    for key in ("examples", "example_posts", "posts"):
        items = explanation.get(key)
        if isinstance(items, list):
            lines = []
            for item in items[:limit]:
                if isinstance(item, Mapping):
                    where = " ".join(slack_escape(item[k]) for k in ("platform", "post_id", "author") if item.get(k))
                    url = item.get("url")
                    link = f" <{url}|link>" if isinstance(url, str) and _SAFE_URL.fullmatch(url) else ""
                    attended = item.get("attended_words")
                    read_by = ", ".join(slack_escape(str(w.get("word", "")))[:40] for w in attended[:5]
                                        if isinstance(w, Mapping)) if isinstance(attended, list) else ""
                    lines.append(f"• {slack_escape(str(item.get('text', ''))[:200])} ({where[:200]}){link}"
                                 + (f" · model read: _{read_by[:200]}_" if read_by else ""))
                else:
                    lines.append(f"• {slack_escape(str(item)[:200])}")
            return lines
    return []


def _term_list(evidence: Mapping[str, Any], limit: int = 10) -> str:
    explanation = _explanation_part(evidence)
    words: list[str] = []
    for key in ("terms", "hashtags", "top_terms", "over_represented"):
        items = explanation.get(key)
        if isinstance(items, list):
            words += [str(t.get("term", t.get("token", ""))) if isinstance(t, Mapping)
                      else str(t[0] if isinstance(t, list | tuple) and t else t) for t in items[:limit]]
    unique = list(dict.fromkeys(w[:60] for w in words if w))
    return slack_escape(", ".join(unique[:limit + 5]))


def slack_message(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Slack incoming-webhook JSON built from the v1 payload (``text`` is the notification fallback)."""
    n, w = payload["numbers"], payload["window"]
    fields = [
        {"type": "mrkdwn", "text": f"*Topic*\n{slack_escape(payload['topic'])[:500]}"},
        {"type": "mrkdwn", "text": f"*Window*\n{w['start'][:16].replace('T', ' ')} UTC, {w['seconds']} s"},
        {"type": "mrkdwn", "text": f"*Observed*\n{n['observed']:.3g} (baseline {n['expected']:.3g})"},
        {"type": "mrkdwn", "text": f"*Posts*\n{n['n_negative']} negative of {n['n_posts']}"},
        {"type": "mrkdwn", "text": f"*Score*\n{n['score']:.2f}"},
        {"type": "mrkdwn", "text": f"*Model*\n{slack_escape(payload['model_version'])[:500]}"},
    ]
    title = f"{str(payload['kind']).replace('_', ' ').capitalize()} ({payload['event']}): {payload['topic']}"
    title = title.replace("<", "\u2039").replace(">", "\u203a")  # plain_text, and no mention-like text at all
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": slack_escape(payload["summary"])[:3000]}},
        {"type": "section", "fields": fields},
    ]
    explanation = payload.get("explanation") or {}
    terms = _term_list(explanation)
    if terms:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Over-represented terms*\n{terms}"[:3000]}})
    examples = _example_lines(explanation)
    if examples:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": ("*Most negative posts*\n" + "\n".join(examples))[:3000]}})
    ack = (f"`sentistream alerts ack {payload['incident_id']}`" if payload.get("incident_id") is not None
           else f"alert {payload['alert_id']}")
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"alert {payload['alert_id']} · acknowledge: {ack} · mute the topic: "
                                   f"`sentistream alerts mute {slack_escape(payload['topic'])} --for 2h`"[:3000]}]})
    return {"text": slack_escape(payload["summary"])[:3000], "blocks": blocks}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with ``secret`` over ``timestamp + "." + body`` (the header value)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """What a receiver does: recompute and compare in constant time (also check the timestamp's age)."""
    return hmac.compare_digest(sign(secret, timestamp, body), header)


# --------------------------------------------------------------------------------------------------
# Destinations
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttemptResult:
    """What one send did: ``status`` is short (``HTTP 503``, ``ClientConnectorError``, ``kafka ok``)."""

    ok: bool
    status: str
    error: str | None = None
    retry_after_s: float | None = None


@dataclass
class WebhookSender:
    """POST one alert to the operator's webhook; never raises, reports what happened."""

    url: str
    secret: str | None = None
    format: str = "json"
    timeout_s: float = 10.0
    events: frozenset[str] = frozenset({"opened", "resolved"})

    def __post_init__(self) -> None:
        if self.format not in WEBHOOK_FORMATS:
            raise ValueError(f"webhook format must be one of {', '.join(WEBHOOK_FORMATS)}, got {self.format!r}")

    def render(self, payload: Mapping[str, Any], delivery_id: int, now: float | None = None
               ) -> tuple[bytes, dict[str, str]]:
        """Body and headers of the request (separate from sending so tests can check the signature)."""
        document = slack_message(payload) if self.format == "slack" else payload
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        timestamp = str(int(now if now is not None else time.time()))
        headers = {"Content-Type": "application/json", "User-Agent": "sentistream-alerts/1",
                   TIMESTAMP_HEADER: timestamp, DELIVERY_HEADER: str(delivery_id),
                   EVENT_HEADER: str(payload.get("event"))}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, body)
        return body, headers

    async def send(self, payload: Mapping[str, Any], delivery_id: int) -> AttemptResult:
        body, headers = self.render(payload, delivery_id)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session, \
                    session.post(self.url, data=body, headers=headers, allow_redirects=False) as resp:
                answer = (await resp.text(errors="replace"))[:200]
                if 200 <= resp.status < 300:
                    return AttemptResult(True, f"HTTP {resp.status}")
                retry_after = resp.headers.get("Retry-After", "").strip()
                return AttemptResult(False, f"HTTP {resp.status}", f"HTTP {resp.status}: {answer}",
                                     float(retry_after) if retry_after.isdigit() else None)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return AttemptResult(False, type(exc).__name__, f"{type(exc).__name__}: {exc}"[:500])


def kafka_message(payload: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) for ``sentiment.alerts``: keyed by incident (else alert) so one incident's events
    stay in one partition, in order; the value is the v1 document."""
    key = f"incident:{payload['incident_id']}" if payload.get("incident_id") is not None else f"alert:{payload['alert_id']}"
    return key.encode(), json.dumps(payload, separators=(",", ":"), default=str).encode()


# --------------------------------------------------------------------------------------------------
# The deliverer
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard to try: backoff ``base * 2**(attempt-1)`` capped, with +-20 % jitter, up to ``max_age_s``."""

    max_age_s: float = 86400.0
    backoff_base_s: float = 5.0
    backoff_cap_s: float = 600.0
    lease_s: float = 60.0  # longer than one send can take (the webhook timeout), so a live claim never lapses
    kafka_timeout_s: float = 20.0  # a broker that does not acknowledge the record by then: a failed attempt
    batch: int = 50

    def backoff_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        wait = min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(0, attempt - 1))
        wait *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
        if retry_after_s is not None:  # the receiver asked to wait: at least that, within the cap
            wait = max(wait, min(retry_after_s, self.backoff_cap_s))
        return wait


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    destination: str
    attempt: int  # the number this attempt will have
    created_at: datetime
    token: str
    payload: dict[str, Any]


@dataclass
class DeliveryReport:
    """What one pass did, by outcome (tests and logs)."""

    outcomes: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    @property
    def handled(self) -> int:
        return sum(self.outcomes.values())


_CLAIM = text("""
    WITH due AS (
        SELECT id FROM alert_deliveries
        WHERE state = 'pending' AND next_attempt_at <= clock_timestamp()
          AND (claimed_until IS NULL OR claimed_until < clock_timestamp())
        ORDER BY next_attempt_at, id
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    UPDATE alert_deliveries d
    SET claimed_until = clock_timestamp() + make_interval(secs => :lease_s), claim_token = :token
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.alert_id, d.destination, d.attempts, d.created_at
""")

_ALERTS = text("""
    SELECT a.*, i.status AS i_status, i.started_at AS i_started_at, i.resolved_at AS i_resolved_at,
           i.n_windows AS i_n_windows, i.acked_at AS i_acked_at, i.acked_by AS i_acked_by,
           m.muted_until AS muted_until
    FROM alerts a
    LEFT JOIN alert_incidents i ON i.id = a.incident_id
    LEFT JOIN alert_mutes m ON m.topic = a.topic AND m.muted_until > clock_timestamp()
    WHERE a.id = ANY(:ids)
""").bindparams(bindparam("ids", type_=ARRAY(BigInteger)))

_CLOSE = text("""
    UPDATE alert_deliveries SET state = :state, last_error = :reason, claimed_until = NULL, claim_token = NULL
    WHERE id = :id AND claim_token = :token
""")

_FINISH = text("""
    UPDATE alert_deliveries
    SET attempts = attempts + 1, last_attempt_at = clock_timestamp(), last_status = :status, last_error = :error,
        state = :state, delivered_at = CASE WHEN :state = 'delivered' THEN clock_timestamp() END,
        next_attempt_at = clock_timestamp() + make_interval(secs => :wait_s),
        claimed_until = NULL, claim_token = NULL
    WHERE id = :id AND claim_token = :token
""")

_RECORD_ATTEMPT = text("""
    INSERT INTO alert_delivery_attempts (delivery_id, attempt, outcome, status, error, seconds)
    VALUES (:id, :attempt, :outcome, :status, :error, :seconds)
""")


class AlertDeliverer:
    """Drains due ``alert_deliveries`` rows; safe to run in any number of processes at once.

    In the worker, :meth:`kick` after each committed batch starts a pass in the background (never
    awaited by the batch, so a slow webhook cannot hold the batch's ack), and :meth:`run` wakes it on a
    timer for retries that come due later.  Database calls go to ``executor`` (psycopg2 blocks).
    """

    def __init__(self, engine: Engine, *, publish: PublishAlert | None = None, webhook: WebhookSender | None = None,
                 policy: DeliveryPolicy | None = None, executor: Executor | None = None) -> None:
        self.engine = engine
        self.publish = publish
        self.webhook = webhook
        self.policy = policy or DeliveryPolicy()
        self.executor = executor
        self._pass: asyncio.Task[None] | None = None
        self._again = False

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings, *, publish: PublishAlert | None = None,
                      executor: Executor | None = None) -> AlertDeliverer:
        webhook = None
        if settings.alert_webhook_url:
            webhook = WebhookSender(settings.alert_webhook_url, secret=settings.alert_webhook_secret or None,
                                    format=settings.alert_webhook_format, timeout_s=settings.alert_webhook_timeout_s)
        lease = max(DeliveryPolicy.lease_s, 3 * settings.alert_webhook_timeout_s)
        return cls(engine, publish=publish, webhook=webhook, executor=executor,
                   policy=DeliveryPolicy(max_age_s=settings.alert_delivery_max_age_s, lease_s=lease,
                                         kafka_timeout_s=lease / 3))

    # -- scheduling ---------------------------------------------------------------------------------

    def kick(self) -> None:
        """Start a delivery pass in the background, or ask the running one to go again; returns at once."""
        if self._pass is not None and not self._pass.done():
            self._again = True
            return
        self._pass = asyncio.ensure_future(self._drain())

    async def run(self, interval_s: float) -> None:
        """Kick every ``interval_s`` until cancelled: retries whose time has come go out.

        Cancelled (the worker stopping), it cancels a pass in flight too: a row it had claimed keeps its
        lease and is sent again once the lease ends (at-least-once), by this worker after a restart or
        by another one.
        """
        try:
            while True:
                self.kick()
                await asyncio.sleep(interval_s)
        finally:
            if self._pass is not None and not self._pass.done():
                self._pass.cancel()

    async def _drain(self) -> None:
        while True:
            self._again = False
            try:
                report = await self.deliver_due()
            except Exception as exc:  # noqa: BLE001 - rows stay pending; the next kick or tick retries
                log.warning("alert delivery pass failed (%s: %s); pending deliveries are retried",
                            type(exc).__name__, exc)
                return
            if not self._again and report.handled < self.policy.batch:
                return

    # -- one pass -----------------------------------------------------------------------------------

    async def deliver_due(self) -> DeliveryReport:
        """Claim up to ``policy.batch`` due rows, send each, record the outcome; returns what it did."""
        loop = asyncio.get_running_loop()
        report = DeliveryReport()
        claimed = await loop.run_in_executor(self.executor, self._claim, report)
        for item in claimed:
            started = time.monotonic()
            result = await self._send(item)
            outcome = await loop.run_in_executor(self.executor, self._finish, item, result,
                                                 time.monotonic() - started)
            report.add(outcome)
        return report

    async def _send(self, item: Claimed) -> AttemptResult:
        """One attempt; whatever goes wrong is its result (recorded, retried), never an exception."""
        try:
            if item.destination == DESTINATION_WEBHOOK:
                assert self.webhook is not None  # rows without a sender are closed as skipped at claim time
                return await self.webhook.send(item.payload, item.delivery_id)
            assert self.publish is not None
            key, value = kafka_message(item.payload)
            await asyncio.wait_for(self.publish(key, value), self.policy.kafka_timeout_s)
        except TimeoutError:
            return AttemptResult(False, "timeout", f"no acknowledgement within {self.policy.kafka_timeout_s:.0f} s")
        except Exception as exc:  # noqa: BLE001 - any producer or rendering error is a failed attempt
            return AttemptResult(False, type(exc).__name__, f"{type(exc).__name__}: {exc}"[:500])
        return AttemptResult(True, "kafka ok")

    def _skip_reason(self, destination: str, alert: Mapping[str, Any]) -> tuple[str, str] | None:
        """(state, reason) for a row that must not be sent, else None."""
        if alert.get("historical"):
            return SUPPRESSED, "historical: the alert is about windows too old to page for"
        if alert.get("i_acked_at") is not None:
            return SUPPRESSED, f"acked by {alert.get('i_acked_by') or 'someone'} at {_iso(alert['i_acked_at'])}"
        if alert.get("muted_until") is not None:
            return SUPPRESSED, f"muted: topic {alert['topic']!r} is muted until {_iso(alert['muted_until'])}"
        if destination == DESTINATION_WEBHOOK:
            if self.webhook is None:
                return SKIPPED, "no webhook configured (SENTISTREAM_ALERT_WEBHOOK_URL)"
            if (alert.get("event") or "opened") not in self.webhook.events:
                return SKIPPED, f"the webhook does not take '{alert.get('event')}' events (Kafka does)"
        elif self.publish is None:
            return SKIPPED, "no Kafka producer in this process"
        return None

    def _claim(self, report: DeliveryReport) -> list[Claimed]:
        token = uuid.uuid4().hex
        out: list[Claimed] = []
        with self.engine.begin() as conn:
            rows = conn.execute(_CLAIM, {"batch": self.policy.batch, "lease_s": self.policy.lease_s,
                                         "token": token}).all()
            if not rows:
                return []
            alerts = {a["id"]: a for a in (dict(r._mapping) for r in conn.execute(
                _ALERTS, {"ids": [r.alert_id for r in rows]}))}
            now = datetime.now(UTC)
            for r in rows:
                alert = alerts[r.alert_id]
                skip = self._skip_reason(r.destination, alert)
                if skip is None and (now - r.created_at).total_seconds() > self.policy.max_age_s:
                    skip = FAILED, f"expired: older than {self.policy.max_age_s:.0f} s before it could be sent"
                if skip is not None:
                    conn.execute(_CLOSE, {"state": skip[0], "reason": skip[1], "id": r.id, "token": token})
                    outcome = "expired" if skip[0] == FAILED else skip[0]
                    metrics.ALERT_DELIVERIES.labels(r.destination, outcome).inc()
                    report.add(outcome)
                    log.info("alert %s not sent to %s: %s", r.alert_id, r.destination, skip[1])
                    continue
                out.append(Claimed(r.id, r.destination, r.attempts + 1, r.created_at, token, alert_payload(alert)))
        return out

    def _finish(self, item: Claimed, result: AttemptResult, seconds: float) -> str:
        alert_id = item.payload["alert_id"]
        if result.ok:
            state, outcome, wait_s = DELIVERED, "delivered", 0.0
        else:
            wait_s = self.policy.backoff_s(item.attempt, result.retry_after_s)
            retry_at = datetime.now(UTC) + timedelta(seconds=wait_s)
            expired = (retry_at - item.created_at).total_seconds() > self.policy.max_age_s
            state, outcome = (FAILED, "expired") if expired else (PENDING, "failed")
        with self.engine.begin() as conn:
            kept = conn.execute(_FINISH, {"status": result.status, "error": result.error, "state": state,
                                          "wait_s": wait_s, "id": item.delivery_id, "token": item.token}).rowcount
            conn.execute(_RECORD_ATTEMPT, {"id": item.delivery_id, "attempt": item.attempt, "outcome": outcome,
                                           "status": result.status, "error": result.error, "seconds": seconds})
            if result.ok:  # the pre-outbox columns, kept true for dashboards that read them
                column = "published_at = coalesce(published_at, now())" if item.destination == DESTINATION_KAFKA \
                    else "webhook_status = 'sent'"
                conn.execute(text(f"UPDATE alerts SET {column} WHERE id = :id"), {"id": alert_id})  # noqa: S608
        metrics.ALERT_DELIVERIES.labels(item.destination, outcome).inc()
        if not kept:
            log.warning("alert %s delivery %d to %s: the claim lapsed before the result was recorded (the send "
                        "took longer than the %.0f s lease); another deliverer may send it again",
                        alert_id, item.delivery_id, item.destination, self.policy.lease_s)
        if outcome == "delivered":
            log.info("alert %s sent to %s (attempt %d)", alert_id, item.destination, item.attempt)
        elif outcome == "failed":
            log.warning("alert %s: attempt %d to %s failed (%s); next try in %.0f s", alert_id, item.attempt,
                        item.destination, result.error, wait_s)
        else:
            log.error("alert %s: gave up on %s after %d attempt(s) over %.0f s: %s", alert_id, item.destination,
                      item.attempt, self.policy.max_age_s, result.error)
        return outcome
