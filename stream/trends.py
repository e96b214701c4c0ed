"""Trend queries for analysts: the ``trend_minute`` / ``trend_hour`` views, rendered as a table.

The views are plain SQL (see migrations/versions/0001), so an analyst gets the same numbers from psql,
a BI tool or this command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from stream.settings import window_seconds

COLUMNS = ("topic", "bucket", "n_posts", "n_scored", "n_negative", "n_neutral", "n_positive",
           "mean_intensity", "negative_share", "n_with_media")


@dataclass(frozen=True, slots=True)
class TrendRow:
    topic: str
    bucket: datetime
    n_posts: int
    n_scored: int
    n_negative: int
    n_neutral: int
    n_positive: int
    mean_intensity: float | None
    negative_share: float | None
    n_with_media: int


def query_trends(engine: Engine, *, topic: str | None, since: str | None, bucket: str = "minute",
                 now: datetime | None = None) -> list[TrendRow]:
    """Rows of the trend view for one topic (or all), newer than ``since`` (e.g. '1h') before now."""
    if bucket not in {"minute", "hour"}:
        raise ValueError("bucket must be 'minute' or 'hour'")
    clauses, params = [], {}
    if topic:
        clauses.append("topic = :topic")
        params["topic"] = topic
    if since:
        clauses.append("bucket >= :since")
        params["since"] = (now or datetime.now().astimezone()) - timedelta(seconds=window_seconds(since))
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = text(f"SELECT {', '.join(COLUMNS)} FROM trend_{bucket} {where} ORDER BY topic, bucket")
    with engine.connect() as conn:
        return [TrendRow(*row) for row in conn.execute(sql, params)]


def summarize_topics(engine: Engine) -> list[dict[str, object]]:
    """One line per topic over all time: the demo's closing table."""
    sql = text("""
        SELECT topic, sum(n_posts) AS posts, sum(n_scored) AS scored, sum(n_negative) AS neg,
               sum(n_neutral) AS neu, sum(n_positive) AS pos,
               sum(mean_intensity * n_scored) / NULLIF(sum(n_scored), 0) AS intensity,
               sum(n_negative)::float / NULLIF(sum(n_scored), 0) AS neg_share,
               sum(n_with_media) AS media
        FROM trend_hour GROUP BY topic ORDER BY topic""")
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sql)]


def format_table(headers: list[str], rows: list[list[object]]) -> str:
    """A plain, aligned text table (no colour codes: output is often piped or logged)."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths, strict=True))
            for r in cells]
    return "\n".join([line, sep, *body])


def render_trends(rows: list[TrendRow]) -> str:
    headers = ["topic", "bucket", "posts", "neg", "neu", "pos", "neg share", "intensity", "media"]
    table = [[r.topic, r.bucket.strftime("%Y-%m-%d %H:%M"), r.n_posts, r.n_negative, r.n_neutral,
              r.n_positive, _pct(r.negative_share), r.mean_intensity, r.n_with_media] for r in rows]
    return format_table(headers, table)


def plot_trends(rows: list[TrendRow], path: Path, title: str, bucket: str = "minute") -> Path:
    """PNG of posts per bucket (bars) and negative share (line): the picture an analyst pastes in a report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, volume = plt.subplots(figsize=(10, 4))
    buckets = [r.bucket for r in rows]
    width = timedelta(hours=1) if bucket == "hour" else timedelta(minutes=1)
    volume.bar(buckets, [r.n_posts for r in rows], width=width * 0.9, align="edge", color="#9fb6cd",
               label="posts")
    volume.set_ylabel("posts")
    share = volume.twinx()
    share.plot([b + width / 2 for b in buckets], [r.negative_share if r.negative_share is not None else float("nan") for r in rows],
               color="#c0392b", marker="o", markersize=3, label="negative share")
    share.set_ylim(0, 1)
    share.set_ylabel("negative share")
    volume.set_title(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.2f}"
    return str(value)


def _numeric(cell: str) -> bool:
    return cell.replace("+", "").replace("-", "").replace(".", "").replace("%", "").isdigit()
