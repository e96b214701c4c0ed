"""Loaders for the labelled datasets under ``SENTISTREAM_DATA_DIR`` (see its README.md).

Every loader returns ``list[Example]`` with labels already mapped to ``model.labels`` indices, so
training, caching and evaluation never parse a file format themselves.  Texts are returned cleaned
of dump artefacts (trailing tabs, a pair of wrapping quotes) but NOT normalised: the encoder
normalises, so cached features and live scoring go through the same ``normalize_text`` call.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from model.inputs import normalize_text
from model.labels import label_index

logger = logging.getLogger(__name__)

SEMEVAL = "semeval2017-task4a"
TWEETEVAL = "tweeteval-sentiment"
MVSA = "mvsa-single"
MVSA_SPLITS = ("train", "dev")

_NON_ALNUM = re.compile(r"[\W_]+")
_URL_WORD = re.compile(r"\bhttp\b")  # what normalize_text leaves of a URL


@dataclass(frozen=True)
class Example:
    """One labelled post: ``label`` indexes ``model.labels.LABELS``; ``image_path`` is absolute."""

    id: str
    text: str
    label: int
    image_path: Path | None
    source: str


def data_dir() -> Path:
    """The shared data folder: env ``SENTISTREAM_DATA_DIR``, else ``<repo>/../shared/data``."""
    configured = os.environ.get("SENTISTREAM_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def clean_dump_text(text: str) -> str:
    """Strip what the TSV/TXT exports added around a tweet: surrounding whitespace and tabs, and
    one pair of wrapping double quotes."""
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].strip()
    return text


def duplicate_key(text: str) -> str:
    """Key under which two spellings of the same tweet compare equal.

    Normalised text without URLs, lower-cased, every non-alphanumeric run removed: the SemEval
    dumps and the TweetEval split differ in quoting, escapes, spacing, punctuation artefacts and
    TweetEval's dropped URLs, not in words.
    """
    return _NON_ALNUM.sub("", _URL_WORD.sub(" ", normalize_text(text)).lower())


def _read_semeval_file(path: Path) -> Iterable[tuple[str, str, str]]:
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                logger.warning("%s:%d: skipped malformed line", path.name, line_number)
                continue
            tweet_id, label, text = parts[0], parts[1], "\t".join(parts[2:])
            yield tweet_id.strip(), label, text


def load_semeval_pool(root: Path | None = None) -> list[Example]:
    """All SemEval 2013-2016 Task 4A tweets, one per tweet id and per distinct text.

    Files are read in name order; the first occurrence of an id or of a duplicate text wins
    (the same tweet appears in several years' files).
    """
    folder = (root or data_dir()) / SEMEVAL
    files = sorted(folder.glob("*.tsv"))
    if not files:
        raise FileNotFoundError(f"no SemEval .tsv files under {folder}")
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    examples: list[Example] = []
    for path in files:
        for tweet_id, label, raw_text in _read_semeval_file(path):
            text = clean_dump_text(raw_text)
            key = duplicate_key(text)
            if tweet_id in seen_ids or key in seen_texts or not key:
                continue
            seen_ids.add(tweet_id)
            seen_texts.add(key)
            examples.append(Example(tweet_id, text, label_index(label), None, SEMEVAL))
    logger.info("SemEval pool: %d distinct tweets from %d files", len(examples), len(files))
    return examples


def load_tweeteval_val(root: Path | None = None) -> list[Example]:
    """The 2,000-tweet TweetEval sentiment validation split (ids are ``val-<line index>``)."""
    folder = (root or data_dir()) / TWEETEVAL
    texts = (folder / "val_text.txt").read_text(encoding="utf-8").split("\n")
    labels = (folder / "val_labels.txt").read_text(encoding="utf-8").split()
    texts = texts[: len(labels)]
    if len(texts) != len(labels):
        raise ValueError(f"{folder}: {len(texts)} texts but {len(labels)} labels")
    return [
        Example(f"val-{index}", clean_dump_text(text), int(label), None, TWEETEVAL)
        for index, (text, label) in enumerate(zip(texts, labels, strict=True))
    ]


def load_mvsa(split: str, root: Path | None = None) -> list[Example]:
    """MVSA-Single ``train`` or ``dev`` (CLMLF split): text + the tweet's picture."""
    if split not in MVSA_SPLITS:
        raise ValueError(f"MVSA split must be one of {MVSA_SPLITS}, not {split!r}")
    folder = (root or data_dir()) / MVSA
    examples: list[Example] = []
    with (folder / f"{split}.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            image = row.get("image") or ""
            examples.append(
                Example(
                    id=row["id"],
                    text=clean_dump_text(row["text"]),
                    label=label_index(row["label"]),
                    image_path=(folder / image) if image else None,
                    source=MVSA,
                )
            )
    return examples


SPLITS: tuple[tuple[str, str], ...] = (
    ("tweeteval", "val"),
    ("mvsa", "dev"),
    ("mvsa", "train"),
    ("semeval", "train"),
)
"""Every (dataset, split) the model trains or validates on; ("semeval", "train") is the SemEval pool
without the TweetEval validation tweets."""


def load_split(dataset: str, split: str) -> list[Example]:
    """Examples of one entry of ``SPLITS``, by the short names the feature cache and CLIs use."""
    if dataset == "tweeteval" and split == "val":
        return load_tweeteval_val()
    if dataset == "mvsa":
        return load_mvsa(split)
    if dataset == "semeval" and split == "train":
        return training_pool_without(load_tweeteval_val())
    raise ValueError(f"unknown split {dataset}/{split}; known: {', '.join(f'{d}/{s}' for d, s in SPLITS)}")


def training_pool_without(
    val_examples: Iterable[Example], pool: list[Example] | None = None
) -> list[Example]:
    """The SemEval pool minus every tweet whose normalised text matches a validation tweet.

    Without this, ~1,800 of TweetEval's 2,000 validation tweets would also be training tweets and
    the validation figure would measure memorisation.
    """
    held_out = {duplicate_key(example.text) for example in val_examples}
    pool = load_semeval_pool() if pool is None else pool
    kept = [example for example in pool if duplicate_key(example.text) not in held_out]
    logger.info("training pool: removed %d of %d tweets matching validation", len(pool) - len(kept), len(pool))
    return kept
