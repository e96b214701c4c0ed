"""Typed settings, read once from ``SENTISTREAM_*`` environment variables in the entry point.

Unset broker / database URLs mean "start the embedded one" (see ``stream.embedded``).  A bad value fails
fast with the variable's name, so a typo never becomes a silent default at 3 a.m.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

PREFIX = "SENTISTREAM_"


class SettingsError(ValueError):
    """A SENTISTREAM_* variable has a value this build cannot use."""


def _default_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "sentistream"


@dataclass(frozen=True)
class Settings:
    """Every knob of the pipeline; field name ``x_y`` is read from ``SENTISTREAM_X_Y``."""

    # Services: None = start the embedded broker / PostgreSQL.
    kafka: str | None = None
    kafka_is_tansu: bool = False  # the configured broker is Tansu: apply its one-record-per-batch workaround
    database_url: str | None = None
    home: Path = field(default_factory=_default_home)

    # Topics.
    topic_raw: str = "posts.raw"
    topic_deadletter: str = "posts.deadletter"
    topic_alerts: str = "sentiment.alerts"
    topic_partitions: int = 4
    consumer_group: str = "sentistream-worker"

    # Model and inference.
    scoring: bool = True  # false: store posts without sentiment (ingest-only workers, plumbing tests)
    checkpoint: Path | None = None  # None = the checkpoint shipped in model/checkpoints/
    device: str = "auto"
    torch_threads: int = 0  # 0 = torch's default; 1 wins when cores are shared (bench/RESULTS.md)
    batch_size: int = 64
    batch_latency_ms: int = 200

    # Media fetching (untrusted URLs).
    media_enabled: bool = True
    media_max_bytes: int = 8 * 1024 * 1024
    media_max_pixels: int = 40_000_000
    media_timeout_s: float = 5.0
    media_max_redirects: int = 3
    media_concurrency: int = 8
    media_allow_hosts: tuple[str, ...] = ()  # explicit allow-list that bypasses the private-address block
    media_retries: int = 2  # extra attempts on 5xx / timeouts only
    media_cache_entries: int = 1024  # LRU of final outcomes, keyed by URL hash

    # Windows and alerts.
    windows: tuple[str, ...] = ("1m", "1h")
    alert_min_volume: int = 20
    alert_z_threshold: float = 3.0
    alert_cooldown_s: int = 3600
    alert_webhook_url: str | None = None
    alert_warmup_windows: int = 12  # baseline windows a topic needs before it can alert

    # Worker process.
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    log_level: str = "info"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment, converting each value to its field's type."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            if name not in env or env[name] == "":
                continue
            values[f.name] = _convert(name, env[name], f.type)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.device not in {"auto", "cpu", "cuda"} and not self.device.startswith("cuda:"):
            raise SettingsError(f"{PREFIX}DEVICE must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("topic_partitions", "batch_size", "batch_latency_ms", "media_max_bytes",
                     "media_concurrency", "alert_min_volume"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be >= 1")
        for w in self.windows:
            window_seconds(w)

    @property
    def window_lengths_s(self) -> tuple[int, ...]:
        return tuple(window_seconds(w) for w in self.windows)

    @property
    def run_dir(self) -> Path:
        return self.home / "run"


def window_seconds(spec: str) -> int:
    """'1m' -> 60, '1h' -> 3600, '30s' -> 30, '1d' -> 86400."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    spec = spec.strip()
    try:
        value, unit = int(spec[:-1]), spec[-1]
        seconds = value * units[unit]
    except (ValueError, KeyError, IndexError) as exc:
        raise SettingsError(f"window {spec!r} must look like 30s, 1m, 1h or 1d") from exc
    if seconds <= 0:
        raise SettingsError(f"window {spec!r} must be positive")
    return seconds


def _convert(name: str, raw: str, type_hint: object) -> object:
    hint = str(type_hint)
    try:
        if hint.startswith("tuple"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if hint.startswith("bool"):
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if hint.startswith("int"):
            return int(raw)
        if hint.startswith("float"):
            return float(raw)
        if "Path" in hint:
            return Path(raw).expanduser()
        return raw
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a valid {hint}") from exc
