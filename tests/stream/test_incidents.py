"""Incidents through real PostgreSQL: the worker's alert stage (``WindowAlertStage.recompute_and_detect``)
on stored posts, across a restart and a replay, with two workers at once, two model versions, old data.

The shipped model on the bundled sample, through a real worker and broker, on default settings:
tests/stream/test_demo.py (one incident, skyways-airline; none for the steady topics)."""

from __future__ import annotations

import json
import random
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Engine

from connectors.post import Post
from connectors.replay import replay_file, shift_to_now
from stream.aggregation import WindowAlertStage
from stream.alerts import SpikeConfig, SpikeDetector, looks_with_history
from stream.db import AlertIncidentRow, AlertRow, PostKeyRow, PostRow, SentimentRow
from stream.incidents import apply_looks
from stream.windows import recompute_windows, windows_touched
from tests.stream.pg_module import db_fixture, s4_engine_fixture  # noqa: F401 - fixtures

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
MV = "mv-test"
COMMON = ["seat", "crew", "boarding", "gate", "lounge", "snack", "window", "upgrade", "miles", "legroom"]


def _posts(topic: str, minute: int, n: int, rate: float, rng: random.Random, burst: bool = False,
           start: datetime = T0) -> list[dict]:
    at = start + timedelta(minutes=minute)
    out = []
    for j in range(n):
        negative = rng.random() < rate
        words = " ".join(rng.sample(COMMON, 2))
        text = (f"skyways check-in outage again, app down #skywaysdown {words}" if burst and negative
                else f"skyways {words} today {'meh' if negative else 'fine'}")
        out.append({"post_id": f"{topic}-{minute}-{j}", "topic": topic, "created_at": at + timedelta(seconds=j * 59 / n),
                    "label": "negative" if negative else rng.choice(["neutral", "positive"]), "text": text})
    return out


def _write(db: Engine, posts: list[dict], model_versions: tuple[str, ...] = (MV,)) -> None:
    with db.begin() as conn:
        conn.execute(pg_insert(PostKeyRow).on_conflict_do_nothing(), [
            {"platform": "bluesky", "post_id": p["post_id"], "created_at": p["created_at"]} for p in posts])
        placed = {post_id: (pk, at) for post_id, pk, at in conn.execute(
            select(PostKeyRow.post_id, PostKeyRow.id, PostKeyRow.created_at).where(
                PostKeyRow.platform == "bluesky", PostKeyRow.post_id.in_([p["post_id"] for p in posts])))}
        conn.execute(pg_insert(PostRow).on_conflict_do_nothing(), [
            {"id": placed[p["post_id"]][0], "platform": "bluesky", "post_id": p["post_id"], "text": p["text"], "author": f"user{i}.bsky.social",
             "url": f"https://bsky.app/profile/x/post/{p['post_id']}", "created_at": placed[p["post_id"]][1],
             "topic": p["topic"], "ingested_at": p["created_at"]} for i, p in enumerate(posts)])
        conn.execute(pg_insert(SentimentRow).on_conflict_do_nothing(), [
            {"post_pk": placed[p["post_id"]][0], "post_created_at": placed[p["post_id"]][1], "model_version": mv, "label": p["label"],
             "p_negative": 0.9 if p["label"] == "negative" else 0.1, "p_neutral": 0.05, "p_positive": 0.05,
             "intensity": 0.5} for p in posts for mv in model_versions])


class _Timed:
    def __init__(self, d: dict) -> None:
        self.topic, self.created_at = d["topic"], d["created_at"]


def _process(db: Engine, stage: WindowAlertStage, posts: list[dict], versions: tuple[str, ...] = (MV,)) -> list:
    """What the worker does per batch: store, then windows + looks + incidents in one transaction."""
    _write(db, posts, versions)
    keys = windows_touched([_Timed(p) for p in posts], stage.window_lengths_s)
    return stage.recompute_and_detect({v: keys for v in versions})


def _stage(db: Engine, **kw) -> WindowAlertStage:
    return WindowAlertStage(db, (60,), SpikeDetector(SpikeConfig()), **kw)


def _batches(seed: int = 7, minutes: int = 30, burst: tuple[int, ...] = (22, 23)) -> list[list[dict]]:
    rng = random.Random(seed)
    batches = []
    for i in range(minutes):
        posts = _posts("skyways", i, 40, 0.8 if i in burst else 0.15, rng, burst=i in burst)
        batches += [posts[:20], posts[20:]]  # each window is seen half full, then full
    return batches


