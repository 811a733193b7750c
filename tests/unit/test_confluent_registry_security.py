"""Confluent Schema Registry once secured (rendering only: its archives are not reachable from here, so no
lab runs it): HTTPS from the listeners phase with a PEM key store, HTTP basic against a password file
through JAAS once HTTPS-only, its kafkastore on the secure listener with the admin's SCRAM login, and
the declaration each flavor accepts. prod.yaml (confluent) with its PKI and secrets in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from event_broker_rollout.config.base import EnvironmentConfigError
from event_broker_rollout.config.components import PROBE_PRINCIPAL, load_components
from event_broker_rollout.config.environment import (
    Credentials,
    Environment,
    RegistryBasicAuthentication,
    environment_file,
    load_environment,
    load_sizing_profiles,
    parse_environment,
)
from event_broker_rollout.evidence.results import Severity, Status
from event_broker_rollout.hosts import desired, tls
from event_broker_rollout.hosts.desired import ManagedFile
from event_broker_rollout.hosts.plan import Observed, plan_host
from event_broker_rollout.hosts.preconditions import Occupancy
from event_broker_rollout.hosts.secret_files import write_secret
from event_broker_rollout.hosts.tls_policy import SERVER_CIPHER_SUITES
from event_broker_rollout.resources import registry_access
from event_broker_rollout.resources.subjects import SubjectSchema

CONFIG = "/etc/schema-registry/schema-registry.properties"
ENV_FILE = "/etc/schema-registry/registry.env"
JAAS = "/etc/schema-registry/jaas.conf"
PASSWORDS = "/etc/schema-registry/passwords.properties"
REGISTRY_HOST = "kbrk-1"
ADDRESS = "198.51.100.21"
USER = "cp-kafka"


def principals() -> list[str]:
    return list(dict.fromkeys(["admin", *load_components().principals(), PROBE_PRINCIPAL]))


def with_secrets(environment: Environment, directory: Path, authentication: bool = True) -> Environment:
    """prod with an organisation's PKI (a test CA), SCRAM passwords and registry passwords in files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = tls.ensure_internal_ca(directory / "pki", "test-pki")
    material = directory / "tls"
    material.mkdir()
    (material / "ca.crt").write_text((directory / "pki" / "ca.crt").read_text())
    for host in environment.hosts:
        issued = tls.issue_node_certificate(host, ca_cert, ca_key, 365)
        (material / f"{host.name}.crt").write_text(issued.cert_pem)
        (material / f"{host.name}.key").write_text(issued.key_pem)
    scram, registry = directory / "scram.json", directory / "registry.json"
    write_secret(scram, json.dumps({p: f"{p}-scram-password-0123" for p in principals()}))
    write_secret(registry, json.dumps({p: f"{p}-registry-secret-0123" for p in principals()}))
    assert environment.security is not None
    security = environment.security.model_copy(
        update={
            "tls": environment.security.tls.model_copy(update={"material_dir": str(material)}),
            "credentials": Credentials(source="file", path=str(scram)),
        }
    )
    basic = RegistryBasicAuthentication(
        kind="basic", credentials=Credentials(source="file", path=str(registry))
    )
    return environment.model_copy(
        update={
            # prod installs from a package repository, which no stage does yet; the archive's path is enough
            "distribution": environment.distribution.model_copy(
                update={"archive": "/srv/confluent-8.1.0.tar.gz"}
            ),
            "security": security,
            "schema_registry": environment.schema_registry.model_copy(
                update={"authentication": basic if authentication else None}
            ),
        }
    )


@pytest.fixture
def prod(tmp_path) -> Environment:
    return with_secrets(load_environment("prod"), tmp_path)


def secrets_of(environment: Environment) -> list[str]:
    assert environment.security is not None and environment.security.credentials is not None
    assert environment.schema_registry.authentication is not None
    sources = [environment.security.credentials, environment.schema_registry.authentication.credentials]
    return [
        secret for source in sources for secret in json.loads(Path(str(source.path)).read_text()).values()
    ]


def registry_files(environment: Environment, phase: str) -> dict[str, ManagedFile]:
    profile = load_sizing_profiles()["production"]
    state = desired.desired_state(
        environment, environment.host(REGISTRY_HOST), "production", profile, phase, systemd=True
    )
    return {managed.path: managed for managed in state.files}


