"""The compliance run's steps: each collects its facts from outside and judges them into findings (one
audit record each, written by the task that runs the step). The DAG wires them; nothing here changes the
cluster or a host.

Clients use the settings of the final security phase (``secured``): the run verifies the state a
rollout ends in, so a cluster that is not there fails its checks instead of being probed more gently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from event_broker_rollout.cluster import clients, health
from event_broker_rollout.compliance import (
    checks,
    checks_access,
    checks_audit,
    checks_hosts,
    checks_integrity,
    checks_registry,
    checks_transmission,
    facts,
    publish,
)
from event_broker_rollout.config.catalog import Catalog, Policies, desired_topics, load_checked_catalog
from event_broker_rollout.config.components import PROBE_PRINCIPAL, Components, components_of
from event_broker_rollout.config.credentials import CredentialsError
from event_broker_rollout.config.environment import Environment
from event_broker_rollout.config.policy import (
    CompliancePolicy,
    applicable_files,
    catalog_topics,
    load_policy,
)
from event_broker_rollout.evidence.results import Result, utcnow
from event_broker_rollout.evidence.steps import Step
from event_broker_rollout.hosts.listeners import (
    PRINCIPAL_RULES,
    kerberos_settings,
    oauthbearer_settings,
    super_users,
)
from event_broker_rollout.hosts.parallel import in_parallel
from event_broker_rollout.hosts.tls import TlsMaterialError
from event_broker_rollout.resources import access
from event_broker_rollout.resources.subjects import load_subject_schemas

PHASE = "secured"
COMPLIANCE_PRINCIPAL = "compliance"


@dataclass(frozen=True)
class Setting:
    """What every step needs, loaded and validated (a ``ConfigError`` names the file and YAML paths)."""

    environment: Environment
    catalog: Catalog
    policies: Policies
    policy: CompliancePolicy
    components: Components

    @property
    def protected_topics(self) -> list[str]:
        return [t for t, c in self.catalog.topics() if c in self.policy.protected_classifications]

    def ca_file(self) -> str:
        return clients.ca_file(self.environment)

    def admin(self) -> Any:
        return health.admin_client(clients.admin_config(self.environment, PHASE))

    def client_config(self, principal: str) -> dict[str, Any]:
        return clients.principal_config(self.environment, PHASE, principal)


def load(environment: Environment) -> Setting:
    if environment.security is None:
        raise ValueError(
            f"environment {environment.name} has no security section: there is no secured state to verify"
        )
    catalog, policies = load_checked_catalog(environment.catalog, environment.policies)
    return Setting(
        environment=environment,
        catalog=catalog,
        policies=policies,
        policy=load_policy(catalog, policies),
        components=components_of(environment),
    )


def validate(environment: Environment) -> list[str]:
    """Fails before anything is probed if the environment, catalog, components or policy are broken.
    Returns the host names the per-host inspections map over."""
    load(environment)
    return [host.name for host in environment.hosts]


def transmission(environment: Environment) -> Step:
    """Listeners as the brokers report them, every Kafka port and the registry probed with TLS handshakes
    pinned to each version and a plaintext request."""
    setting = load(environment)
    policy = setting.policy
    settings = facts.broker_settings(setting.admin(), environment)
    targets = {
        f"{t.host}:{t.port}": t
        for t in [*facts.listener_targets(environment, settings), facts.registry_target(environment)]
    }
    ca = setting.ca_file()
    endpoints = list(in_parallel(list(targets), lambda key: facts.probe_endpoint(targets[key], ca)).values())
    return Step.of(
        [
            *checks_transmission.only_tls_listeners(policy, settings),
            *checks_transmission.plaintext_refused(policy, endpoints),
            *checks_transmission.protocol_versions(policy, endpoints),
            *checks_transmission.certificates(policy, endpoints),
        ]
    )


def access_control(environment: Environment) -> Step:
    """Authentication refusals, SCRAM users, the authorizer, ACLs against the declared grants, the
    no-grants principal on every PHI topic, and the secrets kept on the Airflow side."""
    setting = load(environment)
    policy, security = setting.policy, environment.security
    assert security is not None
    admin = setting.admin()
    admin_config = setting.client_config(security.admin_user)
    probes = facts.no_grants_probes(
        setting.client_config(PROBE_PRINCIPAL), PROBE_PRINCIPAL, setting.protected_topics
    )
    principals = {security.admin_user, *setting.components.principals()}
    scram_users = access.approved_scram_users(environment, setting.components)  # none under mTLS
    return Step.of(
        [
            *checks_access.auth_required(policy, facts.authentication(admin_config)),
            *checks_access.scram_users_approved(policy, facts.scram_users(admin), scram_users),
            *checks_access.client_certificates(policy, facts.client_certificates(environment, principals)),
            *checks_access.authorizer_enabled(policy, facts.broker_settings(admin, environment)),
            *checks_access.acl_checks(
                policy,
                facts.acls(admin),
                access.desired_grants(setting.components),
                principals,
                setting.protected_topics,
            ),
            *checks_access.no_grants_refused(policy, probes),
            *checks_hosts.airflow_secrets(
                policy, facts.airflow_secret_files(environment), facts.current_user()
            ),
        ]
    )


def cluster(environment: Environment) -> Step:
    """Live health, topic auto-creation, topics against the catalog, durability and retention of each
    class, and the audit trail (read as the compliance principal)."""
    setting = load(environment)
    policy = setting.policy
    admin = setting.admin()
    observed = facts.topics(admin)
    specs = desired_topics(
        setting.catalog,
        setting.policies,
        replication_factor=environment.kafka.default_replication_factor,
        min_insync_replicas=environment.kafka.min_insync_replicas,
    )
    audit_topic = catalog_topics(policy, setting.catalog).audit
    audit_spec = next(spec for spec in specs if spec.topic == audit_topic)
    trail = facts.audit_trail(setting.client_config(COMPLIANCE_PRINCIPAL), audit_topic, audit_spec.partitions)
    node_names = {environment.node_id(h): h.name for h in environment.brokers}
    return Step.of(
        [
            *checks_integrity.health_checks(policy, facts.cluster_health(admin, environment), node_names),
            *checks_integrity.auto_create_off(policy, facts.broker_settings(admin, environment)),
            *checks_integrity.undeclared_topics(policy, observed, [spec.topic for spec in specs]),
            *checks_integrity.topics_as_catalog(policy, observed, specs),
            *checks_integrity.durability(policy, observed, setting.protected_topics),
            *checks_integrity.retention(policy, observed, dict(setting.catalog.topics())),
            *checks_audit.audit_topic_exists(policy, observed, audit_topic),
            *checks_audit.audit_recent(policy, trail, utcnow()),
        ]
    )


def registry(environment: Environment) -> Step:
    setting = load(environment)
    observed = facts.registry(environment, setting.ca_file(), load_subject_schemas(setting.catalog))
    return Step.of(
        checks_registry.registry_checks(
            setting.policy,
            observed,
            environment.schema_registry.flavor,
            carries_phi=environment.holds_patient_data and bool(setting.protected_topics),
        )
    )


def host(environment: Environment, host_name: str) -> Step:
    """One host over SSH: its key, keystore and config files, and its authorizer settings."""
    setting = load(environment)
    policy = setting.policy
    target = environment.host(host_name)
    files = applicable_files(policy, target.roles, environment.schema_registry.flavor)
    observed = facts.host_facts(target, files)
    results = [
        *checks_hosts.secret_files(policy, observed, files, environment.kafka.service_user),
        *checks_hosts.no_passwords_in_config(policy, observed, files),
    ]
    if {"broker", "controller"} & set(target.roles):
        results += [
            *checks_access.deny_by_default(policy, observed),
            *checks_access.super_users(policy, observed, super_users(environment)),
            *checks_access.node_principals(policy, observed, PRINCIPAL_RULES),
        ]
    security = environment.security
    if "broker" in target.roles and security is not None and security.client_authentication == "oauthbearer":
        declared = {
            key: value
            for key, value in oauthbearer_settings(environment)
            if key in facts.TOKEN_VALIDATION_SETTINGS
        }
        results += checks_access.token_validation(policy, observed, declared)
    if "broker" in target.roles and security is not None and security.client_authentication == "kerberos":
        declared = {
            key: value
            for key, value in kerberos_settings(environment, target)
            if key in facts.TICKET_VALIDATION_SETTINGS
        }
        results += checks_access.ticket_validation(policy, observed, declared)
    return Step.of(results)


def publish_results(setting: Setting, run: dict[str, Any], results: list[Result]) -> Result:
    """Every finding to the compliance results topic as the compliance principal; the delivery is itself
    a finding."""
    topic = catalog_topics(setting.policy, setting.catalog).results
    findings = checks.Findings(setting.policy)
    try:
        config = setting.client_config(COMPLIANCE_PRINCIPAL)
    except (CredentialsError, TlsMaterialError, KeyError) as error:
        return findings.unverified("compliance.results.published", f"no credentials: {error}", target=topic)
    delivery = publish.produce(config, topic, publish.records(results, run))
    return findings.result(
        "compliance.results.published",
        delivery.confirmed and delivery.delivered == len(results),
        target=topic,
        observed={"delivered": delivery.delivered, "errors": list(delivery.errors)[:5]},
        expected={"delivered": len(results), "acks": "all"},
        message=f"{delivery.delivered} of {len(results)} findings confirmed on {topic}",
    )


def summary(results: list[Result], policy: CompliancePolicy) -> dict[str, Any]:
    by_check: dict[str, set[str]] = {}
    for result in results:
        by_check.setdefault(result.id, set()).add(str(result.status))
    clauses: dict[str, dict[str, int]] = {}
    for check_id, entry in policy.checks.items():
        tally = clauses.setdefault(policy.hipaa_clauses[entry.clause], {"checks": 0, "failed": 0})
        tally["checks"] += 1
        tally["failed"] += "fail" in by_check.get(check_id, set())
    return {
        "checks": len(policy.checks),
        "failed_checks": sorted(c for c, s in by_check.items() if "fail" in s),
        "warned_checks": sorted(c for c, s in by_check.items() if "warn" in s and "fail" not in s),
        "findings": len(results),
        "by_hipaa_clause": clauses,
    }
