"""Trend queries for analysts: the ``trend_minute`` / ``trend_hour`` views, rendered as a table.

The views are plain SQL (see migrations/versions/0007), so an analyst gets the same numbers from psql,
a BI tool or this command; the command runs the views' SQL with its filters inside, so it reads only the
requested span (tests/stream/test_trends_query.py holds it equal to the views).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from stream.dashboard.confidence import wilson_interval
from stream.settings import window_seconds

# A bucket with fewer scored posts than this is drawn as thin (hollow marker): its share is mostly noise.
THIN_BUCKET_SCORED = 10

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


# The views' SQL (migrations/versions/0007) with the filters inside, before the GROUP BY: a filter on the
# view's ``bucket`` is a filter on date_trunc(created_at), which no index serves, so every post of the topic
# was read (1M posts: 0.3-0.8 s for one topic's day, bench/RESULTS.md).  ``created_at >= :since`` is implied by
# ``date_trunc(created_at) >= :since`` (a bucket starts at or before its posts) and lets PostgreSQL read
# just the span through ix_posts_topic_created_at / ix_posts_created_at; the rows equal the view's.
_TREND_SQL = """
SELECT p.topic,
       date_trunc('{unit}', p.created_at) AS bucket,
       count(*)                                        AS n_posts,
       count(s.label)                                  AS n_scored,
       count(*) FILTER (WHERE s.label = 'negative')    AS n_negative,
       count(*) FILTER (WHERE s.label = 'neutral')     AS n_neutral,
       count(*) FILTER (WHERE s.label = 'positive')    AS n_positive,
       avg(s.intensity)                                AS mean_intensity,
       (count(*) FILTER (WHERE s.label = 'negative'))::float / NULLIF(count(s.label), 0) AS negative_share,
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM post_media m
                                      WHERE m.post_pk = p.id AND m.post_created_at = p.created_at)) AS n_with_media
FROM posts p
LEFT JOIN LATERAL (
    SELECT label, intensity FROM sentiments x
    WHERE x.post_pk = p.id AND x.post_created_at = p.created_at ORDER BY x.scored_at DESC, x.id DESC LIMIT 1
) s ON true
{where}
GROUP BY p.topic, date_trunc('{unit}', p.created_at)
ORDER BY p.topic, bucket
"""


def query_trends(engine: Engine, *, topic: str | None, since: str | None, bucket: str = "minute",
                 now: datetime | None = None) -> list[TrendRow]:
    """Rows of the trend view for one topic (or all), newer than ``since`` (e.g. '1h') before now.

    The same rows as ``SELECT ... FROM trend_{bucket} WHERE ...``, read through the posts indexes.
    """
    if bucket not in {"minute", "hour"}:
        raise ValueError("bucket must be 'minute' or 'hour'")
    clauses, params = [], {}
    if topic:
        clauses.append("p.topic = :topic")
        params["topic"] = topic
    if since:
        clauses.append(f"p.created_at >= :since AND date_trunc('{bucket}', p.created_at) >= :since")
        params["since"] = (now or datetime.now().astimezone()) - timedelta(seconds=window_seconds(since))
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = text(_TREND_SQL.format(unit=bucket, where=where))
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


def plot_trends(rows: list[TrendRow], path: Path, title: str, bucket: str = "minute",
                thin_below: int = THIN_BUCKET_SCORED) -> Path:
    """PNG of negative share (top) and posts (bottom) per bucket: the picture an analyst pastes in a report."""
    import matplotlib.pyplot as plt

    fig = trend_figure(rows, title, bucket, thin_below)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def trend_figure(rows: list[TrendRow], title: str, bucket: str = "minute",
                 thin_below: int = THIN_BUCKET_SCORED) -> Any:
    """The matplotlib figure: negative share (top) and posts (bottom), one line per topic with a legend.

    It must not mislead: each topic has its own colour in both panels (no bars drawn over each other),
    a bucket with fewer than ``thin_below`` scored posts is a hollow marker off the line (a share of 2
    negative posts out of 2 is not a 100 % crisis), a bucket without posts is a zero in the volume panel
    and a gap in the share line, and with up to three topics each share carries its Wilson interval.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import PercentFormatter

    step = _BUCKET_STEP[bucket]
    by_topic: dict[str, dict[datetime, TrendRow]] = {}
    for r in rows:
        by_topic.setdefault(r.topic, {})[r.bucket] = r
    fig, (share_ax, volume_ax) = plt.subplots(2, 1, sharex=True, figsize=(11, 6.5),
                                              gridspec_kw={"height_ratios": [2, 1]})
    colours = plt.get_cmap("tab10")
    for i, (topic, series) in enumerate(sorted(by_topic.items())):
        colour = colours(i % 10)
        buckets = _filled_buckets(min(series), max(series), step)
        shares = [series[b].negative_share if b in series and series[b].negative_share is not None
                  else float("nan") for b in buckets]
        volumes = [series[b].n_posts if b in series else 0 for b in buckets]
        thin = [b in series and 0 < series[b].n_scored < thin_below for b in buckets]
        solid = [s if not t else float("nan") for s, t in zip(shares, thin, strict=True)]
        hollow = [s if t else float("nan") for s, t in zip(shares, thin, strict=True)]
        # The line joins well-sampled buckets only: a thin bucket is a hollow marker, never a swing.
        share_ax.plot(buckets, solid, color=colour, linewidth=1.6, marker="o", markersize=3.5, label=topic)
        share_ax.plot(buckets, hollow, linestyle="none", marker="o", markersize=4.5, color=colour,
                      markerfacecolor="white", markeredgecolor=colour, markeredgewidth=1.0, alpha=0.6)
        if len(by_topic) <= 3:  # more intervals than that hide each other; a thin bucket's spans most of 0-1
            bands = [wilson_interval(series[b].n_negative, series[b].n_scored) if b in series and not t else None
                     for b, t in zip(buckets, thin, strict=True)]
            shown = [(b, band) for b, band in zip(buckets, bands, strict=True) if band is not None]
            if shown:
                share_ax.vlines([b for b, _ in shown], [band[0] for _, band in shown],
                                [band[1] for _, band in shown], color=colour, alpha=0.35,
                                linewidth=min(3.0, max(1.0, 300 / len(buckets))))
        volume_ax.plot(buckets, volumes, color=colour, linewidth=1.4, marker=".", markersize=4, label=topic)
    share_ax.set_ylim(-0.02, 1.02)
    share_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    share_ax.set_ylabel("negative share")
    share_ax.grid(True, color="#e6e6e6")
    share_ax.set_title(title)
    handles, labels = share_ax.get_legend_handles_labels()
    handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="#555555",
                          markersize=5))
    labels.append(f"fewer than {thin_below} scored posts")
    if len(by_topic) <= 3:
        handles.append(Line2D([], [], color="#555555", alpha=0.35, linewidth=3))
        labels.append("95% interval (Wilson)")
    share_ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    volume_ax.set_ylabel(f"posts per {bucket}")
    volume_ax.set_ylim(bottom=0)
    volume_ax.grid(True, color="#e6e6e6")
    locator = mdates.AutoDateLocator(minticks=3, maxticks=10)
    volume_ax.xaxis.set_major_locator(locator)
    volume_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    volume_ax.set_xlabel("UTC")
    fig.tight_layout()
    return fig


_BUCKET_STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def _filled_buckets(first: datetime, last: datetime, step: timedelta) -> list[datetime]:
    """Every bucket from first to last, so a quiet bucket is a zero (volume) or a gap (share)."""
    count = min(int((last - first) / step), 100_000)
    return [first + i * step for i in range(count + 1)]


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
