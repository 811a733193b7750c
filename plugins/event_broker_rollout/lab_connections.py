"""Airflow connections for the local lab, generated from the inventory that ``lab/lab.sh up`` writes.

The SSH connections carry the lab's client key and each host's public key (``host_key`` extra), so the
SSH provider and our fabric sessions check the host key on every connection.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from event_broker_rollout import paths
from event_broker_rollout.environment import Environment, load_environment


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
    from event_broker_rollout.components import load_components

    assert environment.security is not None and environment.security.credentials.path
    path = Path(environment.security.credentials.path)
    existing: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    users = [environment.security.admin_user, *load_components(environment.security.components).principals()]
    wanted = {user: existing.get(user) or secrets.token_urlsafe(24) for user in users}
    if wanted != existing:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(wanted, handle, indent=2)
        tmp.replace(path)
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
        credentials = ensure_lab_credentials(environment)
        kafka["login"] = environment.security.admin_user
        kafka["password"] = credentials[environment.security.admin_user]
    connections[environment.connections.kafka_admin] = kafka
    registry = environment.registries[0]
    connections[environment.connections.schema_registry] = {
        "conn_type": "http",
        "host": str(registry.address),
        "port": environment.schema_registry.port,
        "schema": "http",
        "extra": {"url": f"http://{registry.address}:{environment.schema_registry.port}/apis/ccompat/v7"},
    }
    return connections


def connections_file() -> Path:
    return paths.lab_state_dir() / "airflow-connections.json"


def write_connections(environment_names: list[str]) -> Path:
    """Write one connections file covering the given lab environments; returns its path."""
    inventory = lab_inventory()
    merged = ssh_connections(inventory)
    for name in environment_names:
        merged.update(service_connections(load_environment(name)))
    target = connections_file()
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(target)
    return target


def main(argv: list[str]) -> int:
    names = argv or ["lab"]
    print(write_connections(names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
