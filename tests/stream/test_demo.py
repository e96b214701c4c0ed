"""`sentistream demo` on a fresh home with nothing configured: embedded services, sample feed, summary."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from stream.demo import sample_lines

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_on_embedded_services(server_tmp) -> None:
    home = server_tmp / "home"
    home.mkdir()
    home.chmod(0o755)  # the embedded server runs as its own OS user when we are root
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTISTREAM_")}
    env["SENTISTREAM_HOME"] = str(home)
    done = subprocess.run([sys.executable, "-m", "stream.cli", "demo", "--timeout", "300"], env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    n = len(sample_lines())
    assert f"sentistream demo: {n} posts" in out
    for topic in ("acme-phone", "skyways-airline", "cup-final", "metro-strike", "starfall-series"):
        assert topic in out
    # With the shipped model and no alert overrides, the sample's check-in outage is one incident and
    # the steady topics raise none.
    assert "neg share" in out and "media: ok" in out
    alerts = out.split("alert incidents (sentistream alerts list):", 1)
    assert len(alerts) == 2, out
    incidents = alerts[1].strip().split("\n\n", 1)[0].splitlines()
    assert len(incidents) == 1 and incidents[0].startswith("skyways-airline:"), incidents
    assert (home / "demo" / "trend-skyways-airline.png").stat().st_size > 5000
    # Nothing left running: the broker and PostgreSQL belong to the demo process and stop with it.
    leftovers = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", f"processes left running: {leftovers.stdout}"
    port = re.search(r"embedded Tansu broker listening on 127\.0\.0\.1:(\d+)", done.stderr)
    assert port, "the demo did not start the embedded broker"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(port.group(1))), timeout=1).close()
