"""Health of the cluster as the gates see it: brokers registered, partitions healthy, registry up, quorum.

Plain functions over confluent-kafka's AdminClient, HTTP and the distribution's own quorum tool output,
so the triggers (and the compliance run) reuse them. Each returns a JSON-safe dict with ``healthy`` and
what was observed, so a gate that times out can say which broker is missing or which partitions lag.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, ConfigResource

from event_broker_rollout.cluster.kerberos import CCACHE_PROPERTY
from event_broker_rollout.hosts.tls import certificate_principal, foreign_client_identity

ADMIN_TIMEOUT = 10.0
CONNECT_TIMEOUT = 3.0


class KafkaLoginError(RuntimeError):
    """The cluster refused the rollout's admin login, or did not answer it."""


def admin_client(config: Mapping[str, Any]) -> AdminClient:
    settings = {"socket.timeout.ms": 10000, "request.timeout.ms": 10000, **config}
    return AdminClient(dict(settings))


def kafka_error_text(error: Exception) -> str:
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0].name()
    return f"{type(error).__name__}: {error}"


def login_error(
    config: Mapping[str, Any], timeout: float = 10.0, *, expect_refusal: bool = False
) -> str | None:
    """None if a metadata request succeeds with these settings, else why not. An authentication error
    (reported through the client's error callback) ends the wait early and is the answer. With
    ``expect_refusal`` (a probe that must be refused) the brokers dropping the connection ends it too:
    that is how a SASL listener answers a client that does not speak SASL (no error callback comes), and
    waiting on proves nothing. A slow cluster times out instead, which does not end the wait."""
    errors: list[KafkaError] = []
    settings: dict[str, Any] = {**config, "error_cb": errors.append, "socket.timeout.ms": 5000}
    admin = AdminClient(settings)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1)
            return None
        except KafkaException as error:
            last = kafka_error_text(error)
        admin.poll(0.2)  # serves the error callback
        # A TLS listener that requires client certificates refuses in the handshake (_SSL).
        refusals = (
            (KafkaError._AUTHENTICATION, KafkaError._SSL) if expect_refusal else (KafkaError._AUTHENTICATION,)
        )
        refused = [e for e in errors if e.code() in refusals]
        if refused:
            return f"{refused[0].name()}: {refused[0].str()}"
        if expect_refusal and last == "_TRANSPORT":
            return "_TRANSPORT: the brokers closed the connection"
    return last


