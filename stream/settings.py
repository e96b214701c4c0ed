"""Typed settings, read once from ``SENTISTREAM_*`` environment variables in the entry point.

Unset broker / database URLs mean "start the embedded one" (see ``stream.embedded``).  A bad value, or a
``SENTISTREAM_*`` name that is no setting (a typo), fails fast with the variable's name, so a typo never
becomes a silent default at 3 a.m.  Parsing and type checks are pydantic-settings'.  ``Settings(**values)``
never reads the environment (tests and benchmarks build exact settings); ``Settings.from_env`` does.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

PREFIX = "SENTISTREAM_"

# SENTISTREAM_* variables read outside Settings; from_env lets them pass instead of calling them typos.
OTHER_VARIABLES = frozenset({
    "SENTISTREAM_DATA_DIR",  # model/data.py: the labelled data sets
    "SENTISTREAM_CACHE_DIR",  # model/features.py: cached encoder features
    "SENTISTREAM_RUNS_DIR",  # model/train.py: TensorBoard logs
    "SENTISTREAM_TEST_DATABASE_URL",  # tests: a configured PostgreSQL server
    "SENTISTREAM_TEST_CHECKPOINT",  # tests: the checkpoint the end-to-end scoring test loads
})


class SettingsError(ValueError):
    """A SENTISTREAM_* variable has a value this build cannot use, or names no setting."""


def _default_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "sentistream"


class Settings(BaseSettings):
    """Every knob of the pipeline; field name ``x_y`` is read from ``SENTISTREAM_X_Y``."""

    # Empty values mean "the default"; tuples are comma-separated (SENTISTREAM_WINDOWS=1m,1h), not JSON.
    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid", env_ignore_empty=True,
                                      enable_decoding=False)

    # Services: None = start the embedded broker / PostgreSQL.
    kafka: str | None = None
    kafka_is_tansu: bool = False  # the configured broker is Tansu: apply its one-record-per-batch workaround
    database_url: str | None = None
    home: Path = Field(default_factory=_default_home)

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
    image_cache_entries: int = 4096  # picture features kept in memory, keyed by the picture's sha256, so reposted pictures skip the image encoder (about 5 KB each), backed by PostgreSQL's picture_features shared by workers; 0 = off (both)
    encoder_runtime: Literal["auto", "torch", "onnx"] = "auto"  # what runs the frozen text and picture encoders: auto = ONNX Runtime on a CPU (fp32, faster there: bench/RESULTS.md), torch on a GPU (model/onnx_encoders.py)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # what the torch encoders and the network compute in (autocast): auto = bf16 on a CUDA device that has it, fp16 on other CUDA devices, fp32 on a CPU; ONNX Runtime encoders are fp32 only, so with them it is fp32 whatever is asked (one warning; model/scorer.py resolve_precision)
    text_int8: bool = False  # CPU only: int8 text encoder, faster; on ONNX Runtime (encoder_runtime auto/onnx) its per-channel dynamic int8, -0.43 point of TweetEval macro recall; on torch its per-tensor dynamic int8, -3.2 points (bench/RESULTS.md)
    torch_threads: int = 0  # 0 = torch's default; 1 wins when cores are shared (bench/RESULTS.md)
    batch_size: int = 64
    batch_latency_ms: int = 200  # longest a batch keeps gathering posts already fetched once its first post is there; it stops sooner at the first moment nothing more is waiting (stream/micro_batch.py)
    overload_lag_s: float = 30.0  # overload mode when a batch's oldest post waited longer than this in Kafka: pictures skipped (skipped_overload), batches widened; 0 = never (stream/overload.py)
    overload_batch_size: int = 256  # posts per batch while in overload mode
    model_failures_unhealthy: int = 3  # consecutive batches in which the model scored nothing before /health says the model is down
    topics_file: Path | None = None  # topics YAML/TOML whose per-topic `languages` the worker scores; None = English only (stream/language.py)

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
    media_batch_budget_s: float = 10.0  # a batch waits at most this for its pictures; the rest are `timeout`
    media_per_host: int = 2  # concurrent fetches per host, so one slow host cannot starve the others

    # Windows and alerts.
    windows: tuple[str, ...] = ("1m", "5m", "15m", "1h")  # 5m/15m: quiet topics' alerts are decided on these
    alert_enabled: bool = True  # global default; a topic's `alerts.enabled` in the topics file overrides it
    alert_sensitivity: str = "balanced"  # low | balanced | high: preset thresholds (stream/alerts.py SENSITIVITIES)
    alert_window: str = "auto"  # detection window per topic: auto = shortest of WINDOWS that usually holds 3x ALERT_MIN_VOLUME posts
    alert_min_volume: int = 10
    alert_z_threshold: float | None = None  # None = from the sensitivity preset's false-alert budget per window length; a number fixes it
    alert_cooldown_s: int = 3600
    alert_historical_after_s: int = 21600  # alerts on windows that ended longer ago than this are stored as historical, never delivered
    alert_webhook_url: str | None = None
    alert_webhook_secret: str | None = None  # HMAC-SHA256 key for the X-Sentistream-Signature header; None = unsigned
    alert_webhook_format: Literal["json", "slack"] = "json"  # json = the sentistream.alert/v1 document; slack = a Slack incoming-webhook message
    alert_webhook_timeout_s: float = 10.0  # one webhook request, connect to last byte; the claim lease is 3x this (at least 60 s)
    alert_delivery_max_age_s: float = 86400.0  # a delivery is retried (capped exponential backoff, across restarts) until it is this old, then marked failed
    alert_delivery_interval_s: float = 5.0  # how often the worker looks for deliveries whose retry time has come (also after every batch)
    alert_warmup_windows: int = 5  # baseline windows a topic needs before it can alert

    # Retention (`sentistream maintenance retention`, stream/retention.py); window aggregates and alerts are kept.
    retention_raw_days: int = 30  # posts.raw (the platform's payload) is set to NULL once the post is older than this; 0 = keep
    retention_posts_days: int = 0  # posts with their sentiments and media are deleted once older than this (never within the longest window); 0 = keep
    retention_picture_features_days: int = 30  # cached picture features (picture_features) not used for this many days are deleted; 0 = keep

    # Worker process.
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    log_level: str = "info"
    epoch_check_interval_s: float = 1.0  # how often the worker checks for a partition whose position is beyond the log end (a restarted broker) and re-reads it
    stall_after_s: float = 45.0  # an assigned partition whose committed offset stands still this long while its log end is ahead turns /health red
    broker_down_unhealthy_s: float = 20.0  # /health turns red once the broker has not answered the log end query this long
    db_down_unhealthy_s: float = 20.0  # /health turns red once the database has been down (or silent) this long; shorter blips stay green
    summary_interval_s: float = 60.0  # one INFO line with rates, backlog and batch latency this often; 0 = never
    startup_wait_s: float = 0.0  # how long start-up waits for the broker and the database; 0 = forever (restart policies)

    # Database timeouts: a frozen or unreachable server becomes an error the pipeline waits out, not a hang.
    db_connect_timeout_s: int = 10  # libpq connect_timeout (whole connection set-up)
    db_statement_timeout_s: float = 30.0  # server-side statement_timeout; a call gets this plus the connect timeout before the client cuts it; 0 = none
    db_keepalives_idle_s: int = 10  # TCP keepalive: idle seconds before the first probe
    db_keepalives_interval_s: int = 5  # TCP keepalive: seconds between probes
    db_keepalives_count: int = 3  # TCP keepalive: unanswered probes before the connection is dropped

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Constructor arguments only: the environment is read by ``from_env``, after it checked the names."""
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment; unknown ``SENTISTREAM_*`` names and bad values raise SettingsError."""
        env = os.environ if environ is None else environ
        _reject_unknown_names(env)
        values = _MappingEnvSource(cls, env)()
        try:
            return cls(**values)
        except ValidationError as exc:
            raise _settings_error(exc, env) from None

    @classmethod
    def variable_names(cls) -> frozenset[str]:
        """Every ``SENTISTREAM_*`` variable that sets a field."""
        return frozenset(PREFIX + name.upper() for name in cls.model_fields)

    @field_validator("*", mode="before")
    @classmethod
    def _split_comma_separated(cls, value: Any, info: Any) -> Any:
        """A tuple field given as text is a comma-separated list, as it comes from the environment."""
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, str) and get_origin(annotation) is tuple:
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("*")
    @classmethod
    def _expand_user(cls, value: Any) -> Any:
        """``~/sentistream`` in a Path setting means the user's home, as a shell would expand it."""
        return value.expanduser() if isinstance(value, Path) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        self.validate()
        return self

    def validate(self) -> None:  # type: ignore[override]  # pydantic's deprecated classmethod of that name
        """Checks across types (ranges, formats) that plain type conversion cannot express."""
        if self.device not in {"auto", "cpu", "cuda"} and not self.device.startswith("cuda:"):
            raise SettingsError(f"{PREFIX}DEVICE must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("retention_raw_days", "retention_posts_days", "retention_picture_features_days"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{PREFIX}{name.upper()} must be >= 0 (0 = keep)")
        for name in ("topic_partitions", "batch_size", "batch_latency_ms", "media_max_bytes",
                     "media_concurrency", "alert_min_volume"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()} must be >= 1")
        for w in self.windows:
            try:
                window_seconds(w)
            except SettingsError as exc:
                raise SettingsError(f"{PREFIX}WINDOWS: {exc}") from None
        if self.alert_sensitivity not in {"low", "balanced", "high"}:
            raise SettingsError(f"{PREFIX}ALERT_SENSITIVITY must be low, balanced or high, got {self.alert_sensitivity!r}")
        if self.alert_window != "auto":
            try:
                window_seconds(self.alert_window)
            except SettingsError as exc:
                raise SettingsError(f"{PREFIX}ALERT_WINDOW: {exc} (or auto)") from None

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


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._environ.items() if not (self.env_ignore_empty and v == "")}


