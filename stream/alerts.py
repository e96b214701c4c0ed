"""Spike detection: window aggregates in, *looks* out (is this window a negative or a volume spike?).

:class:`SpikeDetector` is pure and deterministic.  Per series (topic, window length, model version) it
keeps a baseline of *closed* windows and tests each window while it fills and once more when it closes:

``negative_spike`` (the share of negative posts)
    The baseline rate is a volume-weighted EWMA (negatives / posts, so a window of 2 posts moves it less
    than one of 200).  The window's share is tested twice: ``z_binomial``, its negative count against
    Binomial(n, rate) (is this more than sampling noise at this volume?), and ``z_share``, against the
    baseline's *extra* window-to-window spread plus this window's sampling noise plus the uncertainty of
    the rate itself.  The extra spread is the EWMA of squared deviations *minus* the binomial variance the
    windows' volumes explain: for thin windows that spread is mostly sampling noise, and counting it twice
    made low-volume topics nearly unable to alert.  The rate's own uncertainty (``rate(1-rate)/N`` for the
    N posts behind it) keeps a young baseline from firing on its first unusual window.
``volume_spike`` (the number of posts)
    The baseline is an EWMA level of counts per window with extra-Poisson spread, times a seasonal factor
    learned per hour of day once the series has two days of history and per hour of week once it has two
    weeks (``seasonal factor = EWMA of count / level`` for that slot).  The count is tested against
    Poisson(expected) (``z_poisson``) and against the expected count's spread (``z_count``); an open
    window's count so far is compared with the whole window's expectation (conservative, no false alarm
    from a half-filled window).

A look *fires* when both statistics of its kind reach the threshold (plus ``open_window_z_margin`` while
the window is still filling: repeated looks at a growing sample need more evidence), the lift (share
above baseline, or count over expected) is large enough, the window has ``min_volume`` posts and the
series has ``warmup_windows`` closed windows.  A closed look is *normal* when its statistic is below
``rearm_z``.  Windows of an ongoing spike (from a firing window until a normal one) stay out of the
baseline unless the shift lasts ``adapt_after_windows`` windows, when it is accepted as the new normal.
Any other closed window is folded in with its negative share capped at ``baseline_clip_z`` standard
errors above the rate, so the first, sub-threshold windows of an incident that builds up do not raise the
baseline and its spread enough to hide the rest of it.

What a look means for an analyst (open an incident, update it, resolve it, cooldown) is decided by
``stream.incidents`` from the looks: in memory for benchmarks and offline analysis, and in PostgreSQL,
serialised per topic, in the worker.  Which window length is looked at per topic is chosen from the
topic's volume (:meth:`SpikeDetector.detection_window`) unless configured.

Thin topics are judged on long windows, and a 45-minute incident that straddles an hour boundary is
diluted in both tumbling hours.  So the detection window is also tested as a *trailing* window at every
close of a shorter stored length (hopping: the hour ending at each closed 5-minute window), its numbers
summed from those closed windows' final numbers and its baseline the one the tumbling window it starts
in was tested against; the overlapping tests share one weekly false-alert budget (``z_threshold_for``).
Each trailing window is tested once, when its last hop window closes, so replays and other batchings
give the same looks.

A window closes when the event-time watermark (or, without one, the series' newest window) is more than
``lateness_windows`` lengths past it, so replays make the same decisions as the live run.  Baselines are
rebuilt from ``window_aggregates`` rows (:func:`restore_series`), so a restarted worker keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from statistics import NormalDist
from typing import Any, NamedTuple

from sqlalchemy import Integer, Text, column, select, true, values
from sqlalchemy.engine import Connection

from stream.db import WindowAggregateRow
from stream.settings import Settings, window_seconds
from stream.windows import AGGREGATE_COLUMNS, EPOCH, WindowAggregate

KIND_NEGATIVE_SPIKE = "negative_spike"
KIND_VOLUME_SPIKE = "volume_spike"
KINDS = (KIND_NEGATIVE_SPIKE, KIND_VOLUME_SPIKE)
AUTO_WINDOW = "auto"
_NORMAL = NormalDist()


class SeriesKey(NamedTuple):
    topic: str
    window_seconds: int
    model_version: str


def series_of(agg: WindowAggregate) -> SeriesKey:
    return SeriesKey(agg.topic, agg.window_seconds, agg.model_version)


@dataclass(frozen=True)
class Sensitivity:
    """A preset's thresholds (``SENTISTREAM_ALERT_SENSITIVITY`` or a topic's ``alerts.sensitivity``).

    ``false_alerts_per_week``: the budget the z threshold is derived from.  A topic judged on 1-minute
    windows is tested 10,080 times a week, on 1-hour windows 168 times, so one fixed z would page a busy
    topic far more often than a quiet one; instead the closed-window z is the one-sided normal quantile
    of ``budget / windows per week`` (:func:`z_threshold_for`), at least ``MIN_Z``.  ``balanced`` gives
    z = 3.89 on 1m, 3.48 on 5m, 3.18 on 15m, 2.75 on 1h windows; an open (filling) window needs
    ``open_window_z_margin`` more.  ``min_lift``: points the negative share must rise above its
    baseline; ``min_ratio``: how many times its expected count a window must hold to be a volume spike.
    """

    false_alerts_per_week: float
    min_lift: float
    min_ratio: float


SENSITIVITIES: dict[str, Sensitivity] = {
    # only the unmistakable: z 4.27 on 1m, 3.89 on 5m, 3.62 on 15m, 3.24 on 1h windows
    "low": Sensitivity(false_alerts_per_week=0.1, min_lift=0.20, min_ratio=3.0),
    "balanced": Sensitivity(false_alerts_per_week=0.5, min_lift=0.10, min_ratio=2.0),  # the default
    # earlier and smaller shifts, more false alerts: z 3.54 on 1m, 3.09 on 5m, 2.75 on 15m, 2.5 on 1h
    "high": Sensitivity(false_alerts_per_week=2.0, min_lift=0.05, min_ratio=1.5),
}
MIN_Z = 2.5  # no budget makes a window with z < 2.5 an alert
WEEK_S = 7 * 86400


@lru_cache(maxsize=256)
def z_threshold_for(false_alerts_per_week: float, window_seconds: int, hop_seconds: int | None = None) -> float:
    """The closed-window z at which a window length's weekly tests spend ``false_alerts_per_week``.

    With ``hop_seconds`` (a trailing window of ``window_seconds`` tested every ``hop_seconds``), the tests
    overlap: consecutive statistics share all but one hop of posts (correlation ``1 - hop / window``), so
    one excursion is seen by several tests in a row.  What pages is an *upcrossing* (a test above z after
    one below it: a new incident), so z is set to spend the budget on the expected upcrossings per week,
    ``WEEK_S / hop * P(Z_prev <= z < Z)`` for a bivariate normal pair (exact in expectation for a stationary
    Gaussian sequence; the incident rules merge more than that, so it is conservative).  ``balanced`` on a
    1-hour window: z = 2.75 tumbling, 3.11 every 15 minutes, 3.32 every 5.
    """
    if hop_seconds is None or hop_seconds >= window_seconds:
        tests_per_week = max(WEEK_S / max(window_seconds, 1), 1.0)
        p = min(false_alerts_per_week / tests_per_week, 0.5)
        return max(MIN_Z, _NORMAL.inv_cdf(1.0 - p))
    target = false_alerts_per_week / max(WEEK_S / max(hop_seconds, 1), 1.0)
    rho = 1.0 - hop_seconds / window_seconds
    lo, hi = 0.0, 12.0
    for _ in range(50):  # upcrossing_probability falls as z rises
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if upcrossing_probability(mid, rho) > target else (lo, mid)
    return max(MIN_Z, hi)


def upcrossing_probability(z: float, rho: float, steps: int = 400) -> float:
    """P(Z1 <= z < Z2) for standard normals with correlation ``rho``:
    the integral over x > z of phi(x) * Phi((z - rho x) / sqrt(1 - rho^2)) (Simpson's rule)."""
    scale = math.sqrt(max(1.0 - rho * rho, 1e-12))
    width = 10.0 / steps
    total = 0.0
    for i in range(steps + 1):
        x = z + i * width
        weight = 1 if i in (0, steps) else (4 if i % 2 else 2)
        total += weight * _NORMAL.pdf(x) * _NORMAL.cdf((z - rho * x) / scale)
    return total * width / 3


@dataclass(frozen=True)
class SpikeConfig:
    """Detector knobs for one topic (the global defaults, overridden by the topic's ``alerts`` section)."""

    enabled: bool = True
    min_volume: int = 10
    z_threshold: float | None = None  # None: from ``false_alerts_per_week`` and the window length
    false_alerts_per_week: float = 0.5
    min_lift: float = 0.10
    min_ratio: float = 2.0
    warmup_windows: int = 5
    alpha: float = 0.1
    rearm_z: float = 1.0
    cooldown_s: int = 3600
    adapt_after_windows: int = 12
    rate_floor: float = 0.02  # keeps the binomial variance positive for a topic that is never negative
    window: str = AUTO_WINDOW  # the detection window length ("15m"), or chosen from the topic's volume
    # A window is tested while it fills (fast alerts) and once more when it closes.  The looks at a
    # filling window need ``open_window_z_margin`` more evidence: repeated looks at a small, growing
    # sample would otherwise multiply the false-alarm rate.
    evaluate_open_windows: bool = True
    open_window_z_margin: float = 0.75
    # A closed window whose share did not fire is folded into the baseline with its upward deviation capped
    # at ``baseline_clip_z`` standard errors.  Uncapped, the first windows of an incident that is building
    # up (too thin, or split by a window boundary) taught the baseline that such shares are normal: the rate
    # rose and the spread grew, and the incident's clearest windows no longer fired (bench/RESULTS.md).
    baseline_clip_z: float | None = 2.0
    # A window closes once a window this many lengths later has arrived: batches from several partitions
    # interleave, so window W can still be filling after W+1 has started.
    lateness_windows: int = 1
    max_future_s: int = 300
    # Hopping: the detection window is also tested as a trailing window ending at every close of a shorter
    # stored length (a 1-hour window every 5 minutes, summed from the closed 5-minute windows), so a
    # shift that straddles two tumbling windows is not diluted in both.  The hop is the shortest stored
    # length that divides the window into at most ``max_hops`` hops (default lengths: 1h every 5m, 15m
    # every 5m, 5m every 1m); the z threshold spends the same weekly budget on the overlapping tests
    # (:func:`z_threshold_for`).  bench/RESULTS.md: at most 4 hops (1h every 15m) found as many incidents
    # with more false alerts at 10 posts/min.
    hopping: bool = True
    max_hops: int = 12

    @classmethod
    def preset(cls, sensitivity: str, **overrides: Any) -> SpikeConfig:
        if sensitivity not in SENSITIVITIES:
            raise ValueError(f"sensitivity {sensitivity!r} is not one of {', '.join(SENSITIVITIES)}")
        s = SENSITIVITIES[sensitivity]
        return cls(**{"false_alerts_per_week": s.false_alerts_per_week, "min_lift": s.min_lift,
                      "min_ratio": s.min_ratio, **overrides})

    def z_for(self, window_seconds: int, hop_seconds: int | None = None) -> float:
        """The closed-window z threshold on this window length (tested every ``hop_seconds``)."""
        if self.z_threshold is not None:
            return self.z_threshold
        return z_threshold_for(self.false_alerts_per_week, window_seconds, hop_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> SpikeConfig:
        overrides: dict[str, Any] = {
            "enabled": settings.alert_enabled, "min_volume": settings.alert_min_volume,
            "cooldown_s": settings.alert_cooldown_s, "warmup_windows": settings.alert_warmup_windows,
            "window": settings.alert_window}
        if settings.alert_z_threshold is not None:
            overrides["z_threshold"] = settings.alert_z_threshold
        return cls.preset(settings.alert_sensitivity, **overrides)

    def for_topic(self, policy: Any) -> SpikeConfig:
        """This config with a topic's ``alerts`` section (connectors.topics.AlertPolicy) applied."""
        if policy is None:
            return self
        changes: dict[str, Any] = {}
        if policy.sensitivity is not None:
            s = SENSITIVITIES[policy.sensitivity]
            changes.update(false_alerts_per_week=s.false_alerts_per_week, min_lift=s.min_lift,
                           min_ratio=s.min_ratio)
        for name in ("enabled", "min_volume", "cooldown_s", "window"):
            if getattr(policy, name) is not None:
                changes[name] = getattr(policy, name)
        return replace(self, **changes)


@dataclass(frozen=True)
class Look:
    """One test of one window for one kind: what ``stream.incidents`` turns into incident events."""

    kind: str
    window: WindowAggregate
    final: bool  # the window is closed: these are its final numbers
    fires: bool
    normal: bool  # closed and back within ``rearm_z`` of the baseline
    score: float  # the smaller of the kind's two standard scores
    observed: float  # negative share, or post count
    expected: float  # baseline share, or expected count
    stats: dict[str, float]
    threshold: float

    @property
    def topic(self) -> str:
        return self.window.topic

    @property
    def model_version(self) -> str:
        return self.window.model_version

    @property
    def window_start(self) -> datetime:
        return self.window.window_start

    @property
    def window_end(self) -> datetime:
        return self.window.window_start + timedelta(seconds=self.window.window_seconds)


@dataclass
class _Baseline:
    """One series' memory of normal: share (volume-weighted EWMA) and count (EWMA level, seasonal)."""

    neg: float = 0.0  # decayed negatives
    posts: float = 0.0  # decayed posts
    dev2: float = 0.0  # EWMA of squared share deviations
    binvar: float = 0.0  # EWMA of the binomial variance those windows' volumes explain
    level: float = 0.0  # EWMA of deseasonalised counts per window
    count_var: float = 0.0  # EWMA of squared count deviations
    windows: int = 0
    first_start: datetime | None = None
    hour_of_day: dict[int, tuple[float, int]] = field(default_factory=dict)  # factor, observations
    hour_of_week: dict[int, tuple[float, int]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.neg / self.posts if self.posts > 0 else 0.0


@dataclass
class _Series:
    baseline: _Baseline = field(default_factory=_Baseline)
    # Per kind: the start of the window that fired and how many closed windows the spike has lasted.
    spike_since: dict[str, datetime] = field(default_factory=dict)
    spike_windows: dict[str, int] = field(default_factory=dict)
    open: dict[datetime, WindowAggregate] = field(default_factory=dict)
    closed_until: datetime | None = None
    # Hopping (a longer window's trailing tests summed from this series' windows): the final numbers of
    # the last closed windows, and the starts of those closed live (by ``looks``, not by ``restore``)
    # whose trailing window is still to be tested.
    closed_log: dict[datetime, WindowAggregate] = field(default_factory=dict)
    hop_pending: list[datetime] = field(default_factory=list)
    # The baseline as it was before each of the last closed windows was folded in: a trailing window
    # is tested against the baseline its overlapping tumbling window was, whatever the batches were.
    snapshots: dict[datetime, _Baseline] = field(default_factory=dict)


@dataclass
class SpikeDetector:
    """Per-series baselines; feed it window aggregates in any batch order, get looks (or alerts).

    ``topic_configs`` holds per-topic overrides of ``config`` (the topics file's ``alerts`` sections).
    ``observe`` runs the looks through an in-memory :class:`stream.incidents.IncidentBook` and returns
    the alerts of new incidents: offline analysis, tests and ``bench/alerts.py``.  The worker uses
    :meth:`looks` and decides incidents in PostgreSQL (``stream.incidents.apply_looks``).
    """

    config: SpikeConfig = field(default_factory=SpikeConfig)
    topic_configs: Mapping[str, SpikeConfig] = field(default_factory=dict)
    _series: dict[SeriesKey, _Series] = field(default_factory=dict)
    _book: Any = None
    _lengths: dict[tuple[str, str], set[int]] = field(default_factory=dict)  # stored lengths per topic

    def config_for(self, topic: str) -> SpikeConfig:
        return self.topic_configs.get(topic, self.config)

    def knows(self, key: SeriesKey) -> bool:
        return key in self._series

    def track(self, key: SeriesKey) -> None:
        """Mark a series as known (restored, possibly with no history) so it is not restored again."""
        self._state(key)

    def _state(self, key: SeriesKey) -> _Series:
        state = self._series.get(key)
        if state is None:
            state = self._series[key] = _Series()
            self._lengths.setdefault((key.topic, key.model_version), set()).add(key.window_seconds)
        return state

    def hop_length(self, topic: str, model_version: str, window: int) -> int | None:
        """The hop at which ``window`` is tested as a trailing window: the shortest stored length that
        divides it into at most ``max_hops`` hops; None without hopping."""
        cfg = self.config_for(topic)
        if not cfg.hopping:
            return None
        hops = [h for h in self._lengths.get((topic, model_version), ())
                if h < window and window % h == 0 and window // h <= cfg.max_hops]
        return min(hops) if hops else None

    def forget(self, keys: Iterable[SeriesKey] | None = None) -> None:
        """Drop the state of ``keys`` (all series when None); the next batch restores it from PostgreSQL.

        Call it when the transaction that stored this detector's decisions rolls back: the database is
        the truth to rebuild from.
        """
        if keys is None:
            self._series.clear()
            self._lengths.clear()
        else:
            for key in keys:
                self._series.pop(key, None)
            self._lengths = {}
            for key in self._series:
                self._lengths.setdefault((key.topic, key.model_version), set()).add(key.window_seconds)

    def baseline_volume(self, key: SeriesKey) -> tuple[float, int]:
        """(usual posts per window, closed baseline windows) of a series; (0, 0) when unknown."""
        state = self._series.get(key)
        return (state.baseline.level, state.baseline.windows) if state else (0.0, 0)

    def detection_window(self, topic: str, model_version: str, lengths: Sequence[int]) -> int | None:
        """The window length alerts for ``topic`` are decided on.

        Configured (``window: 15m``) wins.  Otherwise the shortest length whose usual volume is at least
        three times ``min_volume`` among the series that finished their warm-up (a window of ~30 posts
        shows a share rising from 0.2 to 0.5 at z ~ 3.5; shorter windows of a quiet topic would only see
        the loudest incidents: bench/RESULTS.md), else the longest warmed-up one; before any has, the
        shortest one (nothing can fire during warm-up anyway).
        """
        cfg = self.config_for(topic)
        if cfg.window != AUTO_WINDOW:
            return window_seconds(cfg.window)
        ordered = sorted(lengths)
        warmed = [s for s in ordered if self.baseline_volume(SeriesKey(topic, s, model_version))[1]
                  >= cfg.warmup_windows]
        for s in warmed:
            if self.baseline_volume(SeriesKey(topic, s, model_version))[0] >= 3 * cfg.min_volume:
                return s
        return warmed[-1] if warmed else (ordered[0] if ordered else None)

    def looks(self, aggregates: Iterable[WindowAggregate], now: datetime | None = None,
              watermark: datetime | None = None) -> list[Look]:
        """Take the current values of some windows (e.g. those a batch touched); return their looks.

        Only looks of each topic's detection window are returned (every length still learns its
        baseline).  With ``now``, windows starting more than ``max_future_s`` after it are ignored: one
        post with a clock years ahead must not close every real window of its topic.
        """
        aggs = self._in_order(aggregates, now)
        lengths: dict[tuple[str, str], set[int]] = {}
        for a in aggs:
            lengths.setdefault((a.topic, a.model_version), set()).add(a.window_seconds)
        for key in self._series:
            if (key.topic, key.model_version) in lengths:
                lengths[(key.topic, key.model_version)].add(key.window_seconds)
        chosen = {tm: self.detection_window(tm[0], tm[1], sorted(ls)) for tm, ls in lengths.items()}
        # Every window of the batch takes its new numbers before any closes: the watermark can pass several
        # windows at once (a batch that caught up, overload mode's wide batches), and a window closed while
        # the loop below had not reached it yet would be judged on the numbers an earlier batch left, its
        # fresh ones then dropped as late (a burst split across partitions was missed that way).
        for agg in aggs:
            state = self._state(series_of(agg))
            if state.closed_until is None or agg.window_start > state.closed_until:
                state.open[agg.window_start] = agg
        out: list[Look] = []
        for agg in aggs:
            emit = chosen[(agg.topic, agg.model_version)] == agg.window_seconds
            out.extend(self._observe_one(agg, emit=emit, watermark=watermark, live=True))
        for (topic, model_version), window in sorted(chosen.items()):
            if window is not None:
                out.extend(self._hop_looks(topic, model_version, window))
        # Per topic in window order: a trailing window closes before the tumbling one after it, whichever
        # batch brought them (the incident rules ignore a window older than the incident's newest).
        order = {tm: i for i, tm in enumerate(sorted(chosen))}
        return sorted(out, key=lambda look: (order[(look.topic, look.model_version)], look.window_start))

    def observe(self, aggregates: Iterable[WindowAggregate], now: datetime | None = None,
                watermark: datetime | None = None) -> list[SpikeAlert]:
        """Looks through an in-memory incident book: the ``opened`` alerts of new incidents."""
        from stream.incidents import IncidentBook

        if self._book is None:
            self._book = IncidentBook(self.config_for)
        return [a for a in self._book.apply(self.looks(aggregates, now, watermark), now=now) if a.event == "opened"]

    def restore(self, history: Iterable[WindowAggregate], now: datetime | None = None,
                watermark: datetime | None = None) -> None:
        """Rebuild baselines from stored windows, emitting nothing (the looks are deterministic)."""
        for agg in self._in_order(history, now):
            self._observe_one(agg, emit=False, watermark=watermark)

    def _in_order(self, aggregates: Iterable[WindowAggregate], now: datetime | None) -> list[WindowAggregate]:
        horizon = None if now is None else now + timedelta(seconds=self.config.max_future_s)
        return sorted((a for a in aggregates if horizon is None or a.window_start <= horizon),
                      key=lambda a: (series_of(a), a.window_start))

    def _observe_one(self, agg: WindowAggregate, *, emit: bool, watermark: datetime | None = None,
                     live: bool = False) -> list[Look]:
        """Update an open window, close the windows that are now past the allowed lateness, test.

        Windows close by ``watermark`` when the caller knows one (the event time every partition with a
        backlog has passed: see ``stream.aggregation.EventTimeWatermark``), else by the series' newest
        window.  Without a watermark, one partition racing ahead in a backfill would close windows the
        other partitions have not filled yet, and a spike in them would never be evaluated complete.
        """
        cfg = self.config_for(agg.topic)
        state = self._state(series_of(agg))
        if state.closed_until is not None and agg.window_start <= state.closed_until:
            return []  # a late post in a closed window: its numbers are stored, the baseline moved on
        state.open[agg.window_start] = agg
        looks: list[Look] = []
        newest = max(state.open) if watermark is None else watermark
        lateness = timedelta(seconds=agg.window_seconds * cfg.lateness_windows)
        for start in sorted(state.open):
            if newest - start <= lateness:
                break
            closing = state.open.pop(start)
            closing_looks = [self._test(state, closing, kind, cfg, final=True) for kind in KINDS]
            if emit and cfg.enabled:
                looks.extend(closing_looks)
            self._remember(state, closing, live)
            self._close(state, closing, closing_looks, cfg)
            state.closed_until = start
        if emit and cfg.enabled and cfg.evaluate_open_windows and agg.window_start in state.open:
            for kind in KINDS:
                look = self._test(state, agg, kind, cfg, final=False)
                if look.fires:
                    looks.append(look)
                    state.spike_since.setdefault(kind, agg.window_start)
        return looks

    def _remember(self, state: _Series, closing: WindowAggregate, live: bool) -> None:
        """Keep what hopping needs of a closing window: its numbers, and the baseline before it."""
        if not self.config_for(closing.topic).hopping:
            return
        lengths = self._lengths.get((closing.topic, closing.model_version), set())
        if any(h < closing.window_seconds for h in lengths):  # it may be a trailing window's length
            b = state.baseline
            state.snapshots[closing.window_start] = replace(b, hour_of_day=dict(b.hour_of_day),
                                                            hour_of_week=dict(b.hour_of_week))
            while len(state.snapshots) > 4:
                del state.snapshots[next(iter(state.snapshots))]
        if any(h > closing.window_seconds for h in lengths):  # it may be a hop of a longer window
            state.closed_log[closing.window_start] = closing
            while len(state.closed_log) > 64:
                del state.closed_log[next(iter(state.closed_log))]
            if live:
                state.hop_pending.append(closing.window_start)

    def _hop_looks(self, topic: str, model_version: str, window: int) -> list[Look]:
        """Final looks at the trailing ``window``-long windows ending at the hop windows closed since the
        last call.  Their numbers are the sums of the closed hop windows' final numbers; their baseline is
        the one the tumbling window they start in was tested against (the last windows not overlapping
        them).  A trailing window aligned with a tumbling one is that window: its look is the tumbling
        look.  A trailing window whose tumbling window has not closed yet waits for it."""
        cfg = self.config_for(topic)
        hop = self.hop_length(topic, model_version, window)
        looks: list[Look] = []
        for length in sorted(self._lengths.get((topic, model_version), ())):
            source = self._series[SeriesKey(topic, length, model_version)]
            if length != hop:
                source.hop_pending.clear()  # not this topic's hop (now): nothing to test
                continue
            target = self._series.get(SeriesKey(topic, window, model_version))
            waiting: list[datetime] = []
            for start in source.hop_pending:
                end = start + timedelta(seconds=hop)
                trailing_start = end - timedelta(seconds=window)
                aligned = _floor(trailing_start, window)
                if target is None or not cfg.enabled or aligned == trailing_start:
                    continue
                if any(s <= aligned for s in target.open):
                    waiting.append(start)  # its tumbling window is still filling: its baseline is not known
                    continue
                after = [s for s in target.snapshots if s >= aligned]
                if after:
                    baseline = target.snapshots[min(after)]
                elif target.closed_until is None or target.closed_until < aligned:
                    baseline = target.baseline
                else:
                    continue  # too old: its baseline is no longer kept
                parts = [a for s, a in source.closed_log.items() if trailing_start <= s < end]
                agg = _sum_windows(topic, trailing_start, window, model_version, parts)
                if agg.n_posts == 0:
                    continue
                looks += [self._test(target, agg, kind, cfg, final=True, baseline=baseline) for kind in KINDS]
            source.hop_pending[:] = waiting
        return looks

    def _test(self, state: _Series, agg: WindowAggregate, kind: str, cfg: SpikeConfig, *, final: bool,
              baseline: _Baseline | None = None) -> Look:
        b = state.baseline if baseline is None else baseline
        hop = self.hop_length(agg.topic, agg.model_version, agg.window_seconds)
        threshold = cfg.z_for(agg.window_seconds, hop) + (0.0 if final else cfg.open_window_z_margin)
        ready = b.windows >= cfg.warmup_windows and agg.n_posts >= cfg.min_volume
        share = share_test(agg.n_negative, agg.n_posts, b, cfg.rate_floor)
        volume = count_test(agg.n_posts, b, agg.window_start, agg.window_seconds)
        if kind == KIND_NEGATIVE_SPIKE:
            score = min(share["z_binomial"], share["z_share"])
            fires = ready and score >= threshold and share["lift"] >= cfg.min_lift
            # Too thin to show a spike (fewer than half ``min_volume`` posts) counts as back to normal:
            # otherwise two negative posts in a quiet topic's window would keep an incident open.
            normal = b.windows == 0 or agg.n_posts < cfg.min_volume / 2 or share["z_share"] < cfg.rearm_z
            observed, expected = share["observed"], b.rate
        else:
            score = min(volume["z_poisson"], volume["z_count"])
            fires = ready and score >= threshold and volume["ratio"] >= cfg.min_ratio
            normal = b.windows == 0 or volume["z_count"] < cfg.rearm_z
            observed, expected = float(agg.n_posts), volume["expected"]
        stats = {**{f"share_{k}": v for k, v in share.items()}, **{f"volume_{k}": v for k, v in volume.items()},
                 "baseline_rate": b.rate, "baseline_posts": b.posts, "baseline_windows": float(b.windows)}
        return Look(kind, agg, final, fires, final and normal, score, observed, expected, stats, threshold)

    def _close(self, state: _Series, agg: WindowAggregate, looks: Sequence[Look], cfg: SpikeConfig) -> None:
        """A window is final: end or extend each kind's spike, and fold it into the baseline if normal."""
        keep_out = False
        for look in looks:
            kind = look.kind
            if look.fires:
                state.spike_since.setdefault(kind, agg.window_start)
            since = state.spike_since.get(kind)
            if since is None or agg.window_start < since:
                continue  # no spike, or an earlier window that closed late: ordinary baseline
            if look.normal and not look.fires:
                state.spike_since.pop(kind, None)
                state.spike_windows.pop(kind, None)
                continue
            state.spike_windows[kind] = state.spike_windows.get(kind, 0) + 1
            if state.spike_windows[kind] < cfg.adapt_after_windows:
                keep_out = True
            else:  # it lasted: the new normal
                state.spike_since.pop(kind, None)
                state.spike_windows.pop(kind, None)
        if agg.n_posts == 0 and state.baseline.windows == 0:
            return
        if not keep_out:
            fired = any(look.fires for look in looks if look.kind == KIND_NEGATIVE_SPIKE)
            fold(state.baseline, agg, cfg.alpha, clip_z=None if fired or state.baseline.windows < cfg.warmup_windows
                 else cfg.baseline_clip_z)


def _floor(t: datetime, seconds: int) -> datetime:
    """The start of the epoch-aligned window of ``seconds`` that holds ``t`` (as stream.windows aligns)."""
    return EPOCH + timedelta(seconds=(t - EPOCH) // timedelta(seconds=seconds) * seconds)


def _sum_windows(topic: str, start: datetime, seconds: int, model_version: str,
                 parts: Sequence[WindowAggregate]) -> WindowAggregate:
    """One window's aggregate from the closed shorter windows inside it."""
    n = sum(a.n_posts for a in parts)
    neg = sum(a.n_negative for a in parts)
    weighted = [(a.mean_intensity, a.n_posts) for a in parts if a.mean_intensity is not None and a.n_posts]
    weight = sum(w for _, w in weighted)
    return WindowAggregate(topic, start, seconds, model_version, n, neg, sum(a.n_neutral for a in parts),
                           sum(a.n_positive for a in parts),
                           sum(m * w for m, w in weighted) / weight if weight else None, neg / n if n else None)


def share_test(k: int, n: int, b: _Baseline, rate_floor: float = 0.02) -> dict[str, float]:
    """The negative-share statistics of ``k`` negatives in ``n`` posts against baseline ``b``."""
    if n <= 0:
        return {"observed": 0.0, "p_value": 1.0, "z_binomial": 0.0, "z_share": 0.0, "lift": 0.0,
                "baseline_sd": 0.0}
    observed = k / n
    rate = min(max(b.rate, rate_floor), 1 - rate_floor)
    sampling_var = rate * (1 - rate) / n
    extra_var = max(0.0, b.dev2 - b.binvar)  # the spread sampling noise does not explain
    rate_var = rate * (1 - rate) / max(b.posts, 1.0)  # how well the baseline rate itself is known
    # Only the upper tail matters (a spike is *more* negative); at or below the rate, skip the sum.
    p_value = binomial_sf(k, n, rate) if observed > rate else 1.0
    return {
        "observed": observed,
        "p_value": p_value,
        "z_binomial": -_NORMAL.inv_cdf(min(max(p_value, 1e-300), 0.5)) if p_value < 0.5 else 0.0,
        "z_share": (observed - b.rate) / math.sqrt(extra_var + sampling_var + rate_var),
        "lift": observed - b.rate,
        "baseline_sd": math.sqrt(extra_var),
    }


def seasonal_factor(b: _Baseline, window_start: datetime, window_seconds: int) -> float:
    """How busy this hour usually is relative to the level: hour of week with two weeks of history,
    hour of day with two days, else 1 (and 1 for windows of a day or longer)."""
    if window_seconds >= 86400 or b.first_start is None:
        return 1.0
    history = (window_start - b.first_start).total_seconds()
    how = window_start.weekday() * 24 + window_start.hour
    for slots, slot, needed in ((b.hour_of_week, how, 14 * 86400), (b.hour_of_day, window_start.hour, 2 * 86400)):
        if history >= needed and slots.get(slot, (1.0, 0))[1] >= 2:
            # Relative to the average slot: factors that drift together would feed back into the level.
            mean = sum(f for f, _ in slots.values()) / len(slots)
            return min(max(slots[slot][0] / mean, 0.1), 10.0) if mean > 0 else 1.0
    return 1.0


def count_test(count: int, b: _Baseline, window_start: datetime, window_seconds: int) -> dict[str, float]:
    """The volume statistics of ``count`` posts in a window against baseline ``b``."""
    factor = seasonal_factor(b, window_start, window_seconds)
    expected = max(b.level * factor, 0.5)  # a silent topic still expects a post now and then
    extra_var = max(0.0, b.count_var - b.level) * factor * factor  # beyond Poisson
    level_var = expected * expected / max(b.windows, 1)  # how well the level itself is known
    p_value = poisson_sf(count, expected) if count > expected else 1.0
    return {
        "expected": expected,
        "seasonal_factor": factor,
        "ratio": count / expected,
        "p_value": p_value,
        "z_poisson": -_NORMAL.inv_cdf(min(max(p_value, 1e-300), 0.5)) if p_value < 0.5 else 0.0,
        "z_count": (count - expected) / math.sqrt(expected + extra_var + level_var),
    }


def fold(b: _Baseline, agg: WindowAggregate, alpha: float, clip_z: float | None = None) -> None:
    """Fold a normal closed window into the baseline: plain averages while warming up, then EWMA.

    With ``clip_z``, a negative share above the baseline rate by more than ``clip_z`` standard errors is
    folded in as if it were just that far above (winsorised): a window that did not fire must not teach
    the baseline that spikes are normal.  A spike that fired and lasted (``adapt_after_windows``) is folded
    in unclipped, so a real change of level is still learnt.  Counts are not clipped: before the seasonal
    factors are learnt, a busy hour's rise is a large deviation that the level must follow (clipping it
    made the morning ramp page every day at ``high``).
    """
    a = max(alpha, 1.0 / (b.windows + 1))
    n = agg.n_posts
    negatives = float(agg.n_negative)
    if n > 0:
        share = agg.n_negative / n
        rate = b.rate if b.posts > 0 else share
        p = min(max(rate, 0.02), 0.98)
        if clip_z is not None:
            cap = rate + clip_z * math.sqrt(p * (1 - p) / n + max(0.0, b.dev2 - b.binvar))
            if share > cap:
                share, negatives = cap, cap * n
        b.dev2 += a * ((share - rate) ** 2 - b.dev2)
        b.binvar += a * (p * (1 - p) / n - b.binvar)
        # Volume-weighted rate: plain sums while warming up, then the memory decays by (1 - alpha).
        keep = 1.0 if b.windows < 1.0 / alpha else 1.0 - alpha
        b.neg = keep * b.neg + negatives
        b.posts = keep * b.posts + n
    factor = seasonal_factor(b, agg.window_start, agg.window_seconds)
    diff = n / factor - b.level
    b.count_var = (1 - a) * (b.count_var + a * diff * diff)
    b.level += a * diff
    if b.first_start is None:
        b.first_start = agg.window_start
    if agg.window_seconds < 86400 and b.level > 0:
        ratio = n / b.level
        # An hour's factor moves about 20 % per day whatever the window length: 60 one-minute windows
        # of an hour must not each move it like a whole day would (their noise would become the factor).
        floor = 0.2 * min(1.0, agg.window_seconds / 3600)
        for slots, slot in ((b.hour_of_day, agg.window_start.hour),
                            (b.hour_of_week, agg.window_start.weekday() * 24 + agg.window_start.hour)):
            old, seen = slots.get(slot, (1.0, 0))
            slots[slot] = (ratio if seen == 0 else old + max(floor, 1.0 / (seen + 1)) * (ratio - old), seen + 1)
    b.windows += 1


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact: the normal approximation is too optimistic for the small,
    skewed windows (n ~ 10-50, p ~ 0.2) where false alarms would come from."""
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


def poisson_sf(k: int, mu: float) -> float:
    """P(X >= k) for X ~ Poisson(mu), exact (summed upward from k; terms shrink once k > mu)."""
    if k <= 0:
        return 1.0
    total, j = 0.0, k
    log_term = k * math.log(mu) - mu - math.lgamma(k + 1)
    while True:
        term = math.exp(log_term)
        total += term
        if term < total * 1e-17 or j > k + 10_000:
            break
        j += 1
        log_term += math.log(mu) - math.log(j)
    return min(total, 1.0)


@dataclass(frozen=True)
class SpikeAlert:
    """One incident event (opened / updated / resolved), with the evidence an analyst needs to judge it."""

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
    event: str = "opened"
    incident_id: int | None = None
    alert_id: int | None = None
    historical: bool = False

    @property
    def window_end(self) -> datetime:
        return self.window_start + timedelta(seconds=self.window_seconds)

    @property
    def key(self) -> str:
        """Stable id of the alert: the Kafka key, and what makes a replayed alert the same alert."""
        return (f"{self.topic}:{self.kind}:{self.model_version}:{self.window_start.isoformat()}:"
                f"{self.window_seconds}:{self.event}")

    def summary(self) -> str:
        verb = {"opened": "", "updated": " (update)", "resolved": " (resolved)"}.get(self.event, "")
        when = f"the {_span(self.window_seconds)} from {self.window_start:%Y-%m-%d %H:%M} UTC"
        if self.kind == KIND_VOLUME_SPIKE:
            return (f"Volume spike in '{self.topic}'{verb}: {self.n_posts} posts in {when} "
                    f"(expected {self.expected:.1f}, z = {self.score:.1f})")
        return (f"Negative spike in '{self.topic}'{verb}: {self.observed:.0%} negative of {self.n_posts} posts "
                f"in {when} (baseline {self.expected:.0%}, z = {self.score:.1f})")

    def to_row(self) -> dict[str, Any]:
        return {"topic": self.topic, "kind": self.kind, "window_start": self.window_start,
                "window_seconds": self.window_seconds, "model_version": self.model_version,
                "observed": self.observed, "expected": self.expected, "score": self.score,
                "n_posts": self.n_posts, "n_negative": self.n_negative, "evidence": self.evidence,
                "event": self.event, "incident_id": self.incident_id, "historical": self.historical}

    def to_dict(self) -> dict[str, Any]:
        row = self.to_row()
        row["alert_id"] = self.alert_id
        row["window_start"] = self.window_start.isoformat()
        row["window_end"] = self.window_end.isoformat()
        row["summary"] = self.summary()
        return row


def spike_detector(settings: Settings, topics: Any = None) -> SpikeDetector:
    """The worker's detector: global settings, each topic's ``alerts`` section (connectors.topics) on top.

    Raises ValueError for a topic whose ``alerts.window`` is not one of ``SENTISTREAM_WINDOWS`` (no
    aggregates of that length exist, so it could never alert).
    """
    base = SpikeConfig.from_settings(settings)
    per_topic: dict[str, SpikeConfig] = {}
    for topic in getattr(topics, "topics", ()):
        cfg = base.for_topic(topic.alerts)
        if cfg.window != AUTO_WINDOW and window_seconds(cfg.window) not in settings.window_lengths_s:
            raise ValueError(f"topics.{topic.name}.alerts.window: {cfg.window} is not one of the aggregated "
                             f"windows ({','.join(settings.windows)}); add it to SENTISTREAM_WINDOWS")
        per_topic[topic.name] = cfg
    if base.window != AUTO_WINDOW and window_seconds(base.window) not in settings.window_lengths_s:
        raise ValueError(f"SENTISTREAM_ALERT_WINDOW={base.window} is not one of SENTISTREAM_WINDOWS")
    return SpikeDetector(base, per_topic)


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
# PostgreSQL: restore baselines
# --------------------------------------------------------------------------------------------------

def restore_series(conn: Connection, detector: SpikeDetector, keys: Iterable[SeriesKey],
                   history_windows: int = 500, now: datetime | None = None,
                   watermark: datetime | None = None) -> None:
    """Load the last ``history_windows`` windows of each series into ``detector``.

    Call it for series the detector does not know yet (``detector.knows``) before observing them; a
    worker then never forgets a baseline across restarts.  500 windows is ~99% of an alpha=0.1 EWMA.
    Whether a series is in an incident is not restored from here: ``stream.incidents`` reads that from
    ``alert_incidents`` for every decision.
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
    detector.restore(history, now=now, watermark=watermark)
    for key in keys:  # a series with no stored windows yet is known (and empty) from now on
        detector.track(key)


def looks_with_history(conn: Connection, detector: SpikeDetector, aggregates: Sequence[WindowAggregate],
                       watermark: datetime | None = None, now: datetime | None = None) -> list[Look]:
    """Restore unknown series (every configured length of the batch's topics) then look."""
    unknown = {series_of(a) for a in aggregates if not detector.knows(series_of(a))}
    now = now or datetime.now(UTC)
    restore_series(conn, detector, unknown, now=now, watermark=watermark)
    return detector.looks(aggregates, now=now, watermark=watermark)
