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

import datetime as dt
import hashlib
import ipaddress
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
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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

NETNS = "ebr-idp"
VETH = "ebrvidp"
BRIDGE = "ebrlab0"
ADDRESS = "10.77.0.2"
MAC = "02:eb:00:00:00:02"  # beside the bridge's 02:eb:00:00:00:01; the hosts' are 02:eb:00:00:01:<n>
PREFIX_LENGTH = 24
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


def state_dir() -> Path:
    return paths.lab_state_dir() / "idp"


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def _in_netns(argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", NETNS, *argv]


def netns_exists() -> bool:
    return Path("/run/netns", NETNS).exists()


def ensure_network() -> None:
    """The namespace, its veth on the lab's bridge and its address (the lab must be up)."""
    if _run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        raise RuntimeError(f"bridge {BRIDGE} not found: start the lab first (lab/lab.sh up)")
    if not netns_exists():
        _run(["ip", "netns", "add", NETNS])
    if _run(["ip", "link", "show", VETH], check=False).returncode != 0:
        _run(_in_netns(["ip", "link", "del", "eth0"]), check=False)
        _run(["ip", "link", "add", VETH, "type", "veth", "peer", "name", "eth0", "netns", NETNS])
    _run(["ip", "link", "set", VETH, "master", BRIDGE, "up"])
    # A fixed MAC, as the lab's hosts have: a provider started again keeps its address valid in the hosts'
    # neighbour caches (a new random MAC would leave them sending to the old one until the entry expires).
    _run(_in_netns(["ip", "link", "set", "eth0", "address", MAC]))
    addresses = _run(_in_netns(["ip", "-o", "addr", "show", "dev", "eth0"])).stdout
    if f" {ADDRESS}/" not in addresses:
        _run(_in_netns(["ip", "addr", "add", f"{ADDRESS}/{PREFIX_LENGTH}", "dev", "eth0"]))
    _run(_in_netns(["ip", "link", "set", "eth0", "up"]))
    _run(_in_netns(["ip", "link", "set", "lo", "up"]))


# --- TLS: a CA of the provider's own and its server certificate ----------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def ensure_tls(directory: Path) -> tuple[Path, Path, Path]:
    """``ca.crt``, ``tls.crt`` and ``tls.key`` (keys 0600), made once and kept while valid for 30 days."""
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key = directory / "tls.crt", directory / "tls.key"
    now = dt.datetime.now(dt.UTC)
    if all(p.is_file() for p in (ca_cert, ca_key, cert, key)):
        current = x509.load_pem_x509_certificate(cert.read_bytes())
        if current.not_valid_after_utc - now > dt.timedelta(days=30):
            return ca_cert, cert, key
    directory.mkdir(parents=True, exist_ok=True)
    authority_key = ec.generate_private_key(ec.SECP256R1())
    authority = (
        x509.CertificateBuilder()
        .subject_name(_name("event-broker lab identity provider CA"))
        .issuer_name(_name("event-broker lab identity provider CA"))
        .public_key(authority_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(authority_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(ADDRESS))
        .issuer_name(authority.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ADDRESS))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(authority_key, hashes.SHA256())
    )
    write_secret(ca_key, _pem(authority_key))
    write_secret(key, _pem(server_key))
    ca_cert.write_text(authority.public_bytes(serialization.Encoding.PEM).decode())
    cert.write_text(server.public_bytes(serialization.Encoding.PEM).decode())
    return ca_cert, cert, key


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
            "protocolMappers": [] if principal == OTHER_APPLICATION else mappers,
        }
        if principal == SHORT_LIVED_CLIENT:
            settings["protocolMappers"] = [_audience_mapper(audience) for audience in kafka_audience]
            settings["attributes"] = {"access.token.lifespan": str(SHORT_LIVED_TOKEN_S)}
        return settings

    return {
        "realm": REALM,
        "enabled": True,
        "accessTokenLifespan": 300,
        "roles": {"realm": [{"name": role} for role in (ADMIN_ROLE, "sr-developer", READER_ROLE)]},
        "clients": [
            *(
                {"clientId": audience, "enabled": True, "publicClient": False, "bearerOnly": True}
                for audience in audiences
            ),
            *(client(principal) for principal in sorted(roles)),
        ],
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
    inside = _run(["ip", "netns", "pids", NETNS], check=False).stdout.split()
    return pid if str(pid) in inside else None


def _ca_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(state_dir() / "ca.crt"))


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
        _in_netns(
            [
                str(KEYCLOAK_DIR / "bin" / "kc.sh"),
                "start",
                "--optimized",
                "--http-enabled=false",
                f"--http-host={ADDRESS}",
                f"--https-port={PORT}",
                f"--https-certificate-file={cert}",
                f"--https-certificate-key-file={key}",
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
    if netns_exists():
        for pid in _run(["ip", "netns", "pids", NETNS], check=False).stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        _run(["ip", "netns", "del", NETNS], check=False)
    _run(["ip", "link", "del", VETH], check=False)


def status() -> str:
    pid = running_pid()
    return f"identity provider {ISSUER}: " + (
        f"up (pid {pid})" if pid is not None and answers() else "starting" if pid is not None else "down"
    )


def main(argv: list[str]) -> int:
    command, names = (argv[0], argv[1:]) if argv else ("status", [])
    if command == "up":
        up(names)
        print(status())
    elif command == "down":
        down()
        print(status())
    elif command == "status":
        print(status())
    else:
        print("usage: lab_idp up [ENV ...] | down | status", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
