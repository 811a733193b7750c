"""The compliance policy (``config/compliance.yaml``) as a validated model.

Like the environment files, a broken policy reports every problem at once with its YAML path
(``checks.compliance.tls.certificates.clause``). Structure comes from pydantic; rules across fields and
files (every implemented check has a policy, every clause is known, every classification of
``config/policies.yaml`` has a retention rule, the named catalog entries exist) are checked over the
raw mapping so they are reported even when the structure has mistakes too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from event_broker_rollout import paths
from event_broker_rollout.config.base import ConfigProblem, PolicyConfigError, Strict
from event_broker_rollout.config.catalog import Catalog, Policies
from event_broker_rollout.config.environment import beyond, model_problems
from event_broker_rollout.config.types import (
    AbsolutePath,
    FileMode,
    FreeText,
    Identifier,
    TopicName,
    UnixName,
)
from event_broker_rollout.evidence.results import Severity

POLICY_FILE = "config/compliance.yaml"

# Every check the run implements; the policy must give each its clause (and may make it advisory).
CHECK_IDS = (
    "compliance.tls.only-tls-listeners",
    "compliance.tls.plaintext-refused",
    "compliance.tls.protocol-versions",
    "compliance.tls.certificates",
    "compliance.auth.required",
    "compliance.auth.scram-users-approved",
    "compliance.auth.client-certificates",
    "compliance.auth.token-validation",
    "compliance.auth.kerberos-tickets",
    "compliance.authz.authorizer-enabled",
    "compliance.authz.deny-by-default",
    "compliance.authz.super-users",
    "compliance.authz.node-principals",
    "compliance.acl.no-wildcard-principal",
    "compliance.acl.no-wildcard-resource-on-protected",
    "compliance.acl.known-principals",
    "compliance.acl.as-declared",
    "compliance.authz.no-grants-refused",
    "compliance.durability.protected-topics",
    "compliance.health.brokers",
    "compliance.health.quorum",
    "compliance.health.partitions",
    "compliance.retention.per-classification",
    "compliance.topics.auto-create-off",
    "compliance.topics.undeclared",
    "compliance.topics.as-catalog",
    "compliance.registry.https",
    "compliance.registry.authentication",
    "compliance.registry.compatibility",
    "compliance.registry.latest-versions",
    "compliance.audit.topic-exists",
    "compliance.audit.recent-records",
    "compliance.results.published",
    "compliance.host.secret-files",
    "compliance.host.no-passwords-in-config",
    "compliance.host.airflow-secrets",
)


class Certificates(Strict):
    warn_days: int = Field(ge=1)
    fail_days: int = Field(ge=0)


class Durability(Strict):
    min_replication_factor: int = Field(ge=1)
    min_insync_replicas: int = Field(ge=1)
    unclean_leader_election: bool = False


class RetentionRule(Strict):
    min_days: int | None = Field(default=None, ge=1)
    max_days: int | None = Field(default=None, ge=1)
    infinite: Literal["never", "compacted_only", "allowed"]
    cleanup: list[Literal["delete", "compact"]] = Field(min_length=1)


class CatalogTopic(Strict):
    catalog_entry: Identifier


class AuditTopic(CatalogTopic):
    max_silence_days: int = Field(ge=1)


class HostFile(Strict):
    path: AbsolutePath
    kind: Literal["key", "keystore", "config"]
    roles: list[Literal["controller", "broker", "schema_registry"]] = Field(min_length=1)
    max_mode: FileMode
    owner: UnixName | None = None  # None: the environment's kafka.service_user
    scan_for_passwords: bool = False
    allowed_password_settings: list[Identifier] = Field(default_factory=list)  # keys that may hold one
    registry_flavor: Literal["apicurio", "confluent"] | None = None  # only on hosts of that registry

    @property
    def max_mode_bits(self) -> int:
        return int(self.max_mode, 8)


class CheckPolicy(Strict):
    clause: Identifier
    severity: Severity = Severity.BLOCKING
    description: FreeText


class CompliancePolicy(Strict):
    hipaa_clauses: dict[Identifier, FreeText] = Field(min_length=1)
    certificates: Certificates
    protected_classifications: list[Identifier] = Field(min_length=1)
    durability: Durability
    retention: dict[Identifier, RetentionRule]
    audit_topic: AuditTopic
    results_topic: CatalogTopic
    internal_topic_prefixes: list[TopicName] = Field(default_factory=list)
    host_files: list[HostFile] = Field(default_factory=list)
    airflow_secrets_max_mode: FileMode
    checks: dict[Identifier, CheckPolicy]

    def check(self, check_id: str) -> CheckPolicy:
        return self.checks[check_id]

    def clause(self, check_id: str) -> str:
        return self.hipaa_clauses[self.checks[check_id].clause]

    def is_internal_topic(self, topic: str) -> bool:
        return any(topic.startswith(prefix) for prefix in self.internal_topic_prefixes)


@dataclass(frozen=True)
class Topics:
    """The catalog topics the run needs by role, resolved from the policy's catalog entry names."""

    audit: str
    results: str


