"""Kerberos clients: the declaration, what the brokers get (GSSAPI alone on the secure listener, their
service principal's keytab, the realm file, the principal rules), keytabs read and checked, the clients'
own credential caches, the login that must be refused, and the checks before any host changes."""

from __future__ import annotations

import os
import re
import shlex
import struct
from pathlib import Path

import pytest

from event_broker_rollout.cluster import clients, health, kerberos
from event_broker_rollout.compliance import checks_access, facts
from event_broker_rollout.compliance.facts import HostFacts
from event_broker_rollout.config import keytabs
from event_broker_rollout.config.catalog import load_catalog, load_policies
from event_broker_rollout.config.components import PROBE_PRINCIPAL, components_of
from event_broker_rollout.config.environment import Environment, load_environment, load_sizing_profiles
from event_broker_rollout.config.policy import load_policy
from event_broker_rollout.config.validation import Validation, keytab_problems_of
from event_broker_rollout.evidence.results import Status
from event_broker_rollout.hosts import desired, listeners
from event_broker_rollout.preflight import kerberos as preflight_kerberos

REALM = "EBR.LAB"
AES256 = 18


def keytab_bytes(*entries: tuple[str, int]) -> bytes:
    """A keytab in MIT's format (version 0x0502) holding ``(principal, kvno)`` entries with made-up keys."""
    content = bytearray(keytabs.KEYTAB_VERSION)
    for principal, kvno in entries:
        names, _, realm = principal.rpartition("@")
        components = names.split("/")
        record = struct.pack(">H", len(components)) + _counted(realm)
        record += b"".join(_counted(name) for name in components)
        record += struct.pack(">IIB", 1, 1_700_000_000, kvno % 256)
        record += struct.pack(">HH", AES256, 32) + bytes(range(32))
        record += struct.pack(">I", kvno)
        content += struct.pack(">i", len(record)) + record
    return bytes(content)


def _counted(text: str) -> bytes:
    return struct.pack(">H", len(text)) + text.encode()


def write_keytab(path: Path, content: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600)
    path.write_bytes(content)
    path.chmod(mode)


@pytest.fixture
def realm(tmp_path) -> Environment:
    """lab-kerberos with every keytab it needs in tmp_path."""
    environment = load_environment("lab-kerberos")
    declared = environment.security.kerberos.model_copy(update={"keytab_dir": str(tmp_path / "keytabs")})
    material = environment.security.tls.model_copy(update={"material_dir": str(tmp_path / "ca")})
    security = environment.security.model_copy(update={"kerberos": declared, "tls": material})
    environment = environment.model_copy(update={"security": security})
    for host in environment.brokers:
        write_keytab(
            keytabs.broker_keytab_path(declared, host), keytab_bytes((f"kafka/{host.address}@{REALM}", 2))
        )
    for principal in [security.admin_user, *components_of(environment).principals(), PROBE_PRINCIPAL]:
        write_keytab(
            keytabs.client_keytab_path(declared, principal), keytab_bytes((f"{principal}@{REALM}", 1))
        )
    return environment


def test_kerberos_needs_its_realm_declared():
    raw = load_environment("lab-kerberos").model_dump(mode="json")
    with pytest.raises(ValueError, match="kerberos: required when client_authentication is kerberos"):
        Environment.model_validate({**raw, "security": {**raw["security"], "kerberos": None}})
    with pytest.raises(ValueError, match="kdcs"):
        kerberos_section = {**raw["security"]["kerberos"], "kdcs": []}
        Environment.model_validate({**raw, "security": {**raw["security"], "kerberos": kerberos_section}})


def test_brokers_take_tickets_for_their_own_service_principal_and_nothing_else(realm):
    broker = realm.brokers[1]
    settings = dict(listeners.secure_listener_settings(realm, broker))
    assert settings["listener.name.secure.sasl.enabled.mechanisms"] == "GSSAPI"
    jaas = settings["listener.name.secure.gssapi.sasl.jaas.config"]
    assert f'principal="kafka/{broker.address}@{REALM}"' in jaas
    assert f'keyTab="{listeners.BROKER_KEYTAB}"' in jaas and "useKeyTab=true" in jaas
    assert settings["sasl.kerberos.service.name"] == "kafka"
    rules = settings["sasl.kerberos.principal.to.local.rules"]
    assert "\\" not in rules  # server.properties would eat a backslash
    assert "DEFAULT" not in rules  # nothing but the realm's one-part names maps to a principal
    pattern = re.search(r"\((\^.*\$)\)", rules)
    assert pattern is not None
    assert re.fullmatch(pattern.group(1), f"admin@{REALM}")
    assert not re.fullmatch(pattern.group(1), "admin@EBRXLAB")  # the dot is literal
    assert not re.fullmatch(pattern.group(1), "admin@OTHER.LAB")
    layout = listeners.layout_for_phase(realm, broker, "secured")
    assert "SECURE:SASL_SSL" in layout.protocol_map and layout.inter_broker_listener == "INTERNAL"