def props(managed: ManagedFile) -> dict[str, str]:
    assert isinstance(managed.content, str)
    lines = managed.content.splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_before_security_the_registry_is_plain_http_and_anonymous(prod):
    files = registry_files(prod, "plaintext")
    config = props(files[CONFIG])
    assert config["listeners"] == f"http://{ADDRESS}:8081"
    assert config["kafkastore.bootstrap.servers"].split(",")[0] == f"{ADDRESS}:9092"
    assert not [key for key in config if key.startswith(("ssl.", "authentication.", "kafkastore.s"))]
    assert "inter.instance.protocol" not in config  # unchanged from before this feature: no restart
    assert (files[CONFIG].mode, files[CONFIG].secret) == ("0640", False)
    assert JAAS not in files and PASSWORDS not in files
    assert "SCHEMA_REGISTRY_OPTS" not in str(files[ENV_FILE].content)


def test_while_clients_move_https_serves_beside_http_with_a_pem_key_store(prod):
    files = registry_files(prod, "listeners")
    config = props(files[CONFIG])
    assert config["listeners"] == f"http://{ADDRESS}:8081,https://{ADDRESS}:8443"
    assert config["ssl.keystore.type"] == config["ssl.truststore.type"] == "PEM"
    assert config["ssl.keystore.location"] == "/etc/schema-registry/tls/node.pem"
    assert config["ssl.truststore.location"] == "/etc/schema-registry/tls/ca.crt"
    assert config["ssl.enabled.protocols"] == "TLSv1.3,TLSv1.2"
    assert config["ssl.cipher.suites"].split(",") == list(SERVER_CIPHER_SUITES)
    assert config["inter.instance.protocol"] == "http"  # an instance not restarted yet has only HTTP
    assert "authentication.method" not in config  # no login may travel while plain HTTP is open
    assert "kafkastore.security.protocol" not in config and not files[CONFIG].secret
    keystore = files["/etc/schema-registry/tls/node.pem"]
    material = tls.node_material(prod, prod.host(REGISTRY_HOST))
    assert keystore.content == material.key_pem + material.cert_pem
    assert "BEGIN PRIVATE KEY" in material.key_pem  # unencrypted PKCS#8, as rest-utils' PEM store reads
    assert (keystore.mode, keystore.owner, keystore.secret) == ("0600", USER, True)
    assert "/etc/schema-registry/tls/node.key" not in files  # Apicurio's cert and key files only
    assert JAAS not in files and PASSWORDS not in files


def test_once_secured_https_only_basic_logins_and_the_secure_kafkastore(prod):
    files = registry_files(prod, "secured")
    config = props(files[CONFIG])
    assert config["listeners"] == f"https://{ADDRESS}:8443"
    assert config["inter.instance.protocol"] == "https"
    assert config["authentication.method"] == "BASIC"
    assert config["authentication.realm"] == "SchemaRegistry"
    assert config["authentication.roles"] == "admin,readonly"
    assert config["kafkastore.bootstrap.servers"] == ",".join(f"198.51.100.2{n}:9094" for n in range(1, 6))
    assert config["kafkastore.security.protocol"] == "SASL_SSL"
    assert config["kafkastore.sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["kafkastore.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="admin" password="admin-scram-password-0123";'
    )
    assert config["kafkastore.ssl.truststore.type"] == "PEM"
    assert config["kafkastore.ssl.truststore.location"] == "/etc/schema-registry/tls/ca.crt"
    # the SCRAM password makes the properties a secret: 0600, never read back or diffed
    assert (files[CONFIG].mode, files[CONFIG].owner, files[CONFIG].secret) == ("0600", USER, True)

    jaas = files[JAAS]
    assert jaas.content == (
        "/* Managed by event-broker-rollout: the registry's HTTP basic logins (authentication.realm=SchemaRegistry),\n"
        "   checked against the principals, secrets and roles of /etc/schema-registry/passwords.properties. */\n"
        "SchemaRegistry {\n"
        "  org.eclipse.jetty.jaas.spi.PropertyFileLoginModule required\n"
        '  file="/etc/schema-registry/passwords.properties"\n'
        '  debug="false";\n'
        "};\n"
    )
    assert (jaas.mode, jaas.owner, jaas.secret, jaas.restarts) == ("0640", USER, False, ("schema-registry",))
    assert 'SCHEMA_REGISTRY_OPTS="-Djava.security.auth.login.config=/etc/schema-registry/jaas.conf"' in str(
        files[ENV_FILE].content
    )

    passwords = files[PASSWORDS]
    assert (passwords.mode, passwords.owner, passwords.secret) == ("0600", USER, True)
    assert passwords.restarts == ("schema-registry",)
    assert isinstance(passwords.content, str)
    logins = [line for line in passwords.content.splitlines() if not line.startswith("#")]
    readers = [p for p in principals() if p != "admin"]
    assert logins == [
        "admin: admin-registry-secret-0123,admin",
        *(f"{who}: {who}-registry-secret-0123,readonly" for who in readers),
    ]
    assert PROBE_PRINCIPAL in readers and "canary" in readers


