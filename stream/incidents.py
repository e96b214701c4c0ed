"""Incidents, not windows: the detector's looks become one incident per topic, kind and model version.

An analyst wants one page per outage, not one per window length or per look.  The rules
(:func:`decide`), the same in memory (:class:`IncidentBook`: benchmarks, offline analysis) and in
PostgreSQL (:func:`apply_looks`: the worker):

* a firing look opens an incident unless one of that topic, kind and model version is open; window
  lengths share it (the key has no window length);
* every window of an open incident that closes updates it with its *final* numbers (event ``updated``),
  so an alert opened on a half-filled window does not keep its first-look numbers;
* the first closed window back within ``rearm_z`` of the baseline resolves it (event ``resolved``);
* a spike within ``cooldown_s`` of the resolution reopens the same incident (event ``updated``) instead
  of paging again: a flapping topic is one incident;
* a volume spike while a negative spike of the topic is open, or within ``cooldown_s`` of its resolution,
  is the same incident (its evidence carries the volume against baseline), so an outage that is both loud
  and negative pages once (trailing windows can resolve the negative spike between the two);
* looks at windows before the incident's newest window are old news (a replay): they change nothing.

Each event is an ``alerts`` row carrying the explanation (``stream.alert_explanation``).  An event about
a window that ended more than ``historical_after_s`` before now (a replay of old data) is stored with
``historical = true`` and never delivered.

In PostgreSQL the decisions for a topic are serialised by a transaction-scoped advisory lock on the topic
name, and the state they start from is read from ``alert_incidents`` inside that lock, so two workers that
see the same spike open one incident; the unique keys make a replayed decision a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection

from stream.alerts import KIND_NEGATIVE_SPIKE, KIND_VOLUME_SPIKE, Look, SpikeAlert, SpikeConfig

log = logging.getLogger(__name__)

OPEN, RESOLVED = "open", "resolved"
OPENED, UPDATED, EVENT_RESOLVED = "opened", "updated", "resolved"
MAX_WINDOWS_IN_EVIDENCE = 48


@dataclass
class Incident:
    topic: str
    kind: str
    model_version: str
    window_seconds: int
    started_at: datetime
    last_window_start: datetime
    observed: float
    expected: float
    score: float
    n_posts: int
    n_negative: int
    status: str = OPEN
    resolved_at: datetime | None = None
    n_windows: int = 1
    historical: bool = False
    id: int | None = None
    windows: list[dict[str, Any]] = field(default_factory=list)  # final numbers per closed window
    escalated_from: str | None = None  # a volume spike that turned negative keeps its start and id

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.topic, self.kind, self.model_version)


def _window_numbers(look: Look) -> dict[str, Any]:
    w = look.window
    return {"window_start": w.window_start.isoformat(), "window_seconds": w.window_seconds,
            "n_posts": w.n_posts, "n_negative": w.n_negative, "observed": look.observed,
            "expected": look.expected, "score": round(look.score, 3), "final": look.final}


def _take(incident: Incident, look: Look) -> None:
    """The incident's numbers become this look's (its newest window), its score the strongest seen."""
    w = look.window
    incident.observed, incident.expected = look.observed, look.expected
    incident.n_posts, incident.n_negative = w.n_posts, w.n_negative
    incident.score = max(incident.score, look.score)
    incident.window_seconds = w.window_seconds
    if look.final:
        numbers = _window_numbers(look)
        if incident.windows and incident.windows[-1]["window_start"] == numbers["window_start"]:
            incident.windows[-1] = numbers
        else:
            incident.windows = (incident.windows + [numbers])[-MAX_WINDOWS_IN_EVIDENCE:]
    if w.window_start > incident.last_window_start:
        incident.n_windows += 1
        incident.last_window_start = w.window_start


def decide(incident: Incident | None, look: Look, cfg: SpikeConfig, negative_open: bool = False,
           volume_open: Incident | None = None) -> tuple[Incident | None, str | None]:
    """(the incident after ``look``, the event to record or None); ``incident`` is the latest one of
    the look's topic, kind and model version.  ``negative_open``: a negative spike of the topic is open or
    cooling down (:func:`negative_covers`);
    ``volume_open``: the topic's open volume spike, which a negative spike escalates instead of opening
    a second incident.  Mutates and returns ``incident``, ``volume_open`` or a new incident.
    """
    if incident is not None and (look.window_start < incident.last_window_start or (
            incident.status == RESOLVED and look.window_start <= incident.last_window_start)):
        return incident, None  # an older window than the incident has seen: a replay, or a late close
    if incident is not None and incident.status == OPEN:
        if not look.final:
            return incident, None  # final numbers come when the window closes
        if look.normal and not look.fires:
            incident.status, incident.resolved_at = RESOLVED, look.window_start
            incident.last_window_start = max(incident.last_window_start, look.window_start)
            return incident, EVENT_RESOLVED
        _take(incident, look)
        return incident, UPDATED
    if not look.fires:
        return incident, None
    if look.kind == KIND_VOLUME_SPIKE and negative_open:
        return incident, None  # the open negative spike is this incident; its evidence has the volume
    if look.kind == KIND_NEGATIVE_SPIKE and volume_open is not None and volume_open.status == OPEN \
            and look.window_end > volume_open.started_at:  # a trailing window can start before the burst
        volume_open.kind = KIND_NEGATIVE_SPIKE  # the burst turned out negative: one incident, escalated
        volume_open.escalated_from = KIND_VOLUME_SPIKE
        _take(volume_open, look)
        return volume_open, UPDATED
    if incident is not None and incident.resolved_at is not None and (
            look.window_start - incident.resolved_at).total_seconds() < cfg.cooldown_s:
        incident.status, incident.resolved_at = OPEN, None
        _take(incident, look)
        return incident, UPDATED
    fresh = Incident(look.topic, look.kind, look.model_version, look.window.window_seconds, look.window_start,
                     look.window_start, look.observed, look.expected, look.score, look.window.n_posts,
                     look.window.n_negative)
    if look.final:
        fresh.windows = [_window_numbers(look)]
    return fresh, OPENED


def negative_covers(negative: Incident | None, look: Look, cfg: SpikeConfig) -> bool:
    """The topic's negative spike is open, or resolved less than ``cooldown_s`` before ``look``'s window:
    a volume spike now is part of it."""
    if negative is None:
        return False
    if negative.status == OPEN:
        return True
    return negative.resolved_at is not None and (look.window_start - negative.resolved_at).total_seconds() < cfg.cooldown_s


def is_historical(look: Look, now: datetime | None, historical_after_s: float | None) -> bool:
    """The look's window ended more than ``historical_after_s`` before ``now``: store, never deliver."""
    if now is None or historical_after_s is None:
        return False
    return look.window_end < now - timedelta(seconds=historical_after_s)


