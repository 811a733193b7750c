from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509

from event_broker_rollout.cluster import clients
from event_broker_rollout.config.components import components_of, load_components
from event_broker_rollout.config.credentials import CredentialsError, load_credentials
from event_broker_rollout.config.environment import load_environment
from event_broker_rollout.hosts import listeners as layout
from event_broker_rollout.hosts import tls
from event_broker_rollout.hosts.remote import RemoteError
from event_broker_rollout.resources import access


@pytest.fixture
def lab(tmp_path):
    environment = load_environment("lab")
    tls_settings = environment.security.tls.model_copy(update={"material_dir": str(tmp_path / "ca")})
    credentials = environment.security.credentials.model_copy(
        update={"path": str(tmp_path / "credentials.json")}
    )
    security = environment.security.model_copy(update={"tls": tls_settings, "credentials": credentials})
    return environment.model_copy(update={"security": security})


def settings(environment, host_name, phase):
    built = layout.layout_for_phase(environment, environment.host(host_name), phase)
    return built, dict(built.settings)


def test_phases_move_clients_then_brokers_then_close_plaintext(lab):
    plain, plain_settings = settings(lab, "lab1", "plaintext")
    assert plain.listeners == ("CLIENT://10.77.0.11:9092", "CONTROLLER://10.77.0.11:9093")
    assert plain.inter_broker_listener == "CLIENT" and "authorizer.class.name" not in plain_settings
    assert (
        plain_settings["listener.name.controller.ssl.client.auth"] == "required"
    )  # TLS quorum from the start

    added, added_settings = settings(lab, "lab1", "listeners")
    assert "SECURE://10.77.0.11:9094" in added.listeners and "INTERNAL://10.77.0.11:9095" in added.listeners
    assert added.inter_broker_listener == "CLIENT"
    assert added_settings["listener.name.secure.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"

    moved, moved_settings = settings(lab, "lab1", "interbroker")
    assert moved.inter_broker_listener == "INTERNAL"
    assert moved_settings["allow.everyone.if.no.acl.found"] == "true"
    assert moved_settings["super.users"] == "User:node-lab1;User:node-lab2;User:node-lab3;User:admin"

    secured, secured_settings = settings(lab, "lab1", "secured")
    assert not any(listener.startswith("CLIENT://") for listener in secured.listeners)
    assert secured_settings["allow.everyone.if.no.acl.found"] == "false"
    assert secured_settings["ssl.enabled.protocols"] == "TLSv1.3,TLSv1.2"
    for phase in layout.PHASES:
        _, values = settings(lab, "lab2", phase)
        assert not [key for key in values if "password" in key], (
            phase
        )  # brokers authenticate with certificates


def test_client_phase_never_uses_a_listener_that_does_not_exist_yet():
    assert layout.client_phase("plaintext", "listeners") == "plaintext"
    assert layout.client_phase("listeners", "interbroker") == "listeners"
    assert layout.client_phase("interbroker", "secured") == "interbroker"


def test_mtls_and_rendered_ldap_options(lab):
    from event_broker_rollout.config.environment import Ldap

    security = lab.security.model_copy(update={"client_authentication": "mtls"})
    _, values = settings(lab.model_copy(update={"security": security}), "lab1", "secured")
    assert values["listener.name.secure.ssl.client.auth"] == "required"
    security = lab.security.model_copy(
        update={
            "ldap": Ldap(
                url="ldaps://ldap.example.org:636", user_dn_template="uid={username},dc=example,dc=org"
            ),
        }
    )
    _, values = settings(lab.model_copy(update={"security": security}), "lab1", "secured")
    assert values["listener.name.secure.sasl.enabled.mechanisms"] == "SCRAM-SHA-512,PLAIN"
    assert values["ldap.java.naming.provider.url"] == "ldaps://ldap.example.org:636"


def test_internal_ca_is_private_and_node_certificates_cover_every_name(lab, tmp_path):
    material = tls.node_material(lab, lab.host("lab2"))
    ca_dir = tmp_path / "ca"
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(ca_dir / "ca.key").st_mode) == 0o600
    assert tls.validate_node_material(material, lab.host("lab2"), min_days=30) == []
    assert tls.node_material(lab, lab.host("lab2")) == material  # kept, not re-issued on every run
    assert tls.validate_node_material(material, lab.host("lab1"), min_days=30) == [
        "SANs lack lab1, 10.77.0.11",
        "subject CN=lab2 does not begin with CN=lab1 (the node's principal is User:node-<CN>)",
    ]


