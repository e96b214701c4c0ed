"""Encoders loaded once per test session (each load reads tens of MB of weights)."""

from __future__ import annotations

import pytest

from model.encoders import ImageEncoder, TextEncoder


@pytest.fixture(scope="session")
def text_encoder() -> TextEncoder:
    return TextEncoder()


@pytest.fixture(scope="session")
def image_encoder() -> ImageEncoder:
    return ImageEncoder()