def _rows(db: Engine, table) -> list:
    with db.connect() as conn:
        return conn.execute(select(table.__table__).order_by(table.__table__.c.id)).all()


def test_burst_is_one_incident_updated_with_final_numbers_resolved_and_explained(db: Engine) -> None:
    batches = _batches()
    stage = _stage(db)
    new = []
    restart_at = 18 * 2  # before the burst: the baseline must come back from PostgreSQL
    for b in batches[:restart_at]:
        new += _process(db, stage, b)
    stage = _stage(db)
    for b in batches[restart_at:]:
        new += _process(db, stage, b)
    opened = [a for a in new if a.event == "opened"]
    assert [(a.topic, a.kind, a.window_start) for a in opened] == [
        ("skyways", "negative_spike", T0 + timedelta(minutes=22))]
    (incident,) = _rows(db, AlertIncidentRow)
    assert (incident.kind, incident.status, incident.model_version) == ("negative_spike", "resolved", MV)
    assert incident.started_at == T0 + timedelta(minutes=22) and incident.resolved_at == T0 + timedelta(minutes=24)
    events = [(r.event, r.window_start, r.n_posts, r.incident_id) for r in _rows(db, AlertRow)]
    assert events[0] == ("opened", T0 + timedelta(minutes=22), 20, incident.id)  # the first look: half full
    assert ("updated", T0 + timedelta(minutes=22), 40, incident.id) in events  # then its final numbers
    assert events[-1][0] == "resolved" and all(e[3] == incident.id for e in events)

    evidence = _rows(db, AlertRow)[0].evidence
    terms = [t["term"] for t in evidence["explanation"]["terms"]]
    assert {"outage", "#skywaysdown"} <= set(terms[:5]), terms
    assert "skyways" not in terms and "today" not in terms
    assert [t["term"] for t in evidence["explanation"]["hashtags"]][:1] == ["#skywaysdown"]
    example = evidence["explanation"]["examples"][0]
    assert example["platform"] == "bluesky" and example["post_id"].startswith("skyways-22-")
    assert example["url"].endswith(example["post_id"]) and example["author"].endswith(".bsky.social")
    assert example["created_at"].startswith("2026-11-25T08:22")
    assert evidence["volume"]["n_posts"] == 20 and evidence["negative_share"]["baseline"] < 0.3
    assert evidence["explanation"]["attended_tokens"] is None and "not available" in \
        evidence["explanation"]["attended_tokens_note"]

    # A crash after the burst: a fresh worker replays the last batches (at-least-once delivery).
    before = len(_rows(db, AlertRow))
    replayer = _stage(db)
    assert [a for b in batches[-16:] for a in _process(db, replayer, b)] == []
    assert len(_rows(db, AlertRow)) == before and len(_rows(db, AlertIncidentRow)) == 1


def test_example_posts_carry_the_words_the_shipped_model_attended_to_up_to_the_webhook(db: Engine) -> None:
    """The worker hands its Scorer to the alert stage: each example post of the explanation lists the words
    the shipped model attended to in it (words of that very post, heaviest first), the explanation sums them
    up, and the v1 webhook payload and its Slack rendering carry them."""
    from model.scorer import Scorer
    from stream.alert_delivery import alert_payload, slack_message

    scorer = Scorer.from_checkpoint(None, device="cpu")
    stage = _stage(db, attended_words=scorer.attended_words, attended_model_version=MV)
    for batch in _batches():
        _process(db, stage, batch)
    opened = next(r for r in _rows(db, AlertRow) if r.event == "opened")
    explanation = opened.evidence["explanation"]
    assert explanation["examples"], explanation
    for example in explanation["examples"]:
        assert "outage" in example["text"]  # a planted negative post
        words = [w["word"] for w in example["attended_words"]]
        weights = [w["weight"] for w in example["attended_words"]]
        assert 1 <= len(words) <= 5 and len(set(words)) == len(words)
        assert set(words) <= set(re.findall(r"\w+", example["text"].casefold())), (words, example["text"])
        assert weights == sorted(weights, reverse=True) and all(0 < w <= 1 for w in weights)
    overall = [w["word"] for w in explanation["attended_tokens"]]
    assert overall and set(overall) <= {w["word"] for e in explanation["examples"] for w in e["attended_words"]}
    assert "attention" in explanation["attended_tokens_note"]

    payload = alert_payload({**opened._mapping})
    assert payload["explanation"]["explanation"]["examples"][0]["attended_words"] == \
        explanation["examples"][0]["attended_words"]
    slack_text = json.dumps(slack_message(payload))
    assert "model read: _" + explanation["examples"][0]["attended_words"][0]["word"] in slack_text

    # Another model's attention would explain a verdict it did not give: not asked, and the note says why.
    other = _stage(db, attended_words=scorer.attended_words, attended_model_version="another-model")
    with db.begin() as conn:
        conn.execute(AlertRow.__table__.delete())
        conn.execute(AlertIncidentRow.__table__.delete())
    for batch in _batches(seed=8, minutes=30, burst=(24, 25)):
        _process(db, other, [{**p, "post_id": "b" + p["post_id"], "created_at": p["created_at"] + timedelta(hours=1)}
                             for p in batch])
    again = next(r for r in _rows(db, AlertRow) if r.event == "opened").evidence["explanation"]
    assert again["attended_tokens"] is None and "another-model" in again["attended_tokens_note"]
    assert all("attended_words" not in e for e in again["examples"])


