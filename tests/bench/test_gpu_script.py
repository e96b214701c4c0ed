"""bench/gpu.sh's plumbing on a CPU: the parts of a bundle (bench/gpu_bundle.py) are checked, reported while
some are missing and unpacked once all are here; its inference step runs with tiny sizes and its entry names
the precision asked for and the one used.  The GPU figures themselves come only from a lent GPU."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bench import gpu_bundle
from bench.results import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "gpu.sh"


def gpu_sh(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO_ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_parts_are_kept_and_reported_until_all_arrived_then_unpacked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage = tmp_path / "stage"
    (stage / "site" / "somepackage").mkdir(parents=True)
    (stage / "site" / "somepackage" / "__init__.py").write_bytes(os.urandom(3000))  # incompressible: 3 parts
    (stage / "data").mkdir()
    (stage / "data" / "val_text.txt").write_text("a tweet\n")
    monkeypatch.setattr(gpu_bundle, "PART_BYTES", 1200)
    parts = gpu_bundle.pack(stage, tmp_path / "parts")
    assert len(parts) >= 3
    env = {"GPU_PARTS_DIR": str(tmp_path / "parts"), "GPU_BUNDLE_DIR": str(tmp_path / "unpacked")}

    held_back = parts[1].read_bytes()
    parts[1].unlink()  # not carried yet
    waiting = gpu_sh("receive", env=env)
    assert waiting.returncode != 0 and parts[1].name in waiting.stdout and parts[0].name not in waiting.stdout

    parts[1].write_bytes(held_back[:-1])  # cut short on the way
    assert gpu_sh("receive", env=env).returncode != 0

    parts[0].unlink()  # a later call's copy of the working tree lacks the parts carried before: they were kept
    parts[1].write_bytes(held_back)
    done = gpu_sh("receive", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    unpacked = tmp_path / "unpacked"
    assert (unpacked / "site" / "somepackage" / "__init__.py").read_bytes() == \
        (stage / "site" / "somepackage" / "__init__.py").read_bytes()
    assert (unpacked / "data" / "val_text.txt").read_text() == "a tweet\n"


def test_inference_step_runs_on_cpu_and_records_the_precision(tmp_path: Path) -> None:
    results, out = tmp_path / "results.md", tmp_path / "out"
    out.mkdir()
    done = gpu_sh("run", "--device", "cpu", "--small", "--steps", "inference", "--precisions", "bf16",
                  "--results-file", str(results), env={"OUT": str(out)}, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    entry = results.read_text()
    assert "- Scorer: precision bf16 (asked: bf16), encoders text torch" in entry
    assert "| sentistream Scorer | text | 4 |" in entry and "| sentistream Scorer | text+image | 4 |" in entry
    assert (out / "gpu-results.md").read_text() == entry  # what a device call brings back
    assert "=== inference bf16" in (out / "gpu.log").read_text()
