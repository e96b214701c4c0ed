"""`sentistream trends` reads posts through their indexes, yet must answer exactly what the views answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from connectors.post import MediaRef, Post
from stream.migrate import make_engine
from stream.sink import MediaOutcome, PostgresSink, SinkRecord
from stream.trends import COLUMNS, TrendRow, query_trends
from tests.stream.verdicts import Verdict

NOW = datetime(2026, 3, 4, 10, 17, 42, tzinfo=UTC)




posts_strategy = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3 * 3600),  # seconds before NOW
              st.sampled_from(["acme", "globex", "o'hara"]),
              st.sampled_from([None, "negative", "neutral", "positive"]),
              st.booleans()),  # with a picture
    min_size=1, max_size=40)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(posts=posts_strategy, since_s=st.integers(min_value=1, max_value=4 * 3600),
       bucket=st.sampled_from(["minute", "hour"]), topic=st.sampled_from([None, "acme", "o'hara"]),
       session_zone=st.sampled_from(["UTC", "Asia/Kolkata"]))
def test_query_trends_equals_the_view(migrated_db: str, posts: list[tuple[int, str, str | None, bool]],
                                      since_s: int, bucket: str, topic: str | None, session_zone: str) -> None:
    engine = make_engine(migrated_db, connect_args={"options": f"-c timezone={session_zone}"})
    try:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE posts RESTART IDENTITY CASCADE"))
        records = []
        for i, (age, post_topic, label, picture) in enumerate(posts):
            url = f"http://media.example/{i}.jpg"
            post = Post(platform="mastodon", post_id=str(i), text=f"t {i}", topic=post_topic,
                        created_at=NOW - timedelta(seconds=age), media=(MediaRef(url),) if picture else ())
            records.append(SinkRecord(post, sentiment=Verdict(label, i / 10) if label else None,
                                      media=[MediaOutcome(url, "image", "ok")] if picture else []))
        PostgresSink(engine).write(records)
        since = NOW - timedelta(seconds=since_s)

        got = query_trends(engine, topic=topic, since=f"{since_s}s", bucket=bucket, now=NOW)

        where = "bucket >= :since" + (" AND topic = :topic" if topic else "")
        with engine.connect() as conn:
            expected = [TrendRow(*r) for r in conn.execute(
                text(f"SELECT {', '.join(COLUMNS)} FROM trend_{bucket} WHERE {where} ORDER BY topic, bucket"),
                {"since": since, "topic": topic})]
        assert got == expected
    finally:
        engine.dispose()
