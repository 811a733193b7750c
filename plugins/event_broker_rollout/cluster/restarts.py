"""The rolling-restart safety policy, as plain code every DAG that restarts Kafka nodes shares.

A node is restarted only while the rest of the cluster can carry its load: every other broker answers,
and no partition would drop below min.insync.replicas while the node is down (Strimzi's rule). The
Airflow layer's ``RollingRestartOperator`` asks before each node and gates after it.
"""

from __future__ import annotations

from event_broker_rollout.cluster import clients, health
from event_broker_rollout.config.environment import Environment


def restart_refusal(environment: Environment, phase: str, host_name: str) -> str | None:
    """Why restarting ``host_name`` now would be unsafe, or None when it is safe."""
    host = environment.host(host_name)
    config = clients.admin_config(environment, phase)
    silent = health.silent_brokers(config["bootstrap.servers"], str(host.address))
    if silent:
        names = {str(h.address): h.name for h in environment.hosts}
        who = [f"{names.get(health.server_address(server), server)} ({server})" for server in silent]
        return f"another broker does not answer: {', '.join(who)}"
    blockers = health.restart_blockers(
        health.admin_client(config), environment.node_id(host), environment.kafka.min_insync_replicas
    )
    if blockers:
        return f"it would take partitions below min.insync.replicas: {', '.join(blockers[:10])}"
    return None
