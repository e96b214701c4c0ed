"""`sentistream alerts list | show ID | ack ID | mute TOPIC --for 2h | unmute TOPIC`: what an analyst does
with incidents, against the database the worker writes.

IDs are incident ids (``alert_incidents.id``): an incident is one outage across window lengths, with its
events (opened / updated / resolved) as ``alerts`` rows; webhook messages name the same id.  Acking an
incident and muting a topic stop *delivery* (stream/alert_delivery.py); detection and storage go on, so
``list`` still shows what happened.  Parsers import nothing heavy: ``sentistream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from stream.settings import Settings

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION_S = 366 * 86400  # a mute or a look-back longer than a year is a typo, not a plan
_DURATION = re.compile(r"(\d{1,9})\s*([smhdw])")


class AlertsCommandError(ValueError):
    """Bad input to an alerts command (unknown id, unreadable duration): one line, exit status 2."""


def parse_duration(spec: str) -> timedelta:
    """'2h' -> 2 hours; '1h30m', '7d', '45s', '2w' too.  Positive, at most a year, nothing else accepted."""
    cleaned = spec.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not cleaned or not parts or _DURATION.sub("", cleaned).strip():
        raise AlertsCommandError(f"duration {spec!r} must look like 30m, 2h, 1h30m, 7d or 2w")
    seconds = sum(int(n) * DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise AlertsCommandError(f"duration {spec!r} must be longer than zero")
    if seconds > MAX_DURATION_S:
        raise AlertsCommandError(f"duration {spec!r} is longer than a year; say so in days if you mean it (<= 366d)")
    return timedelta(seconds=seconds)


def _incident_id(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"incident id must be a number (see `sentistream alerts list`), got {value!r}"
                                         ) from None
    if not 0 < number < 2**63:
        raise argparse.ArgumentTypeError(f"incident id {value} is out of range")
    return number


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``alerts`` and its verbs to the ``sentistream`` parser."""
    p = sub.add_parser("alerts", help="list, inspect, acknowledge and mute alert incidents")
    verbs = p.add_subparsers(dest="alerts_command", required=True, metavar="VERB")

    v = verbs.add_parser("list", help="incidents, newest first")
    v.add_argument("--topic", default=None, help="only this topic")
    v.add_argument("--since", default="7d", help="incidents active in this span, e.g. 2h, 7d (default 7d)")
    v.add_argument("--state", choices=["open", "resolved", "all"], default="all", help="default all")
    v.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")

    v = verbs.add_parser("show", help="one incident: numbers, explanation, events and delivery attempts")
    v.add_argument("id", type=_incident_id)
    v.add_argument("--json", action="store_true", help="print the incident as JSON instead of text")

    v = verbs.add_parser("ack", help="acknowledge an incident: its later events are not delivered")
    v.add_argument("id", type=_incident_id)
    v.add_argument("--by", default=None, help="who acknowledges (default: your user name)")

    v = verbs.add_parser("mute", help="stop delivering a topic's alerts for a while (they are still stored)")
    v.add_argument("topic")
    v.add_argument("--for", dest="duration", required=True, help="e.g. 30m, 2h, 1d")
    v.add_argument("--by", default=None, help="who mutes (default: your user name)")

    v = verbs.add_parser("unmute", help="deliver a muted topic's alerts again")
    v.add_argument("topic")
    p.set_defaults(func=cmd_alerts)


def cmd_alerts(args: argparse.Namespace, settings: Settings) -> int:
    """Resolve the database (embedded when not configured), check the schema, run the verb."""
    from stream.embedded import services
    from stream.migrate import check_schema, make_engine

    try:
        handler = {"list": _list, "show": _show, "ack": _ack, "mute": _mute, "unmute": _unmute}[args.alerts_command]
        if args.alerts_command == "mute":
            args.duration = parse_duration(args.duration)
        if args.alerts_command == "list":
            args.since = parse_duration(args.since)
            if args.limit < 1:
                raise AlertsCommandError("--limit must be at least 1")
        if getattr(args, "topic", None) is not None and not args.topic.strip():
            raise AlertsCommandError("topic must not be empty")
        with services(settings, need_broker=False) as resolved:
            engine = make_engine(resolved.database_url)
            try:
                check_schema(engine)
                return handler(engine, args)
            finally:
                engine.dispose()
    except AlertsCommandError as exc:
        sys.stderr.write(f"sentistream alerts {args.alerts_command}: {exc}\n")
        return 2


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def _who(name: str | None) -> str:
    if name:
        return name.strip()[:200]
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database entry (containers): say so instead of failing
        return "unknown"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _figures(kind: str, observed: float, expected: float) -> str:
    if kind == "volume_spike":
        return f"{observed:.0f} vs {expected:.1f}"
    return f"{observed:.0%} vs {expected:.0%}"