def test_a_broker_gets_its_keytab_0600_and_the_realm_file(realm):
    profile = load_sizing_profiles()[realm.sizing_profile]
    broker = realm.brokers[2]
    state = desired.desired_state(realm, broker, realm.sizing_profile, profile, "secured")
    files = {managed.path: managed for managed in state.files}
    keytab = files[listeners.BROKER_KEYTAB]
    assert isinstance(keytab.content, bytes) and keytab.mode == "0600" and keytab.secret
    assert keytab.owner == realm.kafka.service_user and "kafka" in keytab.restarts
    assert [e.principal for e in keytabs.keytab_entries(keytab.content)] == [
        f"kafka/{broker.address}@{REALM}"
    ]
    realm_file = files[listeners.KERBEROS_CONFIG].content
    assert isinstance(realm_file, str)
    assert f"default_realm = {REALM}" in realm_file and "kdc = 10.77.0.2:88" in realm_file
    assert "rdns = false" in realm_file and "dns_lookup_kdc = false" in realm_file
    env_file = files["/etc/kafka/kafka.env"].content
    assert f'KAFKA_OPTS="-Djava.security.krb5.conf={listeners.KERBEROS_CONFIG}"' in str(env_file)
    assert (listeners.KERBEROS_DIR, realm.kafka.service_user) in state.directories


def test_no_kerberos_material_without_kerberos():
    lab = load_environment("lab")
    profile = load_sizing_profiles()[lab.sizing_profile]
    state = desired.desired_state(lab, lab.brokers[0], lab.sizing_profile, profile, "secured")
    assert not [m for m in state.files if m.path.startswith(listeners.KERBEROS_DIR)]
    assert "KAFKA_OPTS" not in str({m.path: m.content for m in state.files}["/etc/kafka/kafka.env"])


