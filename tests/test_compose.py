"""docker-compose.yml, Dockerfile and .env.example checked against the code, since Docker does not run here.

Every sentistream service's command must parse with the real CLI parser, every SENTISTREAM_* variable
must be a Settings field (and .env.example must list them all with the code's defaults), and the Kafka and
PostgreSQL URLs handed to the app must point at the compose services as they are configured.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from connectors.broker import KAFKA_SESSION_TIMEOUT_S
from stream.cli import build_parser
from stream.embedded import to_sqlalchemy_url
from stream.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_PATH = ROOT / "docker-compose.yml"
ENV_EXAMPLE_PATH = ROOT / ".env.example"
DOCKERFILE_PATH = ROOT / "Dockerfile"
SETTING_NAMES = Settings.variable_names()
INFRA_IMAGES = ("apache/kafka:", "postgres:", "prom/prometheus:", "grafana/grafana:")
DEPLOY = ROOT / "deploy"


def read_env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE_PATH.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f".env.example:{number} is not KEY=VALUE: {line!r}"
        assert key not in values, f".env.example:{number} repeats {key}"
        values[key] = value
    return values


_INNERMOST = re.compile(r"\$\{(\w+)(?:(:?)([-?])([^${}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose variable substitution (``${X}``, ``${X:-default}``, ``${X-default}``, nesting, ``$$``)."""
    text = value.replace("$$", "\0")

    def one(match: re.Match[str]) -> str:
        name, colon, op, default = match.groups()
        current = env.get(name)
        missing = current is None or (colon == ":" and current == "")
        if op == "-" and missing:
            return default
        if op == "?" and missing:
            raise AssertionError(f"compose requires {name}: {default}")
        return current or ""

    while True:
        replaced = _INNERMOST.sub(one, text)
        if replaced == text:
            break
        text = replaced
    assert "${" not in text, f"unresolved interpolation in {value!r}"
    return text.replace("\0", "$")


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_example()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_PATH.read_text())


