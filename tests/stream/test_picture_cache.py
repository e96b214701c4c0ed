"""The PostgreSQL picture-feature cache (stream/picture_cache.py) with the shipped model, on both back ends.

What it must do: a picture any worker encoded is not encoded again by another or a restarted one; a
stored vector that is not ``dim`` finite floats is never fed to the model (it is encoded again and the
row repaired); a cache that cannot be read or written costs encoder time, never a batch, and says so
once; vectors of one encoder are never handed to another.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from model.image_cache import ImageFeatureCache
from model.scorer import ScoreInput, Scorer
from stream import metrics
from stream.migrate import make_engine, upgrade
from stream.picture_cache import PostgresPictureFeatures, attach, decode_feature, encode_feature
from tests.fixtures.mini_data import picture_jpeg
from tests.fixtures.scorers import shipped_scorer_with_pictures

SMALL = (160, 120)  # pictures as small as a thumbnail: quick to serve and to encode
DIM = 8  # the store does not care about the encoder's width; the scorer tests use the real one


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return shipped_scorer_with_pictures()


@pytest.fixture
def restarted(scorer: Scorer) -> Iterator[Scorer]:
    """The module's scorer with empty memory and no shared level, as a worker that just started."""
    scorer.image_cache = ImageFeatureCache(4096)
    yield scorer
    scorer.shared_features = None
    scorer.on_picture_counts = None
    scorer.image_cache = ImageFeatureCache(4096)


@pytest.fixture
def engine(migrated_db: str) -> Iterator[Engine]:
    engine = make_engine(migrated_db)
    yield engine
    engine.dispose()

def encoded_by(scorer: Scorer, posts: list[ScoreInput]) -> tuple[list, int]:
    before = scorer.pictures_encoded
    results = scorer.score(posts)
    return results, scorer.pictures_encoded - before


def rows(engine: Engine) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT sha256, encoder, dtype, dim, feature FROM picture_features "
                                 "ORDER BY sha256")).all()


def same_scores(a: list, b: list) -> bool:
    return all(x.probabilities == pytest.approx(y.probabilities, abs=1e-5) and x.label == y.label
               for x, y in zip(a, b, strict=True))


def test_a_restarted_worker_encodes_nothing_that_was_encoded_before(restarted: Scorer, engine: Engine) -> None:
    a, b, c = (picture_jpeg(label, seed, SMALL) for label, seed in (("positive", 11), ("negative", 12), ("neutral", 13)))
    batch = [ScoreInput("sunny", [a]), ScoreInput("gloomy", [b]), ScoreInput("sunny again", [a]),
             ScoreInput("no picture"), ScoreInput("grey", [c])]
    attach(restarted, engine, shared=True)
    encoded_total = metrics.sample("sentistream_pictures_encoded_total")
    postgres_hits = metrics.sample("sentistream_picture_cache_total", {"level": "postgres", "result": "hit"})

    cold, encoded = encoded_by(restarted, batch)

    assert encoded == 3, "the repost within the batch is encoded once"
    stored = rows(engine)
    assert len(stored) == 3 and {r.encoder for r in stored} == {restarted.picture_feature_space}
    assert {(r.dtype, r.dim, len(r.feature)) for r in stored} == {("float32", restarted.config.visual_dim,
                                                                   4 * restarted.config.visual_dim)}
    assert metrics.sample("sentistream_pictures_encoded_total") == encoded_total + 3

    restarted.image_cache = ImageFeatureCache(4096)  # a new process: nothing in memory
    warm, encoded = encoded_by(restarted, batch)

    assert encoded == 0
    assert same_scores(warm, cold), "a vector read back from PostgreSQL scores as the encoder's own"
    assert metrics.sample("sentistream_picture_cache_total", {"level": "postgres", "result": "hit"}) == \
        postgres_hits + 3
    _, encoded = encoded_by(restarted, batch)
    assert encoded == 0 and restarted.shared_features.hits == 3, "the third time, memory answers"


def test_a_corrupt_stored_vector_is_never_scored_but_encoded_again_and_repaired(restarted: Scorer,
                                                                               engine: Engine) -> None:
    picture = picture_jpeg("positive", 21, SMALL)
    store = attach(restarted, engine, shared=True)
    cold, _ = encoded_by(restarted, [ScoreInput("look", [picture])])
    (good,) = rows(engine)
    nan_first = np.frombuffer(good.feature, "<f4").copy()
    nan_first[0] = np.nan
    with engine.begin() as conn:
        conn.execute(text("UPDATE picture_features SET feature = :f"), {"f": nan_first.tobytes()})

    restarted.image_cache = ImageFeatureCache(4096)
    again, encoded = encoded_by(restarted, [ScoreInput("look", [picture])])

    assert encoded == 1 and store.rejected == 1 and store.hits == 0
    assert same_scores(again, cold)
    (repaired,) = rows(engine)
    assert bytes(repaired.feature) == bytes(good.feature), "the fresh vector replaced the corrupt one"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("broken", ["no table", "no server"])
