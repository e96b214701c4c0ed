"""A catalogue of hostile ``posts.raw`` messages and what must become of each.

Used twice: by the decoder's unit tests (tests/connectors/test_post_decoding.py) and end to end through a
real worker (tests/stream/test_hostile_input.py).  Each case says whether the message must be stored as
a post or dead-lettered, and a fragment the dead letter's reason must contain (so the reason is one a
person can act on).  Good posts of a case use ``post_id`` ``hx-<name>``, so the tests can find them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

GOOD_TIME = "2026-11-25T12:00:00+00:00"


@dataclass(frozen=True)
class HostileCase:
    name: str
    value: bytes | None
    expect: str  # "stored" or "dead"
    fragment: str = ""  # in the dead letter's reason (dead), or in the stored text (stored; NUL -> U+FFFD)
    key: bytes | None = None
    created_at: str | None = None  # stored: the UTC time the post must carry (ISO-8601)
    category: str = ""

    @property
    def post_id(self) -> str:
        return f"hx-{self.name}"


def post(name: str, **fields: Any) -> dict[str, Any]:
    """A valid post for case ``name``, with ``fields`` replaced (a value of ``...`` removes the field)."""
    doc: dict[str, Any] = {"schema_version": 1, "platform": "replay", "post_id": f"hx-{name}",
                           "text": f"hostile case {name}", "created_at": GOOD_TIME, "topic": "hostile"}
    for k, v in fields.items():
        if v is ...:
            doc.pop(k, None)
        else:
            doc[k] = v
    return doc


def encoded(doc: Any, **dumps: Any) -> bytes:
    return json.dumps(doc, **dumps).encode("utf-8")


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return value


def _raw_text(name: str, fields_json: str) -> bytes:
    """A post whose JSON is written by hand (for what json.dumps would never produce)."""
    return (f'{{"platform":"replay","post_id":"hx-{name}","text":"case {name}",'
            f'"created_at":"{GOOD_TIME}","topic":"hostile",{fields_json}}}').encode()


def hostile_cases(now: datetime | None = None) -> list[HostileCase]:
    """Every case, built against ``now`` (for the future-timestamp cases)."""
    now = now or datetime.now(UTC)
    cases: list[HostileCase] = []

    def dead(category: str, name: str, value: bytes | None, fragment: str, key: bytes | None = None) -> None:
        cases.append(HostileCase(name, value, "dead", fragment, key=key, category=category))

    def stored(category: str, name: str, value: bytes, fragment: str = "", created_at: str = GOOD_TIME,
               key: bytes | None = None) -> None:
        cases.append(HostileCase(name, value, "stored", fragment, key=key, created_at=created_at,
                                 category=category))

    # -- bytes that are not JSON at all
    c = "bad bytes"
    dead(c, "empty-bytes", b"", "not valid JSON")
    dead(c, "one-nul", b"\x00", "not valid JSON")
    dead(c, "many-nuls", b"\x00" * 100, "not valid JSON")
    dead(c, "png-header", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not valid UTF-8")
    dead(c, "utf16-bom", b"\xff\xfe" + encoded(post("utf16-bom")).decode().encode("utf-16-le"), "not valid UTF-8")
    dead(c, "utf8-bom", b"\xef\xbb\xbf" + encoded(post("utf8-bom")), "not valid JSON")
    dead(c, "truncated", encoded(post("truncated"))[:-7], "not valid JSON")
    dead(c, "trailing-garbage", encoded(post("trailing-garbage")) + b" trailing", "not valid JSON")
    dead(c, "two-objects", encoded(post("two-objects-a")) + encoded(post("two-objects-b")), "not valid JSON")
    dead(c, "tombstone", None, "tombstone")
    dead(c, "raw-control-in-string", encoded(post("raw-control-in-string")).replace(b"hostile case", b"a\x01b"),
         "not valid JSON")

    # -- bytes that are not UTF-8
    c = "bad UTF-8"
    good = encoded(post("utf8"))
    dead(c, "bad-continuation", good.replace(b"hostile case", b"caf\xc3("), "not valid UTF-8")
    dead(c, "overlong-slash", good.replace(b"hostile case", b"\xc0\xaf"), "not valid UTF-8")
    dead(c, "cesu8-pair", good.replace(b"hostile case", b"\xed\xa0\xbd\xed\xb8\x80"), "not valid UTF-8")
    dead(c, "encoded-lone-surrogate", good.replace(b"hostile case", b"\xed\xa0\x80"), "not valid UTF-8")
    dead(c, "five-byte-lead", good.replace(b"hostile case", b"\xf8\x88\x80\x80\x80"), "not valid UTF-8")
    dead(c, "beyond-10ffff", good.replace(b"hostile case", b"\xf4\x90\x80\x80"), "not valid UTF-8")
    dead(c, "latin1-text", good.replace(b"hostile case", "déjà vu".encode("latin-1")), "not valid UTF-8")

    # -- surrogates written as JSON escapes
    c = "surrogates"
    dead(c, "lone-high-in-text", _raw_text("lone-high-in-text", '"lang":"en","author":"a\\ud83d"'), "surrogate")
    dead(c, "lone-high-text", encoded(post("lone-high-text", text="broken \ud83d emoji")), "surrogate")
    dead(c, "lone-low-author", encoded(post("lone-low-author", author="\ude00")), "surrogate")
    dead(c, "surrogate-raw-key", encoded(post("surrogate-raw-key", raw={"k\udc00": 1})), "surrogate")
    dead(c, "reversed-pair", encoded(post("reversed-pair", text="\ude00\ud83d")), "surrogate")
    stored(c, "valid-pair-escape", encoded(post("valid-pair-escape", text="smile \U0001F600")), "\U0001F600")

    # -- nesting
    c = "deep nesting"
    dead(c, "raw-33-deep", encoded(post("raw-33-deep", raw={"a": _nested(32)})), "nested deeper")
    dead(c, "raw-10000-deep", _raw_text("raw-10000-deep", '"raw":' + "[" * 10_000 + "]" * 10_000), "nested")
    dead(c, "unclosed-100k", b"[" * 100_000, "")
    # the depth pre-scan must stay linear on an unterminated string of escaped quotes (a naive regex
    # scan restarts at every quote: minutes for this one)
    dead(c, "deep-then-unterminated", b"[" * 33 + b'"' + b'\\"' * 200_000, "nested deeper")
    stored(c, "raw-31-deep", encoded(post("raw-31-deep", raw={"a": _nested(30)})))

    # -- integers
    c = "huge ints"
    dead(c, "top-level-5000-digits", _raw_text("top-level-5000-digits", '"x":' + "9" * 5000), "digits")
    dead(c, "post-id-25-digits", encoded(post("post-id-25-digits", post_id=10**24)), "digits")
    dead(c, "raw-4301-digits", _raw_text("raw-4301-digits", '"raw":{"n":' + "1" * 4301 + "}"), "digits")
    dead(c, "negative-21-digits", _raw_text("negative-21-digits", '"raw":{"n":-' + "1" * 21 + "}"), "digits")
    stored(c, "raw-int64", encoded(post("raw-int64", raw={"id": 2**63 - 1, "neg": -(2**63)})))

    # -- duplicate keys
    c = "duplicate keys"
    dead(c, "dup-post-id", _raw_text("dup-post-id", '"post_id":"other"'), "duplicate key 'post_id'")
    dead(c, "dup-in-raw", _raw_text("dup-in-raw", '"raw":{"a":1,"b":{"c":1,"c":2}}'), "duplicate key 'c'")
    dead(c, "dup-same-value", _raw_text("dup-same-value", '"topic":"hostile"'), "duplicate key 'topic'")

    # -- NaN / Infinity
    c = "NaN/Infinity"
    dead(c, "nan-in-raw", _raw_text("nan-in-raw", '"raw":{"score":NaN}'), "NaN")
    dead(c, "infinity-created-at", encoded(post("infinity-created-at", created_at=float("inf"))), "Infinity")
    dead(c, "minus-infinity", _raw_text("minus-infinity", '"raw":{"x":-Infinity}'), "Infinity")
    dead(c, "overflowing-float", _raw_text("overflowing-float", '"raw":{"x":1e400}'), "overflows")
    dead(c, "nan-created-at", encoded(post("nan-created-at", created_at=float("nan"))), "NaN")

    # -- wrong types, field by field
    c = "wrong types"
    dead(c, "platform-int", encoded(post("platform-int", platform=7)), "platform")
    dead(c, "post-id-list", encoded(post("post-id-list", post_id=["a"])), "post_id")
    dead(c, "post-id-bool", encoded(post("post-id-bool", post_id=True)), "post_id")
    dead(c, "text-number", encoded(post("text-number", text=12345)), "text is missing or not a string")
    dead(c, "text-object", encoded(post("text-object", text={"en": "hi"})), "not a string")
    dead(c, "created-at-bool", encoded(post("created-at-bool", created_at=True)), "created_at")
    dead(c, "created-at-object", encoded(post("created-at-object", created_at={"t": 1})), "created_at")
    dead(c, "topic-int", encoded(post("topic-int", topic=5)), "topic")
    dead(c, "keywords-int", encoded(post("keywords-int", keywords=5)), "keywords")
    dead(c, "keywords-mixed", encoded(post("keywords-mixed", keywords=["a", 1])), "keywords")
    dead(c, "media-object", encoded(post("media-object", media={"url": "http://example.com/a.jpg"})), "media")
    dead(c, "media-entry-int", encoded(post("media-entry-int", media=[3])), "media entry")
    dead(c, "media-kind-unknown", encoded(post("media-kind-unknown", media=[{"url": "http://e.com/a", "kind": "hologram"}])),
         "media kind")
    dead(c, "media-kind-list", encoded(post("media-kind-list", media=[{"url": "http://e.com/a", "kind": ["image"]}])),
         "media kind")
    dead(c, "raw-string", encoded(post("raw-string", raw="{}")), "raw must be an object")
    dead(c, "author-int", encoded(post("author-int", author=1)), "author")
    dead(c, "lang-list", encoded(post("lang-list", lang=["en"])), "lang")
    dead(c, "schema-version-string", encoded(post("schema-version-string", schema_version="1")), "schema_version")
    dead(c, "schema-version-bool", encoded(post("schema-version-bool", schema_version=True)), "schema_version")
    dead(c, "schema-version-float", encoded(post("schema-version-float", schema_version=1.0)), "schema_version")

    # -- missing fields
    c = "missing fields"
    dead(c, "no-platform", encoded(post("no-platform", platform=...)), "platform")
    dead(c, "no-post-id", encoded(post("no-post-id", post_id=...)), "post_id")
    dead(c, "no-created-at", encoded(post("no-created-at", created_at=...)), "created_at is missing")
    dead(c, "no-text-no-media", encoded(post("no-text-no-media", text=...)), "text is missing")
    dead(c, "empty-object", b"{}", "platform")

    # -- timestamps
    c = "timestamps"
    dead(c, "year-9999", encoded(post("year-9999", created_at="9999-12-31T23:59:59Z")), "outside the accepted range")
    dead(c, "epoch-1e20", encoded(post("epoch-1e20", created_at=1e20)), "time range")
    dead(c, "epoch-millis", encoded(post("epoch-millis", created_at=1_764_000_000_000)), "range")
    dead(c, "year-1999", encoded(post("year-1999", created_at="1999-12-31T23:59:59Z")), "outside the accepted range")
    dead(c, "year-1-minus-offset", encoded(post("year-1-minus-offset", created_at="0001-01-01T00:00:00+05:00")),
         "range")
    dead(c, "negative-epoch", encoded(post("negative-epoch", created_at=-1)), "range")
    dead(c, "feb-30", encoded(post("feb-30", created_at="2026-02-30T00:00:00Z")), "ISO-8601")
    dead(c, "words", encoded(post("words", created_at="yesterday at noon")), "ISO-8601")
    dead(c, "empty-created-at", encoded(post("empty-created-at", created_at="")), "created_at")
    dead(c, "two-days-ahead", encoded(post("two-days-ahead", created_at=(now + timedelta(days=2)).isoformat())),
         "outside the accepted range")
    dead(c, "timestamp-too-long", encoded(post("timestamp-too-long", created_at="2026-11-25T12:00:00" + "0" * 100)),
         "longer than")
    stored(c, "naive-is-utc", encoded(post("naive-is-utc", created_at="2026-11-25T08:30:00")),
           created_at="2026-11-25T08:30:00+00:00")
    stored(c, "plus-14-offset", encoded(post("plus-14-offset", created_at="2026-11-25T14:00:00+14:00")),
           created_at="2026-11-25T00:00:00+00:00")
    stored(c, "epoch-seconds-float", encoded(post("epoch-seconds-float", created_at=1_764_072_000.5)),
           created_at="2025-11-25T12:00:00.500000+00:00")
    stored(c, "lowercase-z", encoded(post("lowercase-z", created_at="2026-11-25T07:00:00z")),
           created_at="2026-11-25T07:00:00+00:00")

    # -- empty text, with and without pictures
    c = "empty text"
    picture = [{"url": "http://127.0.0.1:9/pic.jpg", "kind": "image"}]
    dead(c, "empty-text-no-media", encoded(post("empty-text-no-media", text="")), "text is empty")
    dead(c, "blank-text-no-media", encoded(post("blank-text-no-media", text=" \n\t ")), "text is empty")
    stored(c, "empty-text-with-picture", encoded(post("empty-text-with-picture", text="", media=picture)))
    stored(c, "no-text-with-picture", encoded(post("no-text-with-picture", text=..., media=picture)))
    stored(c, "null-text-with-picture", encoded(post("null-text-with-picture", text=None, media=picture)))

    # -- enormous values
    c = "enormous"
    dead(c, "text-40001", encoded(post("text-40001", text="a" * 40_001)), "longer than 40000")
    stored(c, "text-40000", encoded(post("text-40000", text="é" * 40_000)), "éééé")
    dead(c, "post-id-257", encoded({**post("x"), "post_id": "p" * 257}), "post_id")
    dead(c, "topic-129", encoded(post("topic-129", topic="t" * 129)), "topic")
    dead(c, "keywords-65", encoded(post("keywords-65", keywords=["k"] * 65)), "keywords")
    dead(c, "keyword-129", encoded(post("keyword-129", keywords=["k" * 129])), "keyword")
    dead(c, "media-17", encoded(post("media-17", media=[f"http://e.com/{i}.jpg" for i in range(17)])), "media")
    dead(c, "url-3000", encoded(post("url-3000", url="http://e.com/" + "a" * 3000)), "url")
    dead(c, "author-300", encoded(post("author-300", author="a" * 300)), "author")
    dead(c, "alt-3000", encoded(post("alt-3000", media=[{"url": "http://e.com/a.jpg", "alt": "x" * 3000}])), "alt")
    stored(c, "raw-400k", encoded(post("raw-400k", raw={"blob": "z" * 400_000})))

    # -- NUL and control characters
    c = "NUL and control chars"
    stored(c, "nul-in-text", encoded(post("nul-in-text", text="before\x00after")), "before\ufffdafter")
    stored(c, "controls-in-text", encoded(post("controls-in-text", text="bell\x07 esc\x1b[31m red")), "bell\x07")
    stored(c, "nul-in-author", encoded(post("nul-in-author", author="evil\x00name")))
    stored(c, "nul-in-raw-key", encoded(post("nul-in-raw-key", raw={"k\x00": "v\x00"})))
    dead(c, "nul-in-post-id", encoded({**post("x"), "post_id": "id\x00"}), "control characters")
    dead(c, "newline-in-topic", encoded(post("newline-in-topic", topic="a\nb")), "control characters")
    dead(c, "tab-in-lang", encoded(post("tab-in-lang", lang="e\tn")), "control characters")
    dead(c, "c1-in-url", encoded(post("c1-in-url", url="http://e.com/\u0085")), "control characters")

    # -- odd keys and Kafka keys
    c = "weird keys"
    stored(c, "unknown-field", encoded(post("unknown-field", future_field={"x": 1})))
    stored(c, "empty-key", encoded({**post("empty-key"), "": "empty"}))
    stored(c, "emoji-key", encoded({**post("emoji-key"), "\U0001F600": 1}))
    stored(c, "id-alias", encoded({**post("id-alias", post_id=...), "id": "hx-id-alias"}))
    stored(c, "kafka-key-mismatch", encoded(post("kafka-key-mismatch")), key=b"twitter:somebody-else")
    stored(c, "kafka-key-not-utf8", encoded(post("kafka-key-not-utf8")), key=b"\xff\xfe\x00key")
    dead(c, "nul-key-bad-value", b"\x00not json", "not valid JSON", key=b"bad\x00key\xff")

    # -- JSON that is not an object, unknown versions and platforms
    c = "null value and not-a-post"
    dead(c, "json-null", b"null", "must be a JSON object")
    dead(c, "json-string", b'"hello"', "must be a JSON object")
    dead(c, "json-number", b"42", "must be a JSON object")
    dead(c, "json-array-of-posts", encoded([post("json-array-of-posts")]), "must be a JSON object")
    c = "schema version"
    dead(c, "schema-version-2", encoded(post("schema-version-2", schema_version=2)), "unsupported schema_version")
    dead(c, "schema-version-0", encoded(post("schema-version-0", schema_version=0)), "unsupported schema_version")
    dead(c, "schema-version-huge", encoded(post("schema-version-huge", schema_version=10**18)), "schema_version")
    dead(c, "platform-myspace", encoded(post("platform-myspace", platform="myspace")), "platform 'myspace'")
    dead(c, "platform-uppercase", encoded(post("platform-uppercase", platform="Twitter")), "platform")
    return cases


# -- hypothesis strategies: arbitrary JSON, and posts with arbitrary JSON in some fields

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
POST_FIELDS = ("schema_version", "platform", "post_id", "text", "created_at", "author", "lang", "url",
               "topic", "keywords", "media", "raw", "ingested_at")


@st.composite
def post_like(draw: st.DrawFn) -> bytes:
    """A valid post with some fields replaced by arbitrary JSON, serialised in a hostile way."""
    doc = post("prop")
    for name in draw(st.lists(st.sampled_from(POST_FIELDS), max_size=4, unique=True)):
        doc[name] = draw(JSON_VALUES)
    text = json.dumps(doc, allow_nan=True, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", errors="surrogatepass")