def clients_to_refuse(secure_config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Settings of the two logins the secure listener must refuse: TLS with no identity (``none``) and a
    wrong one (``wrong``): the user with a wrong password (SCRAM), a certificate with the same subject
    from a CA the cluster does not trust (mTLS), a token naming the principal that no provider signed
    (OAUTHBEARER), or the principal's name with a password (Kerberos)."""
    identity_keys = (
        "sasl.",
        "ssl.certificate.location",
        "ssl.key.location",
        "plugin.library.paths",
        CCACHE_PROPERTY,
    )
    no_credentials = {k: v for k, v in secure_config.items() if not k.startswith(identity_keys)}
    no_credentials["security.protocol"] = "SSL"
    if secure_config.get("security.protocol") == "SSL":
        principal = certificate_principal(Path(secure_config["ssl.certificate.location"]))
        certificate, key = foreign_client_identity(principal)
        wrong = {**no_credentials, "ssl.certificate.location": str(certificate), "ssl.key.location": str(key)}
    elif secure_config.get("sasl.mechanism") == "OAUTHBEARER":
        # A token that names the same principal but that no provider signed (librdkafka's unsecured JWT).
        wrong = {
            **{k: v for k, v in secure_config.items() if not k.startswith("sasl.oauthbearer.")},
            "enable.sasl.oauthbearer.unsecure.jwt": True,
            "sasl.oauthbearer.config": f"principal={secure_config['sasl.oauthbearer.client.id']}",
        }
    elif secure_config.get("sasl.mechanism") == "GSSAPI":
        # The principal's name with a password: a listener that takes Kerberos tickets takes nothing else.
        wrong = {
            **no_credentials,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": secure_config["sasl.kerberos.principal"].partition("@")[0],
            "sasl.password": "not-the-password-" + "x" * 12,
        }
    else:
        wrong = {**secure_config, "sasl.password": "not-the-password-" + "x" * 12}
    return {"none": no_credentials, "wrong": wrong}


def authenticated_admin(config: Mapping[str, Any]) -> AdminClient:
    """An admin client whose login the cluster has accepted. A wrong password then fails here, by name,
    before any change, rather than as librdkafka's "Broker transport failure" halfway through one."""
    refused = login_error(config)
    if refused is not None:
        user = (
            config.get("sasl.username")
            or config.get("sasl.oauthbearer.client.id")
            or config.get("sasl.kerberos.principal", "(no SASL user)")
        )
        raise KafkaLoginError(
            f"the cluster at {config.get('bootstrap.servers')} did not accept the admin login as {user}: {refused}"
        )
    return admin_client(config)


def brokers_status(admin: AdminClient, expected_ids: Iterable[int]) -> dict[str, Any]:
    expected = sorted(set(expected_ids))
    try:
        cluster = admin.describe_cluster(request_timeout=ADMIN_TIMEOUT).result()
    except Exception as error:  # a broker-side or transport error is an observation, not a crash
        return {"healthy": False, "registered": [], "missing": expected, "error": str(error)}
    registered = sorted(node.id for node in cluster.nodes)
    missing = [node_id for node_id in expected if node_id not in registered]
    # A broker that just died stays registered until its session times out; a connection knows at once.
    unreachable = sorted(
        node.id
        for node in cluster.nodes
        if node.id in expected and not accepts_connection(node.host, node.port, timeout=CONNECT_TIMEOUT)
    )
    return {
        "healthy": not missing and not unreachable,
        "registered": registered,
        "missing": missing,
        "unreachable": unreachable,
        "controller": cluster.controller.id if cluster.controller else None,
        "cluster_id": cluster.cluster_id,
    }


def _min_isr_by_topic(admin: AdminClient, topics: list[str], default: int) -> dict[str, int]:
    if not topics:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in topics]
    values = {}
    for resource, future in admin.describe_configs(resources, request_timeout=ADMIN_TIMEOUT).items():
        try:
            entry = future.result().get("min.insync.replicas")
            values[resource.name] = (
                int(entry.value) if entry is not None and entry.value is not None else default
            )
        except Exception:
            values[resource.name] = default
    return values


def partitions_status(admin: AdminClient, default_min_isr: int) -> dict[str, Any]:
    try:
        metadata: ClusterMetadata = admin.list_topics(timeout=ADMIN_TIMEOUT)
    except Exception as error:
        return {
            "healthy": False,
            "error": str(error),
            "under_replicated": [],
            "under_min_isr": [],
            "offline": [],
        }
    min_isr = _min_isr_by_topic(admin, list(metadata.topics), default_min_isr)
    under_replicated, under_min_isr, offline = [], [], []
    for topic, description in sorted(metadata.topics.items()):
        for partition_id, partition in sorted(description.partitions.items()):
            name = f"{topic}-{partition_id}"
            if partition.leader is None or partition.leader < 0:
                offline.append(name)
            if len(partition.isrs) < len(partition.replicas):
                under_replicated.append(name)
            if len(partition.isrs) < min(min_isr.get(topic, default_min_isr), len(partition.replicas)):
                under_min_isr.append(name)
    return {
        "healthy": not (under_replicated or under_min_isr or offline),
        "topics": len(metadata.topics),
        "partitions": sum(len(t.partitions) for t in metadata.topics.values()),
        "under_replicated": under_replicated,
        "under_min_isr": under_min_isr,
        "offline": offline,
    }


def restart_blockers(admin: AdminClient, broker_id: int, default_min_isr: int) -> list[str]:
    """Partitions a restart of ``broker_id`` would take below min.insync.replicas (Strimzi's rule)."""
    metadata = admin.list_topics(timeout=ADMIN_TIMEOUT)
    min_isr = _min_isr_by_topic(admin, list(metadata.topics), default_min_isr)
    blockers = []
    for topic, description in sorted(metadata.topics.items()):
        for partition_id, partition in sorted(description.partitions.items()):
            if broker_id in partition.isrs and len(partition.isrs) - 1 < min_isr.get(topic, default_min_isr):
                blockers.append(f"{topic}-{partition_id} (isr {sorted(partition.isrs)})")
    return blockers