def _reject_unknown_names(env: Mapping[str, str]) -> None:
    """A ``SENTISTREAM_*`` name that is neither a setting nor a known helper variable is a typo: say so."""
    known = Settings.variable_names() | OTHER_VARIABLES
    unknown = sorted(name for name in env if name.upper().startswith(PREFIX) and name.upper() not in known)
    if not unknown:
        return
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.6)
        problems.append(f"{name} (did you mean {close[0]}?)" if close else name)
    raise SettingsError(f"unknown setting {', '.join(problems)}; the settings are listed in .env.example")


def _settings_error(exc: ValidationError, env: Mapping[str, str]) -> SettingsError:
    """The first problem of a failed validation, named by its variable and the value it had."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SettingsError):
        return cause
    field_name = str(error["loc"][0]) if error["loc"] else ""
    name = PREFIX + field_name.upper()
    raw = next((v for k, v in env.items() if k.upper() == name), None)
    expected = Settings.model_fields[field_name].annotation if field_name in Settings.model_fields else None
    return SettingsError(f"{name}={raw!r} is not a valid {_type_name(expected)}: {error['msg']}")


def _type_name(annotation: Any) -> str:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is tuple:
        return "comma-separated list"
    if args:
        return " or ".join(_type_name(a) for a in args)
    return getattr(annotation, "__name__", str(annotation))