def _list(engine: Engine, args: argparse.Namespace) -> int:
    from sqlalchemy import text

    since = datetime.now(UTC) - args.since
    with engine.connect() as conn:
        rows = conn.execute(text("""
        SELECT i.id, i.topic, i.kind, i.status, i.started_at, i.last_window_start, i.resolved_at, i.observed,
               i.expected, i.n_posts, i.n_windows, i.historical, i.acked_at, i.acked_by,
               (SELECT string_agg(DISTINCT d.destination || ' ' || d.state, ', ')
                  FROM alerts a JOIN alert_deliveries d ON d.alert_id = a.id WHERE a.incident_id = i.id) AS delivery,
               (SELECT muted_until FROM alert_mutes m WHERE m.topic = i.topic AND m.muted_until > now()) AS muted,
               i.evidence -> 'explanation' -> 'terms' AS terms
        FROM alert_incidents i
        WHERE (i.last_window_start >= :since OR i.created_at >= :since OR i.updated_at >= :since)
          AND (CAST(:topic AS text) IS NULL OR i.topic = :topic)
          AND (CAST(:state AS text) = 'all' OR i.status = :state)
        ORDER BY i.started_at DESC, i.id DESC
        LIMIT :limit
        """), {"since": since, "topic": args.topic, "state": args.state, "limit": args.limit}).all()
    if not rows:
        _out(f"no {'' if args.state == 'all' else args.state + ' '}incidents"
             f"{' for topic ' + repr(args.topic) if args.topic else ''} since {since:%Y-%m-%d %H:%M} UTC")
        return 0
    table = []
    for r in rows:
        state = r.status + (", acked" if r.acked_at else "") + (", historical" if r.historical else "") + \
            (", muted" if r.muted else "")
        terms = ", ".join(str(t.get("term")) for t in (r.terms if isinstance(r.terms, list) else [])[:3]
                          if isinstance(t, dict))
        table.append([str(r.id), _one_line(r.topic, 40), r.kind, state, _when(r.started_at), str(r.n_windows),
                      _figures(r.kind, r.observed, r.expected), str(r.n_posts), _one_line(terms, 40) or "-",
                      r.delivery or "-"])
    _out(_table(["ID", "TOPIC", "KIND", "STATE", "STARTED (UTC)", "WINDOWS", "OBSERVED VS BASELINE", "POSTS",
                 "TOP TERMS", "DELIVERY"], table))
    return 0


def _incident(engine: Engine, incident_id: int) -> dict[str, Any]:
    from sqlalchemy import text

    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM alert_incidents WHERE id = :id"), {"id": incident_id}).first()
        if row is None:
            raise AlertsCommandError(f"no incident {incident_id} (see `sentistream alerts list --state all`)")
        incident = dict(row._mapping)
        events = [dict(r._mapping) for r in conn.execute(text(
            "SELECT id, event, window_start, window_seconds, observed, expected, score, n_posts, n_negative, "
            "historical, created_at FROM alerts WHERE incident_id = :id ORDER BY id"), {"id": incident_id})]
        deliveries = [dict(r._mapping) for r in conn.execute(text(
            "SELECT d.* FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id WHERE a.incident_id = :id "
            "ORDER BY d.alert_id, d.destination"), {"id": incident_id})]
        attempts = [dict(r._mapping) for r in conn.execute(text(
            "SELECT t.* FROM alert_delivery_attempts t JOIN alert_deliveries d ON d.id = t.delivery_id "
            "JOIN alerts a ON a.id = d.alert_id WHERE a.incident_id = :id ORDER BY t.delivery_id, t.attempt, t.id"),
            {"id": incident_id})]
        muted = conn.execute(text("SELECT muted_until, muted_by FROM alert_mutes WHERE topic = :t AND "
                                  "muted_until > now()"), {"t": incident["topic"]}).first()
    for d in deliveries:
        d["attempt_log"] = [a for a in attempts if a["delivery_id"] == d["id"]]
    incident["events"] = events
    incident["deliveries"] = deliveries
    incident["muted_until"] = muted.muted_until if muted else None
    return incident


