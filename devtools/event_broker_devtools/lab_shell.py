"""Commands on lab hosts from the tests and the bench: the system ssh client, host keys checked against
the lab's known_hosts, and a whole cluster's services stopped at once when it is thrown away."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from event_broker_rollout import paths

LAB_NETWORK_PREFIX = "10.77.0."
SERVICE_MANAGER = "/opt/event-broker/bin/ebr-service"
# A cluster thrown away at once: a broker's controlled shutdown would wait for a controller quorum that
# is already gone, until ebr-service's 180 s stop timeout. TERM, up to 15 s, then KILL. The service
# manager and service name arrive as positional arguments ($1, $2), never spliced into the script.
_STOP_QUICKLY = (
    'p=$("$1" pid "$2") || exit 0; kill -TERM "$p"; '
    'for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || exit 0; sleep 0.5; done; kill -KILL "$p" 2>/dev/null; true'
)


def lab_ssh(address: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``command`` (one remote shell line) on a lab host; only ever lab addresses."""
    if not address.startswith(LAB_NETWORK_PREFIX):
        raise ValueError(f"not a lab address: {address}")
    state = paths.lab_state_dir()
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(state / "ssh" / "id_ed25519"),
            "-o",
            f"UserKnownHostsFile={state / 'ssh' / 'known_hosts'}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            f"root@{address}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def service_command(action: str, service: str) -> str:
    return shlex.join([SERVICE_MANAGER, action, service])


def stop_quickly_command(service: str) -> str:
    return shlex.join(["sh", "-c", _STOP_QUICKLY, "stop-quickly", SERVICE_MANAGER, service])


def discard_cluster(kafka_hosts: Iterable[str], registry_host: str | None) -> None:
    """Stop Kafka on every node at once, then the registry: for a cluster whose data no longer matters."""
    hosts = list(kafka_hosts)
    with ThreadPoolExecutor(max(len(hosts), 1)) as pool:
        outcomes = list(pool.map(lambda address: lab_ssh(address, stop_quickly_command("kafka"), 60), hosts))
    if registry_host is not None:
        outcomes.append(lab_ssh(registry_host, stop_quickly_command("schema-registry"), 60))
    failed = [process.stderr.strip()[-300:] for process in outcomes if process.returncode != 0]
    if failed:
        raise RuntimeError(f"services not stopped: {failed}")