def catalog_topics(policy: CompliancePolicy, catalog: Catalog) -> Topics:
    by_name = {item.name: item.topic for item in catalog.operational_topics}
    return Topics(
        audit=by_name[policy.audit_topic.catalog_entry], results=by_name[policy.results_topic.catalog_entry]
    )


# --- validation across fields and files ----------------------------------------------------------


def _as_dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def cross_field_problems(raw: Mapping[str, Any], catalog: Catalog, policies: Policies) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    clauses = set(_as_dict(raw.get("hipaa_clauses")))
    checks = _as_dict(raw.get("checks"))
    for check_id in CHECK_IDS:
        if check_id not in checks:
            problems.append(ConfigProblem(path="checks", message=f"no policy for the check {check_id}"))
    for check_id, entry in checks.items():
        if check_id not in CHECK_IDS:
            problems.append(ConfigProblem(path=f"checks.{check_id}", message="unknown check (a typo?)"))
            continue
        clause = _as_dict(entry).get("clause")
        if isinstance(clause, str) and clause not in clauses:
            problems.append(
                ConfigProblem(
                    path=f"checks.{check_id}.clause",
                    message=f"unknown clause {clause!r}; known: {', '.join(sorted(clauses))}",
                )
            )

    certificates = _as_dict(raw.get("certificates"))
    warn, fail = _int(certificates.get("warn_days")), _int(certificates.get("fail_days"))
    if warn is not None and fail is not None and fail >= warn:
        problems.append(
            ConfigProblem(
                path="certificates.fail_days",
                message=f"{fail} days must be below warn_days ({warn}): a warning must come before the failure",
            )
        )

    durability = _as_dict(raw.get("durability"))
    rf, isr = _int(durability.get("min_replication_factor")), _int(durability.get("min_insync_replicas"))
    if rf is not None and isr is not None and isr >= rf:
        problems.append(
            ConfigProblem(
                path="durability.min_insync_replicas",
                message=f"{isr} must be below min_replication_factor ({rf}), or one broker down stops producers",
            )
        )

    known = policies.classifications
    protected = raw.get("protected_classifications")
    for index, name in enumerate(protected if isinstance(protected, list) else []):
        if name not in known:
            problems.append(
                ConfigProblem(
                    path=f"protected_classifications[{index}]",
                    message=f"unknown classification {name!r}; known: {', '.join(sorted(known))}",
                )
            )

    retention = _as_dict(raw.get("retention"))
    for name in sorted(known):
        if name not in retention:
            problems.append(
                ConfigProblem(path="retention", message=f"no retention rule for the classification {name}")
            )
    for name, entry in retention.items():
        if name not in known:
            problems.append(
                ConfigProblem(
                    path=f"retention.{name}", message="unknown classification (config/policies.yaml)"
                )
            )
        rule = _as_dict(entry)
        low, high = _int(rule.get("min_days")), _int(rule.get("max_days"))
        if low is not None and high is not None and low > high:
            problems.append(
                ConfigProblem(path=f"retention.{name}.min_days", message=f"{low} is above max_days ({high})")
            )
        if rule.get("infinite") == "compacted_only" and "compact" not in (rule.get("cleanup") or []):
            problems.append(
                ConfigProblem(
                    path=f"retention.{name}.infinite",
                    message="compacted_only needs compact among the allowed cleanup policies",
                )
            )

    entries = {item.name for item in catalog.operational_topics}
    for key in ("audit_topic", "results_topic"):
        entry = _as_dict(raw.get(key)).get("catalog_entry")
        if isinstance(entry, str) and entry not in entries:
            problems.append(
                ConfigProblem(
                    path=f"{key}.catalog_entry",
                    message=f"no operational topic {entry!r} in the catalog; known: {', '.join(sorted(entries))}",
                )
            )
    return problems


def parse_policy(raw: Any, source: str, catalog: Catalog, policies: Policies) -> CompliancePolicy:
    if not isinstance(raw, Mapping):
        raise PolicyConfigError(source, [ConfigProblem(path="", message="expected a mapping")])
    policy, problems = model_problems(CompliancePolicy, raw)
    problems.extend(beyond(problems, cross_field_problems(raw, catalog, policies)))
    if problems or policy is None:
        raise PolicyConfigError(source, problems)
    return policy


def load_policy(catalog: Catalog, policies: Policies, path: str | Path = POLICY_FILE) -> CompliancePolicy:
    source = paths.resolve_project_path(path)
    try:
        raw = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PolicyConfigError(str(source), [ConfigProblem(path="", message=str(error))]) from None
    return parse_policy(raw, str(source), catalog, policies)


def applicable_files(policy: CompliancePolicy, roles: Iterable[str], registry_flavor: str) -> list[HostFile]:
    """The policy's host files that exist on a host with these roles."""
    held = set(roles)
    return [
        item
        for item in policy.host_files
        if held & set(item.roles) and item.registry_flavor in (None, registry_flavor)
    ]