def accepts_connection(address: str, port: int, timeout: float) -> bool:
    try:
        socket.create_connection((address, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def closed_listeners(nodes: Mapping[int, tuple[str, int]], timeout: float = CONNECT_TIMEOUT) -> list[int]:
    """The nodes (id -> address, port) whose listener does not accept a TCP connection now: a look that
    costs no client and no JVM."""
    return [node for node, (address, port) in nodes.items() if not accepts_connection(address, port, timeout)]


def silent_brokers(bootstrap_servers: str, skip_address: str, timeout: float = CONNECT_TIMEOUT) -> list[str]:
    """Brokers of the bootstrap list (``host:port,...``), other than ``skip_address``, that do not accept
    a TCP connection now. The cluster's metadata keeps a broker that just died registered, and in the
    ISRs, until its session times out; a connection attempt knows at once."""
    return [
        server
        for server in (item.strip() for item in bootstrap_servers.split(","))
        if server_address(server) != skip_address
        and not accepts_connection(server_address(server), int(server.rpartition(":")[2]), timeout)
    ]


def server_address(server: str) -> str:
    """The address of a ``host:port`` (or ``[v6]:port``) bootstrap entry."""
    return server.rpartition(":")[0].strip("[]")


def registry_status(
    base_url: str, health_url: str, ca_file: str | None = None, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The registry answers its health endpoint and lists subjects through the Confluent-compatible API
    (``headers``: the credentials where it authenticates; its health endpoint answers anyone)."""
    observed: dict[str, Any] = {"healthy": False, "url": base_url}
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(health_url, timeout=5, context=context) as response:
            health = json.loads(response.read() or b"{}")
            observed["health"] = health.get("status", response.status)
        subjects = urllib.request.Request(f"{base_url.rstrip('/')}/subjects", headers=dict(headers or {}))
        with urllib.request.urlopen(subjects, timeout=5, context=context) as response:
            observed["subjects"] = len(json.loads(response.read()))
            observed["healthy"] = observed["health"] in ("UP", 200)
    except (urllib.error.URLError, OSError, ValueError) as error:
        observed["error"] = str(error)
    return observed


_QUORUM_ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\d+)\s+(-?\d+)\s+(\S+)\s+(\S+)\s+(\S+)", re.MULTILINE)


def quorum_status(
    replication_output: str, expected_voters: Iterable[int], max_lag: int = 1000, max_stale_ms: int = 15000
) -> dict[str, Any]:
    """Parse ``kafka-metadata-quorum.sh describe --replication``: every expected voter present and caught up.

    Columns: NodeId DirectoryId LogEndOffset Lag LastFetchTimestamp LastCaughtUpTimestamp Status. A voter
    is caught up when its lag is small and it caught up recently (a dead follower's timestamp stops);
    ``now=<epoch ms>`` in the output (the controller host's clock) anchors "recently".
    """
    now_match = re.search(r"^now=(\d+)", replication_output, re.MULTILINE)
    now_ms = int(now_match.group(1)) if now_match else None
    voters: dict[int, dict[str, Any]] = {}
    for match in _QUORUM_ROW.finditer(replication_output):
        node_id, _directory, end_offset, lag, _fetch, caught_up, status = match.groups()
        if status in ("Leader", "Follower"):
            stale = now_ms - int(caught_up) if now_ms is not None and caught_up.lstrip("-").isdigit() else 0
            voters[int(node_id)] = {
                "status": status,
                "lag": int(lag),
                "log_end_offset": int(end_offset),
                "caught_up_ms_ago": stale,
            }
    expected = sorted(set(expected_voters))
    missing = [node for node in expected if node not in voters]
    lagging = [
        node
        for node, info in voters.items()
        if info["lag"] > max_lag or info["caught_up_ms_ago"] > max_stale_ms
    ]
    leaders = [node for node, info in voters.items() if info["status"] == "Leader"]
    return {
        "healthy": not missing and not lagging and len(leaders) == 1,
        "voters": {str(k): v for k, v in sorted(voters.items())},
        "missing": missing,
        "lagging": lagging,
        "leader": leaders[0] if leaders else None,
    }
