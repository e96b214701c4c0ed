"""SpikeDetector and the in-memory incident rules on synthetic feeds (negative share, volume with a daily
cycle, presets, per-topic settings) and Fightin' Words.

Delivery (outbox, Kafka message, webhook payloads): tests/stream/test_alert_delivery.py.

The same rules through PostgreSQL, and the worker on the bundled sample: tests/stream/test_incidents.py."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import NormalDist

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.topics import AlertPolicy, TopicsConfigError, parse_topics
from stream.alert_explanation import fightin_words, tokens
from stream.alerts import (
    KIND_NEGATIVE_SPIKE,
    KIND_VOLUME_SPIKE,
    Look,
    SpikeConfig,
    SpikeDetector,
    binomial_sf,
    detect,
    poisson_sf,
    spike_detector,
    upcrossing_probability,
    z_threshold_for,
)
from stream.incidents import IncidentBook, decide, negative_covers
from stream.settings import Settings
from stream.windows import WindowAggregate

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
MV = "mv-test"


def _agg(topic: str, i: int, n: int, neg: int, seconds: int = 60) -> WindowAggregate:
    return WindowAggregate(topic, T0 + timedelta(seconds=i * seconds), seconds, MV, n, neg, n - neg, 0, 0.5,
                           neg / n if n else None)


def _feed(topic: str, windows: int, seed: int, rate=lambda i: 0.2, volume=lambda i: 100,
          snapshots: int = 3) -> list[list[WindowAggregate]]:
    """Per window, growing snapshots of its aggregate, as successive batches would show them."""
    rng = random.Random(seed)
    out = []
    for i in range(windows):
        n = volume(i)
        labels = [rng.random() < rate(i) for _ in range(n)]
        cuts = [n * (k + 1) // snapshots for k in range(snapshots)]
        out.append([_agg(topic, i, c, sum(labels[:c])) for c in cuts if c])
    return out


def _run_live(detector: SpikeDetector, *feeds: list[list[WindowAggregate]]):
    """Interleave topics window by window, each snapshot a batch: what the worker does."""
    alerts = []
    for i in range(max(len(f) for f in feeds)):
        for snap in range(3):
            batch = [f[i][snap] for f in feeds if i < len(f) and snap < len(f[i])]
            alerts += detector.observe(batch)
    return alerts


def _poisson(rng: random.Random, mu: float) -> int:
    """Knuth's method (mu is small here)."""
    limit, k, p = math.exp(-mu), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def test_planted_burst_opens_exactly_one_incident_for_the_right_topic_and_window() -> None:
    steady = _feed("acme", 60, seed=1)
    burst = _feed("globex", 60, seed=2, rate=lambda i: 0.55 if 40 <= i <= 43 else 0.2)
    alerts = _run_live(SpikeDetector(SpikeConfig()), steady, burst)
    assert [(a.topic, a.kind, a.window_start, a.window_seconds) for a in alerts] == [
        ("globex", KIND_NEGATIVE_SPIKE, T0 + timedelta(minutes=40), 60)]
    a = alerts[0]
    assert a.observed > 0.4 and 0.15 < a.expected < 0.25 and a.score >= 3.0 and a.n_posts >= 10
    share = a.evidence["negative_share"]
    assert a.evidence["baseline_windows"] >= 12 and share["z_binomial"] >= a.score
    assert a.evidence["volume"]["n_posts"] == a.n_posts and a.evidence["event"] == "opened"


def test_steady_feeds_fire_nothing() -> None:
    for seed in range(5):
        rng = random.Random(100 + seed)
        wobbly = [0.2 + rng.uniform(-0.04, 0.04) for _ in range(300)]  # a topic whose share naturally swings
        feed = _feed(f"t{seed}", 300, seed=seed, rate=wobbly.__getitem__,
                     volume=lambda i, rng=rng: 60 + _poisson(rng, 8.0) * 5)
        assert _run_live(SpikeDetector(SpikeConfig()), feed) == []


