"""Negative-spike alerts: window aggregates in, alerts out; plus where alerts go (PostgreSQL, Kafka, webhook).

:class:`SpikeDetector` is pure and deterministic.  Per series (topic, window length, model version) it
keeps a baseline of the negative share of *closed* windows (EWMA mean and variance, a plain running
mean while warming up) and tests each window as it fills:

* ``z_binomial``: the window's negative count against Binomial(n, baseline rate) — is this more negative
  than sampling noise at this volume allows?
* ``z_ewma``: the window's share against the baseline's own window-to-window spread plus this window's
  sampling noise — is it unusual for *this* topic, whose share may naturally swing?

It fires when both exceed ``z_threshold`` (plus ``open_window_z_margin`` while the window is still
filling: repeated looks at a growing sample need more evidence), the share is at least ``min_lift`` above
the baseline, the window has ``min_volume`` posts (three posts cannot fire) and the series has
``warmup_windows`` closed baseline windows.  One alert per spike: after firing, the series is disarmed and
re-arms only when a later closed window's share is back within ``rearm_z`` of the baseline; a
``cooldown_s`` after an alert blocks a new one anyway.  Windows of an ongoing spike are kept out of the
baseline (so it measures normal behaviour) unless the shift lasts ``adapt_after_windows`` windows, when it
is accepted as the new normal.

A window closes when a window more than ``lateness_windows`` later of the same series arrives (event time,
not wall-clock time: batches from several partitions interleave), so replays make the same decisions as
the live run.  State is rebuilt from ``window_aggregates`` and ``alerts`` rows (:func:`restore_series`):
a restarted worker keeps its baseline, and a window that already has an alert row disarms the series
instead of alerting again (the alerts table is unique on topic, kind, window).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any, NamedTuple

import aiohttp
from sqlalchemy import Integer, Text, and_, column, func, select, true, tuple_, values
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential, wait_random

from stream.db import AlertRow, PostRow, SentimentRow, WindowAggregateRow
from stream.settings import Settings
from stream.windows import AGGREGATE_COLUMNS, WindowAggregate

logger = logging.getLogger(__name__)

KIND_NEGATIVE_SPIKE = "negative_spike"
_NORMAL = NormalDist()


class SeriesKey(NamedTuple):
    topic: str
    window_seconds: int
    model_version: str


def series_of(agg: WindowAggregate) -> SeriesKey:
    return SeriesKey(agg.topic, agg.window_seconds, agg.model_version)


@dataclass(frozen=True)
class SpikeConfig:
    """Detector knobs; defaults follow what analysts' tools use (z = 3, one-hour cooldown)."""

    min_volume: int = 20
    z_threshold: float = 3.0
    min_lift: float = 0.10
    warmup_windows: int = 12
    alpha: float = 0.1
    rearm_z: float = 1.0
    cooldown_s: int = 3600
    adapt_after_windows: int = 12
    rate_floor: float = 0.02  # keeps the binomial variance positive for a topic that is never negative
    # A window is tested while it fills (fast alerts) and once more when it closes.  The looks at a
    # filling window need ``open_window_z_margin`` more evidence: repeated looks at a small, growing
    # sample would otherwise multiply the false-alarm rate.
    evaluate_open_windows: bool = True
    open_window_z_margin: float = 0.75
    # A window closes once a window this many lengths later has arrived: batches from several partitions
    # interleave, so window W can still be filling after W+1 has started.
    lateness_windows: int = 1
    max_future_s: int = 300

    @classmethod
    def from_settings(cls, settings: Settings) -> SpikeConfig:
        return cls(min_volume=settings.alert_min_volume, z_threshold=settings.alert_z_threshold,
                   cooldown_s=settings.alert_cooldown_s, warmup_windows=settings.alert_warmup_windows)