def test_two_workers_at_once_open_one_incident(db: Engine, s4_engine: Engine) -> None:
    """Two workers (own detectors, own connection pools) process every batch at the same moment."""
    other = create_engine(s4_engine.url)
    try:
        stages = [_stage(db), _stage(other)]
        found: list[list] = [[], []]
        for batch in _batches(seed=3):
            _write(db, batch)
            keys = windows_touched([_Timed(p) for p in batch], (60,))
            barrier = threading.Barrier(2)

            def run(k: int, keys=keys, barrier=barrier) -> None:
                barrier.wait()
                found[k].extend(stages[k].recompute_and_detect({MV: keys}))

            threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        opened = [a for a in found[0] + found[1] if a.event == "opened"]
        assert len(opened) == 1, opened
        assert len(_rows(db, AlertIncidentRow)) == 1
        assert [r.event for r in _rows(db, AlertRow)].count("opened") == 1
    finally:
        other.dispose()


def test_a_worker_that_joins_mid_incident_updates_it_instead_of_opening_another(db: Engine) -> None:
    """Worker B never saw the spike open (worker A did): it reads the open incident from the database."""
    batches = _batches(seed=5, burst=(22, 23, 24))
    a, b = _stage(db), _stage(db)
    for batch in batches[:46]:  # A up to and including the first half of minute 23
        _process(db, a, batch)
    new_b = [x for batch in batches[46:] for x in _process(db, b, batch)]
    assert "opened" not in [x.event for x in new_b]
    assert {x.event for x in new_b} >= {"updated", "resolved"}
    assert len(_rows(db, AlertIncidentRow)) == 1


def test_each_model_version_has_its_own_incident(db: Engine) -> None:
    stage = _stage(db)
    new = [x for batch in _batches(seed=9) for x in _process(db, stage, batch, versions=("m1", "m2"))]
    assert sorted((x.model_version, x.window_start) for x in new if x.event == "opened") == [
        ("m1", T0 + timedelta(minutes=22)), ("m2", T0 + timedelta(minutes=22))]
    assert sorted(r.model_version for r in _rows(db, AlertIncidentRow)) == ["m1", "m2"]


def test_a_volume_spike_at_the_usual_share(db: Engine) -> None:
    rng = random.Random(13)
    stage = _stage(db)
    new = []
    for i in range(30):
        n = 120 if i == 22 else 30
        new += _process(db, stage, _posts("skyways", i, n, 0.15, rng))
    assert [(x.kind, x.window_start) for x in new if x.event == "opened"] == [
        ("volume_spike", T0 + timedelta(minutes=22))]
    (incident,) = _rows(db, AlertIncidentRow)
    assert incident.status == "resolved" and incident.evidence["volume"]["ratio"] > 2


def test_alerts_on_old_windows_are_historical_and_never_enqueued(db: Engine) -> None:
    """March data replayed in December: stored, marked historical, not handed to delivery."""
    detector = SpikeDetector(SpikeConfig())
    enqueued: list[int] = []
    stored = []
    for batch in _batches(seed=7):
        _write(db, batch)
        with db.begin() as conn:
            aggs = recompute_windows(conn, windows_touched([_Timed(p) for p in batch], (60,)), MV)
            looks = looks_with_history(conn, detector, aggs)
            stored += apply_looks(conn, looks, detector.config_for, now=T0 + timedelta(days=200),
                                  historical_after_s=6 * 3600, enqueue=lambda c, alert_id: enqueued.append(alert_id))
    assert stored and all(a.historical for a in stored) and enqueued == []
    assert all(r.historical for r in _rows(db, AlertRow)) and _rows(db, AlertIncidentRow)[0].historical


