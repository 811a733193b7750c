"""The preflight stage's steps as plain functions (the DAG wires them; tests call them directly).

Each step returns a ``Step``. An unreachable host is a finding, never an exception: the other hosts'
checks complete and the report names the host.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

from event_broker_rollout.config.catalog import load_catalog, load_policies
from event_broker_rollout.config.components import PROBE_PRINCIPAL, components_of
from event_broker_rollout.config.environment import Environment, Host, sizing_profile
from event_broker_rollout.evidence.results import Result, utcnow
from event_broker_rollout.evidence.steps import Step, step_data
from event_broker_rollout.hosts import fleet
from event_broker_rollout.hosts.parallel import in_parallel
from event_broker_rollout.hosts.plan import host_preconditions
from event_broker_rollout.hosts.remote import RemoteError, RemoteHost
from event_broker_rollout.preflight import checks, governance, identity, kerberos, network
from event_broker_rollout.preflight.facts import HostFacts, facts_command, parse_facts

SSH_CONNECT_TIMEOUT = 5


def deployment_mode(environment: Environment, override: str | None) -> str:
    return override or str(environment.deployment_mode)


# A task process costs about a second of CPU before it does anything: past this many hosts, each mapped
# inspection task inspects its share of the hosts at once (SSH round trips, not CPU, are their cost).
INSPECTION_TASKS = 4


def host_batches(environment: Environment) -> list[list[str]]:
    """The hosts dealt into at most ``INSPECTION_TASKS`` lists: what the inspection tasks map over."""
    names = [host.name for host in environment.hosts]
    count = min(INSPECTION_TASKS, len(names))
    return [names[index::count] for index in range(count)]


def inspect_hosts(
    environment: Environment, host_names: list[str], profile_override: str | None, mode_override: str | None
) -> Step:
    """``inspect_host`` for several hosts at once; the data is the list of their inspections."""
    steps = in_parallel(
        host_names, lambda name: inspect_host(environment, name, profile_override, mode_override)
    )
    return Step.of(
        [result for step in steps.values() for result in step.results],
        data=[step.data for step in steps.values()],
    )


def inspect_host(
    environment: Environment, host_name: str, profile_override: str | None, mode_override: str | None
) -> Step:
    """The host's checks; its facts and clock sample are data for ``inspect_network``."""
    host = environment.host(host_name)
    profile_name, profile = sizing_profile(environment, profile_override)
    mode = deployment_mode(environment, mode_override)
    try:
        with RemoteHost.from_conn_id(host.name, host.ssh_conn_id, SSH_CONNECT_TIMEOUT) as session:
            before = time.time()
            remote_clock = float(session.run_argv(["date", "+%s.%N"], timeout=10, check=True).stdout.strip())
            after = time.time()
            raw = session.run_argv(facts_command(environment, list(host.roles), mode), timeout=60, check=True)
            refusals = change_precondition_checks(session, environment, host)
    except RemoteError as error:
        return Step.of([checks.unreachable(host, str(error))], data={"host": host.name, "reachable": False})
    facts = parse_facts(raw.stdout)
    clock = {
        "offset_ms": (remote_clock - (before + after) / 2) * 1000,
        "uncertainty_ms": (after - before) * 500,
    }
    results = [
        checks.reachable(host, facts),
        *checks.host_checks(host, facts, environment, profile_name, profile, mode),
        *refusals,
    ]
    return Step.of(
        results, data={"host": host.name, "reachable": True, "facts": facts.to_dict(), "clock": clock}
    )


def change_precondition_checks(session: RemoteHost, environment: Environment, host: Host) -> list[Result]:
    """The infrastructure plan's read-only observation of this host, judged as its change steps judge it.

    Judged without the security section: its desired state would issue node certificates (a write on the
    Airflow side). The TLS files and the secured ports are judged by the plan the infrastructure and
    security stages make before their first change.
    """
    plain = environment.model_copy(update={"security": None})
    try:
        seen = fleet.observe_host(session, plain, host)
    except (ValueError, RemoteError) as error:
        return [checks.change_preconditions_unjudged(host, str(error))]
    judged = host_preconditions(seen.state, seen.observed, seen.occupancy, environment.kafka.cluster_id)
    return checks.change_precondition_checks(host, judged)


def inspect_network(
    environment: Environment, host_steps: list[dict[str, Any]], profile_override: str | None
) -> Step:
    """Across hosts: server counts, clocks, reachability between hosts and throughput, from what each
    ``inspect_hosts`` step found."""
    profile_name, profile = sizing_profile(environment, profile_override)
    inspections = [inspection for data in map(step_data, host_steps) if data for inspection in data]
    reachable = [item for item in inspections if item.get("reachable")]
    cut_off = [item["host"] for item in inspections if not item.get("reachable")]
    results: list[Result] = checks.server_count_checks(environment, profile_name, profile)
    results += checks.clock_checks(
        (
            checks.ClockSample(item["host"], item["clock"]["offset_ms"], item["clock"]["uncertainty_ms"])
            for item in reachable
        ),
        environment.network.max_clock_offset_ms,
    )
    free_ports = {}
    for item in reachable:
        facts = HostFacts.from_dict(item["facts"])
        held = {listener.port for listener in facts.listeners}
        free_ports[item["host"]] = [
            p for p in checks.required_ports(environment, environment.host(item["host"])) if p not in held
        ]

    with ExitStack() as stack:
        sessions: dict[str, RemoteHost] = {}

        def open_session(name: str) -> RemoteHost | str:
            host = environment.host(name)
            try:
                return stack.enter_context(
                    RemoteHost.from_conn_id(name, host.ssh_conn_id, SSH_CONNECT_TIMEOUT)
                )
            except RemoteError as error:
                return str(error)

        for name, opened in in_parallel([item["host"] for item in reachable], open_session).items():
            if isinstance(opened, RemoteHost):
                sessions[name] = opened
            else:
                cut_off.append(name)
                results.append(checks.unreachable(environment.host(name), opened))
        matrix = network.check_reachability(environment, sessions, free_ports)
        results += network.reachability_results(environment, matrix, cut_off)
        results += network.throughput_results(environment, sessions)
        results += identity.reachability_checks(environment, sessions)
        results += kerberos.reachability_checks(environment, sessions)
    return Step.of(results)


def check_security(environment: Environment) -> Step:
    """Security prerequisites read on the Airflow side: every host's provided TLS material, the client
    identities, the OIDC provider, the Kerberos realm."""
    now = utcnow()
    principals = []
    if environment.security is not None:
        principals = [environment.security.admin_user, *components_of(environment).principals()]
    return Step.of(
        [
            *(
                result
                for host in environment.hosts
                for result in checks.security_prerequisite_checks(host, environment, now)
            ),
            *checks.client_identity_checks(environment, principals),
            *identity.provider_checks(environment),
            *kerberos.keytab_checks(environment, [*principals, PROBE_PRINCIPAL] if principals else []),
            *kerberos.kdc_checks(environment),
        ]
    )


def check_governance(environment: Environment, acknowledged: list[str]) -> Step:
    catalog = load_catalog(environment.catalog)
    policies = load_policies(environment.policies)
    return Step.of(
        [*governance.classification_checks(catalog, policies), *governance.knowledge_checks(acknowledged)]
    )
