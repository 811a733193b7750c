"""The security stage's steps: each phase is configured, rolled (gated, one node at a time) and committed.

A phase already reached is never undone: a re-run plans each phase against what the hosts record and
changes nothing when everything is in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from event_broker_rollout import paths
from event_broker_rollout.cluster import clients, health, kerberos, oidc
from event_broker_rollout.config.catalog import load_checked_catalog
from event_broker_rollout.config.components import (
    CANARY_PRINCIPAL,
    CANARY_TOPIC,
    PROBE_PRINCIPAL,
    components_of,
)
from event_broker_rollout.config.credentials import (
    CredentialsError,
    load_credentials,
    load_oauth_secrets,
    password_for,
)
from event_broker_rollout.config.environment import Environment
from event_broker_rollout.evidence.audit import audit
from event_broker_rollout.evidence.results import Result, Severity, Status, check, utcnow
from event_broker_rollout.evidence.steps import Step
from event_broker_rollout.hosts import fleet
from event_broker_rollout.hosts.desired import REGISTRY_SERVICE, TOOLS_CONFIG, kafka_tool
from event_broker_rollout.hosts.listeners import PHASES, client_phase, phase_index
from event_broker_rollout.hosts.parallel import in_parallel
from event_broker_rollout.hosts.remote import RemoteError
from event_broker_rollout.hosts.tls import client_identity
from event_broker_rollout.resources import access, registry_access, verify
from event_broker_rollout.resources.subjects import load_subject_schemas

STEPS = PHASES[1:]  # listeners, interbroker, secured
PHI_PROBE_TOPIC = "healthcare.patient.upserted.v1"


CLIENT_PHASE, EFFECTIVE_PHASE = "client_phase", "effective_phase"


def configure_phase(environment: Environment, target: str) -> Step:
    """Write the ``target`` phase's files on every host (no restart yet). The step's data is the plans for
    the rolling restart; its summary names the phase the rollout's admin client must use meanwhile
    (``client_phase``) and the phase the cluster will be in afterwards (``effective_phase``, never behind
    what the hosts record)."""
    recorded = fleet.recorded_phase(environment)
    if target == STEPS[0] and phase_index(recorded) >= phase_index(target):
        require_client_authentication_in_place(environment)
    if phase_index(recorded) > phase_index(target):
        note = Result(
            id=f"security.phase[{target}]",
            status=Status.OK,
            message=f"already past this phase (hosts record {recorded})",
        )
        return Step.of([note], summary={CLIENT_PHASE: recorded, EFFECTIVE_PHASE: recorded}, data={})
    plans = fleet.plan_environment(environment, target_phase=target)
    fleet.planned_hosts(plans)
    stopped = [f"{name}:{service}" for name, plan in plans.items() for service in plan["start"]]
    if stopped:
        raise RemoteError(
            f"the security migration needs a running cluster; stopped: {', '.join(stopped)} (run the infrastructure stage first)"
        )
    results = map(Result.from_dict, fleet.configure_hosts(environment, plans))
    phases = {CLIENT_PHASE: client_phase(recorded, target), EFFECTIVE_PHASE: target}
    return Step.of(results, summary=phases, data=plans)


def require_client_authentication_in_place(environment: Environment) -> None:
    """Where the secure listener exists, the admin must log in with the environment's client
    authentication before anything changes. Switching a secured cluster between SCRAM and mTLS through
    these phases would lock every client out (its SCRAM users removed, or the listener's protocol changed
    under running clients), so a mismatch stops the stage here."""
    assert environment.security is not None
    refused = health.login_error(clients.admin_config(environment, "secured"))
    if refused is not None:
        mechanism = environment.security.client_authentication
        raise RemoteError(
            f"the secure listener refused the admin's {mechanism} login ({refused}). Check the admin's identity "
            f"(the {environment.connections.kafka_admin} connection). If the cluster runs another client "
            "authentication, switching it is a migration of its own that this stage does not make (a second "
            "secure listener for the new mechanism, clients moved to it, then the old one removed: two rolling "
            "restarts); set security.client_authentication to what the cluster runs"
        )


def restart_registry(environment: Environment, plans: dict[str, Any]) -> Step:
    return Step.of(
        Result.from_dict(fleet.restart_service(environment, plans, host.name, REGISTRY_SERVICE))
        for host in environment.registries
        if host.name in plans and REGISTRY_SERVICE in plans[host.name]["restart"]
    )


def commit_phase(environment: Environment, target: str) -> Step:
    """Record the phase on every host once all of them run it (the next stage runs plan from it)."""

    def record(name: str) -> Result:
        with fleet.session(environment, environment.host(name)) as remote:
            current = (
                remote.run_argv(["cat", "--", fleet.SECURITY_PHASE_FILE], timeout=10).stdout.strip()
                or "plaintext"
            )
            if current in PHASES and phase_index(current) >= phase_index(target):
                return Result(
                    id=f"security.phase[{target}]",
                    status=Status.OK,
                    host=name,
                    message=f"host records {current}",
                    details={"at": utcnow().isoformat()},
                )
            remote.write_file(fleet.SECURITY_PHASE_FILE, target + "\n")
        audit(
            "security.phase",
            target=target,
            outcome="committed",
            host=name,
            before=current,
            after=target,
            result_id=f"security.phase[{target}]",
        )
        return Result(
            id=f"security.phase[{target}]",
            status=Status.CHANGED,
            host=name,
            message=f"{current} -> {target}",
            details={"at": utcnow().isoformat()},  # the report marks the phase on the canary's chart
        )

    return Step.of(in_parallel([h.name for h in environment.hosts], record).values())


def admin(environment: Environment, phase: str) -> Any:
    return health.authenticated_admin(clients.admin_config(environment, phase))


def ensure_client_identities(environment: Environment) -> Step:
    """Every principal's identity for the secure listener: SCRAM users (admin, components, canary, the
    no-grants probe) or, with mTLS, a client certificate each, or with OAUTHBEARER a token each from the
    provider; no SCRAM user is left under either of those. SCRAM changes go over
    the brokers' INTERNAL listener (TLS, a node certificate as the identity), never over PLAINTEXT: a
    SCRAM upsert carries the salted password, enough to log in as that user."""
    assert environment.security is not None
    users = [environment.security.admin_user, *components_of(environment).principals()]
    phase = fleet.recorded_phase(environment)
    if phase_index(phase) < phase_index("listeners"):
        raise RemoteError(
            f"client identities are managed over the INTERNAL TLS listener, which every broker has from the listeners phase on (hosts record {phase})"
        )
    mechanism = environment.security.client_authentication
    if mechanism in ("mtls", "oauthbearer", "kerberos"):
        if mechanism == "mtls":
            results = [client_certificate(environment, user) for user in users]
        elif mechanism == "kerberos":
            results = ticket_checks(environment, [*users, PROBE_PRINCIPAL])
        else:
            results = token_checks(environment, users)
        require_client_authentication_in_place(environment)  # never strand SCRAM clients
        results += access.remove_scram_users(clients.node_admin_config(environment))
        return Step.of(results)
    passwords = load_credentials(environment)
    missing = [user for user in users if user not in passwords]
    if missing:
        raise RemoteError(f"no password for {', '.join(missing)} in the credentials source")
    results = access.ensure_scram_users(
        clients.node_admin_config(environment),
        passwords,
        users,
        plaintext_ports=[environment.kafka.listeners.client_port],
    )
    return Step.of(results)


def client_certificate(environment: Environment, principal: str) -> Result:
    """The principal's client certificate, issued (or renewed) by the cluster CA when it needs one."""
    identity = client_identity(environment, principal)  # an issue is audited where it happens
    return Result(
        id=f"identity.client_certificate[{principal}]",
        status=Status.CHANGED if identity.issued else Status.OK,
        message=("issued" if identity.issued else "valid") + f" client certificate CN={principal}",
        observed={"not_after": identity.not_after.isoformat()},
    )


