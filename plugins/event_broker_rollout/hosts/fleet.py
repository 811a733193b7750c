"""The environment's hosts as one fleet: SSH sessions in change order, each host observed and planned in its
recorded security phase, files applied host by host, and services restarted one at a time.

Every stage that changes hosts (infrastructure, security; upgrades and certificate rotation next) and
every read of the cluster's recorded state goes through here, so the order and the safety rules are one.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from event_broker_rollout.config.environment import Environment, Host, sizing_profile
from event_broker_rollout.evidence.audit import audit
from event_broker_rollout.evidence.results import Result, Status
from event_broker_rollout.hosts import operations as hostops
from event_broker_rollout.hosts.desired import (
    KAFKA_SERVICE,
    TOOLS_CONFIG,
    HostState,
    desired_state,
    kafka_tool,
)
from event_broker_rollout.hosts.listeners import PHASES, phase_index
from event_broker_rollout.hosts.parallel import in_parallel
from event_broker_rollout.hosts.plan import HostPlan, Observed, plan_host
from event_broker_rollout.hosts.preconditions import ChangeRefused, Occupancy
from event_broker_rollout.hosts.remote import RemoteError, RemoteHost
from event_broker_rollout.hosts.shell import Command

SSH_CONNECT_TIMEOUT = 10


def host_order(environment: Environment) -> list[Host]:
    """Controllers first, then brokers, then registry-only hosts (the stage's change order)."""

    def rank(host: Host) -> tuple[int, int]:
        if "controller" in host.roles:
            return (0, environment.node_id(host))
        if "broker" in host.roles:
            return (1, environment.node_id(host))
        return (2, environment.node_id(host))

    return sorted(environment.hosts, key=rank)


def session(environment: Environment, host: Host) -> RemoteHost:
    return RemoteHost.from_conn_id(host.name, host.ssh_conn_id, SSH_CONNECT_TIMEOUT)


SECURITY_PHASE_FILE = "/etc/event-broker/security-phase"


def host_state(environment: Environment, host: Host, systemd: bool, phase: str) -> HostState:
    profile_name, profile = sizing_profile(environment)
    return desired_state(environment, host, profile_name, profile, phase, systemd)


def plan_environment(environment: Environment, target_phase: str | None = None) -> dict[str, Any]:
    """Observe every host in parallel and plan it; read-only. Returns JSON-safe plans keyed by host.

    Each host is planned in the security phase it records (the security stage passes its target phase),
    so re-running this stage on a secured cluster keeps it secured.
    """

    def plan_one(name: str) -> dict[str, Any]:
        host = environment.host(name)
        try:
            with session(environment, host) as remote:
                seen = observe_host(remote, environment, host, target_phase)
        except RemoteError as error:
            return {"host": name, "error": str(error)}
        plan = plan_host(
            seen.state, seen.observed, environment.kafka.cluster_id, seen.contents, seen.occupancy
        )
        return {
            **plan.to_dict(),
            "systemd": seen.systemd,
            "phase": seen.phase,
            "recorded_phase": seen.recorded,
        }

    return in_parallel([h.name for h in host_order(environment)], plan_one)


@dataclass
class HostObservation:
    state: HostState
    observed: Observed
    contents: dict[str, str]  # current text of changed managed files (see ``hostops.observe``)
    occupancy: Occupancy
    systemd: bool
    phase: str  # the phase planned
    recorded: str  # the phase the host records


def observe_host(
    remote: RemoteHost, environment: Environment, host: Host, target_phase: str | None = None
) -> HostObservation:
    """Read-only: the host's desired state (in its recorded phase, or ``target_phase``) and what is there."""
    facts = remote.run_command(
        Command.of("test", "-d", "/run/systemd/system")
        .and_then("echo", "systemd")
        .then("cat", "--", SECURITY_PHASE_FILE)
        .quiet(),
        timeout=10,
    ).stdout.split()
    systemd = "systemd" in facts
    recorded = next((word for word in facts if word != "systemd"), "plaintext")
    phase = target_phase or recorded
    state = host_state(environment, host, systemd, phase)
    observed, contents, occupancy = hostops.observe(remote, state)
    return HostObservation(state, observed, contents, occupancy, systemd, phase, recorded)


def planned_hosts(plans: dict[str, Any]) -> dict[str, HostPlan]:
    """The plans, or an error before any change: a host could not be planned, or a change step would refuse."""
    unreachable = [name for name, data in plans.items() if "error" in data]
    if unreachable:
        raise RemoteError(f"unreachable during planning: {', '.join(unreachable)}; nothing was changed")
    planned = {name: HostPlan.from_dict(data) for name, data in plans.items()}
    refused = [f"{name}: {problem.message}" for name, plan in planned.items() for problem in plan.problems]
    if refused:
        raise ChangeRefused("; ".join(refused) + "; nothing was changed")
    return planned


def configure_hosts(environment: Environment, plans: dict[str, Any]) -> list[dict[str, Any]]:
    """Write files and format storage host by host in the stage order; stop before the next host on failure."""
    results: list[Result] = []
    for host in host_order(environment):
        plan = HostPlan.from_dict(plans[host.name])
        pending = [c for c in plan.changes if c.kind in ("file", "format")]
        if not pending and not plan.problems:
            results += [
                hostops.already(host.name, item) for item in plan.unchanged if not item.startswith("install:")
            ]
            continue
        with session(environment, host) as remote:
            state = host_state(environment, host, plans[host.name]["systemd"], plans[host.name]["phase"])
            plan.changes = pending
            results += hostops.apply_host_plan(
                remote, state, plan, kafka_tool(environment, "kafka-storage"), environment.kafka.cluster_id
            )
    return [r.to_dict() for r in results]


def restart_service(
    environment: Environment, plans: dict[str, Any], host_name: str, service_name: str
) -> dict[str, Any]:
    host = environment.host(host_name)
    with session(environment, host) as remote:
        output = hostops.service(remote, "restart", service_name, plans[host_name]["systemd"])
    audit(
        "infrastructure.service",
        target=service_name,
        outcome="restarted",
        host=host_name,
        result_id=f"infra.restart[{service_name}]",
    )
    return Result(
        id=f"infra.restart[{service_name}]",
        status=Status.CHANGED,
        host=host_name,
        message=output.strip() or f"restarted {service_name}",
    ).to_dict()


def rolling_restart_queue(environment: Environment, plans: dict[str, Any]) -> list[str]:
    """Kafka nodes to restart one at a time: controllers first, by node id (the gates run between each)."""
    return [
        h.name
        for h in host_order(environment)
        if h.name in plans and KAFKA_SERVICE in plans[h.name]["restart"]
    ]


def describe_quorum(environment: Environment) -> str:
    """``kafka-metadata-quorum.sh describe --replication`` from the installed distribution, on a controller."""
    port = environment.kafka.listeners.controller_port
    tool = kafka_tool(environment, "kafka-metadata-quorum")
    errors = []
    for host in environment.controllers:
        try:
            with ExitStack() as stack:
                remote = stack.enter_context(session(environment, host))
                tls = ["--command-config", TOOLS_CONFIG] if environment.security is not None else []
                result = remote.run_command(
                    Command.of("date", "+now=%s%3N").then(
                        tool,
                        "--bootstrap-controller",
                        f"{host.address}:{port}",
                        *tls,
                        "describe",
                        "--replication",
                    ),
                    timeout=60,
                )
                if result.ok:
                    return result.stdout
                errors.append(f"{host.name}: {result.stderr.strip()[-300:]}")
        except RemoteError as error:
            errors.append(str(error))
    raise RemoteError("; ".join(errors))


def recorded_phase(environment: Environment) -> str:
    """The security phase the Kafka hosts record (the least advanced one, if they differ)."""

    def read(name: str) -> str:
        with session(environment, environment.host(name)) as remote:
            text = remote.run_argv(["cat", "--", SECURITY_PHASE_FILE], timeout=10).stdout.strip()
        return text if text in PHASES else "plaintext"

    kafka_hosts = [h for h in environment.hosts if {"broker", "controller"} & set(h.roles)]
    # The controllers answer first: when one of them is still in the first phase (every cluster before its
    # security stage, so every first preflight and infrastructure run), no other host can change the answer.
    first = [h.name for h in kafka_hosts if "controller" in h.roles] or [kafka_hosts[0].name]
    least = min(in_parallel(first, read).values(), key=phase_index)
    rest = [h.name for h in kafka_hosts if h.name not in first]
    if phase_index(least) == 0 or not rest:
        return least
    return min([least, *in_parallel(rest, read).values()], key=phase_index)
