"""One flavor-aware registry URL: Apicurio's Confluent-compatible API lives under a path, Confluent's
Schema Registry serves it at its root. Every place that builds a registry client gets it from
``clients.registry_api_url``."""

from __future__ import annotations

import pytest

from event_broker_devtools import lab_connections
from event_broker_rollout.airflow import triggers
from event_broker_rollout.cluster import clients, health
from event_broker_rollout.compliance import facts
from event_broker_rollout.config.environment import load_environment

CCOMPAT = "/apis/ccompat/v7"


@pytest.fixture(params=["confluent", "apicurio"])
def environment(request):
    lab = load_environment("lab")
    registry = lab.schema_registry.model_copy(update={"flavor": request.param})
    return lab.model_copy(update={"schema_registry": registry})


def expected_suffix(environment) -> str:
    return CCOMPAT if environment.schema_registry.flavor == "apicurio" else ""


def test_the_stages_registry_client(environment):
    for phase in ("plaintext", "secured"):
        url = clients.registry_config(environment, phase)["url"]
        assert url == clients.registry_base_url(environment, phase) + expected_suffix(environment)


def test_the_airflow_connection(environment):
    connection = lab_connections.service_connections(environment)[environment.connections.schema_registry]
    assert connection["extra"]["url"] == f"http://10.77.0.11:8081{expected_suffix(environment)}"


def test_the_gate(environment, monkeypatch):
    asked = []
    monkeypatch.setattr(health, "registry_status", lambda api, ready, ca, headers: asked.append(api))
    triggers.health_probe(environment, "registry", "secured", None)()
    assert asked == [f"https://10.77.0.11:8443{expected_suffix(environment)}"]


def test_the_compliance_probe(environment, monkeypatch):
    asked = []
    monkeypatch.setattr(facts, "status_of", lambda url, ca: (asked.append(url), (200, None))[1])
    monkeypatch.setattr(facts, "SchemaRegistryClient", lambda config: asked.append(config["url"]))
    facts.registry(environment, "/nonexistent/ca.crt", [])
    assert asked[0] == f"https://10.77.0.11:8443{expected_suffix(environment)}/subjects"
    assert asked[-1] == f"https://10.77.0.11:8443{expected_suffix(environment)}"


def test_the_confluent_flavor_has_no_apicurio_path():
    confluent = load_environment("dev")
    assert confluent.schema_registry.flavor == "confluent"
    assert CCOMPAT not in clients.registry_api_url(confluent, "https://sr:8443")


def test_the_loopback_tests_url():
    assert clients.flavor_api_url("apicurio", "http://127.0.0.1:8081") == f"http://127.0.0.1:8081{CCOMPAT}"
    assert clients.flavor_api_url("confluent", "https://[::1]:8081") == "https://[::1]:8081"
