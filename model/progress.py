"""Progress bars that draw only on a terminal.

A tqdm bar redraws itself with carriage returns (and, for some libraries, escape codes); in a log file,
under systemd or in CI that is one unreadable line per redraw.  So every bar in model/ goes through
:func:`progress_bar`, which is off unless stderr is a terminal, and :func:`quiet_library_progress_bars`
turns off Hugging Face's own bars (transformers' "Loading weights", hub downloads) the same way.
Callers that run for long without a terminal log their own summary lines instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def stderr_is_terminal() -> bool:
    """Whether stderr (where tqdm draws) is an interactive terminal."""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or already closed
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable`` when ``enabled`` and stderr is a terminal; a silent pass-through else."""
    return tqdm(iterable, disable=not (enabled and stderr_is_terminal()), **kwargs)


def quiet_library_progress_bars() -> None:
    """Hugging Face's progress bars off when stderr is no terminal (call before loading a model)."""
    if stderr_is_terminal():
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
