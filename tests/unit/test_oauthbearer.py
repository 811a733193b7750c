"""Kafka's OAUTHBEARER: the declaration, what the brokers get (validator, JWKS over the provider's CA, the
URL allow-list), the clients' token logins, the login that must be refused, the stage's token evidence
and the lab provider's realm (the cluster's audience, a short-lived client)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from event_broker_devtools import lab_identity_host, lab_idp
from event_broker_rollout.cluster import clients, health, oidc
from event_broker_rollout.compliance import checks_access, facts
from event_broker_rollout.compliance.facts import HostFacts
from event_broker_rollout.config.catalog import load_catalog, load_policies
from event_broker_rollout.config.components import PROBE_PRINCIPAL, components_of
from event_broker_rollout.config.credentials import CredentialsError
from event_broker_rollout.config.environment import Environment, load_environment, load_sizing_profiles
from event_broker_rollout.config.policy import load_policy
from event_broker_rollout.config.validation import validate_environment
from event_broker_rollout.evidence.results import Status
from event_broker_rollout.hosts import desired, listeners
from event_broker_rollout.hosts.secret_files import write_secret

AUDIENCE = "oidc-audience-mapper"
JWKS = "https://10.77.0.2:8443/realms/event-broker/protocol/openid-connect/certs"


@pytest.fixture
def oauth(tmp_path) -> Environment:
    """lab-oauth with the provider's CA and the client secrets in tmp_path."""
    environment = load_environment("lab-oauth")
    lab_identity_host.ensure_tls(tmp_path / "idp")
    secrets_file = tmp_path / "oidc-clients.json"
    principals = [environment.security.admin_user, *components_of(environment).principals()]
    write_secret(secrets_file, json.dumps({p: f"{p}-secret-0123456789" for p in principals}))
    provider = environment.security.oauthbearer.model_copy(
        update={
            "ca_file": str(tmp_path / "idp" / "ca.crt"),
            "credentials": environment.security.oauthbearer.credentials.model_copy(
                update={"path": str(secrets_file)}
            ),
        }
    )
    material = environment.security.tls.model_copy(update={"material_dir": str(tmp_path / "ca")})
    security = environment.security.model_copy(update={"oauthbearer": provider, "tls": material})
    return environment.model_copy(update={"security": security})


def test_oauthbearer_needs_its_provider_named_over_https():
    raw = load_environment("lab-oauth").model_dump(mode="json")
    with pytest.raises(ValueError, match="oauthbearer: required when client_authentication is oauthbearer"):
        Environment.model_validate({**raw, "security": {**raw["security"], "oauthbearer": None}})
    plain = {**raw["security"]["oauthbearer"], "jwks_url": JWKS.replace("https://", "http://")}
    with pytest.raises(ValueError, match="https://"):
        Environment.model_validate({**raw, "security": {**raw["security"], "oauthbearer": plain}})


def test_brokers_verify_tokens_against_the_providers_keys(oauth):
    settings = dict(listeners.secure_listener_settings(oauth, oauth.brokers[0]))
    assert settings["listener.name.secure.sasl.enabled.mechanisms"] == "OAUTHBEARER"  # nothing else
    assert settings["listener.name.secure.oauthbearer.sasl.server.callback.handler.class"].endswith(
        "OAuthBearerValidatorCallbackHandler"
    )
    assert settings["sasl.oauthbearer.jwks.endpoint.url"] == JWKS
    assert settings["sasl.oauthbearer.expected.audience"] == "kafka"
    assert settings["sasl.oauthbearer.expected.issuer"] == oauth.security.oauthbearer.issuer
    assert settings["sasl.oauthbearer.sub.claim.name"] == "kafka_principal"
    jaas = settings["listener.name.secure.oauthbearer.sasl.jaas.config"]
    assert f'ssl.truststore.location="{listeners.OIDC_PROVIDER_CA}"' in jaas
    assert "clientSecret" not in jaas  # the brokers hold no secret at the provider
    layout = listeners.layout_for_phase(oauth, oauth.brokers[0], "secured")
    assert "SECURE:SASL_SSL" in layout.protocol_map and layout.inter_broker_listener == "INTERNAL"