def _show(engine: Engine, args: argparse.Namespace) -> int:
    incident = _incident(engine, args.id)
    if args.json:
        _out(json.dumps(incident, indent=2, default=str))
        return 0
    i = incident
    _out(f"incident {i['id']}: {i['kind']} in {i['topic']!r} ({i['status']}"
         f"{', historical: never delivered' if i.get('historical') else ''})")
    _out(f"  started     {_when(i['started_at'])} UTC on {i['window_seconds']} s windows; last window "
         f"{_when(i['last_window_start'])}; resolved {_when(i.get('resolved_at'))}")
    _out(f"  numbers     {_figures(i['kind'], i['observed'], i['expected'])} (observed vs baseline), score "
         f"{i['score']:.2f}, {i['n_negative']} negative of {i['n_posts']} posts, {i['n_windows']} window(s)")
    _out(f"  model       {i['model_version']}")
    if i.get("acked_at"):
        _out(f"  acked       {_when(i['acked_at'])} UTC by {i.get('acked_by') or 'unknown'}")
    if i.get("muted_until"):
        _out(f"  muted       topic muted until {_when(i['muted_until'])} UTC")
    _out()
    _out("explanation")
    for line in _explanation_lines(i.get("evidence") or {}):
        _out(f"  {line}")
    _out()
    _out("events")
    for e in i["events"]:
        _out(f"  alert {e['id']:<6} {e['event']:<9} window {_when(e['window_start'])} ({e['window_seconds']} s)  "
             f"{_figures(i['kind'], e['observed'], e['expected'])}  {e['n_posts']} posts"
             f"{'  historical' if e['historical'] else ''}")
    _out()
    _out("deliveries")
    if not i["deliveries"]:
        _out("  none queued")
    for d in i["deliveries"]:
        _out(f"  alert {d['alert_id']:<6} {d['destination']:<8} {d['state']:<10} attempts {d['attempts']}"
             f"{'  delivered ' + _when(d['delivered_at']) if d.get('delivered_at') else ''}"
             f"{'  next try ' + d['next_attempt_at'].astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S') if d['state'] == 'pending' and d['attempts'] else ''}"
             f"{'  (' + _one_line(d['last_error']) + ')' if d.get('last_error') and d['state'] != 'delivered' else ''}")
        for a in d["attempt_log"]:
            _out(f"      #{a['attempt']} {a['attempted_at'].astimezone(UTC):%Y-%m-%d %H:%M:%S} {a['outcome']:<9} {a['status'] or ''}"
                 f"{'  ' + _one_line(a['error'], 160) if a.get('error') else ''}")
    return 0


def _explanation_lines(evidence: Mapping[str, Any]) -> list[str]:
    """The stored evidence as an analyst reads it: why (share and volume against baseline), which terms,
    which posts; whatever else is stored follows as ``key: value``."""
    if not evidence:
        return ["(none stored)"]
    lines: list[str] = []
    share, volume = evidence.get("negative_share"), evidence.get("volume")
    if isinstance(share, Mapping) and share.get("observed") is not None:
        lines.append(f"negative share  {_num(share.get('observed'), '.0%')} vs baseline {_num(share.get('baseline'), '.0%')}"
                     f" (z binomial {_num(share.get('z_binomial'), '.1f')}, z share {_num(share.get('z_share'), '.1f')})")
    if isinstance(volume, Mapping) and volume.get("n_posts") is not None:
        lines.append(f"volume          {volume.get('n_posts')} posts vs {_num(volume.get('expected'), '.1f')} expected "
                     f"(x{_num(volume.get('ratio'), '.1f')}, z {_num(volume.get('z_count'), '.1f')})")
    explanation = evidence.get("explanation") if isinstance(evidence.get("explanation"), Mapping) else evidence
    for key, label in (("terms", "terms"), ("hashtags", "hashtags")):
        items = explanation.get(key)
        if isinstance(items, list) and items:
            shown = [f"{t.get('term')} ({_num(t.get('z'), '.1f')})" if isinstance(t, Mapping) else str(t)
                     for t in items[:12]]
            lines.append(f"{label:<15} {', '.join(shown)}")
    examples = explanation.get("examples")
    if isinstance(examples, list) and examples:
        lines.append("most negative posts")
        for e in examples[:10]:
            if isinstance(e, Mapping):
                head = " ".join(str(e[k]) for k in ("created_at", "platform", "post_id") if e.get(k))
                by = f" by {e['author']}" if e.get("author") else ""
                lines.append(f"  - [{head}{by}] {_one_line(e.get('text'))}")
                if e.get("url"):
                    lines.append(f"    {_one_line(e['url'])}")
                if isinstance(e.get("attended_words"), list) and e["attended_words"]:
                    lines.append(f"    model read: {_words(e['attended_words'])}")
            else:
                lines.append(f"  - {_one_line(e)}")
    if "attended_tokens" in explanation:
        tokens = explanation.get("attended_tokens")
        shown = _words(tokens) if isinstance(tokens, list) and tokens else ""
        lines.append(f"attended tokens {shown or _one_line(explanation.get('attended_tokens_note', 'not available'))}")
    shown_keys = {"negative_share", "volume", "explanation", "terms", "hashtags", "examples", "attended_tokens",
                  "attended_tokens_note", "incident"}
    for key, value in evidence.items():
        if key not in shown_keys and not isinstance(value, list | dict):
            lines.append(f"{key}: {_num(value, '.4g') if isinstance(value, float) else value}")
    return lines or ["(none stored)"]


