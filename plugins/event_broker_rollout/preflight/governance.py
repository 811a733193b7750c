"""Checks that need no host: data classification of the catalog, and the operator's acknowledgements."""

from __future__ import annotations

from collections.abc import Iterable

from event_broker_rollout.config.catalog import Catalog, Policies
from event_broker_rollout.evidence.results import Result, Severity, Status, check

# The guide's Knowledge Prerequisites: not measurable, so the operator acknowledges each in the trigger form.
KNOWLEDGE_PREREQUISITES: dict[str, str] = {
    "event_driven_architecture": "Basic understanding of event-driven architecture",
    "linux_administration": "Familiarity with Linux system administration",
    "healthcare_data_formats": "Knowledge of healthcare data formats (FHIR, HL7)",
    "healthcare_security_compliance": "Understanding of security and compliance requirements in healthcare",
}


def classification_checks(catalog: Catalog, policies: Policies) -> list[Result]:
    results = []
    known = policies.classifications
    for topic, classification in catalog.topics():
        results.append(
            check(
                f"data.classification[{topic}]",
                classification in known,
                observed=classification,
                expected=f"one of {', '.join(sorted(known))}",
                message=f"topic {topic} is classified {classification}",
            )
        )
    for name in sorted({classification for _, classification in catalog.topics()} & set(known)):
        requires = known[name].requires
        results.append(
            Result(
                id=f"data.policy[{name}]",
                status=Status.PASS,
                observed=requires.model_dump(exclude_none=True),
                expected="requirements declared for the class",
                message=f"class {name}: {known[name].description}",
            )
        )
    return results


def knowledge_checks(acknowledged: Iterable[str]) -> list[Result]:
    given = set(acknowledged)
    return [
        check(
            f"knowledge.{key}",
            key in given,
            observed="acknowledged by the operator" if key in given else "not acknowledged",
            expected="acknowledged in the trigger form",
            message=text,
            severity=Severity.ADVISORY,
        )
        for key, text in KNOWLEDGE_PREREQUISITES.items()
    ]