@dataclass(frozen=True)
class SpikeAlert:
    """One negative spike, with the evidence an analyst needs to judge it."""

    topic: str
    window_start: datetime
    window_seconds: int
    model_version: str
    observed: float
    expected: float
    score: float
    n_posts: int
    n_negative: int
    evidence: dict[str, Any]
    kind: str = KIND_NEGATIVE_SPIKE

    @property
    def window_end(self) -> datetime:
        return self.window_start + timedelta(seconds=self.window_seconds)

    @property
    def key(self) -> str:
        """Stable id of the alert: the Kafka key, and what makes a replayed alert the same alert."""
        return f"{self.topic}:{self.kind}:{self.window_start.isoformat()}:{self.window_seconds}"

    def summary(self) -> str:
        return (f"Negative spike in '{self.topic}': {self.observed:.0%} negative of {self.n_posts} posts "
                f"in the {_span(self.window_seconds)} from {self.window_start:%Y-%m-%d %H:%M} UTC "
                f"(baseline {self.expected:.0%}, z = {self.score:.1f})")

    def to_row(self) -> dict[str, Any]:
        return {"topic": self.topic, "kind": self.kind, "window_start": self.window_start,
                "window_seconds": self.window_seconds, "model_version": self.model_version,
                "observed": self.observed, "expected": self.expected, "score": self.score,
                "n_posts": self.n_posts, "n_negative": self.n_negative, "evidence": self.evidence}

    def to_dict(self) -> dict[str, Any]:
        row = self.to_row()
        row["window_start"] = self.window_start.isoformat()
        row["window_end"] = self.window_end.isoformat()
        row["summary"] = self.summary()
        return row


@dataclass
class _Series:
    mean: float = 0.0
    var: float = 0.0
    baseline_windows: int = 0
    armed: bool = True
    spike_windows: int = 0
    last_alert_start: datetime | None = None
    # Windows still open (filling, not yet in the baseline), by start; and the start of the last closed one.
    open: dict[datetime, WindowAggregate] = field(default_factory=dict)
    closed_until: datetime | None = None