def test_secured_without_authentication_still_takes_https_only_and_the_secure_kafkastore(tmp_path):
    anonymous = with_secrets(load_environment("prod"), tmp_path, authentication=False)
    files = registry_files(anonymous, "secured")
    config = props(files[CONFIG])
    assert config["listeners"] == f"https://{ADDRESS}:8443"
    assert config["kafkastore.security.protocol"] == "SASL_SSL"
    assert "authentication.method" not in config and JAAS not in files and PASSWORDS not in files
    assert "SCHEMA_REGISTRY_OPTS" not in str(files[ENV_FILE].content)


def test_the_rendering_is_the_same_bytes_every_time(prod):
    for phase in ("plaintext", "listeners", "interbroker", "secured"):
        first, second = registry_files(prod, phase), registry_files(prod, phase)
        assert first == second
        assert {path: f.digest for path, f in first.items()} == {path: f.digest for path, f in second.items()}


def test_no_secret_outside_a_secret_file_and_no_diff_of_one(prod):
    secrets = secrets_of(prod)
    for phase in ("plaintext", "listeners", "interbroker", "secured"):
        for managed in registry_files(prod, phase).values():
            if not managed.secret:
                assert not [s for s in secrets if s in str(managed.content)], managed.path
    files = registry_files(prod, "secured")
    state = desired.HostState(
        host=REGISTRY_HOST,
        service_user=USER,
        directories=(),
        installs=(),
        files=(files[CONFIG], files[PASSWORDS]),
        services=(),
    )
    changed = Observed(files={CONFIG: "0" * 64, PASSWORDS: "0" * 64})
    plan = plan_host(state, changed, prod.kafka.cluster_id, {CONFIG: "old", PASSWORDS: "old"}, Occupancy())
    assert {change.diff for change in plan.changes if change.kind == "file"} == {"(key material: not shown)"}
    assert not [s for s in secrets if s in json.dumps(plan.to_dict())]


@pytest.mark.parametrize(
    "secret",
    ["with,comma-0123456789", "back\\slash-0123456789", "with space-0123456789", "MD5:0123456789abcdef"],
)
def test_a_secret_the_password_file_cannot_hold_is_refused_without_quoting_it(prod, secret):
    assert prod.schema_registry.authentication is not None
    source = Path(str(prod.schema_registry.authentication.credentials.path))
    write_secret(source, json.dumps({**json.loads(source.read_text()), "analytics": secret}))
    with pytest.raises(desired.UnsafeValueError, match="the secret of analytics") as refused:
        registry_files(prod, "secured")
    assert secret not in str(refused.value)


def test_a_kafkastore_password_the_jaas_value_cannot_hold_is_refused(prod):
    assert prod.security is not None and prod.security.credentials is not None
    source = Path(str(prod.security.credentials.path))
    write_secret(source, json.dumps({**json.loads(source.read_text()), "admin": 'quote"d-0123456789'}))
    with pytest.raises(desired.UnsafeValueError, match="the password of admin") as refused:
        registry_files(prod, "secured")
    assert "0123456789" not in str(refused.value)


