"""Loaders for the labelled datasets under ``SENTISTREAM_DATA_DIR`` (see its README.md).

Every loader returns ``list[Example]`` with labels already mapped to ``model.labels`` indices, so
training, caching and evaluation never parse a file format themselves.  Texts are returned cleaned
of dump artefacts (trailing tabs, a pair of wrapping quotes) but NOT normalised: the encoder
normalises, so cached features and live scoring go through the same ``normalize_text`` call.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.inputs import normalize_text
from model.labels import label_index

logger = logging.getLogger(__name__)

SEMEVAL = "semeval2017-task4a"
TWEETEVAL = "tweeteval-sentiment"
MVSA = "mvsa-single"
MVSA_SPLITS = ("train", "dev")
SEMEVAL_CE = "semeval2016-task4ce"
FIVE_POINT_SCALE = 1.5
"""Five-point labels -2..+2 times 1.5 = the intensity head's -3..+3 scale: the ends of both scales meet
(-2 -> -3, +2 -> +3) and 0 stays 0, so "intensity" keeps its meaning for analysts."""
CE_VAL_FRACTION = 0.15
"""Share of the SemEval-2016 4C topics held out as the reported, topic-disjoint intensity validation set."""
SELECT_FRACTION = 0.1
"""Share of each training pool carved off for epoch/seed/hyper-parameter selection."""

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
    intensity: float | None = None  # -3..+3 where the data set labels intensity (SemEval-2016 4C)
    topic: str | None = None  # the SemEval-2016 4C topic the tweet is about


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


def five_point_to_intensity(value: int) -> float:
    """A SemEval-2016 4C label (-2..+2) on the intensity head's -3..+3 scale (x ``FIVE_POINT_SCALE``)."""
    if value not in (-2, -1, 0, 1, 2):
        raise ValueError(f"five-point label must be one of -2..+2, not {value!r}")
    return value * FIVE_POINT_SCALE


def intensity_to_five_point(intensity: float | np.ndarray) -> np.ndarray:
    """Back from -3..+3 to the nearest five-point label, the unit the task's MAE^M is defined in."""
    return np.clip(np.rint(np.asarray(intensity, dtype=np.float64) / FIVE_POINT_SCALE), -2, 2)


def class_of_five_point(value: int) -> int:
    """The 3-class label a five-point label implies: its sign (-2,-1 negative; 0 neutral; 1,2 positive)."""
    return label_index("negative" if value < 0 else "positive" if value > 0 else "neutral")


def load_semeval_ce(root: Path | None = None) -> list[Example]:
    """All SemEval-2016 Task 4C tweets (train, dev, devtest, test files), one per id and distinct text.

    Each carries its topic, its intensity (five-point label x 1.5) and the 3-class label of the
    label's sign, so it trains both heads.  Malformed lines (too few fields, a label outside
    -2..+2, empty text) are logged and skipped: the files are someone else's dump.
    """
    folder = (root or data_dir()) / SEMEVAL_CE
    files = sorted(folder.glob("*.tsv"))
    if not files:
        raise FileNotFoundError(f"no SemEval-2016 4C .tsv files under {folder}")
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    examples: list[Example] = []
    for path in files:
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                parts = line.rstrip("\n").split("\t")
                try:
                    tweet_id, topic, raw_label = parts[0].strip(), parts[1].strip(), parts[2].strip()
                    value = int(raw_label)
                    intensity = five_point_to_intensity(value)
                except (IndexError, ValueError):
                    logger.warning("%s:%d: skipped malformed line", path.name, line_number)
                    continue
                text = clean_dump_text("\t".join(parts[3:]))
                key = duplicate_key(text)
                if not key or not topic or not tweet_id or tweet_id in seen_ids or key in seen_texts:
                    continue
                seen_ids.add(tweet_id)
                seen_texts.add(key)
                examples.append(Example(tweet_id, text, class_of_five_point(value), None, SEMEVAL_CE,
                                        intensity=intensity, topic=topic))
    logger.info("SemEval-2016 4C: %d distinct tweets from %d files", len(examples), len(files))
    return examples


def stable_fraction(key: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by ``key`` alone (sha256), so a split never depends on file order,
    Python's hash seed or the machine."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def carve(keys: Iterable[str], fraction: float, salt: str) -> set[str]:
    """The keys whose ``stable_fraction`` is below ``fraction``; never empty when there are two or
    more distinct keys (then the lowest one goes), so a tiny pool still has something to select on,
    and never all of them (the highest stays)."""
    distinct = sorted(set(keys), key=lambda key: stable_fraction(key, salt))
    chosen = {key for key in distinct if stable_fraction(key, salt) < fraction}
    if len(distinct) >= 2:
        chosen = chosen or {distinct[0]}
        chosen.discard(distinct[-1])
    return chosen


def topic_key(topic: str | None) -> str:
    """A 4C topic as a split key: "@microsoft" and "Microsoft " are different topics, case is not."""
    return (topic or "").strip().casefold()


def split_ce(examples: Sequence[Example], val_fraction: float = CE_VAL_FRACTION,
             select_fraction: float = SELECT_FRACTION) -> dict[str, list[Example]]:
    """SemEval-2016 4C -> "val" (held-out topics, reported once), "select" (a share of the remaining
    topics, for epoch/seed choice) and "fit" (the rest).  Topic-disjoint, by topic hash: a model is
    judged on topics it never saw, as it will be on a live feed's new ones."""
    topics = [topic_key(example.topic) for example in examples]
    val_topics = carve(topics, val_fraction, "ce-val")
    select_topics = carve([t for t in topics if t not in val_topics], select_fraction, "ce-select")
    parts: dict[str, list[Example]] = {"fit": [], "select": [], "val": []}
    for topic, example in zip(topics, examples, strict=True):
        part = "val" if topic in val_topics else "select" if topic in select_topics else "fit"
        parts[part].append(example)
    return parts


SPLITS: tuple[tuple[str, str], ...] = (
    ("tweeteval", "val"),
    ("mvsa", "dev"),
    ("mvsa", "train"),
    ("semeval", "train"),
    ("ce", "train"),
)
"""Every (dataset, split) the model trains or validates on; ("semeval", "train") is the SemEval pool
without the TweetEval validation tweets; ("ce", "train") is all of SemEval-2016 4C without them (its
topic-disjoint fit/select/val parts are carved in training by ``split_ce``, so one cache serves all)."""


def load_split(dataset: str, split: str) -> list[Example]:
    """Examples of one entry of ``SPLITS``, by the short names the feature cache and CLIs use."""
    if dataset == "tweeteval" and split == "val":
        return load_tweeteval_val()
    if dataset == "mvsa":
        return load_mvsa(split)
    if dataset == "semeval" and split == "train":
        return training_pool_without(load_tweeteval_val())
    if dataset == "ce" and split == "train":
        return training_pool_without(load_tweeteval_val(), load_semeval_ce())
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