def alert_of(incident: Incident, look: Look, event: str, evidence: dict[str, Any], historical: bool) -> SpikeAlert:
    w = look.window
    return SpikeAlert(topic=w.topic, window_start=w.window_start, window_seconds=w.window_seconds,
                      model_version=w.model_version, observed=look.observed, expected=look.expected,
                      score=look.score, n_posts=w.n_posts, n_negative=w.n_negative, evidence=evidence,
                      kind=incident.kind, event=event, incident_id=incident.id, historical=historical)


def look_evidence(incident: Incident, look: Look, event: str) -> dict[str, Any]:
    """The statistics part of an alert's evidence: the window, volume and negative share vs baseline."""
    s = look.stats
    return {
        "event": event, "incident": {
            "kind": incident.kind, "status": incident.status, "started_at": incident.started_at.isoformat(),
            "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
            "n_windows": incident.n_windows, "peak_score": round(incident.score, 3), "windows": incident.windows,
            "escalated_from": incident.escalated_from},
        "window_start": look.window_start.isoformat(), "window_end": look.window_end.isoformat(),
        "window_seconds": look.window.window_seconds, "final": look.final, "threshold": look.threshold,
        "negative_share": {"observed": s["share_observed"], "baseline": s["baseline_rate"],
                           "baseline_sd": s["share_baseline_sd"], "lift": s["share_lift"],
                           "z_binomial": s["share_z_binomial"], "z_share": s["share_z_share"],
                           "p_value": s["share_p_value"], "n_negative": look.window.n_negative},
        "volume": {"n_posts": look.window.n_posts, "expected": s["volume_expected"], "ratio": s["volume_ratio"],
                   "seasonal_factor": s["volume_seasonal_factor"], "z_poisson": s["volume_z_poisson"],
                   "z_count": s["volume_z_count"], "p_value": s["volume_p_value"]},
        "baseline_windows": int(s["baseline_windows"]), "baseline_posts": round(s["baseline_posts"], 1),
        "mean_intensity": look.window.mean_intensity,
    }