def test_thin_windows_of_a_quiet_topic_still_alert_on_a_clear_shift() -> None:
    """Two to four posts a window: the baseline's spread is sampling noise, not a reason to stay silent."""
    rng = random.Random(5)
    feed = [[_agg("quiet", i, n, sum(rng.random() < 0.2 for _ in range(n)))] for i, n in
            enumerate(rng.choice((2, 3, 4)) for _ in range(40))]
    feed.append([_agg("quiet", 40, 12, 11)])
    feed += [[_agg("quiet", 41 + i, 3, 0)] for i in range(3)]
    alerts = _run_live(SpikeDetector(SpikeConfig()), feed)
    assert [(a.kind, a.window_start) for a in alerts] == [(KIND_NEGATIVE_SPIKE, T0 + timedelta(minutes=40))]


def test_an_incident_that_builds_up_is_not_learnt_as_normal_by_its_first_windows() -> None:
    """Shares of 32 %, 34 %, 37 % (baseline 20 %, 100 posts a 15-minute window): the first two are below the
    threshold and are folded into the baseline, capped at 2 standard errors above it, so the third still
    fires; folded in whole (``baseline_clip_z=None``, the old rule) they raised the rate and its spread
    enough that it did not."""
    base = [_agg("acme", i, 100, (17, 23, 20, 18, 22)[i % 5], 900) for i in range(40)]
    feed = (base + [_agg("acme", 40 + j, 100, k, 900) for j, k in enumerate((32, 34, 37))]
            + [_agg("acme", 43 + j, 100, 20, 900) for j in range(3)])
    closed_only = {"open_window_z_margin": 10.0}
    assert [a.window_start for a in detect(feed, SpikeConfig(**closed_only))] == [T0 + timedelta(minutes=42 * 15)]
    assert detect(feed, SpikeConfig(**closed_only, baseline_clip_z=None)) == []


def test_few_posts_cannot_fire() -> None:
    base = [_agg("acme", i, 50, 10) for i in range(20)]
    assert detect(base + [_agg("acme", 20, 3, 3)]) == []
    assert detect(base + [_agg("acme", 20, 9, 9)]) == []  # under min_volume=10 too
    assert len(detect(base + [_agg("acme", 20, 10, 10)])) == 1  # the same share at volume fires


def test_no_alert_during_warm_up() -> None:
    feed = [_agg("acme", i, 100, 20) for i in range(4)] + [_agg("acme", 4, 100, 80)]
    # Window 3 is still open (one window of lateness) when window 4 arrives: 3 closed baseline windows.
    assert detect(feed, SpikeConfig(warmup_windows=4)) == []
    assert len(detect(feed, SpikeConfig(warmup_windows=3))) == 1


def test_one_incident_per_spike_then_resolve_and_cooldown() -> None:
    def feed(spikes: set[int]) -> list[WindowAggregate]:
        return [_agg("acme", i, 100, 70 if i in spikes else 20) for i in range(80)]

    long_spike = set(range(30, 40))
    assert [a.window_start for a in detect(feed(long_spike), SpikeConfig(cooldown_s=0))] == [
        T0 + timedelta(minutes=30)]
    two_spikes = {30, 31, 50}
    assert len(detect(feed(two_spikes), SpikeConfig(cooldown_s=0))) == 2  # resolved in between
    assert len(detect(feed(two_spikes), SpikeConfig(cooldown_s=3600))) == 1  # 20 min apart: reopened
    # A permanent level shift becomes the new baseline instead of silencing the topic for ever.
    shifted = [_agg("acme", i, 100, 20 if i < 30 else 50) for i in range(120)]
    detector = SpikeDetector(SpikeConfig(cooldown_s=0))
    assert len(detector.observe(shifted)) == 1
    assert detector.observe([_agg("acme", 120, 100, 90)]) != []  # alerts again at the new level


