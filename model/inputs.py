"""Raw post text -> the normalised string every encoder sees, in training and in serving alike.

Training data (SemEval/TweetEval dumps) and live feeds spell the same tweet differently: JSON
escapes (``\\u2019``), HTML entities (``&amp;``), real URLs and @handles versus TweetEval's
``@user``.  One function maps all of them to one form so that a model trained on the dumps sees
live posts the way it saw its training data, and so that duplicate detection between the training
pool and the validation split compares like with like.
"""

from __future__ import annotations

import html
import re

MAX_TEXT_CHARS = 1000
"""Longer posts are cut before tokenisation: the encoder truncates at 128 tokens anyway, and a
5,000-character post must not cost the tokenizer 5,000 characters of work in the hot path."""

_SURROGATE_PAIR = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", re.IGNORECASE)
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-f]{4})", re.IGNORECASE)
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w+")
_WHITESPACE = re.compile(r"\s+")


def _decode_pair(match: re.Match[str]) -> str:
    high, low = int(match.group(1), 16), int(match.group(2), 16)
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


def _decode_escape(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    if 0xD800 <= code <= 0xDFFF:  # a lone surrogate cannot be encoded: drop it
        return ""
    return chr(code)


def unescape_text(text: str) -> str:
    """Undo the JSON-style (``\\u2019``, ``\\"``) and HTML (``&gt;``) escaping found in tweet dumps."""
    text = _SURROGATE_PAIR.sub(_decode_pair, text)
    text = _UNICODE_ESCAPE.sub(_decode_escape, text)
    text = text.replace('\\"', '"')
    # Twice: dumps contain double-escaped entities such as "&amp;gt;".
    return html.unescape(html.unescape(text))


def normalize_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Return ``text`` in the TweetEval convention: URLs -> "http", mentions -> "@user".

    Emoji and hashtags are kept (they carry sentiment); whitespace is collapsed; the result is
    capped at ``max_chars`` characters.  Idempotent: normalising twice changes nothing.
    """
    text = unescape_text(text[: max_chars * 2])
    text = _URL.sub("http", text)
    text = _MENTION.sub("@user", text)
    text = _WHITESPACE.sub(" ", text).strip()
    return text[:max_chars].rstrip()