def test_keytabs_are_read_only_when_private_well_formed_and_holding_their_principal(tmp_path):
    path = tmp_path / "k" / "admin.keytab"
    write_keytab(path, keytab_bytes((f"admin@{REALM}", 3), (f"admin@{REALM}", 4)))
    content = keytabs.read_keytab(path, f"admin@{REALM}")
    assert [(e.principal, e.kvno, e.enctype) for e in keytabs.keytab_entries(content)] == [
        (f"admin@{REALM}", 3, AES256),
        (f"admin@{REALM}", 4, AES256),
    ]
    with pytest.raises(keytabs.KeytabError, match=r"not ebr-probe@EBR\.LAB"):
        keytabs.read_keytab(path, f"ebr-probe@{REALM}")
    path.chmod(0o640)
    with pytest.raises(keytabs.KeytabError, match="must be 0600"):
        keytabs.read_keytab(path, f"admin@{REALM}")
    with pytest.raises(keytabs.KeytabError, match="no keytab"):
        keytabs.read_keytab(tmp_path / "absent.keytab", f"admin@{REALM}")
    with pytest.raises(keytabs.KeytabError, match="not a keytab"):
        keytabs.keytab_entries(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(keytabs.KeytabError, match="truncated"):
        keytabs.keytab_entries(keytab_bytes((f"admin@{REALM}", 1))[:-40])
    # a hole (a removed entry, negative size) is skipped
    hole = keytabs.KEYTAB_VERSION + struct.pack(">i", -6) + bytes(6) + keytab_bytes((f"admin@{REALM}", 1))[2:]
    assert [e.principal for e in keytabs.keytab_entries(hole)] == [f"admin@{REALM}"]


def test_each_client_logs_in_from_its_keytab_into_a_cache_of_its_own(realm):
    configs = clients.principal_configs(realm, "secured", ["admin", PROBE_PRINCIPAL])
    admin, probe = configs["admin"], configs[PROBE_PRINCIPAL]
    assert admin["sasl.mechanism"] == "GSSAPI" and admin["security.protocol"] == "SASL_SSL"
    assert admin["sasl.kerberos.principal"] == f"admin@{REALM}"
    assert admin["sasl.kerberos.keytab"].endswith("/clients/admin.keytab")
    assert admin["plugin.library.paths"] == str(kerberos.CCACHE_PLUGIN)
    assert admin[kerberos.CCACHE_PROPERTY] != probe[kerberos.CCACHE_PROPERTY]  # one cache per principal
    kinit = shlex.split(admin["sasl.kerberos.kinit.cmd"])
    assert kinit == [
        "kinit",
        "-c",
        admin[kerberos.CCACHE_PROPERTY],
        "-k",
        "-t",
        admin["sasl.kerberos.keytab"],
        f"admin@{REALM}",
    ]
    assert not any("password" in key for key in admin)
    assert not clients.admin_login_in_connection(realm)  # the admin's keytab, not the connection's password
    realm_files = os.environ[kerberos.KRB5_CONFIG].split(":")
    assert any(Path(f).name == f"krb5-{REALM}.conf" and Path(f).is_file() for f in realm_files)


def test_the_wrong_login_is_a_password_for_the_same_principal(realm):
    secure = clients.principal_config(realm, "secured", "admin")
    refuse = health.clients_to_refuse(secure)
    none = refuse["none"]
    assert none["security.protocol"] == "SSL"
    assert not [k for k in none if k.startswith(("sasl.", "plugin.")) or k == kerberos.CCACHE_PROPERTY]
    wrong = refuse["wrong"]
    assert wrong["sasl.mechanism"] == "SCRAM-SHA-512" and wrong["sasl.username"] == "admin"
    assert "plugin.library.paths" not in wrong


def test_validation_and_preflight_name_each_unusable_keytab(realm):
    declared = realm.security.kerberos
    keytabs.client_keytab_path(declared, PROBE_PRINCIPAL).chmod(0o644)
    keytabs.broker_keytab_path(declared, realm.brokers[0]).unlink()
    results = preflight_kerberos.keytab_checks(realm, ["admin", PROBE_PRINCIPAL])
    failed = {(r.id, r.host) for r in results if r.status is Status.FAIL}
    assert failed == {
        ("sec.kerberos.broker_keytab", realm.brokers[0].name),
        (f"sec.kerberos.client_keytab[{PROBE_PRINCIPAL}]", None),
    }
    assert all(r.status is Status.PASS for r in results if (r.id, r.host) not in failed)
    problems = keytabs.keytab_problems(realm, ["admin", PROBE_PRINCIPAL])
    assert len(problems) == 2 and any("must be 0600" in p for p in problems)


def test_validation_names_the_keytab_folder_in_each_problem(realm, tmp_path):
    keytabs.client_keytab_path(realm.security.kerberos, "admin").chmod(0o644)
    found = Validation(environment=realm)
    keytab_problems_of(realm, "lab-kerberos.yaml", ["admin"], found)
    assert [(p.path, "must be 0600" in p.message) for p in found.problems] == [
        ("security.kerberos.keytab_dir", True)
    ]
    elsewhere = realm.security.kerberos.model_copy(update={"keytab_dir": str(tmp_path / "not-here")})
    moved = realm.model_copy(update={"security": realm.security.model_copy(update={"kerberos": elsewhere})})
    noted = Validation(environment=moved)
    keytab_problems_of(moved, "lab-kerberos.yaml", ["admin"], noted)
    assert not noted.problems and "security.kerberos.keytab_dir" in noted.notes[0]


def test_compliance_finds_a_broker_that_maps_any_realm_name(realm):
    policy = load_policy(load_catalog(), load_policies())
    profile = load_sizing_profiles()[realm.sizing_profile]
    broker = realm.brokers[1]  # a broker without the registry: nothing of the lab's provider needed
    state = desired.desired_state(realm, broker, realm.sizing_profile, profile, "secured")
    properties = {m.path: m.content for m in state.files}["/etc/kafka/server.properties"]
    assert isinstance(properties, str)
    rendered = dict(
        line.split("=", 1) for line in properties.splitlines() if "=" in line and not line.startswith("#")
    )
    declared = {
        k: v for k, v in listeners.kerberos_settings(realm, broker) if k in facts.TICKET_VALIDATION_SETTINGS
    }
    assert set(declared) == set(facts.TICKET_VALIDATION_SETTINGS)
    as_rendered = HostFacts(broker.name, settings={k: rendered[k] for k in facts.TICKET_VALIDATION_SETTINGS})
    (result,) = checks_access.ticket_validation(policy, as_rendered, declared)
    assert result.status is Status.PASS, result
    drifted = {**as_rendered.settings, "sasl.kerberos.principal.to.local.rules": "DEFAULT"}
    (result,) = checks_access.ticket_validation(policy, HostFacts(broker.name, settings=drifted), declared)
    assert result.status is Status.FAIL and "sasl.kerberos.principal.to.local.rules" in result.message
    assert result.id == "compliance.auth.kerberos-tickets"
