"""Authentication and authorization (45 CFR 164.312(a), (d)): login required, approved users, authorizer, ACLs, deny by default, super users."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from event_broker_rollout.compliance.checks import (
    GRANTING_OPERATIONS,
    LISTED,
    Findings,
    listing,
)
from event_broker_rollout.compliance.facts import (
    AclEntry,
    Acls,
    Authentication,
    BrokerSettings,
    ClientCertificate,
    HostFacts,
    NoGrantsProbe,
    ScramUsers,
)
from event_broker_rollout.config.policy import CompliancePolicy
from event_broker_rollout.evidence.results import Result, Status
from event_broker_rollout.resources.access import Grant


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
                f"not approved: {listing(unknown)}" if unknown else "",
                f"missing: {listing(missing)}" if missing else "",
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


def client_certificates(policy: CompliancePolicy, certificates: Sequence[ClientCertificate]) -> list[Result]:
    """Under mTLS every principal's certificate is from the cluster CA, names the principal, and is
    graded by days left as the brokers' certificates are."""
    findings = Findings(policy)
    check_id = "compliance.auth.client-certificates"
    warn, fail = policy.certificates.warn_days, policy.certificates.fail_days
    results = []
    for certificate in certificates:
        days = certificate.days_left
        if certificate.problems or days is None:
            status = Status.FAIL
        else:
            status = Status.PASS if days > warn else (Status.WARN if days > fail else Status.FAIL)
        results.append(
            findings.graded(
                check_id,
                status,
                target=f"User:{certificate.principal}",
                observed="; ".join(certificate.problems) or f"from the cluster CA; expires in {days} days",
                expected=f"CN={certificate.principal} from the cluster CA; more than {warn} days left (fails at {fail})",
                message=f"client certificate of {certificate.principal}"
                + (f": {days} days left" if days is not None else ""),
            )
        )
    return results


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


def token_validation(policy: CompliancePolicy, host: HostFacts, expected: Mapping[str, str]) -> list[Result]:
    """Under OAUTHBEARER the broker verifies tokens as declared: OAUTHBEARER alone on the secure listener,
    the signature against the provider's keys, the issuer, the audience, the principal's claim."""
    return _authentication_as_declared(
        policy, host, expected, "compliance.auth.token-validation", "OAUTHBEARER token validation", "tokens"
    )


def ticket_validation(policy: CompliancePolicy, host: HostFacts, expected: Mapping[str, str]) -> list[Result]:
    """Under Kerberos the broker takes tickets as declared: GSSAPI alone on the secure listener, for its
    own service principal from its keytab, and only the realm's one-part names mapped to principals."""
    return _authentication_as_declared(
        policy, host, expected, "compliance.auth.kerberos-tickets", "Kerberos ticket validation", "tickets"
    )


def _authentication_as_declared(
    policy: CompliancePolicy,
    host: HostFacts,
    expected: Mapping[str, str],
    check_id: str,
    target: str,
    credentials: str,
) -> list[Result]:
    findings = Findings(policy)
    if host.error:
        return [findings.unverified(check_id, host.error, host=host.host)]
    observed = {key: host.settings.get(key, "not set") for key in expected}
    differ = sorted(key for key in expected if observed[key] != expected[key])
    return [
        findings.result(
            check_id,
            not differ,
            host=host.host,
            target=target,
            observed=observed,
            expected=dict(expected),
            message=f"{credentials} verified as declared"
            if not differ
            else f"{target} differs: {', '.join(differ)}",
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
            message=f"grants to every principal: {listing(wildcard_principal)}"
            if wildcard_principal
            else "no grant to User:*",
        ),
        findings.result(
            ids[1],
            not wildcard_resource,
            observed=wildcard_resource or total,
            expected="no wildcard or undeclared prefix grant covering a PHI topic",
            message=f"wildcard grants on PHI topics: {listing(wildcard_resource)}"
            if wildcard_resource
            else f"no wildcard grant covers any of {len(protected_topics)} PHI topics",
        ),
        findings.result(
            ids[2],
            not unknown,
            observed=unknown or total,
            expected="only approved principals in ACLs",
            message=f"ACLs name principals nobody approved: {listing(unknown)}"
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