def raw_with(name: str, schema_registry: dict[str, Any], **more: Any) -> dict[str, Any]:
    raw = yaml.safe_load(environment_file(name).read_text())
    return {**raw, "schema_registry": {**raw["schema_registry"], **schema_registry}, **more}


OIDC = {
    "issuer": "https://idp.example.org/realms/x",
    "token_url": "https://idp.example.org/realms/x/protocol/openid-connect/token",
    "ca_file": "/etc/idp/ca.crt",
    "credentials": {"source": "file", "path": "/etc/idp/secrets.json"},
}
BASIC = {"kind": "basic", "credentials": {"source": "airflow_variable", "variable": "registry_passwords"}}


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(EnvironmentConfigError) as refused:
        parse_environment(raw, "test", load_sizing_profiles())
    return [str(problem) for problem in refused.value.problems]


def test_each_flavor_takes_only_its_own_kind_and_the_error_names_the_yaml_path():
    confluent = parse_environment(raw_with("prod", {"authentication": BASIC}), "prod", load_sizing_profiles())
    assert isinstance(confluent.schema_registry.authentication, RegistryBasicAuthentication)
    for declared in (OIDC, {**OIDC, "kind": "oidc"}):
        assert problems(raw_with("prod", {"authentication": declared})) == [
            "schema_registry.authentication: kind: oidc is not built for the confluent flavor, which "
            "authenticates with kind: basic"
        ]
    assert problems(raw_with("lab", {"authentication": BASIC})) == [
        "schema_registry.authentication: kind: basic is not built for the apicurio flavor, which "
        "authenticates with kind: oidc"
    ]
    assert problems(raw_with("prod", {"authentication": {**BASIC, "kind": "ldap"}})) == [
        "schema_registry.authentication: kind: oidc (the apicurio flavor) or basic (the confluent flavor)"
    ]
    # a member's own problems keep their YAML path (no union tag in it)
    assert problems(raw_with("prod", {"authentication": {"kind": "basic"}})) == [
        "schema_registry.authentication.credentials: required key is missing"
    ]
    assert problems(raw_with("prod", {"authentication": BASIC}, security=None)) == [
        "<root>: schema_registry.authentication: needs the security section (the registry takes "
        "credentials over HTTPS only)"
    ]


def test_the_confluent_kafkastore_logs_in_with_scram_only():
    raw = yaml.safe_load(environment_file("prod").read_text())
    for mechanism in ("mtls", "oauthbearer", "kerberos"):
        security = {**raw["security"], "client_authentication": mechanism}
        found = [p for p in problems({**raw, "security": security}) if "kafkastore" in p]
        assert found == [
            f"security.client_authentication: {mechanism}: the confluent registry's own Kafka client (its "
            "kafkastore) logs in with SCRAM only; use scram (or the apicurio flavor, which keeps no schemas "
            "in Kafka)"
        ]


def test_the_door_probes_say_the_community_registry_does_not_enforce_roles(prod, monkeypatch):
    passwords = json.loads(Path(str(prod.schema_registry.authentication.credentials.path)).read_text())

    def answer(url, ca_file, *, method="GET", body=None, user=None):
        if user is None or passwords.get(user[0]) != user[1]:
            return registry_access.Answer(401)
        return registry_access.Answer(200)  # authenticated: served, whatever the role

    monkeypatch.setattr(registry_access, "request", answer)
    monkeypatch.setattr(registry_access.clients, "ca_file", lambda environment: "/ca.crt")
    subject = SubjectSchema("t-value", "t", "e", "value", "{}", "FULL_TRANSITIVE", "phi", "x.avsc")
    results = {r.id: r for r in registry_access.access_checks(prod, subject)}
    assert {i: r.status for i, r in results.items() if i != "registry.read_only_write_refused"} == {
        "registry.anonymous_read_refused": Status.PASS,
        "registry.anonymous_write_refused": Status.PASS,
        "registry.wrong_secret_refused": Status.PASS,
        "registry.read_only_read_served": Status.PASS,
        "registry.admin_served": Status.PASS,
    }
    unenforced = results["registry.read_only_write_refused"]
    assert (unenforced.status, unenforced.severity) == (Status.WARN, Severity.ADVISORY)
    assert "commercial security plugin" in unenforced.message
