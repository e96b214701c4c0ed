"""One RESULTS.md entry: the table plus everything a reader needs to trust or discount it.

Absolute figures from shared machines are noisy, so each entry says where and when it was measured
(CPU model, cores, GPU, load average before and after), with which software and commit, and the exact
command that reproduces it.  Entries are appended, never rewritten: the file is a lab notebook.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS_FILE = REPO_ROOT / "bench" / "RESULTS.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def gpu_description() -> str:
    """The GPU torch sees (only asked when torch is already imported, to keep DB benches torch-free)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return ", ".join(names) + f" (CUDA {torch.version.cuda})"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return "; ".join(out.stdout.strip().splitlines())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "none"


def machine_description() -> str:
    mem = memory_gib()
    return (f"{cpu_model()}, {os.cpu_count()} logical cores ({usable_cores()} usable), "
            + (f"{mem:.0f} GiB RAM, " if mem else "") + f"GPU: {gpu_description()}")


def package_versions(names: Iterable[str]) -> str:
    parts = [f"Python {platform.python_version()}"]
    for name in names:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return commit + (" (working tree has uncommitted changes)" if dirty else "") if commit else "unknown"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def command_line(module: str, argv: Sequence[str]) -> str:
    """The command as a reader would type it from the repository root."""
    return shlex.join([".venv/bin/python", "-m", module, *argv])


@dataclass
class ResultEntry:
    """What one benchmark run appends; create it at start (records the load then), ``write`` at the end."""

    title: str
    command: str
    packages: Sequence[str] = ()
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_at_start: str = field(default_factory=load_average)
    facts: list[tuple[str, str]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)

    def fact(self, name: str, value: object) -> None:
        self.facts.append((name, str(value)))

    def section(self, markdown: str) -> None:
        self.sections.append(markdown.rstrip() + "\n")

    def render(self) -> str:
        minutes = (datetime.now(UTC) - self.started).total_seconds() / 60
        lines = [
            f"## {self.title} — {self.started:%Y-%m-%d %H:%M} UTC",
            "",
            f"- command: `{self.command}`",
            f"- machine: {machine_description()}",
            f"- software: {package_versions(self.packages)}",
            f"- commit: {git_commit()}",
            f"- load average (1/5/15 min) at start: {self.load_at_start}; at end: {load_average()} "
            f"(the machine is shared: a load above the core count means other jobs took CPU time)",
            f"- wall time: {minutes:.1f} min",
        ]
        lines += [f"- {name}: {value}" for name, value in self.facts]
        return "\n".join(lines) + "\n\n" + "\n".join(self.sections)

    def write(self, path: Path = DEFAULT_RESULTS_FILE) -> str:
        """Append the entry to ``path`` (created with a header if new); returns the markdown."""
        text = self.render()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", encoding="utf-8") as handle:
            if new:
                handle.write("# Benchmark results\n\nAppended by the scripts in bench/ (newest last); "
                             "see each entry's machine, load and command before comparing figures.\n\n")
            handle.write(text + "\n")
        return text


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