def token_checks(environment: Environment, principals: Sequence[str]) -> list[Result]:
    """OAUTHBEARER: the provider issues each principal a token that names it and is meant for the
    cluster (the identities live at the provider; the stage creates none, it proves they are usable)."""
    assert environment.security is not None and environment.security.oauthbearer is not None
    provider = environment.security.oauthbearer
    secrets = load_oauth_secrets(environment)

    def token_for(principal: str) -> Result:
        expected = {"principal": principal, "issuer": provider.issuer, "audience": provider.audience}
        try:
            claims = oidc.unverified_claims(
                oidc.fetch_token(provider, principal, password_for(secrets, principal))
            )
        except (oidc.TokenRefused, CredentialsError) as refused:
            return check(
                f"identity.oidc_token[{principal}]",
                False,
                observed=str(refused),
                expected=expected,
                message=f"the provider refused {principal} a token",
            )
        observed = oidc.token_evidence(claims, provider.principal_claim)
        return check(
            f"identity.oidc_token[{principal}]",
            observed["principal"] == principal
            and observed["issuer"] == provider.issuer
            and provider.audience in observed["audience"],
            observed=observed,
            expected=expected,
            message=f"the provider issues {principal} a token for the cluster",
        )

    return list(in_parallel(list(principals), token_for).values())