def resolved(node: Any, env: dict[str, str]) -> Any:
    """The compose tree as `docker compose config` would see it with .env copied from .env.example."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolved(v, env) for v in node]
    if isinstance(node, dict):
        return {k: resolved(v, env) for k, v in node.items()}
    return node


@pytest.fixture(scope="module")
def services(compose: dict[str, Any], env_example: dict[str, str]) -> dict[str, dict[str, Any]]:
    return resolved(compose["services"], env_example)


def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if "build" in s}


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def service_with_image(services: dict[str, dict[str, Any]], prefix: str) -> tuple[str, dict[str, Any]]:
    found = [(n, s) for n, s in services.items() if str(s.get("image", "")).startswith(prefix)
             and "command" not in s]
    assert len(found) == 1, f"expected one long-running {prefix} service, found {[n for n, _ in found]}"
    return found[0]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


# --- .env.example -------------------------------------------------------------------------------------


def test_env_example_lists_every_setting_and_nothing_else(env_example: dict[str, str]) -> None:
    listed = {k for k in env_example if k.startswith(PREFIX)}
    assert sorted(SETTING_NAMES - listed) == [], "settings missing from .env.example"
    assert sorted(listed - SETTING_NAMES) == [], ".env.example names variables that are not settings"


def test_env_example_values_are_the_code_defaults(env_example: dict[str, str]) -> None:
    from_example = Settings.from_env({k: v for k, v in env_example.items() if k.startswith(PREFIX)})
    assert from_example == Settings()


def test_every_setting_in_env_example_has_a_comment() -> None:
    lines = ENV_EXAMPLE_PATH.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(PREFIX):
            block = lines[max(0, i - 3):i]
            assert any(b.startswith("#") for b in block), f"{line.split('=')[0]} has no comment above it"


# --- docker-compose.yml: variables and commands ---------------------------------------------------------


def test_compose_names_only_real_settings() -> None:
    named = set(re.findall(r"\b(SENTISTREAM_[A-Z0-9_]+)", COMPOSE_PATH.read_text()))
    assert named, "compose passes no settings at all"
    assert sorted(named - SETTING_NAMES) == []


def test_app_environment_builds_valid_settings(services: dict[str, dict[str, Any]],
                                               env_example: dict[str, str]) -> None:
    apps = app_services(services)
    assert apps
    for name, service in apps.items():
        env = {k: v for k, v in env_example.items() if k.startswith(PREFIX)} | environment_of(service)
        settings = Settings.from_env(env)
        assert settings.kafka and settings.database_url, f"{name} would start embedded services"


def test_every_service_is_infrastructure_or_the_sentistream_image(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = str(service.get("image", ""))
        assert "build" in service or image.startswith(INFRA_IMAGES), f"{name}: unknown image {image!r}"
        if "build" in service:
            assert service["build"] in (".", {"context": "."}) and "entrypoint" not in service, name


def test_every_app_command_is_a_real_cli_command(services: dict[str, dict[str, Any]]) -> None:
    parser = build_parser()
    known = subcommands(parser)
    apps = app_services(services)
    assert {"migrate", "worker", "ingest"} <= set(apps)
    assert {"worker", "db", "ingest", "trends"} <= set(known), "stream.cli lost a subcommand compose runs"
    for name, service in apps.items():
        command = service.get("command")
        assert isinstance(command, list) and command, f"{name}: command must be an exec-form list"
        assert command[0] in known, f"{name}: `sentistream {command[0]}` does not exist ({sorted(known)})"
        try:
            parser.parse_args(command)
        except SystemExit as exc:
            pytest.fail(f"{name}: `sentistream {' '.join(command)}` does not parse (exit {exc.code})")


def test_migrate_and_worker_run_the_commands_the_roles_need(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["worker"]["command"] == ["worker"]
    assert services["ingest"]["command"][:1] == ["ingest"]


def test_ingest_replays_a_file_that_is_mounted(services: dict[str, dict[str, Any]]) -> None:
    command = services["ingest"]["command"]
    if command[:2] != ["ingest", "replay"]:
        pytest.skip("ingest runs a live connector")
    target = Path(command[2])
    for volume in services["ingest"].get("volumes", []):
        source, container_dir = volume.split(":")[:2]
        if target.is_relative_to(container_dir):
            assert (ROOT / source / target.relative_to(container_dir)).is_file()
            return
    pytest.fail(f"{target} is not inside any volume of the ingest service")


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    text = DOCKERFILE_PATH.read_text()
    entrypoints = re.findall(r"^ENTRYPOINT\s+(.+)$", text, flags=re.MULTILINE)
    assert [json.loads(e) for e in entrypoints] == [["sentistream"]]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["sentistream"] == "stream.cli:main"
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY\s+(\w+)\s", text, flags=re.MULTILINE))
    assert packages <= copied, f"Dockerfile does not copy {sorted(packages - copied)}"


# --- docker-compose.yml: services line up ---------------------------------------------------------------


def test_kafka_is_kraft_and_serves_the_address_the_app_uses(services: dict[str, dict[str, Any]]) -> None:
    name, kafka = service_with_image(services, "apache/kafka:")
    env = environment_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for k in env)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID must be a base64 UUID"
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@{name}:")
    listeners = {u.split("://")[0]: u.split("://")[1] for u in env["KAFKA_LISTENERS"].split(",")}
    advertised = {u.split("://")[0]: u.split("://")[1] for u in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    # Fast group joins: the clients' session timeout must be inside the broker's allowed range.
    assert int(env["KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS"]) <= KAFKA_SESSION_TIMEOUT_S * 1000
    for app_name, app in app_services(services).items():
        bootstrap = environment_of(app)["SENTISTREAM_KAFKA"]
        for server in bootstrap.split(","):
            matching = [lst for lst, addr in advertised.items() if addr == server]
            assert matching, f"{app_name}: {server} is not an advertised listener {advertised}"
            port = server.rsplit(":", 1)[1]
            assert listeners[matching[0]].endswith(f":{port}"), "advertised port is not the listening port"
            assert server.split(":")[0] == name
        depends = app.get("depends_on", {})
        assert name in depends or "kafka-init" in depends or app_name in {"migrate", "trends", "dashboard", "retention"}


def test_kafka_init_creates_the_topics_the_app_uses(services: dict[str, dict[str, Any]]) -> None:
    init = services["kafka-init"]
    assert init["image"] == service_with_image(services, "apache/kafka:")[1]["image"]
    script = " ".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    assert "--create" in script and "--if-not-exists" in script
    init_env = environment_of(init)
    worker = Settings.from_env(environment_of(services["worker"]))
    assert init_env["SENTISTREAM_TOPIC_PARTITIONS"] == str(worker.topic_partitions)
    created = {init_env[v] for v in re.findall(r"\$(SENTISTREAM_TOPIC_\w+)", script)} - {init_env["SENTISTREAM_TOPIC_PARTITIONS"]}
    assert created == {worker.topic_raw, worker.topic_deadletter, worker.topic_alerts}
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_postgres_16_matches_the_database_url(services: dict[str, dict[str, Any]]) -> None:
    name, postgres = service_with_image(services, "postgres:")
    assert postgres["image"] == "postgres:16"
    env = environment_of(postgres)
    for app_name, app in app_services(services).items():
        url = urlsplit(to_sqlalchemy_url(environment_of(app)["SENTISTREAM_DATABASE_URL"]))
        assert url.scheme == "postgresql+psycopg2"
        assert (url.hostname, url.port or 5432) == (name, 5432), app_name
        if app_name == "dashboard":  # the read-only role the postgres service creates on first start
            assert (url.username, url.password) == (env["DASHBOARD_DB_USER"], env["DASHBOARD_DB_PASSWORD"])
            assert url.username != env["POSTGRES_USER"]
        else:
            assert url.username == env["POSTGRES_USER"] and url.password == env["POSTGRES_PASSWORD"]
        assert url.path.lstrip("/") == env["POSTGRES_DB"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])


def test_start_up_order_and_health(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for role in ("worker", "ingest"):
        depends = services[role]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["kafka-init"]["condition"] == "service_completed_successfully"
    for role in ("kafka", "postgres", "worker"):
        assert services[role]["healthcheck"]["test"], role
    for one_shot in ("kafka-init", "migrate", "ingest"):
        assert services[one_shot].get("restart") == "no", one_shot
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert used <= set(compose["volumes"])


def test_worker_can_scale(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    healthcheck = " ".join(worker["healthcheck"]["test"])
    assert "SENTISTREAM_WEB_PORT" in healthcheck and str(Settings().web_port) in healthcheck


# --- docker-compose.yml: live connectors, their credentials and the topics file -------------------------


def _connector_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """platform -> the compose service running `sentistream ingest <platform>`."""
    from connectors.cli import PLATFORMS

    found: dict[str, dict[str, Any]] = {}
    for service in app_services(services).values():
        command = service.get("command") or []
        if command[:1] == ["ingest"] and len(command) > 1 and command[1] in PLATFORMS:
            assert command[1] not in found, f"two services run `ingest {command[1]}`"
            found[command[1]] = service
    return found


def _mounted_source(service: dict[str, Any], container_path: str) -> str:
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if Path(container_path).is_relative_to(target):
            return str(Path(source) / Path(container_path).relative_to(target))
    raise AssertionError(f"{container_path} is not inside any volume of the service")


def test_every_platform_has_a_connector_service_behind_its_own_profile(services: dict[str, dict[str, Any]]) -> None:
    from connectors.cli import PLATFORMS

    connectors = _connector_services(services)
    assert sorted(connectors) == sorted(PLATFORMS)
    for platform, service in connectors.items():
        assert service.get("profiles") == [platform], f"{platform}: must not start with a plain `up`"
        assert service.get("restart") == "unless-stopped", platform
        for step in ("kafka-init", "migrate"):
            assert service["depends_on"][step]["condition"] == "service_completed_successfully", platform


def test_connectors_get_their_credentials_from_the_secret_file(services: dict[str, dict[str, Any]],
                                                                compose: dict[str, Any]) -> None:
    from connectors.platform_access import PLATFORM_ACCESS, credential_names

    secrets = compose.get("secrets") or {}
    for platform, service in _connector_services(services).items():
        command = service["command"]
        if not PLATFORM_ACCESS[platform].variables:
            assert "--secrets-file" not in command and not service.get("secrets"), f"{platform} needs no secret"
            continue
        path = command[command.index("--secrets-file") + 1]
        assert path.startswith("/run/secrets/"), f"{platform}: --secrets-file must be a Docker secret"
        name = path.removeprefix("/run/secrets/")
        assert name in (service.get("secrets") or []), f"{platform} does not mount the secret {name}"
        source = Path(secrets[name]["file"])
        assert not source.is_absolute() and source.parts[0] == "secrets", source
        # The secret file is never committed: git ignores it (secrets/.gitignore) and Docker's context skips it.
        ignore = (ROOT / "secrets" / ".gitignore").read_text().splitlines()
        assert "*" in ignore and f"!{source.name}" not in ignore
        assert "secrets" in (ROOT / ".dockerignore").read_text().splitlines()
        # Values in .env still reach the connector (and win over the file): env_file is the same .env.
        assert any(entry.get("path") == ".env" for entry in service["env_file"]), platform
    for name, service in app_services(services).items():
        leaked = credential_names() & set(environment_of(service))
        assert not leaked, f"{name} puts credentials in its environment block: {sorted(leaked)}"
        if name not in {f"ingest-{p}" for p in _connector_services(services)}:
            assert not service.get("secrets"), f"{name} is not a connector and must not mount platform secrets"


def test_env_example_lists_every_credential_empty(env_example: dict[str, str]) -> None:
    from connectors.platform_access import credential_names

    for name in credential_names():
        assert env_example.get(name) == "", f"{name} must be listed in .env.example, empty"


def test_connectors_and_worker_read_the_same_topics_file(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    topics_in_worker = Settings.from_env(environment_of(worker)).topics_file
    assert topics_in_worker is not None, "the worker must get SENTISTREAM_TOPICS_FILE (per-topic languages)"
    worker_source = _mounted_source(worker, str(topics_in_worker))
    assert (ROOT / worker_source).is_file(), worker_source
    for platform, service in _connector_services(services).items():
        command = service["command"]
        topics = command[command.index("--topics") + 1]
        assert _mounted_source(service, topics) == worker_source, platform


# --- docker-compose.yml: the dashboard, its read-only role, Prometheus and Grafana ----------------------


def test_worker_healthcheck_asks_health_for_its_status(services: dict[str, dict[str, Any]]) -> None:
    probe = services["worker"]["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "python", "-c"]
    assert "/health" in probe[3] and "urlopen" in probe[3]  # urlopen raises on /health's 503
    compile(probe[3], "healthcheck", "exec")


def test_dashboard_service_reads_through_the_read_only_role(services: dict[str, dict[str, Any]]) -> None:
    dashboard = services["dashboard"]
    command = dashboard["command"]
    parsed = build_parser().parse_args(command)
    assert command[0] == "dashboard" and parsed.host == "0.0.0.0"
    assert any(p.endswith(f":{parsed.port}") for p in dashboard["ports"])
    assert dashboard["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert str(parsed.port) in " ".join(dashboard["healthcheck"]["test"])
    # The postgres service creates the role on first start with the script that README documents.
    postgres = services["postgres"]
    initdb = _mounted_source(postgres, "/docker-entrypoint-initdb.d/10-dashboard-reader.sh")
    script = (ROOT / initdb).read_text()
    sql_path = re.search(r"-f (\S+)", script).group(1)
    assert (ROOT / _mounted_source(postgres, sql_path)).is_file()
    sql = (DEPLOY / "postgres" / "dashboard_reader.sql").read_text()
    assert "default_transaction_read_only = on" in sql and "GRANT SELECT" in sql
    assert not re.search(r"GRANT\s+(INSERT|UPDATE|DELETE|ALL)", sql, flags=re.IGNORECASE)


def _metric_names() -> dict[str, set[str]]:
    """Every series name stream/metrics.py exposes (with the _total/_bucket/... suffixes) -> its labels."""
    from prometheus_client.metrics import MetricWrapperBase

    from stream import metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",),
                "summary": ("_count", "_sum")}
    names: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            labels = set(value._labelnames) | ({"le"} if value._type == "histogram" else set())
            for suffix in suffixes[value._type]:
                names[value._name + suffix] = labels
    return names


def test_grafana_dashboard_queries_only_metrics_the_worker_exports(services: dict[str, dict[str, Any]]) -> None:
    exported = _metric_names()
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sentistream-worker.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bsentistream_[a-z_]+", expr)}
    assert used and sorted(used - set(exported)) == []
    for expr in exprs:
        labels = set().union(*(exported[n] for n in re.findall(r"\bsentistream_[a-z_]+", expr)))
        grouped = {g.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for g in group.split(",")}
        selected = set(re.findall(r"(\w+)=", "".join(re.findall(r"\{([^}]*)\}", expr))))
        assert grouped | selected <= labels, expr
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("posts per second", "lag", "batch latency", "dead letters", "media", "alerts"):
        assert topic in titles
    # Grafana loads it from the provisioned folder, with the provisioned Prometheus as its data source.
    grafana = services["grafana"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/sentistream.yml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    assert _mounted_source(grafana, f"{folder}/sentistream-worker.json") == "deploy/grafana/dashboards/sentistream-worker.json"
    sources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    assert uids == {sources[0]["uid"]}
    url = urlsplit(sources[0]["url"])
    assert url.hostname in services and services[url.hostname]["image"].startswith("prom/prometheus:")
    assert url.port == 9090


def test_prometheus_scrapes_every_worker_replica(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    config_path = _mounted_source(prometheus, "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load((ROOT / config_path).read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (dns,) = job["dns_sd_configs"]
    worker = Settings.from_env(environment_of(services["worker"]))
    assert dns["names"] == ["worker"] and dns["port"] == worker.web_port and worker.web_host == "0.0.0.0"
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
