"""The compliance checks: pure functions from collected facts (``compliance.facts``) to evidence.

Every finding is a ``Result`` whose id is the check's stable id from ``config/compliance.yaml``; the
thing checked (a listener, a topic, a file) is in ``details.target`` and in the message, the HIPAA
clause in ``details.hipaa``. A blocking check that misses fails the run, an advisory one warns. A fact
that could not be collected makes its check fail as "not verified" (a check never passes on no data).
Values reported are settings, names, counts and protocol facts: never a password, a key or a payload.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from event_broker_rollout.compliance.facts import (
    AclEntry,
    Acls,
    AuditTrail,
    Authentication,
    BrokerSettings,
    Endpoint,
    FileStat,
    Handshake,
    Health,
    HostFacts,
    NoGrantsProbe,
    Registry,
    ScramUsers,
    Topics,
)
from event_broker_rollout.config.catalog import MS_PER_DAY, TopicSpec
from event_broker_rollout.config.policy import CompliancePolicy, HostFile, RetentionRule
from event_broker_rollout.evidence.results import Result, Severity, Status, check
from event_broker_rollout.resources.access import Grant
from event_broker_rollout.resources.registry import SubjectPlan
from event_broker_rollout.resources.topics import ObservedTopic, plan_topic
from event_broker_rollout.resources.verify import CLIENT_CERTIFICATE_REQUIRED

LEGACY_TLS = ("1.0", "1.1")
MODERN_TLS = ("1.2", "1.3")
GRANTING_OPERATIONS = ("READ", "WRITE", "ALL")
LISTED = 20  # how many names a finding lists before it only counts


class Findings:
    """Builds results that carry the policy's severity and HIPAA clause for their check."""

    def __init__(self, policy: CompliancePolicy) -> None:
        self.policy = policy

    def details(self, check_id: str, target: str | None, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        entry = self.policy.check(check_id)
        details: dict[str, Any] = {"hipaa": self.policy.clause(check_id), "clause": entry.clause}
        if target is not None:
            details["target"] = target
        details.update(extra or {})
        return details

    def result(
        self,
        check_id: str,
        passed: bool,
        *,
        message: str,
        observed: Any,
        expected: Any,
        host: str | None = None,
        target: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Result:
        return check(
            check_id,
            passed,
            message=message,
            observed=observed,
            expected=expected,
            host=host,
            severity=self.policy.check(check_id).severity,
            details=self.details(check_id, target, details),
        )

    def unverified(
        self, check_id: str, error: str, *, host: str | None = None, target: str | None = None
    ) -> Result:
        return self.result(
            check_id,
            False,
            message=f"not verified: {error}",
            observed=None,
            expected=self.policy.check(check_id).description,
            host=host,
            target=target,
        )

    def graded(
        self,
        check_id: str,
        status: Status,
        *,
        message: str,
        observed: Any,
        expected: Any,
        host: str | None = None,
        target: str | None = None,
    ) -> Result:
        """A result with three outcomes (pass / warn band / fail band); an advisory check never fails."""
        if status is Status.FAIL and self.policy.check(check_id).severity is Severity.ADVISORY:
            status = Status.WARN
        return Result(
            id=check_id,
            status=status,
            message=message,
            host=host,
            observed=observed,
            expected=expected,
            severity=Severity.BLOCKING if status is Status.FAIL else Severity.ADVISORY,
            details=self.details(check_id, target, None),
        )


def _listing(items: Iterable[str]) -> str:
    names = list(items)
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


# --- transmission security -----------------------------------------------------------------------


def only_tls_listeners(policy: CompliancePolicy, settings: Sequence[BrokerSettings]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.tls.only-tls-listeners"
    results = []
    for broker in settings:
        if broker.error:
            results.append(findings.unverified(check_id, broker.error, host=broker.host))
            continue
        listeners = broker.listeners()
        plain = [
            f"{item.name}:{item.port} ({item.protocol or 'no protocol'})"
            for item in listeners
            if item.protocol not in ("SSL", "SASL_SSL")
        ]
        results.append(
            findings.result(
                check_id,
                bool(listeners) and not plain,
                host=broker.host,
                target=f"node {broker.node_id}",
                observed={item.name: f"{item.protocol}:{item.port}" for item in listeners},
                expected="every listener SSL or SASL_SSL",
                message=f"listeners of node {broker.node_id}"
                + (f": not TLS: {', '.join(plain)}" if plain else ": all TLS"),
            )
        )
    return results


def _plaintext_outcome(endpoint: Endpoint) -> str:
    if endpoint.plaintext_answer is None:
        return "closed"
    return "answered a plaintext Kafka request" if endpoint.plaintext_answer else "no plaintext answer"


def plaintext_refused(policy: CompliancePolicy, endpoints: Sequence[Endpoint]) -> list[Result]:
    findings = Findings(policy)
    by_host: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        if endpoint.kafka:
            by_host.setdefault(endpoint.host, []).append(endpoint)
    results = []
    for host, probed in sorted(by_host.items()):
        answered = [e.target for e in probed if e.plaintext_answer]
        results.append(
            findings.result(
                "compliance.tls.plaintext-refused",
                not answered,
                host=host,
                target=", ".join(str(e.port) for e in probed),
                observed={str(e.port): _plaintext_outcome(e) for e in probed},
                expected="no Kafka answer over plaintext on any port",
                message=f"plaintext Kafka request to {len(probed)} ports"
                + (f": answered on {', '.join(answered)}" if answered else ": refused everywhere"),
            )
        )
    return results


def _negotiated(endpoint: Endpoint, shake: Handshake) -> bool:
    """Accepted, or the version agreed and then a client certificate demanded (an mTLS listener)."""
    return shake.accepted or (
        endpoint.client_certificate_required and shake.error in CLIENT_CERTIFICATE_REQUIRED
    )


def _handshake_outcome(endpoint: Endpoint, shake: Handshake) -> str:
    if shake.accepted:
        return f"{shake.protocol} {shake.cipher}"
    if not shake.offered:
        return "not offered by this client's TLS library"
    if _negotiated(endpoint, shake):
        return "negotiated; client certificate required (mTLS)"
    return f"refused ({shake.error})"


def protocol_versions(policy: CompliancePolicy, endpoints: Sequence[Endpoint]) -> list[Result]:
    findings = Findings(policy)
    results = []
    for endpoint in endpoints:
        if not endpoint.tls:
            continue
        legacy = [s.version for s in endpoint.handshakes if s.version in LEGACY_TLS and s.accepted]
        modern = [
            s.version for s in endpoint.handshakes if s.version in MODERN_TLS and _negotiated(endpoint, s)
        ]
        problems = []
        if legacy:
            problems.append(f"accepts TLS {', '.join(legacy)}")
        if not modern:
            problems.append("no TLS 1.2 or 1.3 handshake")
        outside = endpoint.outside_policy_suites
        observed = {f"TLS {s.version}": _handshake_outcome(endpoint, s) for s in endpoint.handshakes}
        if outside is not None:
            observed["TLS 1.2 without ECDHE+AEAD"] = _handshake_outcome(endpoint, outside)
            if _negotiated(endpoint, outside):
                problems.append(f"accepts TLS 1.2 {outside.cipher or 'suites'} (not ECDHE with AEAD)")
        results.append(
            findings.result(
                "compliance.tls.protocol-versions",
                not problems,
                host=endpoint.host,
                target=endpoint.target,
                observed=observed,
                expected="TLS 1.0/1.1 refused; TLS 1.2 or 1.3 accepted; TLS 1.2 only with ECDHE and AEAD",
                message=f"TLS versions of {endpoint.target}: "
                + ("; ".join(problems) if problems else f"only {', '.join(f'TLS {v}' for v in modern)}"),
            )
        )
    return results


def certificates(policy: CompliancePolicy, endpoints: Sequence[Endpoint]) -> list[Result]:
    findings = Findings(policy)
    warn, fail = policy.certificates.warn_days, policy.certificates.fail_days
    check_id = "compliance.tls.certificates"
    results = []
    for endpoint in endpoints:
        if not endpoint.tls:
            continue
        verified = [s for s in endpoint.handshakes if s.accepted and s.days_left is not None]
        if not verified:
            errors = sorted({str(s.error) for s in endpoint.handshakes if s.version in MODERN_TLS})
            results.append(
                findings.unverified(
                    check_id,
                    f"no handshake with {endpoint.target} verified a certificate ({'; '.join(errors)})",
                    host=endpoint.host,
                    target=endpoint.target,
                )
            )
            continue
        days = min(s.days_left for s in verified if s.days_left is not None)
        status = Status.PASS if days > warn else (Status.WARN if days > fail else Status.FAIL)
        results.append(
            findings.graded(
                check_id,
                status,
                host=endpoint.host,
                target=endpoint.target,
                observed=f"chain verified to the cluster CA for {endpoint.address}; expires in {days} days",
                expected=f"valid chain; more than {warn} days left (fails at {fail})",
                message=f"certificate of {endpoint.target}: {days} days left",
            )
        )
    return results


# --- authentication and authorization ------------------------------------------------------------


def auth_required(policy: CompliancePolicy, auth: Authentication) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.auth.required"
    if auth.approved_error is not None:
        return [
            findings.unverified(
                check_id,
                f"the approved admin could not log in either ({auth.approved_error}), so a refusal proves nothing",
            )
        ]
    outcomes = {"anonymous client": auth.no_credentials_error, "bad login": auth.wrong_password_error}
    admitted = [name for name, error in outcomes.items() if error is None]
    return [
        findings.result(
            check_id,
            not admitted,
            observed={
                name: f"refused ({error})" if error else "admitted" for name, error in outcomes.items()
            },
            expected="both refused; the approved admin admitted",
            message="clients without valid credentials"
            + (f": admitted: {', '.join(admitted)}" if admitted else ": refused"),
        )
    ]


def scram_users_approved(
    policy: CompliancePolicy, users: ScramUsers, approved: Iterable[str]
) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.auth.scram-users-approved"
    if users.error:
        return [findings.unverified(check_id, users.error)]
    wanted, present = set(approved), set(users.users)
    unknown, missing = sorted(present - wanted), sorted(wanted - present)
    message = "SCRAM users are exactly the approved principals"
    if unknown or missing:
        message = "SCRAM users differ from the approved principals: " + "; ".join(
            part
            for part in (
                f"not approved: {_listing(unknown)}" if unknown else "",
                f"missing: {_listing(missing)}" if missing else "",
            )
            if part
        )
    return [
        findings.result(
            check_id,
            not unknown and not missing,
            observed=sorted(present),
            expected=sorted(wanted),
            message=message,
            details={"unknown": unknown, "missing": missing},
        )
    ]


def authorizer_enabled(policy: CompliancePolicy, settings: Sequence[BrokerSettings]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.authz.authorizer-enabled"
    results = []
    for broker in settings:
        if broker.error:
            results.append(findings.unverified(check_id, broker.error, host=broker.host))
            continue
        authorizer = broker.values.get("authorizer.class.name") or ""
        results.append(
            findings.result(
                check_id,
                bool(authorizer),
                host=broker.host,
                target=f"node {broker.node_id}",
                observed=authorizer or "no authorizer",
                expected="an authorizer (StandardAuthorizer)",
                message=f"authorizer of node {broker.node_id}",
            )
        )
    return results


def deny_by_default(policy: CompliancePolicy, host: HostFacts) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.authz.deny-by-default"
    if host.error:
        return [findings.unverified(check_id, host.error, host=host.host)]
    value = host.settings.get("allow.everyone.if.no.acl.found")
    return [
        findings.result(
            check_id,
            value in (None, "false"),
            host=host.host,
            target="allow.everyone.if.no.acl.found",
            observed=value if value is not None else "not set (Kafka's default: false)",
            expected="false",
            message="resources without ACLs are "
            + ("open to everyone" if value not in (None, "false") else "denied to everyone but super users"),
        )
    ]


def super_users(policy: CompliancePolicy, host: HostFacts, approved: Iterable[str]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.authz.super-users"
    if host.error:
        return [findings.unverified(check_id, host.error, host=host.host)]
    value = host.settings.get("super.users")
    present = {item.strip() for item in (value or "").split(";") if item.strip()}
    wanted = set(approved)
    extra, missing = sorted(present - wanted), sorted(wanted - present)
    return [
        findings.result(
            check_id,
            present == wanted,
            host=host.host,
            target="super.users",
            observed=sorted(present) if value is not None else "not set",
            expected=sorted(wanted),
            message="super users "
            + (
                "exactly the Kafka nodes and the admin"
                if present == wanted
                else f"differ: extra {extra}, missing {missing}"
            ),
        )
    ]


def node_principals(policy: CompliancePolicy, host: HostFacts, expected_rules: str) -> list[Result]:
    """The node's certificate mapping: a node certificate (CN=<host>) is User:node-<host>, so a host named
    like a component or a SCRAM user never shares that principal (or its super-user rights)."""
    findings = Findings(policy)
    check_id = "compliance.authz.node-principals"
    if host.error:
        return [findings.unverified(check_id, host.error, host=host.host)]
    value = host.settings.get("ssl.principal.mapping.rules")
    return [
        findings.result(
            check_id,
            value == expected_rules,
            host=host.host,
            target="ssl.principal.mapping.rules",
            observed=value if value is not None else "not set (Kafka's default: the certificate's whole DN)",
            expected=expected_rules,
            message="node certificates "
            + (
                "map to User:node-<host>"
                if value == expected_rules
                else "do not map to principals of their own"
            ),
        )
    ]


def _covers(entry: AclEntry, topic: str) -> bool:
    if entry.pattern_type == "PREFIXED":
        return topic.startswith(entry.name)
    return entry.name in ("*", topic)


def acl_checks(
    policy: CompliancePolicy,
    acls: Acls,
    declared: set[Grant],
    approved_principals: Iterable[str],
    protected_topics: Sequence[str],
) -> list[Result]:
    findings = Findings(policy)
    ids = (
        "compliance.acl.no-wildcard-principal",
        "compliance.acl.no-wildcard-resource-on-protected",
        "compliance.acl.known-principals",
        "compliance.acl.as-declared",
    )
    if acls.error:
        return [findings.unverified(check_id, acls.error) for check_id in ids]
    allowing = [entry for entry in acls.entries if entry.permission == "ALLOW"]
    wildcard_principal = [e.label() for e in allowing if e.principal == "User:*"]
    wildcard_resource = sorted(
        {
            f"{e.label()} (covers {topic})"
            for e in allowing
            if e.resource_type == "TOPIC" and e.grant() not in declared
            for topic in protected_topics
            if _covers(e, topic) and (e.name == "*" or e.pattern_type == "PREFIXED")
        }
    )
    known = {f"User:{name}" for name in approved_principals}
    unknown = sorted({e.principal for e in acls.entries if e.principal not in known})
    present = {grant for grant in (e.grant() for e in acls.entries) if grant is not None}
    undeclared = sorted(e.label() for e in acls.entries if e.grant() not in declared)
    missing = sorted(g.label() for g in declared - present)
    total = f"{len(acls.entries)} bindings"
    return [
        findings.result(
            ids[0],
            not wildcard_principal,
            observed=wildcard_principal or total,
            expected="no ACL for User:*",
            message=f"grants to every principal: {_listing(wildcard_principal)}"
            if wildcard_principal
            else "no grant to User:*",
        ),
        findings.result(
            ids[1],
            not wildcard_resource,
            observed=wildcard_resource or total,
            expected="no wildcard or undeclared prefix grant covering a PHI topic",
            message=f"wildcard grants on PHI topics: {_listing(wildcard_resource)}"
            if wildcard_resource
            else f"no wildcard grant covers any of {len(protected_topics)} PHI topics",
        ),
        findings.result(
            ids[2],
            not unknown,
            observed=unknown or total,
            expected="only approved principals in ACLs",
            message=f"ACLs name principals nobody approved: {_listing(unknown)}"
            if unknown
            else "every ACL names an approved principal",
        ),
        findings.result(
            ids[3],
            not undeclared and not missing,
            observed=total,
            expected=f"{len(declared)} declared bindings",
            message="ACLs exactly as declared"
            if not undeclared and not missing
            else f"{len(undeclared)} undeclared, {len(missing)} missing bindings",
            details={"undeclared": undeclared[:LISTED], "missing": missing[:LISTED]},
        ),
    ]


def no_grants_refused(policy: CompliancePolicy, probes: Sequence[NoGrantsProbe]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.authz.no-grants-refused"
    results = []
    for probe in probes:
        target = f"{probe.principal} on {probe.topic}"
        if probe.error not in (None, "TOPIC_AUTHORIZATION_FAILED"):
            results.append(
                findings.unverified(check_id, f"the probe met {probe.error}, not an answer", target=target)
            )
            continue
        granted = [op for op in probe.operations if op in GRANTING_OPERATIONS]
        results.append(
            findings.result(
                check_id,
                not granted,
                target=target,
                observed=probe.error or f"authorized operations: {', '.join(probe.operations) or 'none'}",
                expected="TOPIC_AUTHORIZATION_FAILED (no READ or WRITE)",
                message=f"{probe.principal} (no grants) on PHI topic {probe.topic}: "
                + (f"the broker authorizes {', '.join(granted)}" if granted else "refused"),
            )
        )
    return results


# --- integrity: durability, health, topics -------------------------------------------------------


def durability(policy: CompliancePolicy, topics: Topics, protected: Sequence[str]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.durability.protected-topics"
    if topics.error:
        return [findings.unverified(check_id, topics.error)]
    rules = policy.durability
    expected = {
        "replication_factor": f">= {rules.min_replication_factor}",
        "min.insync.replicas": f">= {rules.min_insync_replicas} and <= replication factor - 1",
        "unclean.leader.election.enable": str(rules.unclean_leader_election).lower(),
    }
    results = []
    for topic in protected:
        observed_topic = topics.observed.get(topic)
        if observed_topic is None:
            results.append(
                findings.result(
                    check_id,
                    False,
                    target=topic,
                    observed="missing",
                    expected=expected,
                    message=f"{topic}: missing",
                )
            )
            continue
        rf = observed_topic.replication_factor
        min_isr = int(observed_topic.configs.get("min.insync.replicas", "1"))
        unclean = observed_topic.configs.get("unclean.leader.election.enable", "false")
        problems = []
        if rf < rules.min_replication_factor:
            problems.append(f"replication factor {rf} < {rules.min_replication_factor}")
        if min_isr < rules.min_insync_replicas:
            problems.append(f"min.insync.replicas {min_isr} < {rules.min_insync_replicas}")
        if min_isr > rf - 1:
            problems.append(f"min.insync.replicas {min_isr} > replication factor - 1 ({rf - 1})")
        if unclean != str(rules.unclean_leader_election).lower():
            problems.append(f"unclean.leader.election.enable={unclean}")
        results.append(
            findings.result(
                check_id,
                not problems,
                target=topic,
                observed={
                    "replication_factor": rf,
                    "min.insync.replicas": min_isr,
                    "unclean.leader.election.enable": unclean,
                },
                expected=expected,
                message=f"{topic}: " + ("; ".join(problems) if problems else "durable"),
            )
        )
    return results


def health_checks(policy: CompliancePolicy, health: Health, node_names: Mapping[int, str]) -> list[Result]:
    findings = Findings(policy)

    def nodes(ids: Iterable[Any]) -> str:
        return ", ".join(f"{node_names.get(int(i), '?')} (node {i})" for i in ids)

    brokers, quorum, partitions = health.brokers, health.quorum, health.partitions
    problems = [
        f"{key.replace('_', ' ')}: {_listing(partitions.get(key) or [])}"
        for key in ("offline", "under_min_isr", "under_replicated")
        if partitions.get(key)
    ]
    return [
        findings.result(
            "compliance.health.brokers",
            bool(brokers.get("healthy")),
            observed={"registered": brokers.get("registered"), "missing": brokers.get("missing")},
            expected=f"{len(node_names)} nodes registered" if node_names else "every broker registered",
            message="brokers: "
            + (
                "all registered"
                if brokers.get("healthy")
                else f"missing {nodes(brokers.get('missing') or [])}"
                + (f" ({brokers['error']})" if brokers.get("error") else "")
            ),
        ),
        findings.result(
            "compliance.health.quorum",
            bool(quorum.get("healthy")),
            observed={
                k: quorum.get(k)
                for k in ("leader", "missing", "lagging", "error")
                if quorum.get(k) is not None
            },
            expected="every voter present and caught up, one leader",
            message="controller quorum: "
            + (
                f"healthy, leader node {quorum.get('leader')}"
                if quorum.get("healthy")
                else quorum.get("error")
                or f"missing or lagging {nodes([*(quorum.get('missing') or []), *(quorum.get('lagging') or [])])}"
            ),
        ),
        findings.result(
            "compliance.health.partitions",
            bool(partitions.get("healthy")),
            observed={
                k: partitions.get(k)
                for k in ("partitions", "offline", "under_min_isr", "under_replicated", "error")
                if partitions.get(k) is not None
            },
            expected="no offline, under-replicated or under-min-ISR partition",
            message="partitions: "
            + (
                f"{partitions.get('partitions')} healthy"
                if partitions.get("healthy")
                else "; ".join(problems) or str(partitions.get("error"))
            ),
        ),
    ]


def _retention_problems(rule: RetentionRule, configs: Mapping[str, str]) -> list[str]:
    problems = []
    cleanup = {part.strip() for part in configs.get("cleanup.policy", "delete").split(",")}
    disallowed = sorted(cleanup - set(rule.cleanup))
    if disallowed:
        problems.append(f"cleanup {', '.join(disallowed)} not allowed (allowed: {', '.join(rule.cleanup)})")
    retention_ms = int(configs.get("retention.ms", "-1"))
    if retention_ms < 0:
        if rule.infinite == "never" or (rule.infinite == "compacted_only" and "compact" not in cleanup):
            problems.append(
                "kept forever (retention.ms=-1)"
                + (", not compacted" if rule.infinite == "compacted_only" else "")
            )
    else:
        days = retention_ms / MS_PER_DAY
        if rule.min_days is not None and days < rule.min_days:
            problems.append(f"retention {days:g} days < {rule.min_days}")
        if rule.max_days is not None and days > rule.max_days:
            problems.append(f"retention {days:g} days > {rule.max_days}")
    if rule.min_days is not None and int(configs.get("retention.bytes", "-1")) >= 0:
        # A size limit deletes old records whatever their age: it would cut the minimum short.
        problems.append(
            f"retention.bytes={configs.get('retention.bytes')} can delete records before {rule.min_days} days"
        )
    return problems


def _retention_text(rule: RetentionRule) -> str:
    parts = []
    if rule.min_days is not None:
        parts.append(f">= {rule.min_days} days (no size limit)")
    if rule.max_days is not None:
        parts.append(f"<= {rule.max_days} days")
    parts.append(
        {
            "never": "never forever",
            "compacted_only": "forever only if compacted",
            "allowed": "forever allowed",
        }[rule.infinite]
    )
    parts.append(f"cleanup {'/'.join(rule.cleanup)}")
    return "; ".join(parts)


def retention(policy: CompliancePolicy, topics: Topics, classes: Mapping[str, str]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.retention.per-classification"
    if topics.error:
        return [findings.unverified(check_id, topics.error)]
    results = []
    for topic, classification in classes.items():
        observed_topic = topics.observed.get(topic)
        if observed_topic is None:
            continue  # a missing topic is the catalog check's finding
        rule = policy.retention[classification]
        configs = observed_topic.configs
        problems = _retention_problems(rule, configs)
        results.append(
            findings.result(
                check_id,
                not problems,
                target=topic,
                observed={
                    key: configs.get(key) for key in ("retention.ms", "retention.bytes", "cleanup.policy")
                },
                expected=f"{classification}: {_retention_text(rule)}",
                message=f"{topic} ({classification}): "
                + ("; ".join(problems) if problems else "retention as the class requires"),
            )
        )
    return results


def auto_create_off(policy: CompliancePolicy, settings: Sequence[BrokerSettings]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.topics.auto-create-off"
    results = []
    for broker in settings:
        if broker.error:
            results.append(findings.unverified(check_id, broker.error, host=broker.host))
            continue
        value = broker.values.get("auto.create.topics.enable")
        results.append(
            findings.result(
                check_id,
                value == "false",
                host=broker.host,
                target=f"node {broker.node_id}",
                observed=value,
                expected="false",
                message=f"automatic topic creation on node {broker.node_id}: {'off' if value == 'false' else 'on'}",
            )
        )
    return results


def undeclared_topics(policy: CompliancePolicy, topics: Topics, declared: Iterable[str]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.topics.undeclared"
    if topics.error:
        return [findings.unverified(check_id, topics.error)]
    known = set(declared)
    extra = [name for name in topics.names if name not in known and not policy.is_internal_topic(name)]
    return [
        findings.result(
            check_id,
            not extra,
            observed=extra or f"{len(topics.names)} topics, all declared or internal",
            expected="only catalog topics (and the cluster's internal ones)",
            message=f"topics outside the catalog: {_listing(extra)}"
            if extra
            else "no topic outside the catalog",
        )
    ]


def _catalog_drift(spec: TopicSpec, observed: ObservedTopic) -> list[str]:
    plan = plan_topic(spec, observed)
    drift = [
        f"{key} {observed.configs.get(key)} (catalog {value})" for key, value in plan.set_configs.items()
    ]
    drift += [f"{key} {observed.configs.get(key)} (catalog {spec.configs[key]})" for key in plan.held_configs]
    if observed.partitions != spec.partitions:
        drift.append(f"partitions {observed.partitions} (catalog {spec.partitions})")
    if observed.replication_factor != spec.replication_factor:
        drift.append(f"replication factor {observed.replication_factor} (catalog {spec.replication_factor})")
    return drift


def topics_as_catalog(policy: CompliancePolicy, topics: Topics, specs: Sequence[TopicSpec]) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.topics.as-catalog"
    if topics.error:
        return [findings.unverified(check_id, topics.error)]
    results = []
    for spec in specs:
        expected = {
            "partitions": spec.partitions,
            "replication_factor": spec.replication_factor,
            **spec.configs,
        }
        observed_topic = topics.observed.get(spec.topic)
        if observed_topic is None:
            results.append(
                findings.result(
                    check_id,
                    False,
                    target=spec.topic,
                    observed="missing",
                    expected=expected,
                    message=f"{spec.topic}: missing",
                )
            )
            continue
        drift = _catalog_drift(spec, observed_topic)
        results.append(
            findings.result(
                check_id,
                not drift,
                target=spec.topic,
                observed={
                    "partitions": observed_topic.partitions,
                    "replication_factor": observed_topic.replication_factor,
                    **{key: observed_topic.configs.get(key) for key in spec.configs},
                },
                expected=expected,
                message=f"{spec.topic}: " + ("; ".join(drift) if drift else "as the catalog declares"),
            )
        )
    return results


# --- the registry --------------------------------------------------------------------------------


def registry_checks(policy: CompliancePolicy, registry: Registry, flavor: str) -> list[Result]:
    findings = Findings(policy)
    https = registry.https_status is not None
    results = [
        findings.result(
            "compliance.registry.https",
            https and not registry.plain_http_answers,
            observed={
                "https": f"HTTP {registry.https_status}" if https else f"no answer ({registry.https_error})",
                "plain http": "answers" if registry.plain_http_answers else "closed",
            },
            expected="answers over HTTPS (certificate verified); plain HTTP closed",
            message="registry transport: "
            + ("HTTPS only" if https and not registry.plain_http_answers else "not HTTPS-only"),
        )
    ]
    authenticated = registry.https_status in (401, 403)
    note = (
        "; Apicurio authenticates through an OIDC provider, which this environment does not configure"
        if flavor == "apicurio" and not authenticated
        else ""
    )
    if https:
        results.append(
            findings.result(
                "compliance.registry.authentication",
                authenticated,
                observed=f"HTTP {registry.https_status} to a client without credentials",
                expected="HTTP 401 or 403",
                message="registry "
                + (
                    "refuses clients without credentials"
                    if authenticated
                    else "serves clients without credentials"
                )
                + note,
            )
        )
    else:
        results.append(
            findings.unverified(
                "compliance.registry.authentication", f"no HTTPS answer ({registry.https_error})"
            )
        )
    for plan in registry.subjects:
        results += _subject_checks(findings, plan)
    return results


def _subject_checks(findings: Findings, plan: SubjectPlan) -> list[Result]:
    ids = ("compliance.registry.compatibility", "compliance.registry.latest-versions")
    if plan.error:
        return [findings.unverified(check_id, plan.error, target=plan.subject) for check_id in ids]
    latest = plan.registered_version is not None and plan.registered_version == plan.latest_version
    if plan.registered_version is None:
        state = "the catalog's schema is not registered" if plan.versions else "no version registered"
    elif latest:
        state = f"latest version {plan.latest_version} is the catalog's schema"
    else:
        state = f"the catalog's schema is version {plan.registered_version}, latest is {plan.latest_version}"
    return [
        findings.result(
            ids[0],
            plan.live_compatibility == plan.compatibility,
            target=plan.subject,
            observed=plan.live_compatibility or "not set",
            expected=plan.compatibility,
            message=f"{plan.subject}: compatibility {plan.live_compatibility or 'not set'}",
        ),
        findings.result(
            ids[1],
            latest,
            target=plan.subject,
            observed={"versions": plan.versions, "catalog_schema_version": plan.registered_version},
            expected="the catalog's schema as the latest version",
            message=f"{plan.subject}: {state}",
        ),
    ]


# --- audit controls ------------------------------------------------------------------------------


def audit_topic_exists(policy: CompliancePolicy, topics: Topics, audit_topic: str) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.audit.topic-exists"
    if topics.error:
        return [findings.unverified(check_id, topics.error, target=audit_topic)]
    present = audit_topic in topics.names
    return [
        findings.result(
            check_id,
            present,
            target=audit_topic,
            observed="present" if present else "missing",
            expected="present",
            message=f"audit topic {audit_topic} {'exists' if present else 'is missing'}",
        )
    ]


def audit_recent(policy: CompliancePolicy, trail: AuditTrail, now: dt.datetime) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.audit.recent-records"
    limit = policy.audit_topic.max_silence_days
    if trail.error:
        return [findings.unverified(check_id, trail.error, target=trail.topic)]
    if trail.latest_record_at is None:
        return [
            findings.result(
                check_id,
                False,
                target=trail.topic,
                observed="no record",
                expected=f"a record within {limit} days",
                message=f"{trail.topic} holds no record: nothing has published the audit trail yet",
            )
        ]
    age = now - trail.latest_record_at
    return [
        findings.result(
            check_id,
            age <= dt.timedelta(days=limit),
            target=trail.topic,
            observed={
                "records": trail.records,
                "newest": trail.latest_record_at.isoformat(),
                "age_hours": round(age.total_seconds() / 3600, 1),
            },
            expected=f"a record within {limit} days",
            message=f"{trail.topic}: newest record {age.days} days old",
        )
    ]


# --- hosts ---------------------------------------------------------------------------------------


def _mode(bits: int) -> str:
    return f"0{bits:03o}"


def secret_files(
    policy: CompliancePolicy, host: HostFacts, files: Sequence[HostFile], service_user: str
) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.host.secret-files"
    if host.error:
        return [findings.unverified(check_id, host.error, host=host.host)]
    results = []
    for item in files:
        owner = item.owner or service_user
        expected = {"owner": owner, "mode": f"{item.max_mode} or stricter"}
        found = host.files.get(item.path)
        if found is None:
            results.append(
                findings.result(
                    check_id,
                    False,
                    host=host.host,
                    target=item.path,
                    observed="absent",
                    expected=expected,
                    message=f"{item.kind} {item.path}: absent",
                )
            )
            continue
        problems = []
        wider = found.mode & ~item.max_mode_bits
        if wider:
            problems.append(f"mode {_mode(found.mode)} grants {_mode(wider)} beyond {item.max_mode}")
        if found.owner != owner:
            problems.append(f"owned by {found.owner}, not {owner}")
        results.append(
            findings.result(
                check_id,
                not problems,
                host=host.host,
                target=item.path,
                observed={"owner": found.owner, "group": found.group, "mode": _mode(found.mode)},
                expected=expected,
                message=f"{item.kind} {item.path}: " + ("; ".join(problems) if problems else "protected"),
            )
        )
    return results


def no_passwords_in_config(
    policy: CompliancePolicy, host: HostFacts, files: Sequence[HostFile]
) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.host.no-passwords-in-config"
    if host.error:
        return [findings.unverified(check_id, host.error, host=host.host)]
    results = []
    for item in files:
        if not item.scan_for_passwords or host.files.get(item.path) is None:
            continue
        count = host.password_settings.get(item.path)
        if count is None:
            results.append(
                findings.unverified(
                    check_id, f"{item.path} could not be scanned", host=host.host, target=item.path
                )
            )
            continue
        results.append(
            findings.result(
                check_id,
                count == 0,
                host=host.host,
                target=item.path,
                observed=f"{count} password or secret settings",
                expected="none",
                message=f"{item.path}: "
                + ("no password setting" if count == 0 else f"{count} lines set a password or secret"),
            )
        )
    return results


def airflow_secrets(policy: CompliancePolicy, files: Sequence[FileStat | str], owner: str) -> list[Result]:
    findings = Findings(policy)
    check_id = "compliance.host.airflow-secrets"
    limit = int(policy.airflow_secrets_max_mode, 8)
    results = []
    for item in files:
        if isinstance(item, str):
            results.append(
                findings.result(
                    check_id,
                    False,
                    host="airflow",
                    target=item,
                    observed="absent",
                    expected="present",
                    message=f"{item}: absent",
                )
            )
            continue
        problems = []
        if item.mode & ~limit:
            problems.append(f"mode {_mode(item.mode)} wider than {policy.airflow_secrets_max_mode}")
        if item.owner != owner:
            problems.append(f"owned by {item.owner}, not {owner}")
        results.append(
            findings.result(
                check_id,
                not problems,
                host="airflow",
                target=item.path,
                observed={"owner": item.owner, "mode": _mode(item.mode)},
                expected={"owner": owner, "mode": f"{policy.airflow_secrets_max_mode} or stricter"},
                message=f"{item.path}: " + ("; ".join(problems) if problems else "owner-only"),
            )
        )
    return results
