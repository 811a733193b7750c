"""The infrastructure stage's steps as plain functions; the DAG wires them between its gates.

Order: plan every host (read-only) -> install binaries (side by side, nothing restarts) -> configure
host by host, controllers first (stop at the first failure, that host restored) -> start controllers ->
quorum gate -> start brokers -> broker and partition gates -> rolling restart of changed nodes, one at a
time behind the gates -> registry -> registry gate.
"""

from __future__ import annotations

from typing import Any

from event_broker_rollout.config.environment import Environment, Host
from event_broker_rollout.evidence.audit import audit
from event_broker_rollout.evidence.results import Result, Severity, Status
from event_broker_rollout.evidence.steps import Step
from event_broker_rollout.hosts import fleet, preconditions
from event_broker_rollout.hosts import operations as hostops
from event_broker_rollout.hosts.desired import REGISTRY_SERVICE
from event_broker_rollout.hosts.parallel import in_parallel
from event_broker_rollout.hosts.plan import HostPlan
from event_broker_rollout.hosts.preconditions import ChangeRefused


def plan(environment: Environment) -> Step:
    """Read-only: observe every host and compute what would change. The plans are data for every later
    step; the report turns them into evidence (``plan_results``, ``blocking_results``)."""
    return Step(data=fleet.plan_environment(environment))


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


def install_host(environment: Environment, plans: dict[str, Any], host_name: str) -> Step:
    """Create the service user and unpack new binaries beside the running ones (nothing restarts here)."""
    plan = HostPlan.from_dict(plans[host_name])
    if plan.problems:
        raise ChangeRefused(f"{host_name}: " + "; ".join(problem.message for problem in plan.problems))
    pending = [c for c in plan.changes if c.kind in ("user", "install")]
    if not pending:
        return Step.of(
            hostops.already(host_name, item) for item in plan.unchanged if item.startswith("install:")
        )
    host = environment.host(host_name)
    results = []
    with fleet.session(environment, host) as remote:
        state = fleet.host_state(environment, host, plans[host_name]["systemd"], plans[host_name]["phase"])
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
    return Step.of(results)


def configure(environment: Environment, plans: dict[str, Any]) -> Step:
    """Write files and format storage host by host in the stage order (nothing restarts here)."""
    return Step.of(map(Result.from_dict, fleet.configure_hosts(environment, plans)))


def start_services(environment: Environment, plans: dict[str, Any], role: str, service_name: str) -> Step:
    """Start the stopped ``service_name`` on every host with ``role`` (first install: all together).

    Brokers that are also controllers run one Kafka process, already started with the controllers.
    """

    def wanted(host: Host) -> bool:
        if role == "broker" and "controller" in host.roles:
            return False
        return role in host.roles and service_name in plans[host.name]["start"]

    targets = [h for h in fleet.host_order(environment) if wanted(h)]

    def start(name: str) -> Result:
        host = environment.host(name)
        with fleet.session(environment, host) as remote:
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

    return Step.of(in_parallel([h.name for h in targets], start).values())


def start_registry(environment: Environment, plans: dict[str, Any]) -> Step:
    """Start a stopped registry; restart one whose configuration changed."""
    started = start_services(environment, plans, "schema_registry", REGISTRY_SERVICE)
    restarted = [
        Result.from_dict(fleet.restart_service(environment, plans, host.name, REGISTRY_SERVICE))
        for host in environment.registries
        if registry_action(plans, host.name) == "restart"
    ]
    return Step.of([*started.results, *restarted])


def registry_action(plans: dict[str, Any], host_name: str) -> str | None:
    if REGISTRY_SERVICE in plans[host_name]["start"]:
        return "start"
    if REGISTRY_SERVICE in plans[host_name]["restart"]:
        return "restart"
    return None


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
