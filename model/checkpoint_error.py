"""The one error a checkpoint that cannot be used raises, importable without torch.

Why its own module: the ``sentistream`` command turns this error into one clear line and exit code 2,
and must be able to recognise it without importing torch (``sentistream --help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINT_SETTING = "SENTISTREAM_CHECKPOINT"


class CheckpointError(ValueError):
    """A model checkpoint that is missing, unreadable, corrupt, unsafe or from another format.

    The message names the file, what is wrong with it, the setting that chose it and the fix, so an
    operator reading one log line knows what to do.  A ``ValueError`` because the file's content (or
    the path given) is the problem, not the program.
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(
            f"cannot use model checkpoint {self.path}: {problem}. The checkpoint is chosen by "
            f"{CHECKPOINT_SETTING} (or --checkpoint; unset: the shipped "
            "model/checkpoints/sentistream-default.pt). Fix: point it at a checkpoint written by "
            "`sentistream model train`, or unset it to use the shipped one (restore that file with "
            "`git checkout -- model/checkpoints/sentistream-default.pt` if it is damaged)."
        )