class IncidentBook:
    """The incident rules in memory: ``apply`` looks, get the alerts (events) they produce."""

    def __init__(self, config_for: Callable[[str], SpikeConfig], historical_after_s: float | None = None) -> None:
        self.config_for = config_for
        self.historical_after_s = historical_after_s
        self.latest: dict[tuple[str, str, str], Incident] = {}
        self.all: list[Incident] = []

    def apply(self, looks: Iterable[Look], now: datetime | None = None) -> list[SpikeAlert]:
        out = []
        for look in looks:
            key = (look.topic, look.kind, look.model_version)
            negative = self.latest.get((look.topic, KIND_NEGATIVE_SPIKE, look.model_version))
            vol_key = (look.topic, KIND_VOLUME_SPIKE, look.model_version)
            volume = self.latest.get(vol_key)
            incident, event = decide(self.latest.get(key), look, self.config_for(look.topic),
                                     negative_open=negative_covers(negative, look, self.config_for(look.topic)),
                                     volume_open=volume)
            if event is None or incident is None:
                continue
            if incident is volume and incident.kind != KIND_VOLUME_SPIKE:
                self.latest.pop(vol_key, None)  # escalated: it is the topic's negative spike now
            if event == OPENED:
                incident.historical = is_historical(look, now, self.historical_after_s)
                self.all.append(incident)
            self.latest[key] = incident
            out.append(alert_of(incident, look, event, look_evidence(incident, look, event),
                                is_historical(look, now, self.historical_after_s)))
        return out


# --------------------------------------------------------------------------------------------------
# PostgreSQL: decisions serialised per topic
# --------------------------------------------------------------------------------------------------

EnqueueDelivery = Callable[[Connection, int], None]


def enqueue_delivery(conn: Connection, alert_id: int) -> None:
    """THE delivery hook: called once per new, non-historical alert row, inside the transaction that
    stored it (so an alert is queued exactly when it exists).

    It writes the alert's rows in the delivery outbox (``stream.alert_delivery``: one per destination,
    sent once by whichever worker claims it, retried across restarts).
    """
    from stream.alert_delivery import enqueue_alert_delivery

    enqueue_alert_delivery(conn, alert_id)


def _lock_topic(conn: Connection, topic: str) -> None:
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                 {"key": f"sentistream.alert-decisions:{topic}"})


def _latest(conn: Connection, topic: str, kind: str, model_version: str) -> Incident | None:
    from stream.db import AlertIncidentRow

    t = AlertIncidentRow.__table__
    row = conn.execute(select(t).where(t.c.topic == topic, t.c.kind == kind, t.c.model_version == model_version)
                       .order_by(t.c.started_at.desc()).limit(1)).first()
    if row is None:
        return None
    windows = ((row.evidence or {}).get("incident") or {}).get("windows") or []
    return Incident(row.topic, row.kind, row.model_version, row.window_seconds, row.started_at.astimezone(UTC),
                    row.last_window_start.astimezone(UTC), row.observed, row.expected, row.score, row.n_posts,
                    row.n_negative, row.status, row.resolved_at.astimezone(UTC) if row.resolved_at else None,
                    row.n_windows, row.historical, row.id, list(windows))


