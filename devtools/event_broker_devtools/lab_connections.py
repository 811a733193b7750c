"""Airflow connections for the local lab, generated from the inventory that ``lab/lab.sh up`` writes.

The SSH connections carry the lab's client key and each host's public key (``host_key`` extra), so the
SSH provider and our fabric sessions check the host key on every connection.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any

from event_broker_rollout import paths
from event_broker_rollout.cluster.clients import registry_api_url
from event_broker_rollout.config.components import load_components
from event_broker_rollout.config.environment import Environment, load_environment
from event_broker_rollout.evidence import trail as audit_trail
from event_broker_rollout.evidence.trail import SIGNING_CONN_ID
from event_broker_rollout.hosts.secret_files import write_secret


def lab_inventory(state_dir: Path | None = None) -> dict[str, Any]:
    inventory = (state_dir or paths.lab_state_dir()) / "lab.json"
    if not inventory.is_file():
        raise FileNotFoundError(f"{inventory} not found: is the lab up? (make lab-up)")
    data: dict[str, Any] = json.loads(inventory.read_text())
    return data


def ssh_connections(inventory: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``ssh_<host>`` for every lab host that is up."""
    return {
        f"ssh_{host['name']}": {
            "conn_type": "ssh",
            "host": host["address"],
            "login": "root",
            "port": 22,
            "extra": {
                "key_file": inventory["ssh_key"],
                "host_key": host["host_key"],
                "conn_timeout": 5,
                "look_for_keys": "false",
            },
        }
        for host in inventory["hosts"]
    }


def ensure_lab_credentials(environment: Environment) -> dict[str, str]:
    """The lab's SCRAM passwords: generated once (random, mode 0600) for every principal it needs."""

    assert environment.security is not None and environment.security.credentials is not None
    assert environment.security.credentials.path
    path = Path(environment.security.credentials.path)
    existing: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    users = [environment.security.admin_user, *load_components(environment.security.components).principals()]
    wanted = {user: existing.get(user) or secrets.token_urlsafe(24) for user in users}
    if wanted != existing:
        write_secret(path, json.dumps(wanted, indent=2))
    return wanted


def service_connections(environment: Environment) -> dict[str, dict[str, Any]]:
    """The Kafka admin and Schema Registry connections of a lab environment.

    Addresses and protocols follow the cluster's security phase (the code derives them); the Kafka
    connection carries the admin user's credentials.
    """
    connections: dict[str, dict[str, Any]] = {}
    kafka: dict[str, Any] = {
        "conn_type": "kafka",
        "extra": {"bootstrap.servers": environment.bootstrap_servers()},
    }
    if environment.security is not None:
        kafka["login"] = environment.security.admin_user
        if environment.security.credentials is not None:  # SCRAM; with mTLS the login names the certificate
            credentials = ensure_lab_credentials(environment)
            kafka["password"] = credentials[environment.security.admin_user]
    connections[environment.connections.kafka_admin] = kafka
    registry = environment.registries[0]
    connections[environment.connections.schema_registry] = {
        "conn_type": "http",
        "host": str(registry.address),
        "port": environment.schema_registry.port,
        "schema": "http",
        "extra": {
            "url": registry_api_url(
                environment, f"http://{registry.address}:{environment.schema_registry.port}"
            )
        },
    }
    return connections


def ensure_audit_signing_key(state_dir: Path | None = None) -> str:
    """The lab deployment's audit-trail signing key (Ed25519, PKCS#8 PEM): generated once into the lab's
    state (``secrets/audit-signing.key``, 0600) and kept for every later lab-up, so the lab's trails form
    one chain; its public key, which verifiers need, is written beside it (``audit-signing.pub``)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    state = state_dir or paths.lab_state_dir()
    key_file = state / audit_trail.LAB_PRIVATE_KEY_FILE
    if not key_file.exists():
        write_secret(key_file, audit_trail.private_key_pem(Ed25519PrivateKey.generate()))
    pem = key_file.read_text()
    public = audit_trail.public_key_pem(audit_trail.load_private_key(pem, str(key_file)).public_key())
    public_file = state / audit_trail.LAB_PUBLIC_KEY_FILE
    if not public_file.is_file() or public_file.read_text() != public:
        public_file.write_text(public)
    return pem


def audit_signing_connection(state_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """``ebr_audit_signing``: the export tasks sign each trail with its password (the private key)."""

    return {
        SIGNING_CONN_ID: {
            "conn_type": "generic",
            "description": "Ed25519 key signing the audit trails (password: PKCS#8 PEM)",
            "password": ensure_audit_signing_key(state_dir),
        }
    }


def connections_file() -> Path:
    return paths.lab_state_dir() / "airflow-connections.json"


def write_connections(environment_names: list[str]) -> Path:
    """Write one connections file covering the given lab environments; returns its path."""
    inventory = lab_inventory()
    merged = ssh_connections(inventory)
    for name in environment_names:
        merged.update(service_connections(load_environment(name)))
    merged.update(audit_signing_connection())
    target = connections_file()
    write_secret(target, json.dumps(merged, indent=2) + "\n")
    return target


def main(argv: list[str]) -> int:
    names = argv or ["lab"]
    print(write_connections(names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
