"""Transmission security (45 CFR 164.312(e)): TLS-only listeners, plaintext refused, protocol versions, certificates."""

from __future__ import annotations

from collections.abc import Sequence

from event_broker_rollout.compliance.checks import (
    LEGACY_TLS,
    MODERN_TLS,
    Findings,
)
from event_broker_rollout.compliance.facts import (
    BrokerSettings,
    Endpoint,
    Handshake,
)
from event_broker_rollout.config.policy import CompliancePolicy
from event_broker_rollout.evidence.results import Result, Status
from event_broker_rollout.resources.verify import CLIENT_CERTIFICATE_REQUIRED


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
