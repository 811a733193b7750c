"""The lab's identity provider: Keycloak in a network namespace of its own on the lab's bridge.

A hospital's OIDC provider belongs to its identity team, not to the broker's rollout: the environments
only name its issuer, CA and the client secrets. On the lab this module plays that team. It serves
HTTPS at ``https://10.77.0.2:8443`` with a certificate from a CA of its own (``$LAB_STATE/idp/ca.crt``)
and holds the realm ``event-broker``, with one confidential client per principal of every lab
environment whose registry or Kafka clients authenticate through it. The rollout's admin holds sr-admin,
and each component, the canary and the no-grants probe hold sr-readonly; their tokens carry the
registry's audience and, where an environment's Kafka clients use OAUTHBEARER, the cluster's. One more
client, another application's, holds sr-admin without either audience; another's tokens are for the
cluster but live two seconds. The client secrets are generated once into the one file the environments
name (0600).

    python -m event_broker_devtools.lab_idp up [ENV ...]   # idempotent: starts what is missing
    python -m event_broker_devtools.lab_idp down           # (lab/lab.sh down stops it too)
    python -m event_broker_devtools.lab_idp status
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from event_broker_devtools import lab_directory
from event_broker_devtools.lab_identity_host import (
    ADDRESS,
    NETNS,
    ensure_network,
    ensure_tls,
    in_netns,
    netns_exists,
    remove_network,
    run,
    service_main,
    state_dir,
)
from event_broker_rollout import paths
from event_broker_rollout.config.components import PROBE_PRINCIPAL, load_components
from event_broker_rollout.config.environment import (
    Environment,
    OAuthBearer,
    OidcClients,
    RegistryAuthentication,
    load_environment,
)
from event_broker_rollout.hosts.secret_files import write_secret

PORT = 8443
MANAGEMENT_PORT = 9000
REALM = "event-broker"
ISSUER = f"https://{ADDRESS}:{PORT}/realms/{REALM}"
KEYCLOAK_DIR = paths.ARTIFACTS_DIR / "keycloak-26.5.6"
LAB_ENVIRONMENTS = ("lab", "lab-mtls", "lab-oauth")
ADMIN_ROLE = "sr-admin"
READER_ROLE = "sr-readonly"
START_TIMEOUT_S = 240.0
# Another application of the hospital in the same realm: it holds the registry's admin role, but its
# tokens are not minted for the registry, whose audience check must refuse them (the mTLS e2e tries).
OTHER_APPLICATION = "ebr-other-application"
# A client whose tokens are for the cluster but expire within seconds: the OAUTHBEARER e2e presents one
# after it expired (and after the brokers' 30 s clock-skew allowance) and must be refused.
SHORT_LIVED_CLIENT = "ebr-short-lived"
SHORT_LIVED_TOKEN_S = 2
# People of the directory log in through this client (public: a person's password is the secret).
PEOPLE_CLIENT = "ebr-people"
PRINCIPAL_CLAIM = "kafka_principal"
# Each platform group of the directory, as a realm role, holds one registry role.
PEOPLE_REGISTRY_ROLES = {"kafka-admins": ADMIN_ROLE, "change-approvers": READER_ROLE}


# --- the realm ----------------------------------------------------------------------------------


def providers_of(environment: Environment) -> list[OidcClients]:
    """What in the environment authenticates through an OIDC provider: its registry, its Kafka clients."""
    security = environment.security
    found: list[OidcClients] = []
    if isinstance(environment.schema_registry.authentication, RegistryAuthentication):
        found.append(environment.schema_registry.authentication)
    if security is not None and security.client_authentication == "oauthbearer" and security.oauthbearer:
        found.append(security.oauthbearer)
    return found


def served_environments(names: list[str]) -> list[Environment]:
    """The environments whose registry or Kafka clients authenticate through this provider."""
    return [
        environment
        for environment in map(load_environment, names)
        if any(urlsplit(provider.issuer).hostname == ADDRESS for provider in providers_of(environment))
    ]


def registry_roles(environment: Environment) -> dict[str, str]:
    """principal -> its registry role: the admin registers, everyone else only reads."""
    assert environment.security is not None
    readers = [*load_components(environment.security.components).principals(), PROBE_PRINCIPAL]
    return {environment.security.admin_user: ADMIN_ROLE, **dict.fromkeys(readers, READER_ROLE)}


def secrets_file(environments: list[Environment]) -> Path:
    """The one file the served environments name for their client secrets: a client has one secret."""
    named = {
        provider.credentials.path for environment in environments for provider in providers_of(environment)
    }
    if len(named) != 1 or None in named:
        raise RuntimeError(
            f"the lab's environments must name one client secrets file; they name {sorted(map(str, named))}"
        )
    (path,) = named
    assert path is not None
    return Path(path)


def ensure_client_secrets(path: Path, principals: list[str]) -> dict[str, str]:
    existing: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = {who: existing.get(who) or secrets.token_urlsafe(24) for who in principals}
    if wanted != existing:
        write_secret(path, json.dumps(wanted, indent=2))
    return wanted


def _audience_mapper(audience: str) -> dict[str, Any]:
    return {
        "name": f"audience-{audience}",
        "protocol": "openid-connect",
        "protocolMapper": "oidc-audience-mapper",
        "config": {
            "included.client.audience": audience,
            "access.token.claim": "true",
            "id.token.claim": "false",
        },
    }


def _one_audience(named: set[str], what: str) -> list[str]:
    if len(named) > 1:
        raise RuntimeError(f"the lab's environments name different {what} audiences: {sorted(named)}")
    return sorted(named)


def _principal_claim(environments: list[Environment]) -> str:
    """The claim the brokers take the Kafka principal from: the client id for an application, the
    directory's uid for a person (so neither ``azp`` nor ``sub``, a per-realm UUID, can name both)."""
    named = {p.principal_claim for e in environments for p in providers_of(e) if isinstance(p, OAuthBearer)}
    if len(named) > 1:
        raise RuntimeError(f"the lab's environments name different principal claims: {sorted(named)}")
    claim = named.pop() if named else PRINCIPAL_CLAIM
    if claim in ("azp", "sub"):
        raise RuntimeError(
            f"principal_claim {claim!r} cannot name people; the lab's provider sets {PRINCIPAL_CLAIM}"
        )
    return claim


