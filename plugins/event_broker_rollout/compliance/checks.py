"""The compliance checks: pure functions from collected facts (``compliance.facts``) to evidence, one
module per safeguard (``checks_transmission``, ``checks_access``, ``checks_integrity``,
``checks_registry``, ``checks_audit``, ``checks_hosts``); this module holds what they share.

Every finding is a ``Result`` whose id is the check's stable id from ``config/compliance.yaml``; the
thing checked (a listener, a topic, a file) is in ``details.target`` and in the message, the HIPAA
clause in ``details.hipaa``. A blocking check that misses fails the run, an advisory one warns. A fact
that could not be collected makes its check fail as "not verified" (a check never passes on no data).
Values reported are settings, names, counts and protocol facts: never a password, a key or a payload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from event_broker_rollout.config.policy import CompliancePolicy
from event_broker_rollout.evidence.results import Result, Severity, Status, check

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
        severity: Severity | None = None,  # stricter than the policy's where the environment demands it
    ) -> Result:
        return check(
            check_id,
            passed,
            message=message,
            observed=observed,
            expected=expected,
            host=host,
            severity=severity or self.policy.check(check_id).severity,
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


def listing(items: Iterable[str]) -> str:
    names = list(items)
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