def test_a_cache_that_fails_costs_encoder_time_not_the_batch_and_is_logged_once(
        restarted: Scorer, fresh_db: str, broken: str, caplog: pytest.LogCaptureFixture) -> None:
    url = fresh_db if broken == "no table" else f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/none"
    engine = make_engine(url)
    batch = [ScoreInput("one", [picture_jpeg("positive", 31, SMALL)]),
             ScoreInput("two", [picture_jpeg("negative", 32, SMALL)])]
    reference = restarted.score(batch)  # no shared level yet
    restarted.image_cache = ImageFeatureCache(4096)
    store = attach(restarted, engine, shared=True)
    errors = {op: metrics.sample("sentistream_picture_cache_errors_total", {"operation": op}) for op in ("read", "write")}

    with caplog.at_level(logging.INFO, logger="stream.picture_cache"):
        for _ in range(2):
            restarted.image_cache = ImageFeatureCache(4096)
            results, encoded = encoded_by(restarted, batch)
            assert encoded == 2 and same_scores(results, reference)

    assert store.errors == {"read": 2, "write": 2}
    for op in ("read", "write"):
        assert metrics.sample("sentistream_picture_cache_errors_total", {"operation": op}) == errors[op] + 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and {w.split(" failed")[0] for w in warnings} == {
        "picture cache: PostgreSQL read", "picture cache: PostgreSQL write"}
    if broken == "no table":  # the schema arrives: the cache works again, and says so
        upgrade(fresh_db)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="stream.picture_cache"):
            restarted.image_cache = ImageFeatureCache(4096)
            encoded_by(restarted, batch)
        assert len(rows(engine)) == 2
        assert sum("works again" in r.getMessage() for r in caplog.records) == 2
    engine.dispose()


def vector(seed: int, dim: int = DIM) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=dim).astype(np.float32))


def test_vectors_round_trip_per_encoder_and_float16_rows_are_read(engine: Engine) -> None:
    store = PostgresPictureFeatures(engine)
    store.put_many("enc-a", {"k1": vector(1), "k2": vector(2)})
    store.put_many("enc-a", {"k1": vector(99)})  # already stored: kept (DO NOTHING)

    found = store.get_many("enc-a", DIM, ["k1", "k2", "k3"])
    assert set(found) == {"k1", "k2"} and torch.equal(found["k1"], vector(1))
    assert store.get_many("enc-b", DIM, ["k1", "k2"]) == {}, "another encoder never reads these vectors"
    assert (store.hits, store.misses, store.rejected) == (2, 3, 0)

    half = vector(3).numpy().astype("<f2")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO picture_features (sha256, encoder, dtype, dim, feature) "
                          "VALUES ('k4', 'enc-a', 'float16', :dim, :f)"), {"dim": DIM, "f": half.tobytes()})
    assert torch.equal(store.get_many("enc-a", DIM, ["k4"])["k4"], torch.from_numpy(half.astype(np.float32)))


def _with_bad_value(value: float, index: int, dtype: str) -> tuple[str, int, bytes]:
    values = vector(7).numpy().astype("<f2" if dtype == "float16" else "<f4")
    with np.errstate(over="ignore"):  # 70000 does not fit a float16: that is the point
        values[index % DIM] = value
    return dtype, DIM, values.tobytes()


CORRUPT_ROWS = st.one_of(
    # a byte length that is not dim values of the stated dtype
    st.tuples(st.sampled_from(["float32", "float16"]), st.just(DIM), st.binary(max_size=8 * DIM))
    .filter(lambda r: len(r[2]) != DIM * (4 if r[0] == "float32" else 2)),
    # a dtype nobody writes
    st.tuples(st.sampled_from(["float64", "int8", "bfloat16", "FLOAT32", "", "float32 "]), st.just(DIM),
              st.binary(min_size=4 * DIM, max_size=4 * DIM)),
    # another width than the encoder's, consistent with its bytes
    st.integers(0, 64).filter(lambda d: d != DIM).map(lambda d: ("float32", d, bytes(4 * d))),
    # the right size with a NaN or an infinity somewhere
    st.builds(_with_bad_value, st.sampled_from([float("nan"), float("inf"), float("-inf")]), st.integers(0, DIM - 1),
              st.sampled_from(["float32", "float16"])),
    # a float16 row whose value overflowed
    st.builds(_with_bad_value, st.just(70000.0), st.integers(0, DIM - 1), st.just("float16")),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row=CORRUPT_ROWS)
def test_any_corrupt_row_is_ignored_counted_and_overwritten_by_the_next_write(engine: Engine, row) -> None:
    dtype, dim, feature = row
    store = PostgresPictureFeatures(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO picture_features (sha256, encoder, dtype, dim, feature) "
                          "VALUES ('bad', 'enc', :dtype, :dim, :f) ON CONFLICT (sha256, encoder) DO UPDATE "
                          "SET dtype = excluded.dtype, dim = excluded.dim, feature = excluded.feature"),
                     {"dtype": dtype, "dim": dim, "f": feature})
    assert decode_feature(dtype, dim, feature, DIM) is None

    assert store.get_many("enc", DIM, ["bad"]) == {} and store.rejected == 1

    fresh = vector(8)
    store.put_many("enc", {"bad": fresh})
    assert torch.equal(store.get_many("enc", DIM, ["bad"])["bad"], fresh)
    assert encode_feature(fresh) == bytes(rows(engine)[0].feature)


def test_a_hit_keeps_the_row_from_retention_and_unused_rows_age(engine: Engine) -> None:
    store = PostgresPictureFeatures(engine)
    store.put_many("enc", {"used": vector(1), "unused": vector(2)})
    with engine.begin() as conn:
        conn.execute(text("UPDATE picture_features SET last_used_at = now() - interval '40 days'"))

    assert set(store.get_many("enc", DIM, ["used"])) == {"used"}

    with engine.connect() as conn:
        age = dict(conn.execute(text("SELECT sha256, extract(epoch FROM now() - last_used_at) "
                                     "FROM picture_features")).all())
    assert age["used"] < 60 and age["unused"] > 39 * 86400
