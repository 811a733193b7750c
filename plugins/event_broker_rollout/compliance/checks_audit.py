"""Audit controls (45 CFR 164.312(b)): the audit topic exists and is written to."""

from __future__ import annotations

import datetime as dt

from event_broker_rollout.compliance.checks import (
    Findings,
)
from event_broker_rollout.compliance.facts import (
    AuditTrail,
    Topics,
)
from event_broker_rollout.config.policy import CompliancePolicy
from event_broker_rollout.evidence.results import Result


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