def _words(items: list[Any]) -> str:
    """Attended words with their weights, on one line: ``outage 0.31, app 0.22``."""
    return _one_line(", ".join(f"{w.get('word')} {_num(w.get('weight'), '.2f')}" if isinstance(w, Mapping) else str(w)
                               for w in items[:10]))


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def _one_line(value: Any, limit: int = 200) -> str:
    """Post text on one terminal line: control characters (escape sequences too) shown as spaces."""
    text_ = "".join(c if c.isprintable() else " " for c in str(value))
    return text_[:limit] + ("…" if len(text_) > limit else "")


def _ack(engine: Engine, args: argparse.Namespace) -> int:
    from sqlalchemy import text

    who = _who(args.by)
    with engine.begin() as conn:
        row = conn.execute(text("SELECT id, topic, acked_at, acked_by FROM alert_incidents WHERE id = :id FOR UPDATE"),
                           {"id": args.id}).first()
        if row is None:
            raise AlertsCommandError(f"no incident {args.id} (see `sentistream alerts list --state all`)")
        if row.acked_at is not None:
            _out(f"incident {row.id} ({row.topic}) was already acknowledged by {row.acked_by or 'unknown'} at "
                 f"{_when(row.acked_at)} UTC")
            return 0
        conn.execute(text("UPDATE alert_incidents SET acked_at = now(), acked_by = :by WHERE id = :id"),
                     {"by": who, "id": args.id})
        pending = conn.execute(text(
            "SELECT count(*) FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id "
            "WHERE a.incident_id = :id AND d.state = 'pending'"), {"id": args.id}).scalar_one()
    _out(f"incident {args.id} ({row.topic}) acknowledged by {who}; {pending} pending deliveries and its later "
         "events will not be sent")
    return 0


def _mute(engine: Engine, args: argparse.Namespace) -> int:
    from sqlalchemy import text

    until = datetime.now(UTC) + args.duration
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO alert_mutes (topic, muted_until, muted_by) VALUES (:topic, :until, :by) "
            "ON CONFLICT (topic) DO UPDATE SET muted_until = EXCLUDED.muted_until, muted_by = EXCLUDED.muted_by, "
            "created_at = now()"), {"topic": args.topic, "until": until, "by": _who(args.by)})
        known = conn.execute(text("SELECT EXISTS (SELECT 1 FROM alert_incidents WHERE topic = :t) OR "
                                  "EXISTS (SELECT 1 FROM posts WHERE topic = :t)"), {"t": args.topic}).scalar_one()
    _out(f"topic {args.topic!r} muted until {until:%Y-%m-%d %H:%M} UTC: its alerts are stored but not delivered")
    if not known:
        _out(f"note: no posts or incidents for topic {args.topic!r} yet; check the spelling")
    return 0


def _unmute(engine: Engine, args: argparse.Namespace) -> int:
    from sqlalchemy import text

    with engine.begin() as conn:
        removed = conn.execute(text("DELETE FROM alert_mutes WHERE topic = :t RETURNING muted_until"),
                               {"t": args.topic}).first()
    if removed is None or removed.muted_until <= datetime.now(UTC):
        _out(f"topic {args.topic!r} was not muted")
    else:
        _out(f"topic {args.topic!r} unmuted: new alerts are delivered again (those raised while muted stay unsent)")
    return 0