def _claim_mapper(claim: str, value: str) -> dict[str, Any]:
    """An application's principal: its client id, fixed in its tokens."""
    return {
        "name": f"{claim}-client-id",
        "protocol": "openid-connect",
        "protocolMapper": "oidc-hardcoded-claim-mapper",
        "config": {
            "claim.name": claim,
            "claim.value": value,
            "jsonType.label": "String",
            "access.token.claim": "true",
        },
    }


def _username_mapper(claim: str) -> dict[str, Any]:
    """A person's principal: the username, which the directory's uid is."""
    return {
        "name": f"{claim}-username",
        "protocol": "openid-connect",
        "protocolMapper": "oidc-usermodel-property-mapper",
        "config": {
            "user.attribute": "username",
            "claim.name": claim,
            "jsonType.label": "String",
            "access.token.claim": "true",
        },
    }


def _ldap_mapper(name: str, provider: str, config: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "providerId": provider, "config": {key: [value] for key, value in config.items()}}


def directory_federation() -> dict[str, Any]:
    """Keycloak's LDAP user storage over the lab's directory: read-only, people only, each person's
    groups as realm roles (``kafka-admins``, ``change-approvers``), which hold the registry's roles."""
    attribute = "user-attribute-ldap-mapper"
    mappers = [
        _ldap_mapper(
            "username",
            attribute,
            {
                "ldap.attribute": "uid",
                "user.model.attribute": "username",
                "read.only": "true",
                "is.mandatory.in.ldap": "true",
                "always.read.value.from.ldap": "false",
            },
        ),
        _ldap_mapper(
            "first name",
            attribute,
            {
                "ldap.attribute": "givenName",
                "user.model.attribute": "firstName",
                "read.only": "true",
                "is.mandatory.in.ldap": "true",
                "always.read.value.from.ldap": "true",
            },
        ),
        _ldap_mapper(
            "last name",
            attribute,
            {
                "ldap.attribute": "sn",
                "user.model.attribute": "lastName",
                "read.only": "true",
                "is.mandatory.in.ldap": "true",
                "always.read.value.from.ldap": "true",
            },
        ),
        _ldap_mapper(
            "email",
            attribute,
            {
                "ldap.attribute": "mail",
                "user.model.attribute": "email",
                "read.only": "true",
                "is.mandatory.in.ldap": "false",
                "always.read.value.from.ldap": "true",
            },
        ),
        _ldap_mapper(
            "platform groups",
            "role-ldap-mapper",
            {
                "roles.dn": lab_directory.GROUPS_DN,
                "role.name.ldap.attribute": "cn",
                "role.object.classes": "groupOfNames",
                "membership.ldap.attribute": "member",
                "membership.attribute.type": "DN",
                "membership.user.ldap.attribute": "uid",
                "mode": "READ_ONLY",
                "user.roles.retrieve.strategy": "LOAD_ROLES_BY_MEMBER_ATTRIBUTE",
                "use.realm.roles.mapping": "true",
            },
        ),
    ]
    config = {
        "enabled": "true",
        "priority": "0",
        "vendor": "other",
        "editMode": "READ_ONLY",
        "importEnabled": "true",
        "syncRegistrations": "false",
        "connectionUrl": lab_directory.URL,
        "useTruststoreSpi": "always",
        "startTls": "false",
        "authType": "simple",
        "bindDn": lab_directory.READER_DN,
        "bindCredential": lab_directory.ensure_passwords()[lab_directory.READER],
        "usersDn": lab_directory.PEOPLE_DN,
        "searchScope": "1",
        "userObjectClasses": "inetOrgPerson",
        "usernameLDAPAttribute": "uid",
        "rdnLDAPAttribute": "uid",
        "uuidLDAPAttribute": "entryUUID",
        "pagination": "false",
        "connectionPooling": "false",
        "trustEmail": "false",
        "validatePasswordPolicy": "false",
        "cachePolicy": "NO_CACHE",
    }
    return {
        "name": "hospital-directory",
        "providerId": "ldap",
        "subComponents": {"org.keycloak.storage.ldap.mappers.LDAPStorageMapper": mappers},
        "config": {key: [value] for key, value in config.items()},
    }


