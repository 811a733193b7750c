"""The lab's identity host: a network namespace of its own on the lab's bridge, where the hospital's
identity services run on the lab (Keycloak, lab_idp; the Kerberos KDC, lab_kdc; the directory,
lab_directory), each on the host's address only, and the TLS certificate they serve, from a CA of the
identity team's own (``$LAB_STATE/idp/ca.crt``)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from event_broker_rollout import paths
from event_broker_rollout.hosts.secret_files import write_secret

NETNS = "ebr-idp"
VETH = "ebrvidp"
BRIDGE = "ebrlab0"
ADDRESS = "10.77.0.2"
MAC = "02:eb:00:00:00:02"  # beside the bridge's 02:eb:00:00:00:01; the hosts' are 02:eb:00:00:01:<n>
PREFIX_LENGTH = 24


def state_dir() -> Path:
    """The identity team's state on the lab: its CA, the provider's database, the directory's."""
    return paths.lab_state_dir() / "idp"


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def in_netns(argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", NETNS, *argv]


def netns_exists() -> bool:
    return Path("/run/netns", NETNS).exists()


def ensure_network() -> None:
    """The namespace, its veth on the lab's bridge and its address (the lab must be up)."""
    if run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        raise RuntimeError(f"bridge {BRIDGE} not found: start the lab first (lab/lab.sh up)")
    if not netns_exists():
        run(["ip", "netns", "add", NETNS])
    if run(["ip", "link", "show", VETH], check=False).returncode != 0:
        run(in_netns(["ip", "link", "del", "eth0"]), check=False)
        run(["ip", "link", "add", VETH, "type", "veth", "peer", "name", "eth0", "netns", NETNS])
    run(["ip", "link", "set", VETH, "master", BRIDGE, "up"])
    # A fixed MAC, as the lab's hosts have: a provider started again keeps its address valid in the hosts'
    # neighbour caches (a new random MAC would leave them sending to the old one until the entry expires).
    run(in_netns(["ip", "link", "set", "eth0", "address", MAC]))
    addresses = run(in_netns(["ip", "-o", "addr", "show", "dev", "eth0"])).stdout
    if f" {ADDRESS}/" not in addresses:
        run(in_netns(["ip", "addr", "add", f"{ADDRESS}/{PREFIX_LENGTH}", "dev", "eth0"]))
    run(in_netns(["ip", "link", "set", "eth0", "up"]))
    run(in_netns(["ip", "link", "set", "lo", "up"]))


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


def remove_network() -> None:
    """Every process left inside the namespace killed, then the namespace and its veth removed."""
    if netns_exists():
        for pid in run(["ip", "netns", "pids", NETNS], check=False).stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        run(["ip", "netns", "del", NETNS], check=False)
    run(["ip", "link", "del", VETH], check=False)


def service_main(
    name: str,
    argv: list[str],
    up: Callable[[list[str]], None],
    down: Callable[[], None],
    status: Callable[[], str],
) -> int:
    """The command line every identity service of the lab shares: ``up [ENV ...] | down | status``."""
    command, names = (argv[0], argv[1:]) if argv else ("status", [])
    if command == "up":
        up(names)
    elif command == "down":
        down()
    elif command != "status":
        print(f"usage: {name} up [ENV ...] | down | status", file=sys.stderr)
        return 2
    print(status())
    return 0