def _save(conn: Connection, incident: Incident, evidence: dict[str, Any] | None) -> None:
    """Insert or update the incident; ``evidence`` None keeps the stored one (a resolution keeps the
    explanation and numbers of the incident's last spiking window)."""
    from stream.db import AlertIncidentRow

    t = AlertIncidentRow.__table__
    values = {"topic": incident.topic, "kind": incident.kind, "model_version": incident.model_version,
              "status": incident.status, "window_seconds": incident.window_seconds,
              "started_at": incident.started_at, "last_window_start": incident.last_window_start,
              "resolved_at": incident.resolved_at, "observed": incident.observed, "expected": incident.expected,
              "score": incident.score, "n_posts": incident.n_posts, "n_negative": incident.n_negative,
              "n_windows": incident.n_windows, "historical": incident.historical}
    if evidence is not None or incident.id is None:
        values["evidence"] = evidence
    if incident.id is None:
        stmt = pg_insert(t).values(values)
        stmt = stmt.on_conflict_do_update(constraint="uq_alert_incidents_key",
                                          set_={**{k: stmt.excluded[k] for k in values}, "updated_at": func.now()})
        incident.id = conn.execute(stmt.returning(t.c.id)).scalar_one()
    else:
        conn.execute(t.update().where(t.c.id == incident.id).values(**values, updated_at=func.now()))


def apply_looks(conn: Connection, looks: Sequence[Look], config_for: Callable[[str], SpikeConfig], *,
                now: datetime | None = None, historical_after_s: float | None = None,
                explain: Callable[[Connection, Incident, Look], dict[str, Any]] | None = None,
                enqueue: EnqueueDelivery = enqueue_delivery) -> list[SpikeAlert]:
    """Decide the looks' incidents in the database; store incidents and alerts; return the new alerts.

    Per topic (in name order, so two workers never wait on each other in a cycle): take the topic's
    advisory lock, read its latest incidents, decide each look, write.  ``explain(conn, incident, look)``
    adds the explanation (terms, examples) to each event's evidence.  New alert rows that are not
    historical go to ``enqueue`` in this transaction.
    """
    from stream.db import AlertRow

    a = AlertRow.__table__
    by_topic: dict[str, list[Look]] = {}
    for look in looks:
        by_topic.setdefault(look.topic, []).append(look)
    new: list[SpikeAlert] = []
    for topic in sorted(by_topic):
        topic_looks = by_topic[topic]
        if not any(look.fires or look.final for look in topic_looks):
            continue
        _lock_topic(conn, topic)
        latest: dict[tuple[str, str, str], Incident | None] = {}
        for look in topic_looks:
            key = (topic, look.kind, look.model_version)
            neg_key = (topic, KIND_NEGATIVE_SPIKE, look.model_version)
            vol_key = (topic, KIND_VOLUME_SPIKE, look.model_version)
            for k in (key, neg_key, vol_key):
                if k not in latest:
                    latest[k] = _latest(conn, *k)
            negative, volume = latest[neg_key], latest[vol_key]
            before = latest[key]
            if before is None and not look.fires:
                continue
            incident, event = decide(replace(before) if before else None, look, config_for(topic),
                                     negative_open=negative_covers(negative, look, config_for(topic)),
                                     volume_open=replace(volume) if volume else None)
            if event is None or incident is None:
                continue
            if incident.escalated_from == KIND_VOLUME_SPIKE and incident.id == (volume.id if volume else None):
                latest[vol_key] = None  # escalated: it is the topic's negative spike now
            historical = is_historical(look, now, historical_after_s)
            if event == OPENED:
                incident.historical = historical
            evidence = look_evidence(incident, look, event)
            if explain is not None:
                evidence["explanation"] = explain(conn, incident, look)
            _save(conn, incident, None if event == EVENT_RESOLVED else evidence)
            latest[key] = incident
            alert = alert_of(incident, look, event, evidence, historical)
            row = conn.execute(pg_insert(a).values(alert.to_row())
                               .on_conflict_do_nothing(constraint="uq_alerts_event_key").returning(a.c.id)).first()
            if row is None:
                continue  # this event was stored before (a replay): not new
            alert = replace(alert, alert_id=row.id)
            if not historical:
                enqueue(conn, row.id)
            new.append(alert)
    return new


def explain_incident(conn: Connection, incident: Incident, look: Look, attended_words: Any = None,
                     attended_model_version: str | None = None) -> dict[str, Any]:
    """The explanation of an incident so far: its posts from its start to the end of this look's window.

    ``attended_words`` (``stream.alert_explanation.AttendedWords``, the worker's scorer) adds the words the
    model attended to in the example posts; without it the explanation says they are not available."""
    from stream.alert_explanation import explain_span

    return explain_span(conn, incident.topic, incident.model_version, incident.started_at, look.window_end,
                        attended_words=attended_words, attended_model_version=attended_model_version)