def realm(environments: list[Environment]) -> dict[str, Any]:
    roles: dict[str, str] = {}
    for environment in environments:
        roles.update(registry_roles(environment))
    roles[OTHER_APPLICATION] = ADMIN_ROLE
    providers = [provider for environment in environments for provider in providers_of(environment)]
    kafka_audience = _one_audience({p.audience for p in providers if isinstance(p, OAuthBearer)}, "Kafka")
    registry_audience = _one_audience(
        {p.audience for p in providers if isinstance(p, RegistryAuthentication)}, "registry"
    )
    audiences = registry_audience + kafka_audience
    if kafka_audience:
        roles[SHORT_LIVED_CLIENT] = ""
    client_secrets = ensure_client_secrets(secrets_file(environments), sorted(roles))
    mappers = [_audience_mapper(audience) for audience in audiences]
    claim = _principal_claim(environments)

    def client(principal: str) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "clientId": principal,
            "enabled": True,
            "publicClient": False,
            "serviceAccountsEnabled": True,
            "standardFlowEnabled": False,
            "directAccessGrantsEnabled": False,
            "clientAuthenticatorType": "client-secret",
            "secret": client_secrets[principal],
            "protocolMappers": [_claim_mapper(claim, principal)]
            + ([] if principal == OTHER_APPLICATION else mappers),
        }
        if principal == SHORT_LIVED_CLIENT:
            settings["protocolMappers"] = [
                _claim_mapper(claim, principal),
                *(_audience_mapper(audience) for audience in kafka_audience),
            ]
            settings["attributes"] = {"access.token.lifespan": str(SHORT_LIVED_TOKEN_S)}
        return settings

    return {
        "realm": REALM,
        "enabled": True,
        "accessTokenLifespan": 300,
        "roles": {
            "realm": [
                *({"name": role} for role in (ADMIN_ROLE, "sr-developer", READER_ROLE)),
                *(
                    {
                        "name": group,
                        "description": description,
                        "composite": True,
                        "composites": {"realm": [PEOPLE_REGISTRY_ROLES[group]]},
                    }
                    for group, description in lab_directory.GROUPS.items()
                ),
            ]
        },
        "clients": [
            *(
                {"clientId": audience, "enabled": True, "publicClient": False, "bearerOnly": True}
                for audience in audiences
            ),
            *(client(principal) for principal in sorted(roles)),
            {
                # People log in with the directory's password (a command-line tool's grant: the lab has no
                # browser flow); their tokens are for the cluster and the registry.
                "clientId": PEOPLE_CLIENT,
                "enabled": True,
                "publicClient": True,
                "serviceAccountsEnabled": False,
                "standardFlowEnabled": False,
                "directAccessGrantsEnabled": True,
                "protocolMappers": [_username_mapper(claim), *mappers],
            },
        ],
        "components": {"org.keycloak.storage.UserStorageProvider": [directory_federation()]},
        "users": [
            {
                "username": f"service-account-{principal}",
                "enabled": True,
                "serviceAccountClientId": principal,
                "realmRoles": [roles[principal]] if roles[principal] else [],
            }
            for principal in sorted(roles)
        ],
    }


# --- the process --------------------------------------------------------------------------------


def _pid_file() -> Path:
    return state_dir() / "keycloak.pid"


def running_pid() -> int | None:
    """Keycloak's pid, if the one recorded is still a process inside the provider's namespace (a pid
    reused by another process after ``lab.sh down`` is never ours to signal)."""
    try:
        pid = int(_pid_file().read_text())
    except (OSError, ValueError):
        return None
    if not netns_exists():
        return None
    inside = run(["ip", "netns", "pids", NETNS], check=False).stdout.split()
    return pid if str(pid) in inside else None


def _ca_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(state_dir() / "ca.crt"))


