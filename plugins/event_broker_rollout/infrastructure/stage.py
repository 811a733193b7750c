"""The infrastructure stage's steps as plain functions; the DAG wires them between its gates.

Order: plan every host (read-only) -> install binaries (side by side, nothing restarts) -> configure
host by host, controllers first (stop at the first failure, that host restored) -> start controllers ->
quorum gate -> start brokers -> broker and partition gates -> rolling restart of changed nodes, one at a
time behind the gates -> registry -> registry gate.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from event_broker_rollout.config.environment import Environment, Host, sizing_profile
from event_broker_rollout.evidence.audit import audit
from event_broker_rollout.evidence.results import Result, Severity, Status
from event_broker_rollout.hosts import operations as hostops
from event_broker_rollout.hosts import preconditions
from event_broker_rollout.hosts.desired import (
    KAFKA_SERVICE,
    REGISTRY_SERVICE,
    TOOLS_CONFIG,
    HostState,
    desired_state,
    kafka_tool,
)
from event_broker_rollout.hosts.plan import HostPlan, Observed, plan_host
from event_broker_rollout.hosts.preconditions import ChangeRefused, Occupancy
from event_broker_rollout.hosts.remote import RemoteError, RemoteHost
from event_broker_rollout.hosts.shell import Command
from event_broker_rollout.preflight.network import in_parallel

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
    observed, contents = hostops.observe(remote, state)
    occupancy = preconditions.parse_occupancy(
        remote.run_argv(preconditions.observe_command(state), timeout=60, check=True).stdout
    )
    return HostObservation(state, observed, contents, occupancy, systemd, phase, recorded)


def plan_results(plans: dict[str, Any], dry_run: bool) -> list[Result]:
    """The plan as evidence: each change (with its diff), each start/restart, each item already in place."""
    results: list[Result] = []
    verb = "would" if dry_run else "will"
    for name, data in plans.items():
        if "error" in data:
            results.append(Result(id="host.reachable", status=Status.FAIL, host=name, message=data["error"]))
            continue
        plan = HostPlan.from_dict(data)
        results += refusal_results(name, plan.problems)
        for change in plan.changes:
            results.append(
                Result(
                    id=f"plan.{change.kind}[{change.target}]",
                    status=Status.CHANGED if not dry_run else Status.WARN,
                    host=name,
                    message=f"{verb} {change.kind} {change.target}",
                    observed=change.before,
                    expected=change.after,
                    severity=Severity.ADVISORY,
                    details={"diff": change.diff} if change.diff else {},
                )
            )
        for service in plan.start:
            results.append(
                Result(
                    id=f"plan.start[{service}]",
                    status=Status.WARN if dry_run else Status.CHANGED,
                    host=name,
                    message=f"{verb} start {service}",
                    severity=Severity.ADVISORY,
                )
            )
        for service in plan.restart:
            results.append(
                Result(
                    id=f"plan.restart[{service}]",
                    status=Status.WARN if dry_run else Status.CHANGED,
                    host=name,
                    message=f"{verb} restart {service} (rolling, gated)",
                    severity=Severity.ADVISORY,
                )
            )
    return results


def refusal_results(host_name: str, problems: list[preconditions.Precondition]) -> list[Result]:
    return [
        Result(
            id=problem.id,
            status=Status.FAIL,
            host=host_name,
            message=problem.message,
            observed=problem.observed,
            expected=problem.expected,
            severity=Severity.BLOCKING,
        )
        for problem in problems
    ]


def blocking_results(plans: dict[str, Any]) -> list[Result]:
    """What stopped the stage at its plan: unreachable hosts and what a change step would refuse."""
    results: list[Result] = []
    for name, data in plans.items():
        if "error" in data:
            results.append(Result(id="host.reachable", status=Status.FAIL, host=name, message=data["error"]))
        else:
            results += refusal_results(name, HostPlan.from_dict(data).problems)
    return results


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


def install_host(environment: Environment, plans: dict[str, Any], host_name: str) -> list[dict[str, Any]]:
    """Create the service user and unpack new binaries beside the running ones (nothing restarts here)."""
    plan = HostPlan.from_dict(plans[host_name])
    if plan.problems:
        raise ChangeRefused(f"{host_name}: " + "; ".join(problem.message for problem in plan.problems))
    pending = [c for c in plan.changes if c.kind in ("user", "install")]
    if not pending:
        return [
            hostops.already(host_name, item).to_dict()
            for item in plan.unchanged
            if item.startswith("install:")
        ]
    host = environment.host(host_name)
    results = []
    with session(environment, host) as remote:
        state = host_state(environment, host, plans[host_name]["systemd"], plans[host_name]["phase"])
        specs = {i.target: i for i in state.installs}
        for change in pending:
            if change.kind == "user":
                hostops.ensure_user(remote, state.service_user)
                results.append(hostops.changed(change, f"created system user {change.target}"))
        hostops.ensure_directories(remote, state)
        for change in pending:
            if change.kind == "install":
                hostops.install(remote, specs[change.target])
                results.append(
                    hostops.changed(
                        change, f"installed {specs[change.target].archive.name} into {change.target}"
                    )
                )
    return [r.to_dict() for r in results]


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


def start_services(
    environment: Environment, plans: dict[str, Any], role: str, service_name: str
) -> list[dict[str, Any]]:
    """Start the stopped ``service_name`` on every host with ``role`` (first install: all together).

    Brokers that are also controllers run one Kafka process, already started with the controllers.
    """

    def wanted(host: Host) -> bool:
        if role == "broker" and "controller" in host.roles:
            return False
        return role in host.roles and service_name in plans[host.name]["start"]

    targets = [h for h in host_order(environment) if wanted(h)]

    def start(name: str) -> Result:
        host = environment.host(name)
        with session(environment, host) as remote:
            output = hostops.service(remote, "start", service_name, plans[name]["systemd"])
        audit(
            "infrastructure.service",
            target=service_name,
            outcome="started",
            host=name,
            result_id=f"infra.start[{service_name}]",
            before="stopped",
            after="running",
        )
        return Result(
            id=f"infra.start[{service_name}]",
            status=Status.CHANGED,
            host=name,
            message=output.strip() or f"started {service_name}",
        )

    return [r.to_dict() for r in in_parallel([h.name for h in targets], start).values()]


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


def registry_action(plans: dict[str, Any], host_name: str) -> str | None:
    if REGISTRY_SERVICE in plans[host_name]["start"]:
        return "start"
    if REGISTRY_SERVICE in plans[host_name]["restart"]:
        return "restart"
    return None


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


def summary(plans: dict[str, Any], results: list[Result], dry_run: bool) -> dict[str, Any]:
    changes = [r for r in results if r.status is Status.CHANGED]
    restarts = [r for r in changes if r.id.startswith(("infra.restart[", "infra.start["))]
    return {
        "dry_run": dry_run,
        "hosts": len(plans),
        "changes": len([r for r in changes if not r.id.startswith("plan.")]),
        "services_started_or_restarted": len(restarts),
        "planned_changes": sum(len(p.get("changes", [])) for p in plans.values()),
    }


def recorded_phase(environment: Environment) -> str:
    """The security phase the Kafka hosts record (the least advanced one, if they differ)."""
    from event_broker_rollout.hosts.listeners import PHASES, phase_index

    def read(name: str) -> str:
        with session(environment, environment.host(name)) as remote:
            text = remote.run_argv(["cat", "--", SECURITY_PHASE_FILE], timeout=10).stdout.strip()
        return text if text in PHASES else "plaintext"

    kafka_hosts = [h.name for h in environment.hosts if {"broker", "controller"} & set(h.roles)]
    return min(in_parallel(kafka_hosts, read).values(), key=phase_index)
