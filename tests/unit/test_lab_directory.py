"""The lab's directory and its federation by the identity provider, as rendered (no slapd, no Keycloak)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from event_broker_devtools import lab_directory, lab_idp
from event_broker_rollout.config.environment import load_environment


@pytest.fixture
def lab_state(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LAB_STATE", str(tmp_path))
    return tmp_path


def _ssha_matches(stored: str, password: str) -> bool:
    raw = base64.b64decode(stored.removeprefix("{SSHA}"))
    digest, salt = raw[:20], raw[20:]
    return hashlib.sha1(password.encode() + salt).digest() == digest


def test_the_directory_stores_salted_hashes_never_a_password(lab_state):
    passwords = lab_directory.ensure_passwords()
    assert stat.S_IMODE(os.stat(lab_directory.passwords_file()).st_mode) == 0o600
    assert set(passwords) == {lab_directory.READER, *(p.uid for p in lab_directory.PEOPLE)}
    assert lab_directory.ensure_passwords() == passwords  # generated once
    ldif = lab_directory.entries(passwords)
    assert not any(password in ldif for password in passwords.values())
    stored = dict(
        (block.split("\n", 1)[0].removeprefix("dn: "), line.removeprefix("userPassword: "))
        for block in ldif.split("\n\n")
        for line in block.splitlines()
        if line.startswith("userPassword: ")
    )
    assert _ssha_matches(stored["uid=li.wei,ou=people,dc=ebr,dc=lab"], passwords["li.wei"])
    assert not _ssha_matches(stored["uid=li.wei,ou=people,dc=ebr,dc=lab"], passwords["amara.okafor"])
    admins = next(block for block in ldif.split("\n\n") if block.startswith("dn: cn=kafka-admins,"))
    assert "member: uid=amara.okafor,ou=people,dc=ebr,dc=lab" in admins and "li.wei" not in admins


def test_anonymous_clients_may_only_bind_and_only_the_provider_reads(tmp_path):
    config = lab_directory.render_config(
        tmp_path, tmp_path / "ca.crt", tmp_path / "tls.crt", tmp_path / "tls.key"
    )
    lines = config.splitlines()
    assert "disallow bind_anon" in lines and "require authc" in lines
    assert "access to attrs=userPassword by anonymous auth by * none" in lines
    assert (
        'access to dn.subtree="dc=ebr,dc=lab" by dn.exact="cn=identity-provider,ou=services,dc=ebr,dc=lab" read '
        "by self read by * none"
    ) in lines
    assert "TLSProtocolMin 3.3" in lines  # TLS 1.2 at least
    assert not any(line.startswith("rootpw") for line in lines)  # loaded offline: no administrator password


def test_the_provider_federates_the_directory_read_only_with_groups_as_roles(lab_state):
    document = lab_idp.realm([load_environment("lab-mtls"), load_environment("lab-oauth")])
    (federation,) = document["components"]["org.keycloak.storage.UserStorageProvider"]
    config = {key: value for key, (value,) in federation["config"].items()}
    assert config["connectionUrl"] == "ldaps://10.77.0.2:636" and config["editMode"] == "READ_ONLY"
    assert config["bindDn"] == lab_directory.READER_DN
    assert (
        config["bindCredential"]
        == json.loads(lab_directory.passwords_file().read_text())["identity-provider"]
    )
    mappers = {
        m["name"]: m
        for m in federation["subComponents"]["org.keycloak.storage.ldap.mappers.LDAPStorageMapper"]
    }
    groups = mappers["platform groups"]["config"]
    assert groups["roles.dn"] == ["ou=groups,dc=ebr,dc=lab"] and groups["mode"] == ["READ_ONLY"]
    roles = {role["name"]: role for role in document["roles"]["realm"]}
    assert roles["kafka-admins"]["composites"] == {"realm": ["sr-admin"]}
    assert roles["change-approvers"]["composites"] == {"realm": ["sr-readonly"]}


def test_people_log_in_through_a_public_client_and_their_uid_is_the_principal(lab_state):
    document = lab_idp.realm([load_environment("lab-oauth")])
    (people,) = [c for c in document["clients"] if c["clientId"] == lab_idp.PEOPLE_CLIENT]
    assert (
        people["publicClient"]
        and people["directAccessGrantsEnabled"]
        and not people["serviceAccountsEnabled"]
    )
    mappers = {
        m["protocolMapper"]: m["config"]
        for m in people["protocolMappers"]
        if m["protocolMapper"] != "oidc-audience-mapper"
    }
    assert mappers == {
        "oidc-usermodel-property-mapper": {
            "user.attribute": "username",
            "claim.name": "kafka_principal",
            "jsonType.label": "String",
            "access.token.claim": "true",
        }
    }
    audiences = {
        m["config"]["included.client.audience"]
        for m in people["protocolMappers"]
        if m["protocolMapper"] == "oidc-audience-mapper"
    }
    assert audiences == {"kafka", "registry-api"}


def test_a_claim_that_cannot_name_people_is_refused(lab_state):
    environment = load_environment("lab-oauth")
    provider = environment.security.oauthbearer.model_copy(update={"principal_claim": "azp"})
    security = environment.security.model_copy(update={"oauthbearer": provider})
    with pytest.raises(RuntimeError, match="cannot name people"):
        lab_idp.realm([environment.model_copy(update={"security": security})])