def person_token(uid: str, password: str) -> str:
    """A person's access token, as a command-line tool gets one: the directory's password at the
    provider (``PasswordRefused`` when the provider refuses it)."""
    body = urllib.parse.urlencode(
        {"grant_type": "password", "client_id": PEOPLE_CLIENT, "username": uid, "password": password}
    ).encode()
    request = urllib.request.Request(f"{ISSUER}/protocol/openid-connect/token", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10, context=_ca_context()) as response:
            token = json.loads(response.read())["access_token"]
    except urllib.error.HTTPError as error:
        raise PasswordRefused(f"the provider refused {uid}: HTTP {error.code}") from None
    assert isinstance(token, str)
    return token


class PasswordRefused(RuntimeError):
    pass


def answers() -> bool:
    try:
        url = f"{ISSUER}/.well-known/openid-configuration"
        with urllib.request.urlopen(url, timeout=3, context=_ca_context()) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _java_home() -> str:
    for candidate in sorted(Path("/usr/lib/jvm").glob("temurin-2[1-9]-jdk-*")):
        if (candidate / "bin" / "java").is_file():
            return str(candidate)
    raise RuntimeError("Keycloak needs a Java 21+ JDK (the machine's Temurin) under /usr/lib/jvm")


def start(realm_document: dict[str, Any], ca_cert: Path, cert: Path, key: Path) -> None:
    """Start Keycloak with the realm imported. Its database lives in the lab's state; when the realm
    differs from the one imported last (a new principal, new secrets) the database is made anew."""
    if not (KEYCLOAK_DIR / "bin" / "kc.sh").is_file():
        raise RuntimeError(f"{KEYCLOAK_DIR} not found: run make setup (lab/artifacts/build.sh)")
    state = state_dir()
    database = state / "db"
    text = json.dumps(realm_document, indent=1, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    imported = state / "realm.sha256"
    if not imported.is_file() or imported.read_text() != digest:
        shutil.rmtree(database, ignore_errors=True)
    import_dir = KEYCLOAK_DIR / "data" / "import"
    import_dir.mkdir(parents=True, exist_ok=True)
    realm_file = import_dir / f"{REALM}-realm.json"
    write_secret(realm_file, text)  # client secrets inside: 0600, removed once Keycloak has read it
    database.mkdir(parents=True, exist_ok=True)
    log = (state / "keycloak.log").open("ab")
    environment = {
        **os.environ,
        "JAVA_HOME": _java_home(),
        "JAVA_OPTS_KC_HEAP": "-Xms64m -Xmx512m",
    }
    process = subprocess.Popen(
        in_netns(
            [
                str(KEYCLOAK_DIR / "bin" / "kc.sh"),
                "start",
                "--optimized",
                "--http-enabled=false",
                f"--http-host={ADDRESS}",
                f"--https-port={PORT}",
                f"--https-certificate-file={cert}",
                f"--https-certificate-key-file={key}",
                # the directory's LDAPS certificate comes from the identity host's CA, as this one does
                f"--truststore-paths={ca_cert}",
                f"--hostname=https://{ADDRESS}:{PORT}",
                f"--http-management-port={MANAGEMENT_PORT}",
                f"--db-url=jdbc:h2:file:{database}/keycloakdb;NON_KEYWORDS=VALUE",
                "--import-realm",
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=environment,
        start_new_session=True,
    )
    _pid_file().write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not answers():
            if process.poll() is not None:
                raise RuntimeError(f"Keycloak exited ({process.returncode}); see {state / 'keycloak.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Keycloak did not answer within {START_TIMEOUT_S:.0f} s")
            time.sleep(1)
    finally:
        realm_file.unlink(missing_ok=True)
    imported.write_text(digest)


def up(names: list[str]) -> None:
    environments = served_environments(names or list(LAB_ENVIRONMENTS))
    ensure_network()
    lab_directory.up()  # the provider federates it: people log in against it
    ca_cert, cert, key = ensure_tls(state_dir())
    document = realm(environments)
    if running_pid() is not None and answers():
        text = json.dumps(document, indent=1, sort_keys=True)
        imported = state_dir() / "realm.sha256"
        if imported.is_file() and imported.read_text() == hashlib.sha256(text.encode()).hexdigest():
            return
        stop()
    start(document, ca_cert, cert, key)


def stop() -> None:
    pid = running_pid()
    if pid is not None:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while running_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if running_pid() is not None:
            os.killpg(pid, signal.SIGKILL)
    _pid_file().unlink(missing_ok=True)


def down() -> None:
    stop()
    remove_network()


def status() -> str:
    pid = running_pid()
    return f"identity provider {ISSUER}: " + (
        f"up (pid {pid})" if pid is not None and answers() else "starting" if pid is not None else "down"
    )


def main(argv: list[str]) -> int:
    return service_main("lab_idp", argv, up, down, status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
