"""docker-compose.kafka.yml cannot run here (no Docker), so it is held to the local stack's versions and ports."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stack.kafka import Kafka
from stack.manager import SERVICE_NAMES
from stack.redis_server import Redis
from stack.secrets import REDIS_PASSWORD, WEAVIATE_API_KEY, WEAVIATE_CLUSTER_PASSWORD
from stack.weaviate import Weaviate
from streams.config import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.kafka.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def defaults() -> Settings:
    return Settings.model_construct()  # the declared defaults, not this shell's CHATSTREAM_* overrides


def published(service: dict) -> dict[int, str]:
    """container port -> "host_ip:host_port" for each published port."""
    out = {}
    for spec in service.get("ports", []):
        host_ip, host_port, container_port = str(spec).split(":")
        out[int(container_port)] = f"{host_ip}:{host_port}"
    return out


OBSERVABILITY = {"prometheus", "grafana"}  # compose-only: Prometheus users' stack (stack/observability/)


def test_same_services(compose: dict) -> None:
    assert set(compose["services"]) == set(SERVICE_NAMES) | OBSERVABILITY


def test_prometheus_and_grafana_on_loopback_provisioned_from_the_repo(compose: dict, defaults: Settings) -> None:
    root = COMPOSE.parent
    prom, graf = compose["services"]["prometheus"], compose["services"]["grafana"]
    assert f"--web.listen-address={defaults.bind_host}:9090" in prom["command"]
    assert graf["environment"]["GF_SERVER_HTTP_ADDR"] == defaults.bind_host
    for svc in (prom, graf):
        assert svc["network_mode"] == "host" and "ports" not in svc  # reaches the worker on the host's loopback
        for volume in svc["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (root / source).exists(), source
    mounted = {v.split(":")[1] for v in prom["volumes"]}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/alerts.yml"} <= mounted


def test_versions_match_the_local_stack(compose: dict, defaults: Settings) -> None:
    images = {name: svc["image"] for name, svc in compose["services"].items()}
    assert images["kafka"] == f"apache/kafka:{defaults.kafka_version}"
    assert images["weaviate"] == f"semitechnologies/weaviate:{defaults.weaviate_version.lstrip('v')}"
    assert images["jaeger"] == f"jaegertracing/jaeger:{defaults.jaeger_version.lstrip('v')}"
    assert images["redis"].startswith("redis:7.")


def test_ports_match_the_local_stack_on_loopback(compose: dict, defaults: Settings) -> None:
    s, services, host = defaults, compose["services"], defaults.bind_host
    expected = {
        "kafka": [s.kafka_port],
        "redis": [s.redis_port],
        "weaviate": [s.weaviate_http_port, s.weaviate_grpc_port],
        "jaeger": [s.jaeger_otlp_grpc_port, s.jaeger_otlp_http_port, s.jaeger_query_port],
    }
    for name, ports in expected.items():
        assert published(services[name]) == {port: f"{host}:{port}" for port in ports}, name
    assert f"{host}:{s.kafka_port}" == s.kafka_bootstrap
    assert f"http://{host}:{s.jaeger_query_port}" == s.jaeger_query_url


def test_kafka_configured_like_the_local_broker(compose: dict, defaults: Settings, tmp_path) -> None:
    env = compose["services"]["kafka"]["environment"]
    local = dict(
        line.split("=", 1)
        for line in Kafka(Settings(home=tmp_path)).render_server_properties().splitlines()
        if line and not line.startswith("#")
    )
    for key in ("process.roles", "auto.create.topics.enable", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor", "group.initial.rebalance.delay.ms"):
        assert str(env["KAFKA_" + key.upper().replace(".", "_")]) == local[key], key
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{defaults.kafka_bootstrap}"
    assert len(env["CLUSTER_ID"]) == 22


def test_weaviate_has_no_vectorizer_and_same_grpc_port(compose: dict, defaults: Settings) -> None:
    env = compose["services"]["weaviate"]["environment"]
    assert env["DEFAULT_VECTORIZER_MODULE"] == "none"
    assert env["ENABLE_MODULES"] == ""
    assert int(env["GRPC_PORT"]) == defaults.weaviate_grpc_port
    assert "--port" in compose["services"]["weaviate"]["command"]
    command = compose["services"]["weaviate"]["command"]
    assert int(command[command.index("--port") + 1]) == defaults.weaviate_http_port


def test_redis_appends_only(compose: dict) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def _from_env(value: str) -> str:
    """The variable a compose value interpolates: "${NAME:?message}" -> NAME."""
    assert value.startswith("${") and value.endswith("}"), value
    return value[2:-1].split(":", 1)[0]


def test_weaviate_wants_the_same_credentials_as_the_local_one(compose: dict, tmp_path) -> None:
    env = compose["services"]["weaviate"]["environment"]
    local = Weaviate(Settings(home=tmp_path)).environment()
    for key in ("AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED", "AUTHENTICATION_APIKEY_ENABLED",
                "AUTHENTICATION_APIKEY_USERS", "CLUSTER_BASIC_AUTH_USERNAME"):
        assert str(env[key]) == local[key], key
    assert local["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] == "false"
    # compose takes the key from the same variable our clients read it from (Settings.weaviate_api_key)
    assert _from_env(env["AUTHENTICATION_APIKEY_ALLOWED_KEYS"]) == "CHATSTREAM_" + WEAVIATE_API_KEY.upper()
    assert _from_env(env["CLUSTER_BASIC_AUTH_PASSWORD"]) == "CHATSTREAM_" + WEAVIATE_CLUSTER_PASSWORD.upper()
    assert WEAVIATE_API_KEY in Settings.model_fields


def test_redis_wants_the_same_password_as_the_local_one(compose: dict, tmp_path) -> None:
    command = compose["services"]["redis"]["command"]
    assert _from_env(command[command.index("--requirepass") + 1]) == "CHATSTREAM_" + REDIS_PASSWORD.upper()
    assert REDIS_PASSWORD in Settings.model_fields
    local = Redis(Settings(home=tmp_path)).render_conf()
    assert "requirepass " + Settings(home=tmp_path).stack_secret(REDIS_PASSWORD) in local.splitlines()
