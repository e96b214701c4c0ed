"""Bundled sample posts for ``sentistream demo`` and the tests.

The posts are written for the project by ``generate_samples.py`` (templates and slot filling, fixed seed):
none is copied from a dataset, so they can ship with the code.  Image URLs carry the literal placeholder
``{MEDIA_HOST}`` because the demo serves the pictures on a loopback port it only knows at run time.
"""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
SAMPLE_POSTS = SAMPLES_DIR / "sample_posts.jsonl"
MALFORMED_POSTS = SAMPLES_DIR / "malformed_posts.jsonl"
MEDIA_HOST_PLACEHOLDER = "{MEDIA_HOST}"
