"""Why an alert fired, in words an analyst can check: terms, volume, negative share, example posts.

The terms are the ones over-represented in the incident's posts against the topic's own recent posts,
ranked by the log-odds ratio with an informative Dirichlet prior ("Fightin' Words", Monroe, Colaresi &
Quinn 2008).  Plain frequency would rank "the" and the topic's own name first; a plain log-odds ratio
would rank a word seen once in the incident and never before first.  The prior (the pooled corpus'
word frequencies, ``PRIOR_WEIGHT`` pseudo-tokens) shrinks rare words toward "no difference", and the
z-score divides by the estimate's standard error, so a term needs both a large difference and enough
occurrences.  Hashtags are kept as tokens (``#skywaysdown``); URLs and @mentions are dropped.

Example posts are the incident's most negative ones with platform, post id, author, URL and time, so an
analyst can open them, each with the words the model attended to in it (``attended_words``: the text
branch's attention, from ``model.scorer.Scorer.attended_words``).  The scorer does not store attention
per post, so the worker recomputes it for these few examples (one short forward pass per event); without
a model (tests, offline tools) the explanation says the words are not available and why.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from stream.db import PostRow, SentimentRow

log = logging.getLogger(__name__)

AttendedWords = Callable[[list[str]], Sequence[Sequence[tuple[str, float]]]]
"""Texts in, per text the (word, attention weight) pairs the model weighed most (``Scorer.attended_words``)."""
ATTENDED_TOP_K = 5  # words per example post
PRIOR_WEIGHT = 500.0  # pseudo-tokens of the pooled corpus in the prior (at most a fifth of the pooled tokens)
MIN_Z = 1.0  # listed: a clear lead; an incident against a thin baseline (a quiet topic) rarely reaches 1.96
SIGNIFICANT_Z = 1.96  # flagged ``significant``: over-represented at the 95 % level
MAX_POSTS = 5000  # posts read per side: the explanation of one incident stays a bounded query
BASELINE_SPAN = timedelta(days=7)  # the topic's posts before the incident that define "usual" words
NOT_WORDS = re.compile(r"https?://\S+|www\.\S+|@[\w.]+|&#?\w+;")
TOKEN = re.compile(r"#\w+|[^\W\d_][\w'’-]*[^\W_]")
STOPWORDS = frozenset("""
a about after again all also am an and any are as at be because been before being but by can could did
do does doing don't down during each few for from further get got had has have having he her here hers
him his how i i'm if in into is it it's its just let me more most my no nor not now of off on once only
or other our out over own same she should so some such than that that's the their them then there these
they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours im ive dont cant its thats via amp rt just really still can't won't didn't
doesn't isn't wasn't aren't i've i'll you're they're we're there's what's
""".split())


def tokens(text: str) -> list[str]:
    """Lower-cased words (3+ characters, no stopwords) and hashtags of ``text``; URLs, mentions dropped."""
    cleaned = NOT_WORDS.sub(" ", text.casefold())
    return [t for t in TOKEN.findall(cleaned)
            if t.startswith("#") and len(t) > 2 or (len(t) >= 3 and t not in STOPWORDS)]


def fightin_words(incident: Iterable[str], baseline: Iterable[str], top: int = 10,
                  prior_weight: float = PRIOR_WEIGHT, min_count: int = 2) -> list[dict[str, Any]]:
    """Terms over-represented in ``incident`` texts against ``baseline`` texts, strongest first.

    Each term: ``term``, ``z`` (log-odds ratio over its standard error), ``significant`` (z >= 1.96),
    ``incident_count``, ``baseline_count`` (posts containing it).  Only terms with ``z >= MIN_Z`` and at
    least ``min_count`` incident posts.  The prior weighs at most a fifth of the pooled tokens: the
    sample's outage (89 posts against 35 before it) ranks app, check-in, outage, system, #skywaysdown
    first, at z 1.1-1.8; a 500-token prior over 1,000 tokens would flatten every difference.
    """
    a = Counter(t for text in incident for t in set(tokens(text)))
    b = Counter(t for text in baseline for t in set(tokens(text)))
    n_a, n_b = sum(a.values()), sum(b.values())
    pooled = a + b
    n_pooled = n_a + n_b
    if n_a == 0 or n_pooled == 0:
        return []
    prior_weight = min(prior_weight, n_pooled / 5)
    out = []
    for term, y_a in a.items():
        if y_a < min_count:
            continue
        alpha_w = prior_weight * pooled[term] / n_pooled
        y_b = b.get(term, 0)
        delta = (math.log((y_a + alpha_w) / (n_a + prior_weight - y_a - alpha_w))
                 - math.log((y_b + alpha_w) / (n_b + prior_weight - y_b - alpha_w)))
        z = delta / math.sqrt(1.0 / (y_a + alpha_w) + 1.0 / (y_b + alpha_w))
        if z >= MIN_Z:
            out.append({"term": term, "z": round(z, 2), "significant": z >= SIGNIFICANT_Z,
                        "incident_count": y_a, "baseline_count": y_b})
    out.sort(key=lambda t: (-t["z"], t["term"]))
    return out[:top]


def _texts(conn: Connection, topic: str, start: datetime, end: datetime) -> list[str]:
    p = PostRow.__table__
    return list(conn.execute(
        select(func.left(p.c.text, 2000)).where(p.c.topic == topic, p.c.created_at >= start, p.c.created_at < end)
        .order_by(p.c.created_at.desc()).limit(MAX_POSTS)).scalars())


def example_posts(conn: Connection, topic: str, model_version: str, start: datetime, end: datetime,
                  limit: int = 5) -> list[dict[str, Any]]:
    """The most negative posts of the span: what an analyst reads first to see what drove it."""
    p, s = PostRow.__table__, SentimentRow.__table__
    rows = conn.execute(
        select(p.c.platform, p.c.post_id, p.c.author, p.c.url, p.c.created_at,
               func.left(p.c.text, 280).label("text"), s.c.p_negative)
        .join(s, and_(s.c.post_pk == p.c.id, s.c.post_created_at == p.c.created_at,
                      s.c.model_version == model_version))
        .where(p.c.topic == topic, p.c.created_at >= start, p.c.created_at < end, s.c.label == "negative")
        .order_by(s.c.p_negative.desc(), p.c.post_id).limit(limit)).all()
    return [{**r._mapping, "created_at": r.created_at.isoformat(), "p_negative": round(r.p_negative, 4)}
            for r in rows]


def attach_attended_words(examples: list[dict[str, Any]], attended_words: AttendedWords | None
                           ) -> tuple[list[dict[str, Any]] | None, str]:
    """Give each example its ``attended_words``; return (the words over all examples, a note on how).

    Never raises: a model that fails here must not cost the batch its alert, so the failure is logged
    and recorded in the note instead.
    """
    if attended_words is None:
        return None, ("not available (no model): this process has no scorer; run `sentistream model explain` "
                      "on an example post to see the tokens it attended to")
    if not examples:
        return [], "no example posts to read"
    try:
        per_post = list(attended_words([str(e.get("text") or "") for e in examples]))
        if len(per_post) != len(examples):
            raise ValueError(f"{len(per_post)} results for {len(examples)} texts")
    except Exception as exc:  # noqa: BLE001 - any model failure: the alert goes out without the words
        log.warning("attended words for an alert's examples failed (%s: %s)", type(exc).__name__, exc)
        return None, f"not available (the model failed: {type(exc).__name__}: {str(exc)[:200]})"
    overall: dict[str, float] = {}
    for example, words in zip(examples, per_post, strict=True):
        example["attended_words"] = [{"word": str(w), "weight": round(float(x), 4)} for w, x in words]
        for word, weight in words:
            overall[str(word)] = overall.get(str(word), 0.0) + float(weight)
    top = sorted(overall.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return ([{"word": w, "weight": round(x / len(examples), 4)} for w, x in top],
            f"the text branch's attention weights on the example posts (top {ATTENDED_TOP_K} words each; "
            "overall: mean weight over the examples)")


def explain_span(conn: Connection, topic: str, model_version: str, start: datetime, end: datetime,
                 attended_words: AttendedWords | None = None, attended_model_version: str | None = None
                 ) -> dict[str, Any]:
    """Terms, hashtags and example posts of ``topic`` in [start, end) against the week before ``start``;
    with ``attended_words`` (the worker's scorer, of ``attended_model_version``), the words the model
    attended to in each example.  Another model's attention would explain a verdict it did not give, so a
    scorer of a different version than the alert's is not asked."""
    incident_texts = _texts(conn, topic, start, end)
    baseline_texts = _texts(conn, topic, start - BASELINE_SPAN, start)
    terms = fightin_words(incident_texts, baseline_texts)
    examples = example_posts(conn, topic, model_version, start, end)
    if attended_words is not None and attended_model_version not in (None, model_version):
        attended, note = None, (f"not available: this worker's model is {attended_model_version}, the alert's "
                                f"{model_version}")
    else:
        attended, note = attach_attended_words(examples, attended_words)
    return {
        "terms": terms,
        "hashtags": [t for t in fightin_words(incident_texts, baseline_texts, top=50) if t["term"].startswith("#")][:5],
        "terms_method": "log-odds ratio with informative Dirichlet prior (Fightin' Words) vs the topic's "
                        "posts in the 7 days before the incident",
        "incident_posts_read": len(incident_texts), "baseline_posts_read": len(baseline_texts),
        "examples": examples,
        "attended_tokens": attended,
        "attended_tokens_note": note,
    }