@dataclass
class SpikeDetector:
    """Per-series spike state machine; feed it window aggregates in any batch order, get alerts."""

    config: SpikeConfig = field(default_factory=SpikeConfig)
    _series: dict[SeriesKey, _Series] = field(default_factory=dict)

    def knows(self, key: SeriesKey) -> bool:
        return key in self._series

    def track(self, key: SeriesKey) -> None:
        """Mark a series as known (restored, possibly with no history) so it is not restored again."""
        self._series.setdefault(key, _Series())

    def forget(self, keys: Iterable[SeriesKey] | None = None) -> None:
        """Drop the state of ``keys`` (all series when None); the next batch restores it from PostgreSQL.

        Call it when the transaction that stored this detector's alerts rolls back: the detector already
        disarmed itself for an alert that now does not exist, and the database is the truth to rebuild from.
        """
        if keys is None:
            self._series.clear()
        else:
            for key in keys:
                self._series.pop(key, None)

    def observe(self, aggregates: Iterable[WindowAggregate], now: datetime | None = None,
                watermark: datetime | None = None) -> list[SpikeAlert]:
        """Take the current values of some windows (e.g. those a batch touched); return new alerts.

        With ``now``, windows starting more than ``max_future_s`` after it are ignored: one post with a
        clock years ahead must not close every real window of its topic.
        """
        alerts: list[SpikeAlert] = []
        for agg in self._in_order(aggregates, now):
            alerts.extend(self._observe_one(agg, emit=True, watermark=watermark))
        return alerts

    def restore(self, history: Iterable[WindowAggregate], alerted: Iterable[tuple[str, datetime, int]] = (),
                now: datetime | None = None, watermark: datetime | None = None) -> None:
        """Rebuild state from stored windows and stored alerts, emitting nothing.

        ``alerted`` holds (topic, window_start, window_seconds) of alert rows: those windows disarm the
        series exactly as the live run did, so a restarted or replaying worker does not alert twice.
        """
        fired = {(t, ws.astimezone(UTC), s) for t, ws, s in alerted}
        for agg in self._in_order(history, now):
            self._observe_one(agg, emit=False, watermark=watermark)
            if (agg.topic, agg.window_start, agg.window_seconds) in fired:
                state = self._series[series_of(agg)]
                state.armed, state.last_alert_start = False, agg.window_start

    def _in_order(self, aggregates: Iterable[WindowAggregate], now: datetime | None) -> list[WindowAggregate]:
        horizon = None if now is None else now + timedelta(seconds=self.config.max_future_s)
        return sorted((a for a in aggregates if horizon is None or a.window_start <= horizon),
                      key=lambda a: (series_of(a), a.window_start))

    def _observe_one(self, agg: WindowAggregate, *, emit: bool, watermark: datetime | None = None
                     ) -> list[SpikeAlert]:
        """Update an open window, close the windows that are now past the allowed lateness, test.

        Windows close by ``watermark`` when the caller knows one (the event time every partition with a
        backlog has passed: see ``stream.aggregation.EventTimeWatermark``), else by the series' newest
        window.  Without a watermark, one partition racing ahead in a backfill would close windows the
        other partitions have not filled yet, and a spike in them would never be evaluated complete.
        """
        state = self._series.setdefault(series_of(agg), _Series())
        if state.closed_until is not None and agg.window_start <= state.closed_until:
            return []  # a late post in a closed window: its numbers are stored, the baseline moved on
        state.open[agg.window_start] = agg
        alerts: list[SpikeAlert] = []
        newest = max(state.open) if watermark is None else watermark
        lateness = timedelta(seconds=agg.window_seconds * self.config.lateness_windows)
        for start in sorted(state.open):
            if newest - start <= lateness:
                break
            closing = state.open.pop(start)
            if emit:  # the final look at a complete window uses the plain threshold
                alerts.extend(self._evaluate(state, closing, self.config.z_threshold))
            self._close(state, closing)
            state.closed_until = start
        if emit and self.config.evaluate_open_windows and agg.window_start in state.open:
            alerts.extend(self._evaluate(state, agg, self.config.z_threshold + self.config.open_window_z_margin))
        return alerts

    def _evaluate(self, state: _Series, agg: WindowAggregate, threshold: float) -> list[SpikeAlert]:
        cfg = self.config
        if not state.armed or state.baseline_windows < cfg.warmup_windows or agg.n_posts < cfg.min_volume:
            return []
        if state.last_alert_start is not None and (
                agg.window_start - state.last_alert_start).total_seconds() < cfg.cooldown_s:
            return []
        test = self._test(state, agg)
        if min(test["z_binomial"], test["z_ewma"]) < threshold or test["lift"] < cfg.min_lift:
            return []
        state.armed, state.last_alert_start = False, agg.window_start
        score = min(test["z_binomial"], test["z_ewma"])
        evidence = {
            "window_start": agg.window_start.isoformat(),
            "window_end": (agg.window_start + timedelta(seconds=agg.window_seconds)).isoformat(),
            "window_seconds": agg.window_seconds,
            "n_posts": agg.n_posts, "n_negative": agg.n_negative,
            "observed": test["observed"], "expected": state.mean, "baseline_sd": math.sqrt(state.var),
            "baseline_windows": state.baseline_windows, "z_binomial": test["z_binomial"],
            "z_ewma": test["z_ewma"], "lift": test["lift"],
            "p_value": test["p_value"],  # exact one-sided binomial tail P(X >= n_negative)
            "mean_intensity": agg.mean_intensity, "threshold": threshold,
        }
        return [SpikeAlert(agg.topic, agg.window_start, agg.window_seconds, agg.model_version,
                           observed=test["observed"], expected=state.mean, score=score, n_posts=agg.n_posts,
                           n_negative=agg.n_negative, evidence=evidence)]

    def _test(self, state: _Series, agg: WindowAggregate) -> dict[str, float]:
        n = agg.n_posts
        observed = agg.n_negative / n
        rate = min(max(state.mean, self.config.rate_floor), 1 - self.config.rate_floor)
        sampling_var = rate * (1 - rate) / n
        # Only the upper tail matters (a spike is *more* negative); at or below the rate, skip the sum.
        p_value = binomial_sf(agg.n_negative, n, rate) if observed > rate else 1.0
        return {
            "observed": observed,
            "p_value": p_value,
            "z_binomial": -_NORMAL.inv_cdf(min(max(p_value, 1e-300), 0.5)) if p_value < 0.5 else 0.0,
            "z_ewma": (observed - state.mean) / math.sqrt(state.var + sampling_var),
            "lift": observed - state.mean,
        }

    def _close(self, state: _Series, agg: WindowAggregate) -> None:
        """A window is final: re-arm if the spike is over, and fold it into the baseline if normal."""
        if agg.n_posts == 0:
            return
        # Only windows from the alerted one onwards belong to the spike; an earlier window that closes
        # late (lateness) is ordinary baseline and must not re-arm the series.
        in_spike = not state.armed and (state.last_alert_start is None or agg.window_start >= state.last_alert_start)
        if in_spike:
            state.spike_windows += 1
            back_to_normal = state.baseline_windows > 0 and self._test(state, agg)["z_ewma"] < self.config.rearm_z
            if back_to_normal:
                state.armed, state.spike_windows = True, 0
            elif state.spike_windows < self.config.adapt_after_windows:
                return
        self._fold(state, agg.n_negative / agg.n_posts, agg.n_posts)

    def _fold(self, state: _Series, share: float, n: int) -> None:
        # Plain running mean/variance while warming up, then EWMA; a thin window moves the baseline less.
        alpha = max(self.config.alpha, 1.0 / (state.baseline_windows + 1))
        alpha *= min(1.0, n / self.config.min_volume) if state.baseline_windows else 1.0
        diff = share - state.mean
        incr = alpha * diff
        state.mean += incr
        state.var = (1 - alpha) * (state.var + diff * incr)
        state.baseline_windows += 1


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact: the normal approximation is too optimistic for the small,
    skewed windows (n ~ 20-50, p ~ 0.2) where false alarms would come from."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)

    def log_pmf(j: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * log_p + (n - j) * log_q

    if k <= n * p:  # the upper tail holds at least about half the mass: no spike, skip the long sum
        return 1.0 - sum(math.exp(log_pmf(j)) for j in range(k))
    total, j = 0.0, k
    while j <= n:  # terms shrink beyond the mode: stop once they stop mattering
        term = math.exp(log_pmf(j))
        total += term
        if term < total * 1e-17:
            break
        j += 1
    return min(total, 1.0)


def detect(aggregates: Iterable[WindowAggregate], config: SpikeConfig | None = None) -> list[SpikeAlert]:
    """Run a fresh detector over a whole feed of final window aggregates (offline analysis, tests)."""
    return SpikeDetector(config or SpikeConfig()).observe(aggregates)


def _span(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}s" if count > 1 else unit
    return f"{seconds} s"


# --------------------------------------------------------------------------------------------------
# PostgreSQL: restore, store, examples
# --------------------------------------------------------------------------------------------------

def restore_series(conn: Connection, detector: SpikeDetector, keys: Iterable[SeriesKey],
                   history_windows: int = 500, now: datetime | None = None,
                   watermark: datetime | None = None) -> None:
    """Load the last ``history_windows`` windows and the alerts of each series into ``detector``.

    Call it for series the detector does not know yet (``detector.knows``) before observing them; a
    worker then never forgets a baseline across restarts.  500 windows is ~99% of an alpha=0.1 EWMA.
    """
    keys = sorted(set(keys))
    if not keys:
        return
    w = WindowAggregateRow.__table__
    series = values(column("topic", Text), column("window_seconds", Integer), column("model_version", Text),
                    name="series").data([tuple(k) for k in keys]).alias("series")
    recent = (select(*(w.c[c] for c in AGGREGATE_COLUMNS))
              .where(w.c.topic == series.c.topic, w.c.window_seconds == series.c.window_seconds,
                     w.c.model_version == series.c.model_version))
    if now is not None:
        recent = recent.where(w.c.window_start <= now + timedelta(seconds=detector.config.max_future_s))
    # Per series, newest first through the (topic, window_seconds, window_start) index, then LIMIT.
    recent = recent.order_by(w.c.window_start.desc()).limit(history_windows).lateral("recent")
    rows = conn.execute(select(*(recent.c[c] for c in AGGREGATE_COLUMNS))
                        .select_from(series.join(recent, true()))).all()
    history = [WindowAggregate(*r)._replace(window_start=r[1].astimezone(UTC)) for r in rows]
    a = AlertRow.__table__
    alerted = conn.execute(
        select(a.c.topic, a.c.window_start, a.c.window_seconds).where(and_(
            a.c.kind == KIND_NEGATIVE_SPIKE,
            tuple_(a.c.topic, a.c.window_seconds).in_([(k.topic, k.window_seconds) for k in keys]),
        ))).all()
    detector.restore(history, [tuple(r) for r in alerted], now=now, watermark=watermark)
    for key in keys:  # a series with no stored windows yet is known (and empty) from now on
        detector.track(key)


def observe_with_history(conn: Connection, detector: SpikeDetector, aggregates: Sequence[WindowAggregate],
                         watermark: datetime | None = None) -> list[SpikeAlert]:
    """Restore unknown series from the database, then observe: what the worker calls per batch."""
    unknown = {series_of(a) for a in aggregates if not detector.knows(series_of(a))}
    now = datetime.now(UTC)
    restore_series(conn, detector, unknown, now=now, watermark=watermark)
    return detector.observe(aggregates, now=now, watermark=watermark)


def insert_alerts(conn: Connection, alerts: Sequence[SpikeAlert]) -> list[SpikeAlert]:
    """Insert alerts, skipping ones already stored; return only the new ones (publish those)."""
    if not alerts:
        return []
    a = AlertRow.__table__
    stmt = (pg_insert(a).values([al.to_row() for al in alerts])
            .on_conflict_do_nothing(constraint="uq_alerts_event_key")
            .returning(a.c.topic, a.c.kind, a.c.window_start, a.c.window_seconds))
    new = {(t, k, ws.astimezone(UTC), s) for t, k, ws, s in conn.execute(stmt)}
    return [al for al in alerts if (al.topic, al.kind, al.window_start, al.window_seconds) in new]


def mark_delivered(conn: Connection, alert: SpikeAlert, webhook_status: str) -> None:
    """Record that an alert went to Kafka (published_at) and what the webhook said."""
    a = AlertRow.__table__
    conn.execute(a.update().where(and_(a.c.topic == alert.topic, a.c.kind == alert.kind,
                                       a.c.window_start == alert.window_start,
                                       a.c.window_seconds == alert.window_seconds))
                 .values(published_at=func.now(), webhook_status=webhook_status))


def spike_examples(conn: Connection, alert: SpikeAlert, limit: int = 5) -> list[dict[str, Any]]:
    """The most negative posts of the alert's window: what an analyst reads first to see what drove it."""
    p, s = PostRow.__table__, SentimentRow.__table__
    rows = conn.execute(
        select(p.c.platform, p.c.post_id, p.c.url, func.left(p.c.text, 280).label("text"), s.c.p_negative)
        .join(s, and_(s.c.post_pk == p.c.id, s.c.model_version == alert.model_version))
        .where(p.c.topic == alert.topic, p.c.created_at >= alert.window_start, p.c.created_at < alert.window_end,
               s.c.label == "negative")
        .order_by(s.c.p_negative.desc(), p.c.post_id).limit(limit)).all()
    return [dict(r._mapping) for r in rows]


# --------------------------------------------------------------------------------------------------
# Delivery: Kafka message and Slack-compatible webhook
# --------------------------------------------------------------------------------------------------

def alert_message(alert: SpikeAlert) -> tuple[bytes, bytes]:
    """(key, value) for the ``sentiment.alerts`` topic; the key makes a republished alert the same one."""
    value = {"schema_version": 1, **alert.to_dict()}
    return alert.key.encode(), json.dumps(value, separators=(",", ":"), default=str).encode()


def slack_payload(alert: SpikeAlert, examples: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Slack incoming-webhook JSON (``text`` is the notification fallback, ``blocks`` the message)."""
    ev = alert.evidence
    fields = [
        {"type": "mrkdwn", "text": f"*Topic*\n{alert.topic}"},
        {"type": "mrkdwn", "text": f"*Window*\n{alert.window_start:%Y-%m-%d %H:%M} UTC, {_span(alert.window_seconds)}"},
        {"type": "mrkdwn", "text": f"*Negative share*\n{alert.observed:.1%} (baseline {alert.expected:.1%})"},
        {"type": "mrkdwn", "text": f"*Posts*\n{alert.n_negative} negative of {alert.n_posts}"},
        {"type": "mrkdwn", "text": f"*Score*\nz = {alert.score:.2f} (binomial {ev.get('z_binomial', 0):.1f}, "
                                   f"EWMA {ev.get('z_ewma', 0):.1f})"},
        {"type": "mrkdwn", "text": f"*Model*\n{alert.model_version}"},
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Negative spike: {alert.topic}"[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": alert.summary()}},
        {"type": "section", "fields": fields},
    ]
    if examples:
        lines = "\n".join(f"• {e.get('text', '')[:200]}" for e in examples)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Most negative posts*\n{lines}"[:3000]}})
    return {"text": alert.summary(), "blocks": blocks}


class _DeliveryFailed(Exception):
    """One webhook attempt that may succeed later (network error, 5xx, 429 with its Retry-After)."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class _DeliveryRejected(Exception):
    """The webhook refused the request (4xx other than 429): the payload or URL is wrong, retrying won't help."""


class _RetryAfterOr(wait_base):
    """The wait a 429's Retry-After asked for (capped), else the fallback schedule's."""

    def __init__(self, fallback: wait_base, cap_s: float) -> None:
        self.fallback = fallback
        self.cap_s = cap_s

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _DeliveryFailed) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self.cap_s)
        return self.fallback(retry_state)