def test_live_alerts_are_enqueued_once_in_their_transaction(db: Engine) -> None:
    detector = SpikeDetector(SpikeConfig())
    enqueued: list[int] = []
    for batch in _batches(seed=7) + _batches(seed=7)[-10:]:  # the tail twice: a replay enqueues nothing new
        _write(db, batch)
        with db.begin() as conn:
            aggs = recompute_windows(conn, windows_touched([_Timed(p) for p in batch], (60,)), MV)
            apply_looks(conn, looks_with_history(conn, detector, aggs), detector.config_for,
                        now=T0 + timedelta(minutes=31), historical_after_s=6 * 3600,
                        enqueue=lambda c, alert_id: enqueued.append(alert_id))
    assert enqueued == [r.id for r in _rows(db, AlertRow)] and len(enqueued) >= 3


class _Collect:
    def __init__(self) -> None:
        self.posts: list[Post] = []

    def publish(self, post: Post) -> None:
        self.posts.append(post)

    def flush(self) -> None:
        pass


def test_replay_shift_to_now_makes_the_newest_post_now(tmp_path: Path) -> None:
    old = [Post(platform="bluesky", post_id=str(i), text="x", topic="t",
                created_at=datetime(2026, 3, 14, 15, 0, 30, tzinfo=UTC) + timedelta(minutes=7 * i)) for i in range(5)]
    path = tmp_path / "old.jsonl"
    path.write_text("\n".join([p.to_json().decode() for p in old] + ["not a post", ""]) + "\n", encoding="utf-8")
    now = datetime(2026, 12, 1, 10, 0, 10, tzinfo=UTC)
    shift = shift_to_now(path, now=now)
    assert shift % timedelta(minutes=1) == timedelta(0)  # minute windows keep their boundaries
    assert timedelta(0) <= now - (old[-1].created_at + shift) < timedelta(minutes=1)
    sink = _Collect()
    report = replay_file(path, sink, shift=shift)
    assert report.sent == 5 and len(report.invalid) == 1
    assert [p.created_at - q.created_at for p, q in zip(sink.posts, old, strict=True)] == [shift] * 5
    assert shift_to_now(tmp_path / "old.jsonl", now=old[-1].created_at) == timedelta(0)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("garbage\n", encoding="utf-8")
    assert shift_to_now(empty, now=now) == timedelta(0)


def test_a_trailing_window_opens_the_incident_and_a_replay_adds_nothing(db: Engine) -> None:
    """A thin topic (3 posts a minute) judged on 5-minute windows: four all-negative minutes across the
    09:05 boundary.  Tumbling, neither 5-minute window holds enough of them; the trailing window from 09:01,
    tested when its last minute closes, opens the incident.  A restarted worker replaying every batch from
    the stored rows adds no alert row and no incident."""
    def batch(i: int) -> list[dict]:
        negatives = 3 if 63 <= i < 67 else (1 if i % 3 == 0 else 0)
        return [{"post_id": f"thin-{i}-{j}", "topic": "thin", "created_at": T0 + timedelta(minutes=i, seconds=j * 15),
                 "label": "negative" if j < negatives else "neutral", "text": f"thin {'outage' if j < negatives else 'ok'}"}
                for j in range(3)]

    def run(stage: WindowAlertStage) -> list:
        new = []
        for i in range(80):
            posts = batch(i)
            _write(db, posts)
            keys = windows_touched([_Timed(p) for p in posts], stage.window_lengths_s)
            new += stage.recompute_and_detect({MV: keys}, watermark=T0 + timedelta(minutes=i + 1))
        return new

    def stage() -> WindowAlertStage:
        return WindowAlertStage(db, (60, 300), SpikeDetector(SpikeConfig(window="5m")))

    new = run(stage())
    opened = [(a.kind, a.window_start, a.window_seconds) for a in new if a.event == "opened"]
    assert opened == [("negative_spike", T0 + timedelta(minutes=61), 300)]
    assert [a.event for a in new][-1] == "resolved"
    alerts = len(_rows(db, AlertRow))
    assert run(stage()) == [] and len(_rows(db, AlertRow)) == alerts and len(_rows(db, AlertIncidentRow)) == 1
