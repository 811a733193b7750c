"""The schema registry: reachable, authenticated, subjects and compatibility as the catalog declares."""

from __future__ import annotations

from event_broker_rollout.compliance.checks import (
    Findings,
)
from event_broker_rollout.compliance.facts import (
    Registry,
)
from event_broker_rollout.config.policy import CompliancePolicy
from event_broker_rollout.evidence.results import Result, Severity
from event_broker_rollout.resources.registry import SubjectPlan


def registry_checks(
    policy: CompliancePolicy, registry: Registry, flavor: str, carries_phi: bool
) -> list[Result]:
    """``carries_phi``: the environment holds patient data in protected topics, whose schemas a stranger
    must not change, so a registry that answers anonymously fails the run (elsewhere the policy's
    severity stands)."""
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
    ways = {
        "apicurio": "Apicurio authenticates through an OIDC provider",
        "confluent": "kind: basic, HTTP basic against the registry's password file",
    }
    note = "" if authenticated else f"; declare schema_registry.authentication ({ways[flavor]})"
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
                severity=Severity.BLOCKING if carries_phi else None,
                details={
                    "patient data": "held" if carries_phi else "synthetic only (the environment says so)"
                },
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