def ticket_checks(environment: Environment, principals: Sequence[str]) -> list[Result]:
    """Kerberos: each principal's keytab gets it a ticket from the realm's KDC (the identities live in the
    realm; the stage creates none, it proves they are usable)."""

    def ticket_for(principal: str) -> Result:
        granted = kerberos.ticket(environment, principal)
        return check(
            f"identity.kerberos_ticket[{principal}]",
            granted.granted,
            observed=granted.evidence(),
            expected={"principal": granted.principal, "granted": True},
            message=f"the KDC grants {principal} a ticket with its keytab",
        )

    return list(in_parallel(list(principals), ticket_for).values())


def ensure_acls_and_quotas(environment: Environment) -> Step:
    components = components_of(environment)
    results = access.reconcile_acls(admin(environment, "interbroker"), access.desired_grants(components))
    results += ensure_quotas(environment, access.desired_quotas(components))
    return Step.of(results)


def _configs_tool(environment: Environment, arguments: Sequence[str]) -> str:
    assert environment.security is not None
    broker = environment.brokers[0]
    bootstrap = f"{broker.address}:{environment.security.internal_port}"
    command = [
        kafka_tool(environment, "kafka-configs"),
        "--bootstrap-server",
        bootstrap,
        "--command-config",
        TOOLS_CONFIG,
        *arguments,
    ]
    with fleet.session(environment, broker) as remote:
        return remote.run_argv(command, timeout=90, check=True).stdout


QUOTA_TOOLS_AT_ONCE = 3  # each change is one kafka-configs JVM; more at once only queue on the CPUs


def ensure_quotas(environment: Environment, wanted: dict[str, dict[str, int]]) -> list[Result]:
    """Client quotas per principal, through Kafka's own kafka-configs tool (the Python client has no quota
    API). The tool sets one principal per run, so the principals that need a change are set side by side."""
    current = access.parse_quotas(_configs_tool(environment, ["--describe", "--entity-type", "users"]))

    def reconcile(user: str) -> Result:
        quotas = wanted[user]
        if current.get(user) == quotas:
            return Result(
                id=f"quota[{user}]",
                status=Status.OK,
                message="as declared",
                observed=quotas,
                expected=quotas,
            )
        _configs_tool(environment, access.quota_command(user, quotas))
        audit(
            "security.quota",
            target=user,
            outcome="changed",
            before=current.get(user),
            after=quotas,
            result_id=f"quota[{user}]",
        )
        return Result(
            id=f"quota[{user}]",
            status=Status.CHANGED,
            message="quota set",
            observed=current.get(user),
            expected=quotas,
        )

    return list(in_parallel(sorted(wanted), reconcile, at_most=QUOTA_TOOLS_AT_ONCE).values())