def test_a_broker_gets_the_providers_ca_and_may_fetch_only_the_jwks(oauth):
    profile = load_sizing_profiles()[oauth.sizing_profile]
    state = desired.desired_state(oauth, oauth.brokers[1], oauth.sizing_profile, profile, "secured")
    files = {managed.path: managed for managed in state.files}
    ca = files[listeners.OIDC_PROVIDER_CA]
    assert ca.content == Path(oauth.security.oauthbearer.ca_file).read_text()
    assert "kafka" in ca.restarts
    env_file = files["/etc/kafka/kafka.env"].content
    assert f'KAFKA_OPTS="-D{listeners.ALLOWED_URLS_PROPERTY}={JWKS}"' in env_file
    lab = load_environment("lab")  # SCRAM: no allow-list, no provider CA
    plain = desired.desired_state(lab, lab.brokers[1], lab.sizing_profile, profile, "secured")
    assert "KAFKA_OPTS" not in {m.path: m for m in plain.files}["/etc/kafka/kafka.env"].content
    assert listeners.OIDC_PROVIDER_CA not in {m.path for m in plain.files}


def test_clients_fetch_their_own_token_and_the_admin_needs_no_connection(oauth):
    config = clients.principal_config(oauth, "secured", "analytics")
    assert config["sasl.mechanism"] == "OAUTHBEARER" and config["sasl.oauthbearer.method"] == "oidc"
    assert config["sasl.oauthbearer.client.id"] == "analytics"
    assert config["sasl.oauthbearer.client.secret"] == "analytics-secret-0123456789"
    assert config["https.ca.location"] == oauth.security.oauthbearer.ca_file
    assert (
        config["ssl.ca.location"].endswith("ca.crt")
        and config["ssl.ca.location"] != config["https.ca.location"]
    )
    assert not clients.admin_login_in_connection(oauth)
    assert clients.admin_config(oauth, "secured")["sasl.oauthbearer.client.id"] == "admin"
    assert clients.admin_login_in_connection(load_environment("lab"))
    with pytest.raises(CredentialsError, match="no secret for nobody"):
        clients.principal_config(oauth, "secured", "nobody")


def test_the_login_to_refuse_is_an_unsigned_token_with_no_secret(oauth):
    refuse = health.clients_to_refuse(clients.principal_config(oauth, "secured", "admin"))
    assert refuse["none"]["security.protocol"] == "SSL"
    wrong = refuse["wrong"]
    assert wrong["sasl.oauthbearer.config"] == "principal=admin"
    assert wrong["enable.sasl.oauthbearer.unsecure.jwt"] is True
    assert not any("secret" in key or "token.endpoint" in key for key in wrong)


def _jwt(claims: dict) -> str:
    encode = lambda part: base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")  # noqa: E731
    return f"{encode({'alg': 'RS256'})}.{encode(claims)}.c2lnbmF0dXJl"


def test_token_evidence_says_who_and_for_whom_without_the_token():
    token = _jwt(
        {"azp": "analytics", "iss": "https://idp/realms/x", "aud": "kafka", "exp": int(time.time()) + 60}
    )
    evidence = oidc.token_evidence(oidc.unverified_claims(token), "azp")
    assert evidence["principal"] == "analytics" and evidence["audience"] == ["kafka"]
    assert 0 < evidence["expires_in_s"] <= 60
    assert token not in json.dumps(evidence) and "c2lnbmF0dXJl" not in json.dumps(evidence)
    assert oidc.audiences({"aud": ["registry-api", "kafka"]}) == ["registry-api", "kafka"]
    with pytest.raises(oidc.TokenRefused, match="not a JWT"):
        oidc.unverified_claims("opaque-token")