class AlertNotifier:
    """POST alerts to an optional Slack-compatible webhook, retrying 5xx/429/network errors with backoff.

    The webhook URL comes from the operator's settings, not from posts, so it is not SSRF-filtered.
    ``notify`` never raises; it returns the status to store in ``alerts.webhook_status`` and logs the
    outcome once (INFO when sent, WARNING when it gave up), with the alert's key; retries log at DEBUG.
    """

    def __init__(self, webhook_url: str | None, *, attempts: int = 4, backoff_s: float = 0.5,
                 timeout_s: float = 5.0, max_retry_after_s: float = 30.0) -> None:
        self.webhook_url = webhook_url
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_retry_after_s = max_retry_after_s

    async def notify(self, alert: SpikeAlert, examples: Sequence[dict[str, Any]] = ()) -> str:
        if not self.webhook_url:
            return "disabled"
        payload = slack_payload(alert, examples)

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            logger.debug("alert webhook attempt %d for %s failed (%s); retrying in %.1fs",
                         state.attempt_number, alert.key, exc, delay)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_DeliveryFailed),
            stop=stop_after_attempt(max(1, self.attempts)),
            wait=_RetryAfterOr(wait_exponential(multiplier=self.backoff_s, max=self.max_retry_after_s)
                               + wait_random(0, self.backoff_s), self.max_retry_after_s),
            before_sleep=log_retry,
            reraise=True,
        )
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            try:
                await retrying(self._post_once, session, self.webhook_url, payload)
            except (_DeliveryFailed, _DeliveryRejected) as exc:
                last = str(exc)
            else:
                logger.info("alert %s sent to the webhook (attempt %d)", alert.key,
                            retrying.statistics.get("attempt_number", 1))
                return "sent"
        logger.warning("alert webhook gave up on %s after %d attempt(s): %s", alert.key,
                       retrying.statistics.get("attempt_number", 1), last)
        return f"failed: {last}"[:500]

    @staticmethod
    async def _post_once(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> None:
        try:
            async with session.post(url, json=payload) as resp:
                body = (await resp.text())[:200]
                if 200 <= resp.status < 300:
                    return
                reason = f"HTTP {resp.status}: {body}"
                if resp.status != 429 and resp.status < 500:
                    raise _DeliveryRejected(reason)
                retry_after = resp.headers.get("Retry-After", "")
                raise _DeliveryFailed(reason, float(retry_after) if retry_after.isdigit() else None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
