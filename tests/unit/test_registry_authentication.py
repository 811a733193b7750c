"""The registry's OIDC authentication: the declaration, what the registry host gets and when, the clients'
logins, the probes' expectations, and the lab provider's realm (admin sr-admin, everyone else read-only)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from event_broker_devtools import lab_identity_host, lab_idp
from event_broker_rollout.cluster import clients
from event_broker_rollout.config.base import ConfigError
from event_broker_rollout.config.components import PROBE_PRINCIPAL, components_of
from event_broker_rollout.config.environment import (
    Environment,
    RegistryAuthentication,
    load_environment,
    load_sizing_profiles,
)
from event_broker_rollout.evidence.results import Status
from event_broker_rollout.hosts import desired, tls
from event_broker_rollout.hosts.secret_files import write_secret
from event_broker_rollout.resources import registry_access
from event_broker_rollout.resources.subjects import SubjectSchema

ISSUER = "https://10.77.0.2:8443/realms/event-broker"


@pytest.fixture
def authenticated(tmp_path) -> Environment:
    """lab-mtls (its registry authenticates) with its CA, the provider's CA and the secrets in tmp_path."""
    environment = load_environment("lab-mtls")
    lab_identity_host.ensure_tls(tmp_path / "idp")
    secrets_file = tmp_path / "registry-clients.json"
    principals = [environment.security.admin_user, *components_of(environment).principals(), PROBE_PRINCIPAL]
    write_secret(secrets_file, json.dumps({p: f"{p}-secret-0123456789" for p in principals}))
    authentication = environment.schema_registry.authentication.model_copy(
        update={
            "ca_file": str(tmp_path / "idp" / "ca.crt"),
            "credentials": environment.schema_registry.authentication.credentials.model_copy(
                update={"path": str(secrets_file)}
            ),
        }
    )
    material = environment.security.tls.model_copy(update={"material_dir": str(tmp_path / "ca")})
    return environment.model_copy(
        update={
            "schema_registry": environment.schema_registry.model_copy(
                update={"authentication": authentication}
            ),
            "security": environment.security.model_copy(update={"tls": material}),
        }
    )


def registry_files(environment: Environment, phase: str) -> dict[str, str]:
    profile = load_sizing_profiles()[environment.sizing_profile]
    state = desired.desired_state(
        environment, environment.registries[0], environment.sizing_profile, profile, phase
    )
    return {managed.path: managed.content for managed in state.files}


def test_the_declaration_is_oidc_over_https_for_apicurio_only():
    declared = {
        "issuer": ISSUER,
        "token_url": f"{ISSUER}/protocol/openid-connect/token",
        "ca_file": "/etc/idp/ca.crt",
        "credentials": {"source": "file", "path": "/etc/idp/secrets.json"},
    }
    assert RegistryAuthentication.model_validate(declared).audience == "registry-api"
    with pytest.raises(ValueError, match="https://"):
        RegistryAuthentication.model_validate({**declared, "issuer": "http://10.77.0.2:8080/realms/x"})
    lab = load_environment("lab").model_dump(mode="json")
    for change, message in (
        ({"flavor": "confluent"}, "not built for the confluent flavor"),
        ({}, "needs the security section"),
    ):
        raw = {**lab, "schema_registry": {**lab["schema_registry"], **change, "authentication": declared}}
        if not change:
            raw["security"] = None
        with pytest.raises((ConfigError, ValueError), match=message):
            Environment.model_validate(raw)


def test_the_registry_authenticates_from_https_only_on_and_trusts_the_providers_ca(authenticated):
    for phase in ("plaintext", "listeners"):  # plain HTTP still open: no login may travel over it
        files = registry_files(authenticated, phase)
        assert "quarkus.oidc" not in files["/etc/schema-registry/application.properties"]
        assert "REGISTRY_TRUSTED_CA_FILE" not in files["/etc/schema-registry/registry.env"]
    files = registry_files(authenticated, "secured")
    properties = files["/etc/schema-registry/application.properties"]
    assert "quarkus.oidc.tenant-enabled=true" in properties
    assert f"quarkus.oidc.auth-server-url={ISSUER}" in properties
    assert "quarkus.oidc.token.audience=registry-api" in properties
    assert "apicurio.auth.role-based-authorization=true" in properties
    assert "quarkus.oidc.credentials" not in properties  # the registry needs no secret of its own
    assert (
        'REGISTRY_TRUSTED_CA_FILE="/etc/schema-registry/tls/oidc-provider-ca.crt"'
        in files["/etc/schema-registry/registry.env"]
    )
    provider_ca = Path(authenticated.schema_registry.authentication.ca_file).read_text()
    assert files["/etc/schema-registry/tls/oidc-provider-ca.crt"] == provider_ca