def test_validation_checks_the_client_secrets_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE", str(tmp_path))
    (tmp_path / "secrets").mkdir()
    secrets_file = tmp_path / "secrets" / "oidc-clients.json"
    secrets_file.write_text("{}")
    secrets_file.chmod(0o644)
    problems = [(p.path, p.message) for p in validate_environment("lab-oauth").problems]
    assert (
        "security.oauthbearer.credentials.path",
        "credentials file: readable by group or others (must be 0600)",
    ) in problems


def test_the_lab_provider_mints_the_clusters_audience_and_a_short_lived_client(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_STATE", str(tmp_path))
    environments = [load_environment("lab-mtls"), load_environment("lab-oauth")]
    document = lab_idp.realm(environments)
    clients_by_id = {c["clientId"]: c for c in document["clients"]}
    assert clients_by_id["kafka"]["bearerOnly"] and clients_by_id["registry-api"]["bearerOnly"]

    def audiences(client_id: str) -> set[str]:
        mappers = clients_by_id[client_id]["protocolMappers"]
        return {m["config"]["included.client.audience"] for m in mappers if m["protocolMapper"] == AUDIENCE}

    for principal in ("admin", "canary", PROBE_PRINCIPAL, *components_of(environments[1]).principals()):
        assert audiences(principal) == {"kafka", "registry-api"}, principal
    assert audiences(lab_idp.OTHER_APPLICATION) == set()
    assert audiences(lab_idp.SHORT_LIVED_CLIENT) == {"kafka"}
    assert clients_by_id[lab_idp.SHORT_LIVED_CLIENT]["attributes"]["access.token.lifespan"] == "2"
    roles = {user["serviceAccountClientId"]: user["realmRoles"] for user in document["users"]}
    assert roles[lab_idp.SHORT_LIVED_CLIENT] == []
    secrets = json.loads((tmp_path / "secrets" / "oidc-clients.json").read_text())
    confidential = [c for c in document["clients"] if not (c.get("bearerOnly") or c["publicClient"])]
    assert set(secrets) == {c["clientId"] for c in confidential}
    for client in confidential:  # each application's principal is its client id, fixed in its tokens
        (claim,) = [m["config"] for m in client["protocolMappers"] if m["protocolMapper"] != AUDIENCE]
        assert (claim["claim.name"], claim["claim.value"]) == ("kafka_principal", client["clientId"])
    split = environments[1].security.model_copy(
        update={
            "oauthbearer": environments[1].security.oauthbearer.model_copy(
                update={
                    "credentials": environments[1].security.oauthbearer.credentials.model_copy(
                        update={"path": str(tmp_path / "other.json")}
                    )
                }
            )
        }
    )
    with pytest.raises(RuntimeError, match="one client secrets file"):
        lab_idp.realm([environments[1].model_copy(update={"security": split})])


def test_compliance_finds_a_broker_that_stopped_checking_the_audience(oauth):
    policy = load_policy(load_catalog(), load_policies())
    profile = load_sizing_profiles()[oauth.sizing_profile]
    state = desired.desired_state(oauth, oauth.brokers[1], oauth.sizing_profile, profile, "secured")
    properties = {m.path: m.content for m in state.files}["/etc/kafka/server.properties"]
    rendered = dict(
        line.split("=", 1) for line in properties.splitlines() if "=" in line and not line.startswith("#")
    )
    declared = {
        k: v for k, v in listeners.oauthbearer_settings(oauth) if k in facts.TOKEN_VALIDATION_SETTINGS
    }
    as_rendered = HostFacts("lab8", settings={k: rendered[k] for k in facts.TOKEN_VALIDATION_SETTINGS})
    (result,) = checks_access.token_validation(policy, as_rendered, declared)
    assert result.status is Status.PASS, result
    drifted = {k: v for k, v in as_rendered.settings.items() if k != "sasl.oauthbearer.expected.audience"}
    (result,) = checks_access.token_validation(policy, HostFacts("lab8", settings=drifted), declared)
    assert result.status is Status.FAIL and "sasl.oauthbearer.expected.audience" in result.message
    assert result.observed["sasl.oauthbearer.expected.audience"] == "not set"