def test_incident_events_carry_final_numbers_then_resolve() -> None:
    """Opened on the half-filled window, updated with its final numbers when it closes, then resolved."""
    config = SpikeConfig()
    book = IncidentBook(lambda topic: config)
    detector = SpikeDetector(config)
    events = []
    for i in range(30):
        neg = 45 if i == 20 else 10
        for part in (20, 50):  # each window seen half full, then full
            events += book.apply(detector.looks([_agg("acme", i, part, neg * part // 50)]))
    assert [(a.event, a.window_start, a.n_posts) for a in events] == [
        ("opened", T0 + timedelta(minutes=20), 20), ("updated", T0 + timedelta(minutes=20), 50),
        ("resolved", T0 + timedelta(minutes=21), 50)]
    (incident,) = book.all
    assert incident.status == "resolved" and incident.n_posts == 50 and incident.n_negative == 45
    assert events[1].evidence["incident"]["windows"][0]["final"] is True


def test_windows_that_keep_filling_after_the_next_one_started_still_alert_once() -> None:
    """Batches from several partitions interleave: window i's last posts arrive after window i+1 began."""
    feed = _feed("globex", 60, seed=3, rate=lambda i: 0.5 if i == 40 else 0.2)
    detector = SpikeDetector(SpikeConfig(open_window_z_margin=10.0))  # decide on complete windows only
    alerts = []
    for i in range(61):
        if i < 60:
            alerts += detector.observe([feed[i][0]])  # partition A's batch: window i begins
        if i > 0:
            alerts += detector.observe([feed[i - 1][2]])  # partition B's batch: the rest of window i-1
    assert [(a.window_start, a.n_posts) for a in alerts] == [(T0 + timedelta(minutes=40), feed[40][2].n_posts)]


def test_a_post_from_the_future_does_not_close_the_real_windows() -> None:
    detector = SpikeDetector(SpikeConfig())
    now = T0 + timedelta(minutes=20, seconds=30)
    normal = [_agg("acme", i, 100, 20) for i in range(20)]
    assert detector.observe(normal, now=now) == []
    year_2030 = WindowAggregate("acme", datetime(2030, 1, 1, tzinfo=UTC), 60, MV, 1, 0, 1, 0, 0.5, 0.0)
    assert detector.observe([year_2030], now=now) == []
    assert len(detector.observe([_agg("acme", 20, 100, 70)], now=now)) == 1


def test_volume_spike_at_a_steady_share() -> None:
    rng = random.Random(9)
    feed = [[_agg("acme", i, n, round(n * 0.2))] for i, n in enumerate(_poisson(rng, 30) for _ in range(40))]
    feed.append([_agg("acme", 40, 60, 12), _agg("acme", 40, 120, 24)])
    feed += [[_agg("acme", 41 + i, 30, 6)] for i in range(3)]
    alerts = _run_live(SpikeDetector(SpikeConfig()), feed)
    assert [(a.kind, a.window_start) for a in alerts] == [(KIND_VOLUME_SPIKE, T0 + timedelta(minutes=40))]
    assert alerts[0].evidence["volume"]["ratio"] > 2.0 and 25 < alerts[0].expected < 35


def test_a_loud_burst_that_turns_negative_is_one_incident() -> None:
    config = SpikeConfig()
    detector, book = SpikeDetector(config), IncidentBook(lambda t: config)
    events = []
    for i in range(20):
        events += book.apply(detector.looks([_agg("acme", i, 30, 6)]))
    events += book.apply(detector.looks([_agg("acme", 20, 90, 18)]))  # loud, share as usual
    events += book.apply(detector.looks([_agg("acme", 20, 150, 70)]))  # and now negative
    for i in range(21, 24):
        events += book.apply(detector.looks([_agg("acme", i, 30, 6)]))
    assert [(a.event, a.kind) for a in events][:2] == [("opened", KIND_VOLUME_SPIKE), ("updated", KIND_NEGATIVE_SPIKE)]
    assert [a.event for a in events].count("opened") == 1 and len(book.all) == 1
    assert events[-1].event == "resolved"


def test_a_trailing_window_that_starts_before_the_burst_escalates_it_and_a_late_burst_joins_the_outage() -> None:
    """Hopping: the loud 15-minute window from 11:30 opened a volume spike; the negative trailing window from
    11:25 overlaps it, so it escalates that incident instead of opening a second one.  And a volume spike
    within the cooldown after a negative spike resolved is part of it (a trailing window can resolve the
    negative spike before the burst's loudest window closes)."""
    config = SpikeConfig()

    def look(kind: str, minute: int, fires: bool = True, normal: bool = False) -> Look:
        agg = _agg("acme", 0, 60, 40, 900)._replace(window_start=T0 + timedelta(minutes=minute))
        return Look(kind, agg, True, fires, normal, 5.0, 0.6, 0.2, {}, 3.0)

    volume, event = decide(None, look(KIND_VOLUME_SPIKE, 30), config)
    assert event == "opened"
    incident, event = decide(None, look(KIND_NEGATIVE_SPIKE, 25), config, volume_open=volume)
    assert incident is volume and event == "updated" and incident.kind == KIND_NEGATIVE_SPIKE
    resolved, event = decide(incident, look(KIND_NEGATIVE_SPIKE, 45, fires=False, normal=True), config)
    assert event == "resolved" and resolved.status == "resolved"
    burst = look(KIND_VOLUME_SPIKE, 50)
    assert decide(None, burst, config, negative_open=negative_covers(resolved, burst, config)) == (None, None)
    later = look(KIND_VOLUME_SPIKE, 45 + 61)
    assert decide(None, later, config, negative_open=negative_covers(resolved, later, config))[1] == "opened"


def test_volume_baseline_learns_the_daily_cycle() -> None:
    """Busy afternoons are normal after a few days; a burst at a quiet hour is not, though it is smaller."""
    rng = random.Random(4)

    def expected(hour: int) -> float:
        return 40 + 35 * math.sin((hour - 8) / 24 * 2 * math.pi)

    feed = []
    for i in range(24 * 7):  # hourly windows for a week, the burst at 03:00 on day 6
        n = _poisson(rng, expected(i % 24)) + (60 if i == 24 * 6 + 3 else 0)
        feed.append([_agg("acme", i, n, round(n * 0.2), seconds=3600)])
    alerts = _run_live(SpikeDetector(SpikeConfig(warmup_windows=24)), feed)
    assert [(a.kind, a.window_start) for a in alerts] == [
        (KIND_VOLUME_SPIKE, T0 + timedelta(hours=24 * 6 + 3))]
    assert alerts[0].evidence["volume"]["seasonal_factor"] < 0.6  # it knew 03:00 is quiet


@given(st.lists(st.tuples(st.integers(0, 60), st.floats(0.0, 1.0)), min_size=1, max_size=60),
       st.sampled_from(["low", "balanced", "high"]))
@settings(max_examples=60, deadline=None)
def test_any_feed_gives_at_most_one_open_incident_per_topic_and_kind(windows, preset) -> None:
    """Hostile feeds (empty windows, all-negative windows, wild volumes) never crash the detector and
    never leave two incidents of one topic and kind open at once."""
    config = SpikeConfig.preset(preset, warmup_windows=2, cooldown_s=0)
    detector, book = SpikeDetector(config), IncidentBook(lambda t: config)
    for i, (n, share) in enumerate(windows):
        events = book.apply(detector.looks([_agg("acme", i, n, round(n * share))]))
        for e in events:
            assert math.isfinite(e.score) and e.kind in (KIND_NEGATIVE_SPIKE, KIND_VOLUME_SPIKE)
        open_keys = [(x.topic, x.kind) for x in book.all if x.status == "open"]
        assert len(open_keys) == len(set(open_keys))


def test_presets_order_sensitivity() -> None:
    """A moderate shift: high sees it, balanced too, low does not."""
    rng = random.Random(12)
    base = [_agg("acme", i, 200, sum(rng.random() < 0.2 for _ in range(200))) for i in range(30)]
    shift = base + [_agg("acme", 30, 200, 68), _agg("acme", 31, 200, 40), _agg("acme", 32, 200, 40)]
    fired = {p: len(detect(shift, SpikeConfig.preset(p))) for p in ("low", "balanced", "high")}
    assert fired == {"low": 0, "balanced": 1, "high": 1}


def test_binomial_and_poisson_tails_match_direct_sums() -> None:
    assert binomial_sf(3, 10, 0.2) == pytest.approx(1 - sum(math.comb(10, j) * 0.2**j * 0.8 ** (10 - j)
                                                            for j in range(3)))
    assert poisson_sf(12, 4.0) == pytest.approx(1 - sum(math.exp(-4) * 4**j / math.factorial(j) for j in range(12)))
    assert poisson_sf(0, 4.0) == 1.0 and binomial_sf(11, 10, 0.5) == 0.0


# ---------------------------------------------------------------- per-topic settings


def test_topics_file_alert_sections_are_parsed_and_checked() -> None:
    config = parse_topics({"topics": {
        "a": {"keywords": ["a"], "alerts": {"enabled": False}},
        "b": {"keywords": ["b"], "alerts": {"sensitivity": "high", "cooldown": "30m", "min_volume": 5,
                                            "window": "5m"}},
        "c": {"keywords": ["c"]},
    }})
    assert config.get("a").alerts == AlertPolicy(enabled=False)
    assert config.get("b").alerts == AlertPolicy(None, "high", 1800, 5, "5m")
    assert config.get("c").alerts == AlertPolicy()
    for bad, where in (({"sensitivity": "paranoid"}, "sensitivity"), ({"cooldown": "soon"}, "cooldown"),
                       ({"min_volume": 0}, "min_volume"), ({"window": "5 minutes"}, "window"),
                       ({"loud": True}, "unknown keys"), ({"enabled": "yes"}, "enabled")):
        with pytest.raises(TopicsConfigError, match=where):
            parse_topics({"topics": {"x": {"keywords": ["x"], "alerts": bad}}})


def test_per_topic_settings_reach_the_detector() -> None:
    topics = parse_topics({"topics": {"off": {"keywords": ["x"], "alerts": {"enabled": False}},
                                      "fast": {"keywords": ["y"], "alerts": {"window": "5m", "min_volume": 4}}}})
    detector = spike_detector(Settings(), topics)
    assert detector.config_for("off").enabled is False and detector.config_for("fast").min_volume == 4
    assert detector.detection_window("fast", MV, [60, 300, 900]) == 300
    assert detector.config_for("other") == detector.config  # topics the file does not name: the defaults
    feed = [_agg("off", i, 100, 20) for i in range(20)] + [_agg("off", 20, 100, 90)]
    assert detector.observe(feed) == []
    with pytest.raises(ValueError, match="not one of the aggregated windows"):
        spike_detector(Settings(windows=("1m",)), topics)


def test_auto_window_is_the_shortest_that_usually_holds_enough_posts() -> None:
    detector = SpikeDetector(SpikeConfig(min_volume=10))
    for i in range(60):  # 8 posts a minute: 1m windows hold 8, 5m windows 40, 15m windows 120
        detector.looks([_agg("t", i, 8, 1, 60)] + ([_agg("t", i // 5, 40, 8, 300)] if i % 5 == 4 else [])
                       + ([_agg("t", i // 15, 120, 24, 900)] if i % 15 == 14 else []))
    assert detector.detection_window("t", MV, [60, 300, 900]) == 300  # the shortest holding 3 x min_volume
    assert detector.detection_window("t", MV, [60]) == 60  # the only one there is
    quiet = SpikeDetector(SpikeConfig(min_volume=50))
    for i in range(60):
        quiet.looks([_agg("q", i, 8, 1, 60)] + ([_agg("q", i // 5, 40, 8, 300)] if i % 5 == 4 else []))
    assert quiet.detection_window("q", MV, [60, 300, 3600]) == 300  # none holds 150: the longest warmed up
    assert detector.detection_window("new-topic", MV, [60, 300]) == 60  # nothing known yet: shortest


# ---------------------------------------------------------------- trailing (hopping) windows

HOP_START = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday, midnight: hours and quarters aligned


def _thin_minutes(days: int, seed: int, shift: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """Per minute (posts, negatives) of a topic of about one post a minute, share 0.2; ``shift``: minutes
    [a, b) at share 0.42 and 1.5x volume."""
    rng = random.Random(seed)
    out = []
    for m in range(days * 1440):
        inside = shift is not None and shift[0] <= m < shift[1]
        n = _poisson(rng, 1.5 if inside else 1.0)
        out.append((n, sum(rng.random() < (0.42 if inside else 0.2) for _ in range(n))))
    return out


def _batches(minutes: list[tuple[int, int]], cuts: list[int], lengths=(15, 60)) -> list[tuple[list, datetime]]:
    """The worker's view: per batch of consecutive minutes, the current aggregate of every window the batch
    touched (recomputed from all its posts so far) and the event-time watermark (the batch's end)."""
    totals: dict[tuple[int, int], list[int]] = {}
    out, m = [], 0
    sizes = iter(cuts)
    while m < len(minutes):
        size = next(sizes, 1)
        touched: set[tuple[int, int]] = set()
        for minute in range(m, min(m + size, len(minutes))):
            n, k = minutes[minute]
            for length in lengths:
                key = (length, minute // length)
                acc = totals.setdefault(key, [0, 0])
                acc[0] += n
                acc[1] += k
                if n:
                    touched.add(key)
        m = min(m + size, len(minutes))
        aggs = [WindowAggregate("thin", HOP_START + timedelta(minutes=length * i), length * 60, MV,
                                totals[(length, i)][0], totals[(length, i)][1], 0,
                                totals[(length, i)][0] - totals[(length, i)][1], None, None)
                for length, i in sorted(touched)]
        out.append((aggs, HOP_START + timedelta(minutes=m)))
    return out


def _events(batches, config: SpikeConfig, replay: set[int] = frozenset(), shuffle_seed: int | None = None):
    detector, book = SpikeDetector(config), IncidentBook(lambda t: config)
    events = []
    for j, (aggs, watermark) in enumerate(batches):
        for _ in range(2 if j in replay else 1):  # a replayed batch: the same rows, recomputed again
            batch = list(aggs)
            if shuffle_seed is not None:
                random.Random(shuffle_seed + j).shuffle(batch)
            events += [(e.event, e.kind, e.window_start, e.window_seconds, e.n_posts, e.n_negative)
                       for e in book.apply(detector.looks(batch, watermark=watermark))]
    return events


# Two days of warm-up, then 45 minutes at share 0.42 from 10:38 to 11:23 of day three: 22 minutes in one
# hour, 23 in the next, so each tumbling hour holds half of it.
STRADDLING = (2 * 1440 + 10 * 60 + 38, 2 * 1440 + 11 * 60 + 23)


def test_a_shift_across_an_hour_boundary_is_caught_by_the_trailing_hour() -> None:
    """One post a minute, judged on hour windows: tumbling, each hour holds half the shift and neither
    reaches the threshold; the hour from 10:15 (tested when its last quarter closes) holds most of it."""
    minutes = _thin_minutes(3, seed=6, shift=STRADDLING)
    batches = _batches(minutes, [1] * len(minutes))
    config = SpikeConfig(window="1h")
    opened = [e for e in _events(batches, config) if e[0] == "opened"]
    assert [(kind, start, seconds) for _, kind, start, seconds, _, _ in opened] == [
        (KIND_NEGATIVE_SPIKE, HOP_START + timedelta(days=2, hours=10, minutes=15), 3600)]
    assert [e for e in _events(batches, replace(config, hopping=False)) if e[0] == "opened"] == []


def test_hopping_spends_the_same_weekly_budget_on_more_tests() -> None:
    """Overlapping tests need a higher z, more so the more of them, but less than as many independent
    tests would (each one shares most of its posts with the one before); a steady thin topic stays quiet."""
    tumbling, quarter, five = (z_threshold_for(0.5, 3600), z_threshold_for(0.5, 3600, 900),
                               z_threshold_for(0.5, 3600, 300))
    assert tumbling < quarter < five
    assert quarter < z_threshold_for(0.5, 900) and five < z_threshold_for(0.5, 300)
    # The upcrossing probability of independent tests is P(Z1 <= z) P(Z2 > z).
    assert math.isclose(upcrossing_probability(2.0, 0.0), NormalDist().cdf(2.0) * (1 - NormalDist().cdf(2.0)),
                        rel_tol=1e-6)
    minutes = _thin_minutes(4, seed=11)
    assert _events(_batches(minutes, [1] * len(minutes)), SpikeConfig.preset("balanced", window="1h")) == []


@given(st.lists(st.integers(1, 90), min_size=1, max_size=80), st.sets(st.integers(0, 200), max_size=20),
       st.integers(0, 1000))
@settings(max_examples=12, deadline=None)
def test_trailing_windows_decide_the_same_incidents_whatever_the_batches(cuts, replay, seed) -> None:
    """The same rows cut into other batches, each batch's windows in any order, some batches replayed:
    the same incident events, with the same final numbers (looks at filling windows are off here: what a
    half-filled window shows depends on where the batch ended)."""
    minutes = _thin_minutes(3, seed=6, shift=STRADDLING)
    config = SpikeConfig(window="1h", evaluate_open_windows=False)
    reference = _events(_batches(minutes, [1] * len(minutes)), config)
    assert any(e[0] == "opened" for e in reference)
    assert _events(_batches(minutes, cuts), config, replay=replay, shuffle_seed=seed) == reference
    with_open = SpikeConfig(window="1h")  # the same batches, shuffled and replayed: the same, open looks too
    batches = _batches(minutes, [1] * len(minutes))
    assert _events(batches, with_open, replay=replay, shuffle_seed=seed) == _events(batches, with_open)


# ---------------------------------------------------------------- explanation


def test_fightin_words_finds_the_planted_terms_not_the_common_ones() -> None:
    rng = random.Random(3)
    common = ["flight", "seat", "crew", "boarding", "gate", "lounge", "snack", "window"]
    baseline = [f"skyways {rng.choice(common)} {rng.choice(common)} today" for _ in range(300)]
    incident = [f"skyways {rng.choice(common)} outage again #skywaysdown" if j % 3 else
                f"skyways {rng.choice(common)} today" for j in range(60)]
    terms = [t["term"] for t in fightin_words(incident, baseline)]
    assert terms[:2] == ["#skywaysdown", "outage"] or terms[:2] == ["outage", "#skywaysdown"]
    assert "skyways" not in terms and "today" not in terms and "flight" not in terms
    assert tokens("See https://x.co/abc @bob THE Outage!! #SkywaysDown") == ["see", "outage", "#skywaysdown"]
    assert fightin_words([], baseline) == [] and fightin_words(["a b"], []) == []


_ANY = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)


@given(st.one_of(_ANY, st.fixed_dictionaries({}, optional={
    "enabled": _ANY, "sensitivity": st.sampled_from(["low", "balanced", "high", "max"]) | _ANY,
    "cooldown": st.sampled_from(["30m", "2h", "1d", "0s", "-1m", "9999999999999d"]) | _ANY,
    "min_volume": _ANY, "window": st.sampled_from(["auto", "5m", "0m", "5x"]) | _ANY})))
@settings(max_examples=200, deadline=None)
def test_hostile_alert_sections_fail_with_a_clear_error_or_parse(section) -> None:
    """Whatever a topics file holds under `alerts`, parsing either succeeds or names the place."""
    try:
        policy = parse_topics({"topics": {"x": {"keywords": ["x"], "alerts": section}}}).get("x").alerts
    except TopicsConfigError as exc:
        assert "topics.x.alerts" in str(exc)
    else:
        assert policy.sensitivity in (None, "low", "balanced", "high")
        assert policy.cooldown_s is None or policy.cooldown_s >= 0
        assert policy.min_volume is None or policy.min_volume >= 1


def test_the_sample_outage_is_explained_by_its_own_words() -> None:
    """The bundled sample's outage against the posts before it (35): thin, yet its words lead."""
    lines = (Path(__file__).resolve().parents[2] / "connectors" / "samples" / "sample_posts.jsonl").read_text()
    posts = [json.loads(line) for line in lines.splitlines() if line.strip()]
    skyways = [p for p in posts if p["topic"] == "skyways-airline"]
    outage = [p["text"] for p in skyways if p["raw"]["in_burst"]]
    before = [p["text"] for p in skyways if p["created_at"] < "2026-03-14T16:30"]
    terms = [t["term"] for t in fightin_words(outage, before)]
    assert {"outage", "check-in", "app"} <= set(terms[:5]), terms
    assert "#skywaysdown" in terms and "skyways" not in terms


def test_a_model_that_fails_on_the_examples_costs_the_words_not_the_alert() -> None:
    """Attended words come from the worker's model: when it raises or answers for the wrong number of
    posts, the explanation says so and the examples stay as they were; without a model it says why."""
    from stream.alert_explanation import attach_attended_words

    def broken(texts: list[str]) -> list[list[tuple[str, float]]]:
        raise RuntimeError("CUDA out of memory")

    examples = [{"text": "app down"}, {"text": "outage"}]
    assert attach_attended_words(examples, broken) == (None, "not available (the model failed: RuntimeError: "
                                                            "CUDA out of memory)")
    assert attach_attended_words(examples, lambda texts: [[("app", 0.5)]])[0] is None  # one answer for two
    assert all("attended_words" not in e for e in examples)
    assert "no model" in attach_attended_words(examples, None)[1]
    overall, _ = attach_attended_words(examples, lambda texts: [[(t.split()[0], 0.6)] for t in texts])
    assert examples[0]["attended_words"] == [{"word": "app", "weight": 0.6}]
    assert overall == [{"word": "app", "weight": 0.3}, {"word": "outage", "weight": 0.3}]


def test_a_window_the_watermark_passes_in_the_batch_that_completes_it_is_judged_on_its_final_numbers() -> None:
    """A catching-up batch (overload mode's wide batches, a worker back from an outage) can move the
    watermark past several windows at once.  A window an earlier batch left open with part of its posts
    must be closed with the numbers this batch brings, not the stale ones: the burst below reached the
    detector as 8 of its 24 posts from one partition, then whole in the batch that closed it."""
    config = SpikeConfig(min_volume=20)
    calm = [([_agg("acme", i, 24, 0), _agg("acme", i + 1, 12, 0)], T0 + timedelta(minutes=i + 1, seconds=30))
            for i in range(19)]
    partial = ([_agg("acme", 19, 16, 0), _agg("acme", 20, 8, 8)], T0 + timedelta(minutes=19, seconds=50))
    caught_up = ([_agg("acme", 19, 24, 0), _agg("acme", 20, 24, 24), *(_agg("acme", i, 24, 0) for i in range(21, 26))],
                 T0 + timedelta(minutes=26, seconds=30))
    opened = [e for e in _events([*calm, partial, caught_up], config) if e[0] == "opened"]
    assert [(start, n, neg) for _, _, start, _, n, neg in opened] == [(T0 + timedelta(minutes=20), 24, 24)]
    # the same posts in batches that close one window at a time: the same alert
    stepwise = [*calm, partial, *(([a], T0 + timedelta(minutes=a.window_start.minute + 1, seconds=30))
                                  for a in caught_up[0])]
    assert [e for e in _events(stepwise, config) if e[0] == "opened"] == opened
