from __future__ import annotations

import datetime as dt
import json
import os
import stat

import pytest

from event_broker_rollout.components import load_components
from event_broker_rollout.environment import load_environment
from event_broker_rollout.security import access, layout, tls
from event_broker_rollout.security.credentials import CredentialsError, load_credentials


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
    assert moved_settings["super.users"] == "User:lab1;User:lab2;User:lab3;User:admin"

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


def test_mtls_and_rendered_kerberos_and_ldap_options(lab):
    from event_broker_rollout.environment import Kerberos, Ldap

    security = lab.security.model_copy(update={"client_authentication": "mtls"})
    _, values = settings(lab.model_copy(update={"security": security}), "lab1", "secured")
    assert values["listener.name.secure.ssl.client.auth"] == "required"
    security = lab.security.model_copy(
        update={
            "kerberos": Kerberos(realm="EXAMPLE.ORG", keytab_dir="/etc/kafka/keytabs"),
            "ldap": Ldap(
                url="ldaps://ldap.example.org:636", user_dn_template="uid={username},dc=example,dc=org"
            ),
        }
    )
    _, values = settings(lab.model_copy(update={"security": security}), "lab1", "secured")
    assert values["listener.name.secure.sasl.enabled.mechanisms"] == "SCRAM-SHA-512,GSSAPI,PLAIN"
    assert "EXAMPLE.ORG" in values["listener.name.secure.gssapi.sasl.jaas.config"]
    assert values["ldap.java.naming.provider.url"] == "ldaps://ldap.example.org:636"


def test_internal_ca_is_private_and_node_certificates_cover_every_name(lab, tmp_path):
    material = tls.node_material(lab, lab.host("lab2"))
    ca_dir = tmp_path / "ca"
    assert stat.S_IMODE(os.stat(ca_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(ca_dir / "ca.key").st_mode) == 0o600
    assert tls.validate_node_material(material, lab.host("lab2"), min_days=30) == []
    assert tls.node_material(lab, lab.host("lab2")) == material  # kept, not re-issued on every run
    assert tls.validate_node_material(material, lab.host("lab1"), min_days=30) == [
        "SANs lack lab1, 10.77.0.11"
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
    assert (
        access.quota_command("analytics", {"consumer_byte_rate": 1024})
        == "--alter --entity-type users --entity-name analytics --add-config consumer_byte_rate=1024"
    )


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
