"""Progress bars draw on a terminal only: a log file gets no carriage returns or redraws."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator

import pytest
from transformers.utils import logging as transformers_logging

from model.progress import progress_bar, quiet_library_progress_bars, stderr_is_terminal


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_library_bars() -> Iterator[None]:
    was_enabled = transformers_logging.is_progress_bar_enabled()
    yield
    if was_enabled:
        transformers_logging.enable_progress_bar()


def test_no_bar_when_stderr_is_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    log_file = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log_file)
    assert not stderr_is_terminal()
    assert list(progress_bar(range(50), desc="scoring")) == list(range(50))
    assert log_file.getvalue() == ""


def test_a_bar_on_a_terminal_unless_the_caller_turned_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(progress_bar(range(50), desc="scoring", mininterval=0)) == list(range(50))
    assert "scoring" in terminal.getvalue() and "\r" in terminal.getvalue()

    quiet = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert list(progress_bar(range(50), enabled=False, desc="scoring")) == list(range(50))
    assert quiet.getvalue() == ""


def test_a_closed_or_odd_stderr_counts_as_no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    assert not stderr_is_terminal()
    monkeypatch.setattr(sys, "stderr", None)
    assert not stderr_is_terminal()


def test_hugging_face_bars_are_turned_off_without_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                             restore_library_bars: None) -> None:
    transformers_logging.enable_progress_bar()
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    quiet_library_progress_bars()
    assert transformers_logging.is_progress_bar_enabled()  # a person at a terminal keeps them

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    quiet_library_progress_bars()
    assert not transformers_logging.is_progress_bar_enabled()
    log_file = io.StringIO()
    for _ in transformers_logging.tqdm(range(10), desc="Loading weights", file=log_file):
        pass
    assert log_file.getvalue() == ""