def canary_state(run_dir: Path) -> Path:
    return run_dir / "canary.json"


def start_canary(environment: Environment, run_dir: Path) -> Step:
    """Create the canary topic (RF and min ISR as the cluster's) and start the canary process, detached."""
    from confluent_kafka.admin import NewTopic

    client = admin(environment, "listeners")
    results = []
    if CANARY_TOPIC not in client.list_topics(timeout=10).topics:
        topic = NewTopic(
            CANARY_TOPIC,
            3,
            environment.kafka.default_replication_factor,
            config={"min.insync.replicas": str(environment.kafka.min_insync_replicas)},
        )
        client.create_topics([topic])[CANARY_TOPIC].result(30)
        audit(
            "security.canary",
            target=CANARY_TOPIC,
            outcome="created",
            result_id=f"canary.topic[{CANARY_TOPIC}]",
        )
        results.append(
            Result(
                id=f"canary.topic[{CANARY_TOPIC}]",
                status=Status.CHANGED,
                message="created the migration canary topic",
            )
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    state = canary_state(run_dir)
    state.unlink(missing_ok=True)
    group = f"{CANARY_PRINCIPAL}.{int(time.time())}"
    log = (run_dir / "canary.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "event_broker_rollout.security.canary",
            "run",
            "--environment",
            environment.name,
            "--state-file",
            str(state),
            "--group",
            group,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # outlives this task: it runs until the migration's last step stops it
        cwd=paths.PROJECT_ROOT,
    )
    (run_dir / "canary.pid").write_text(str(process.pid))
    audit(
        "security.canary",
        target=CANARY_TOPIC,
        outcome="started",
        pid=process.pid,
        group=group,
        result_id="canary.started",
    )
    results.append(
        Result(
            id="canary.started",
            status=Status.PASS,
            message=f"producer and consumer running through the migration (pid {process.pid})",
        )
    )
    return Step.of(results)


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if this process started it (dag.test runs)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_canary(run_dir: Path) -> Step:
    """Stop the canary and judge the migration: every acknowledged record read back, none twice."""
    pid_file, state = run_dir / "canary.pid", canary_state(run_dir)
    if not pid_file.exists():
        return Step.of(
            [Result(id="canary.zero_loss", status=Status.FAIL, message="the canary was not running")]
        )
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 180
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if state.exists():
            stats = json.loads(state.read_text())
            if stats.get("final"):
                break
        if not _alive(pid):  # it died without its final counts: no point waiting (its log says why)
            break
        time.sleep(1)
    if not stats.get("final"):
        silent = Result(
            id="canary.zero_loss",
            status=Status.FAIL,
            message="the canary did not report its final counts",
            observed=stats,
        )
        return Step.of([silent])
    counts = {key: stats[key] for key in ("produced", "consumed", "lost", "duplicated", "delivery_errors")}
    results = [
        check(
            "canary.zero_loss",
            stats["lost"] == 0 and stats["produced"] > 0,
            observed=counts,
            expected={"lost": 0},
            message=f"{stats['produced']} acknowledged records through the migration, {stats['lost']} lost",
            details={"intervals": stats.get("intervals", [])},  # per-interval counts for the report's chart
        ),
        check(
            "canary.no_duplicates",
            stats["duplicated"] == 0,
            observed=stats["duplicated"],
            expected=0,
            message="idempotent producer: no record read twice",
        ),
    ]
    return Step.of(results)


def migration_chart_data(results: Sequence[Result]) -> dict[str, Any]:
    """For the report's canary chart: the canary's per-interval counts, and when each phase was committed
    on every host (its last host's commit)."""
    canary = next((r for r in results if r.id == "canary.zero_loss"), None)
    committed: dict[str, str] = {}
    for result in results:
        at = result.details.get("at")
        if result.id.startswith("security.phase[") and isinstance(at, str):
            phase = result.id.removeprefix("security.phase[").removesuffix("]")
            committed[phase] = max(committed.get(phase, ""), at)
    return {
        "migration_intervals": list(canary.details.get("intervals", [])) if canary else [],
        "phase_boundaries": [{"phase": phase, "at": at} for phase, at in committed.items()],
    }


def verify_from_outside(environment: Environment) -> Step:
    """The stage's proof, from a client's point of view (the compliance run repeats it daily)."""
    assert environment.security is not None
    security = environment.security
    ca = clients.ca_file(environment)
    results: list[Result] = []
    for host in environment.hosts:
        ports = []
        if "broker" in host.roles:
            ports += [security.secure_client_port, security.internal_port]
            answered = verify.plaintext_answers(str(host.address), environment.kafka.listeners.client_port)
            results.append(
                check(
                    f"tls.plaintext_listener_removed[{environment.kafka.listeners.client_port}]",
                    answered is not True,
                    host=host.name,
                    observed="closed"
                    if answered is None
                    else ("answers Kafka over plaintext" if answered else "no Kafka answer"),
                    expected="no PLAINTEXT listener",
                    message="the former PLAINTEXT client port",
                )
            )
        if "controller" in host.roles:
            ports.append(environment.kafka.listeners.controller_port)
        for port in ports:
            mtls = port != security.secure_client_port or security.client_authentication == "mtls"
            results += verify.listener_checks(host.name, str(host.address), port, ca, client_auth=mtls)
    configs = clients.principal_configs(environment, "secured", [security.admin_user, PROBE_PRINCIPAL])
    admin_config, probe = configs[security.admin_user], configs[PROBE_PRINCIPAL]
    results += verify.authentication_checks(admin_config)
    refused, observed = verify.authorization_refused(probe, PHI_PROBE_TOPIC)
    results.append(
        check(
            "authz.no_grants_refused_on_phi",
            refused,
            observed=observed,
            expected="TOPIC_AUTHORIZATION_FAILED",
            message=f"{PROBE_PRINCIPAL} (no grants) writing to PHI topic {PHI_PROBE_TOPIC}",
        )
    )
    refused, observed = verify.read_refused(probe, PHI_PROBE_TOPIC, f"{PROBE_PRINCIPAL}.probe")
    results.append(
        check(
            "authz.no_grants_read_refused_on_phi",
            refused,
            observed=observed,
            expected="TOPIC_AUTHORIZATION_FAILED or GROUP_AUTHORIZATION_FAILED",
            message=f"{PROBE_PRINCIPAL} (no grants) reading PHI topic {PHI_PROBE_TOPIC}",
        )
    )
    approved = access.approved_scram_users(environment, components_of(environment))
    existing = access.scram_users(health.admin_client(admin_config))
    results.append(
        check(
            "auth.scram_users_approved",
            existing == approved,
            observed=sorted(existing),
            expected=sorted(approved),
            message="SCRAM users are exactly the approved principals",
            details={"unknown": sorted(existing - approved), "missing": sorted(approved - existing)},
        )
    )
    declared = access.desired_grants(components_of(environment))
    bindings = access.current_bindings(health.admin_client(admin_config))
    actual = {g for g in (access._grant_of(b) for b in bindings) if g is not None}
    results.append(
        check(
            "authz.acls_as_declared",
            actual == declared and len(bindings) == len(actual),
            observed=f"{len(bindings)} bindings",
            expected=f"{len(declared)} declared bindings",
            message="every principal can do exactly what its ACLs say",
            details={
                "undeclared": sorted(g.label() for g in actual - declared)[:20],
                "missing": sorted(g.label() for g in declared - actual)[:20],
            },
        )
    )
    if environment.schema_registry.authentication is not None:
        catalog, _ = load_checked_catalog(environment.catalog, environment.policies)
        results += registry_access.access_checks(environment, load_subject_schemas(catalog)[0])
    else:
        results.append(
            Result(
                id="registry.authentication",
                status=Status.WARN,
                severity=Severity.ADVISORY,
                message="schema_registry.authentication is not declared: the registry is HTTPS-only and "
                "answers clients without credentials",
            )
        )
    return Step.of(results)