def test_provided_material_problems_are_named(lab, tmp_path):
    ca_cert, ca_key = tls.ensure_internal_ca(tmp_path / "pki", "test")
    other_cert, other_key = tls.ensure_internal_ca(tmp_path / "other", "other")
    host = lab.host("lab1")
    good = tls.issue_node_certificate(host, ca_cert, ca_key, 365)
    foreign = tls.issue_node_certificate(host, other_cert, other_key, 365)
    short = tls.issue_node_certificate(host, ca_cert, ca_key, 3)
    assert tls.validate_node_material(good, host, 30) == []
    assert "the private key does not match the certificate" in tls.validate_node_material(
        tls.NodeMaterial(host.name, good.cert_pem, foreign.key_pem, good.ca_pem), host, 30
    )
    assert any(
        "chain broken" in p
        for p in tls.validate_node_material(
            tls.NodeMaterial(host.name, foreign.cert_pem, foreign.key_pem, good.ca_pem), host, 30
        )
    )
    assert any("expires in" in p for p in tls.validate_node_material(short, host, 30))
    assert short.not_after() < dt.datetime.now(dt.UTC) + dt.timedelta(days=4)


def test_grants_are_least_privilege_with_prefixes_for_domains():
    grants = access.desired_grants(load_components())
    labels = {g.label() for g in grants}
    assert "User:ehr-adt-adapter WRITE TOPIC:LITERAL:healthcare.patient.upserted.v1" in labels
    assert "User:data-quality READ TOPIC:PREFIXED:healthcare." in labels
    assert "User:analytics READ GROUP:PREFIXED:analytics" in labels
    assert not [g for g in grants if g.principal == "User:ebr-probe"]
    assert not [g for g in grants if g.principal == "User:analytics" and g.operation == "WRITE"]
    assert not [g for g in grants if g.principal == "User:*" or g.name == "*"]


def test_quota_parsing_ignores_scram_lines():
    output = "Quota configs for user-principal 'fhir-server' are consumer_byte_rate=1.048576E7, producer_byte_rate=5242880.0\nSCRAM credential configs for user-principal 'admin' are SCRAM-SHA-512=iterations=8192\n"
    assert access.parse_quotas(output) == {
        "fhir-server": {"consumer_byte_rate": 10485760, "producer_byte_rate": 5242880}
    }
    assert access.quota_command("analytics", {"consumer_byte_rate": 1024}) == [
        "--alter",
        "--entity-type",
        "users",
        "--entity-name",
        "analytics",
        "--add-config",
        "consumer_byte_rate=1024",
    ]


