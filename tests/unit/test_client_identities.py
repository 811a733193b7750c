"""mTLS client identities: a certificate per principal from the cluster CA, the clients built on them, the
logins the secure listener must refuse, and no password anywhere when the environment chooses mTLS."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from event_broker_rollout.cluster import clients, health
from event_broker_rollout.config.base import ConfigError
from event_broker_rollout.config.components import PROBE_PRINCIPAL, components_of
from event_broker_rollout.config.environment import Environment, load_environment
from event_broker_rollout.evidence import audit as audit_module
from event_broker_rollout.evidence.results import Status
from event_broker_rollout.hosts import tls
from event_broker_rollout.hosts.remote import RemoteError
from event_broker_rollout.preflight import checks as preflight_checks
from event_broker_rollout.resources import access


def with_security(environment: Environment, **changes) -> Environment:
    return environment.model_copy(update={"security": environment.security.model_copy(update=changes)})


@pytest.fixture
def lab_mtls(tmp_path) -> Environment:
    environment = load_environment("lab")
    material = environment.security.tls.model_copy(update={"material_dir": str(tmp_path / "ca")})
    return with_security(environment, tls=material, client_authentication="mtls", credentials=None)


def certificate(path: str | Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def test_a_principal_gets_a_client_certificate_from_the_cluster_ca_kept_until_renewal(lab_mtls):
    issued = tls.client_identity(lab_mtls, "analytics")
    assert issued.issued
    leaf = certificate(issued.certificate)
    assert leaf.subject.rfc4514_string() == "CN=analytics"  # the secure listener maps it to User:analytics
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # a client, never a server
    ca = certificate(Path(lab_mtls.security.tls.material_dir) / "ca.crt")
    leaf.verify_directly_issued_by(ca)
    assert stat.S_IMODE(os.stat(issued.key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(issued.key.parent).st_mode) == 0o700

    first = issued.certificate.read_bytes()
    again = tls.client_identity(lab_mtls, "analytics")
    assert not again.issued and again.certificate.read_bytes() == first

    # Inside the renewal window: a new certificate, the old one replaced.
    renewing = with_security(
        lab_mtls, tls=lab_mtls.security.tls.model_copy(update={"renew_before_days": 400})
    )
    renewed = tls.client_identity(renewing, "analytics")
    assert renewed.issued and renewed.certificate.read_bytes() != first


def test_a_client_certificate_not_from_the_cluster_ca_is_replaced(lab_mtls):
    mine = tls.client_identity(lab_mtls, "fhir-server")
    foreign_certificate, foreign_key = tls.foreign_client_identity("fhir-server")
    mine.certificate.write_bytes(foreign_certificate.read_bytes())
    mine.key.write_bytes(foreign_key.read_bytes())
    replaced = tls.client_identity(lab_mtls, "fhir-server")
    assert replaced.issued
    certificate(replaced.certificate).verify_directly_issued_by(
        certificate(Path(lab_mtls.security.tls.material_dir) / "ca.crt")
    )


def test_provided_client_material_is_validated_never_replaced(lab_mtls):
    provided = with_security(lab_mtls, tls=lab_mtls.security.tls.model_copy(update={"mode": "provided"}))
    with pytest.raises(
        tls.TlsMaterialError,
        match=r"analytics: provided client certificate unusable: missing .*analytics\.crt",
    ):
        tls.client_identity(provided, "analytics")
    issued = tls.client_identity(lab_mtls, "analytics")  # the same folder, as an operator's CA would fill it
    assert tls.client_identity(provided, "analytics").certificate == issued.certificate
    issued.certificate.write_bytes(tls.client_identity(lab_mtls, "consent-service").certificate.read_bytes())
    with pytest.raises(tls.TlsMaterialError, match="does not match the certificate"):
        tls.client_identity(provided, "analytics")


def test_an_mtls_client_carries_its_certificate_and_no_password(lab_mtls):
    config = clients.kafka_config(lab_mtls, "secured", "analytics", None)
    assert config["security.protocol"] == "SSL"
    assert config["bootstrap.servers"] == "10.77.0.11:9094,10.77.0.12:9094,10.77.0.13:9094"
    assert certificate(config["ssl.certificate.location"]).subject.rfc4514_string() == "CN=analytics"
    assert not [key for key in config if key.startswith("sasl.") or "password" in key]
    # Before the secure listener exists, the client is a plaintext one whatever the mechanism.
    assert clients.kafka_config(lab_mtls, "plaintext", "analytics", None) == {
        "bootstrap.servers": "10.77.0.11:9092,10.77.0.12:9092,10.77.0.13:9092"
    }
    with pytest.raises(ValueError, match="needs a principal"):
        clients.kafka_config(lab_mtls, "secured", None, None)


def test_principal_clients_read_no_credentials_under_mtls(lab_mtls):
    # No credentials source is declared: reading one would raise.
    config = clients.principal_config(lab_mtls, "secured", PROBE_PRINCIPAL)
    assert certificate(config["ssl.certificate.location"]).subject.rfc4514_string() == f"CN={PROBE_PRINCIPAL}"


def test_the_logins_to_refuse_under_mtls_are_no_certificate_and_the_same_name_from_another_ca(lab_mtls):
    approved = clients.kafka_config(lab_mtls, "secured", "admin", None)
    refuse = health.clients_to_refuse(approved)
    assert refuse["none"]["security.protocol"] == "SSL"
    assert "ssl.certificate.location" not in refuse["none"] and "ssl.key.location" not in refuse["none"]
    impostor = certificate(refuse["wrong"]["ssl.certificate.location"])
    assert impostor.subject.rfc4514_string() == "CN=admin"
    ca = certificate(approved["ssl.ca.location"])
    with pytest.raises(ValueError):
        impostor.verify_directly_issued_by(ca)
    assert refuse["wrong"]["ssl.ca.location"] == approved["ssl.ca.location"]  # it still trusts the brokers


def test_no_scram_user_is_approved_under_mtls(lab_mtls):
    components = components_of(lab_mtls)
    assert access.approved_scram_users(lab_mtls, components) == set()
    scram = with_security(lab_mtls, client_authentication="scram")
    assert access.approved_scram_users(scram, components) == {"admin", *components.principals()}


def test_scram_needs_a_credentials_source_and_mtls_does_not(tmp_path):
    text = (Path(__file__).resolve().parents[2] / "config" / "environments" / "lab.yaml").read_text()
    without = "\n".join(line for line in text.splitlines() if not line.strip().startswith("credentials:"))
    (tmp_path / "scram.yaml").write_text(without)
    with pytest.raises(
        ConfigError, match="security: credentials: required when client_authentication is scram"
    ):
        load_environment(str(tmp_path / "scram.yaml"))
    (tmp_path / "mtls.yaml").write_text(
        without.replace("client_authentication: scram", "client_authentication: mtls")
    )
    assert load_environment(str(tmp_path / "mtls.yaml")).security.credentials is None


def test_every_issue_is_audited_wherever_it_happens_and_a_reuse_is_not(lab_mtls, monkeypatch):
    logged: list[dict] = []

    class Recorder:
        def info(self, event: str, **fields) -> None:
            logged.append({"event": event, **fields})

    monkeypatch.setattr(audit_module, "_log", Recorder())
    tls.client_identity(lab_mtls, "data-quality")  # a client asking for its identity issues it
    tls.client_identity(lab_mtls, "data-quality")
    records = [line["audit"] for line in logged if line["event"] == "ebr.audit"]
    assert [(r["action"], r["target"], r["outcome"]) for r in records] == [
        ("security.client_certificate", "data-quality", "issued")
    ]
    assert "PRIVATE KEY" not in json.dumps(records)


def test_preflight_checks_provided_client_certificates_and_trusts_the_internal_ca_to_issue(lab_mtls):
    principals = ["admin", "analytics", "fhir-server"]
    [issued_later] = preflight_checks.client_identity_checks(lab_mtls, principals)
    assert (issued_later.id, issued_later.status) == ("sec.auth.client_certificates", Status.PASS)

    for principal in ("admin", "analytics"):  # fhir-server's files are not there
        tls.client_identity(lab_mtls, principal)
    provided = with_security(
        lab_mtls,
        tls=lab_mtls.security.tls.model_copy(update={"mode": "provided", "renew_before_days": 30}),
    )
    by_principal = {r.id: r for r in preflight_checks.client_identity_checks(provided, principals)}
    assert by_principal["sec.auth.client_certificate[admin]"].status is Status.PASS
    missing = by_principal["sec.auth.client_certificate[fhir-server]"]
    assert missing.status is Status.FAIL and "fhir-server.crt" in missing.observed
    renewing = with_security(
        provided, tls=provided.security.tls.model_copy(update={"renew_before_days": 400})
    )
    [soon] = preflight_checks.client_identity_checks(renewing, ["analytics"])
    assert soon.status is Status.WARN and "expires in" in soon.observed
    (Path(lab_mtls.security.tls.material_dir) / "clients" / "admin.key").write_text("not a key\n")
    [garbled] = preflight_checks.client_identity_checks(provided, ["admin"])
    assert garbled.status is Status.FAIL and garbled.observed.startswith("unreadable: ")
    scram = with_security(lab_mtls, client_authentication="scram")
    assert preflight_checks.client_identity_checks(scram, principals) == []


@pytest.mark.parametrize(
    ("recorded", "target", "checked"),
    [
        ("plaintext", "listeners", False),  # a first migration: no secure listener to log in to yet
        ("listeners", "listeners", True),  # resumed: the secure listener exists
        ("secured", "listeners", True),  # a re-run: checked once, at the first phase
        ("secured", "interbroker", False),
        ("secured", "secured", False),
    ],
)
def test_the_mechanism_guard_runs_once_per_run_where_the_secure_listener_exists(
    lab_mtls, monkeypatch, recorded, target, checked
):
    from event_broker_rollout.security import stage

    logins: list[dict] = []

    def refused(config, *_, **__):
        logins.append(config)
        return "_SSL: ssl/tls alert bad certificate"

    monkeypatch.setattr(stage.fleet, "recorded_phase", lambda environment: recorded)
    monkeypatch.setattr(stage.clients, "admin_config", lambda environment, phase: {"phase": phase})
    monkeypatch.setattr(stage.health, "login_error", refused)
    monkeypatch.setattr(stage.fleet, "plan_environment", lambda *a, **k: {})
    monkeypatch.setattr(stage.fleet, "planned_hosts", lambda plans: None)
    monkeypatch.setattr(stage.fleet, "configure_hosts", lambda environment, plans: [])
    if checked:
        with pytest.raises(RemoteError, match="refused the admin's mtls login"):
            stage.configure_phase(lab_mtls, target)
        assert logins == [{"phase": "secured"}]
    else:
        stage.configure_phase(lab_mtls, target)
        assert logins == []