def test_only_a_ca_certificate_reaches_the_registrys_trust_store(tmp_path, authenticated):
    leaf = tmp_path / "idp" / "tls.crt"  # the provider's own server certificate: not a CA
    with pytest.raises(tls.TrustedCaError, match="not a CA certificate"):
        tls.trusted_ca_pem(str(leaf))
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(tls.TrustedCaError, match="not a readable PEM certificate"):
        tls.trusted_ca_pem(str(garbage))


def test_clients_log_in_as_their_principal_once_the_registry_authenticates(authenticated):
    assert "basic.auth.user.info" not in clients.registry_config(authenticated, "listeners")
    assert clients.registry_headers(authenticated, "listeners") == {}
    as_admin = clients.registry_config(authenticated, "secured")
    assert as_admin["basic.auth.user.info"] == "admin:admin-secret-0123456789"
    as_probe = clients.registry_config(authenticated, "secured", PROBE_PRINCIPAL)
    assert as_probe["basic.auth.user.info"] == f"{PROBE_PRINCIPAL}:{PROBE_PRINCIPAL}-secret-0123456789"
    assert clients.registry_headers(authenticated, "secured")["Authorization"].startswith("Basic ")
    anonymous = load_environment("lab")
    assert "basic.auth.user.info" not in clients.registry_config(anonymous, "secured")


def test_the_access_probes_expect_401_for_strangers_403_for_a_reader_writing(authenticated, monkeypatch):
    asked = []

    def answer(url, ca_file, *, method="GET", body=None, user=None):
        asked.append((method, url.rsplit("/", 2)[-2:], user[0] if user else None, body))
        if (
            user is None
            or user[1]
            not in json.loads(
                Path(authenticated.schema_registry.authentication.credentials.path).read_text()
            ).values()
        ):
            return registry_access.Answer(401)
        return registry_access.Answer(403 if method == "PUT" and user[0] != "admin" else 200)

    monkeypatch.setattr(registry_access, "request", answer)
    subject = SubjectSchema("t-value", "t", "e", "value", "{}", "FULL_TRANSITIVE", "phi", "x.avsc")
    results = registry_access.access_checks(authenticated, subject)
    assert {r.id: r.status for r in results} == {
        "registry.anonymous_read_refused": Status.PASS,
        "registry.anonymous_write_refused": Status.PASS,
        "registry.wrong_secret_refused": Status.PASS,
        "registry.read_only_write_refused": Status.PASS,
        "registry.read_only_read_served": Status.PASS,
        "registry.admin_served": Status.PASS,
    }
    # every write sets the catalog's own level: harmless even where a registry wrongly accepts it
    assert {body for method, *_, body in asked if method == "PUT"} == {
        b'{"compatibility": "FULL_TRANSITIVE"}'
    }
    evidence = json.dumps([r.to_dict() for r in results])
    assert "-secret-0123456789" not in evidence and "Basic " not in evidence

    monkeypatch.setattr(registry_access, "request", lambda *a, **k: registry_access.Answer(200))
    anonymous = registry_access.access_checks(authenticated, subject)
    assert {r.id for r in anonymous if r.status is Status.FAIL} == {
        "registry.anonymous_read_refused",
        "registry.anonymous_write_refused",
        "registry.wrong_secret_refused",
        "registry.read_only_write_refused",
    }


def test_the_lab_provider_gives_the_admin_sr_admin_and_everyone_else_read_only(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE", str(tmp_path))
    environment = load_environment("lab-mtls")
    document = lab_idp.realm([environment])
    roles = {user["serviceAccountClientId"]: user["realmRoles"] for user in document["users"]}
    assert roles.pop("admin") == ["sr-admin"]
    assert roles.pop(lab_idp.OTHER_APPLICATION) == ["sr-admin"]
    assert set(roles) == {*components_of(environment).principals(), PROBE_PRINCIPAL}
    assert all(granted == ["sr-readonly"] for granted in roles.values())
    confidential = [c for c in document["clients"] if not (c.get("bearerOnly") or c["publicClient"])]
    for client in confidential:
        audiences = [m for m in client["protocolMappers"] if m["protocolMapper"] == "oidc-audience-mapper"]
        if client["clientId"] == lab_idp.OTHER_APPLICATION:  # the admin role, but not for the registry
            assert audiences == []
            continue
        (mapper,) = audiences
        assert mapper["config"]["included.client.audience"] == "registry-api"
    secrets_file = Path(environment.schema_registry.authentication.credentials.path)
    assert stat.S_IMODE(os.stat(secrets_file).st_mode) == 0o600
    first = json.loads(secrets_file.read_text())
    assert {c["clientId"]: c["secret"] for c in confidential} == first
    assert lab_idp.realm([environment]) == document  # secrets generated once, the realm stable