def test_credentials_file_must_be_private(lab, tmp_path):
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"admin": "x" * 24}))
    os.chmod(path, 0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        load_credentials(lab)
    os.chmod(path, 0o600)
    assert load_credentials(lab) == {"admin": "x" * 24}
    path.write_text(json.dumps({"admin": "short"}))
    with pytest.raises(CredentialsError, match="at least 16"):
        load_credentials(lab)


def kafka_principal(rules: str, distinguished_name: str) -> str:
    """What Kafka's SslPrincipalMapper makes of a certificate's DN under ``rules``: the first
    RULE:pattern/replacement/ whose pattern matches the whole DN, else DEFAULT (the DN as it is)."""
    assert rules.endswith(",DEFAULT")
    for pattern, replacement in re.findall(r"RULE:((?:\\.|[^/])*)/((?:\\.|[^/])*)/", rules):
        match = re.fullmatch(pattern, distinguished_name)
        if match:
            return "User:" + match.expand(re.sub(r"\$(\d)", r"\\\1", replacement))
    return "User:" + distinguished_name


def test_a_node_certificate_is_a_principal_of_its_own_never_a_scram_users(lab, tmp_path):
    ca_cert, ca_key = tls.ensure_internal_ca(tmp_path / "pki", "test")
    analytics = lab.host("lab2").model_copy(update={"name": "analytics"})  # a host named like a component
    material = tls.issue_node_certificate(analytics, ca_cert, ca_key, 365)
    subject = x509.load_pem_x509_certificate(material.cert_pem.encode()).subject.rfc4514_string()
    assert subject == "CN=analytics"
    assert kafka_principal(layout.PRINCIPAL_RULES, subject) == "User:node-analytics"
    assert (
        kafka_principal(layout.PRINCIPAL_RULES, "CN=analytics,OU=Kafka,O=Hospital") == "User:node-analytics"
    )
    assert kafka_principal(layout.PRINCIPAL_RULES, "CN=Lab1,O=Other") == "User:CN=Lab1,O=Other"
    hosts = [analytics if h.name == "lab2" else h for h in lab.hosts]
    renamed = lab.model_copy(update={"hosts": hosts})
    assert layout.super_users(renamed) == [
        "User:node-lab1",
        "User:node-analytics",
        "User:node-lab3",
        "User:admin",
    ]
    _, values = settings(renamed, "lab1", "secured")
    assert values["ssl.principal.mapping.rules"] == layout.PRINCIPAL_RULES
    assert "User:analytics" not in values["super.users"].split(";")  # the component stays an ordinary user
    # mTLS clients keep their CN as the principal their ACLs name; nodes keep theirs on every other listener.
    security = lab.security.model_copy(update={"client_authentication": "mtls"})
    _, mtls = settings(lab.model_copy(update={"security": security}), "lab1", "secured")
    assert kafka_principal(mtls["listener.name.secure.ssl.principal.mapping.rules"], "CN=analytics") == (
        "User:analytics"
    )
    assert mtls["ssl.principal.mapping.rules"] == layout.PRINCIPAL_RULES


@pytest.mark.parametrize(
    "config",
    [
        {"bootstrap.servers": "127.0.0.1:9092"},
        {"bootstrap.servers": "127.0.0.1:9095", "security.protocol": "PLAINTEXT"},
        {"bootstrap.servers": "127.0.0.1:9095", "security.protocol": "SASL_PLAINTEXT"},
        {"bootstrap.servers": "127.0.0.1:9095,127.0.0.1:9092", "security.protocol": "SSL"},
        {"bootstrap.servers": "", "security.protocol": "SSL"},
    ],
)
def test_scram_credentials_are_refused_a_plaintext_channel_before_any_connection(config):
    # Refused before a client exists: were it to connect, the login check would fail differently (no broker).
    with pytest.raises(access.PlaintextChannelError):
        access.ensure_scram_users(config, {"admin": "x" * 24}, ["admin"], plaintext_ports=[9092])


def test_scram_users_are_created_over_the_internal_listener_with_a_node_identity(lab):
    config = clients.node_admin_config(lab)
    assert access.scram_channel(config, [lab.kafka.listeners.client_port]) == {
        "protocol": "SSL",
        "bootstrap": ["10.77.0.11:9095", "10.77.0.12:9095", "10.77.0.13:9095"],
    }
    certificate = x509.load_pem_x509_certificate(Path(config["ssl.certificate.location"]).read_bytes())
    assert certificate.subject.rfc4514_string() == "CN=lab1"  # User:node-lab1, a super user
    assert stat.S_IMODE(os.stat(config["ssl.key.location"]).st_mode) == 0o600
    assert not [
        key for key in config if "password" in key or key.endswith(".pem")
    ]  # files, no key in a setting


def test_users_wait_for_the_internal_listener(lab, monkeypatch):
    from event_broker_rollout.security import stage

    passwords = {user: "p" * 24 for user in ["admin", *components_of(lab).principals()]}
    Path(lab.security.credentials.path).write_text(json.dumps(passwords))
    os.chmod(lab.security.credentials.path, 0o600)
    monkeypatch.setattr(stage.fleet, "recorded_phase", lambda environment: "plaintext")
    with pytest.raises(RemoteError, match="INTERNAL TLS listener"):
        stage.ensure_client_identities(lab)
