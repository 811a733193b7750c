"""Reconcile the schema registry with the catalog: compatibility levels, then schemas, all or nothing.

One run observes every subject (its versions, its compatibility level, whether the desired schema is
already registered), sets the declared compatibility levels, asks the registry to test every new
version against the existing ones, and registers only when no subject was refused: a catalog change
that breaks one subject registers nothing. A schema already registered is never registered again, so
a second run changes nothing.

Tested against Apicurio Registry 3.0.9's Confluent-compatible API (``/apis/ccompat/v7``), which
differs from a Confluent registry in ways this module allows for:
  * it matches schemas by text: only the canonical (compact JSON) text is ever sent;
  * it accepts schema metadata and silently drops it: stored metadata is read back, and the result
    says where the classification lives (``metadata`` in the outcome and in each result's details);
  * its compatibility answer is a bare true/false even with ``verbose=true`` (and confluent-kafka
    2.16.1's ``test_compatibility*`` return only the boolean anyway): refusals are explained from a
    field-level comparison with the latest version instead.

Compatibility levels are set before the test, so the registry judges under the declared level; they
stay set when a run refuses its schemas. All-or-nothing covers the check: a registry failing midway
through the registrations leaves the earlier ones registered (reported per subject).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from confluent_kafka.schema_registry import RegisteredSchema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from event_broker_rollout.evidence.results import Result, Severity, Status
from event_broker_rollout.resources.changes import describe_changes
from event_broker_rollout.resources.subjects import SubjectSchema

SUBJECT_NOT_FOUND = 40401
SCHEMA_NOT_FOUND = 40403
REGISTRY_ERRORS = (SchemaRegistryError, httpx.HTTPError)

# How the registry treated the classification sent as schema metadata.
METADATA_KEPT = "kept"
METADATA_IGNORED = "ignored by the registry"
METADATA_REFUSED = "refused by the registry"
METADATA_UNCHECKED = "not checked"


@dataclass
class SubjectPlan:
    """What one subject needs, as observed before anything changes."""

    subject: str
    compatibility: str  # declared
    live_compatibility: str | None = None  # None: no subject-level setting yet
    versions: list[int] = field(default_factory=list)
    registered_version: int | None = None  # the version that already holds the desired schema
    latest_schema: str | None = None
    latest_metadata: dict[str, str] | None = None
    compatible: bool | None = None  # the registry's verdict on a new version; None: not tested
    changes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def latest_version(self) -> int | None:
        return max(self.versions) if self.versions else None

    @property
    def needs_version(self) -> bool:
        return self.error is None and self.registered_version is None

    @property
    def refused(self) -> bool:
        return self.error is not None or self.compatible is False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("latest_schema")
        data["needs_version"] = self.needs_version
        return data


@dataclass
class SchemaOutcome:
    results: list[Result]
    plans: list[SubjectPlan]
    metadata: str  # METADATA_*: where the classification lives beside the schema
    registered: list[str]  # subjects that got a new version in this run

    def summary(self) -> dict[str, Any]:
        return {
            "subjects": len(self.plans),
            "registered": self.registered,
            "refused": [plan.subject for plan in self.plans if plan.refused],
            "schema_metadata": self.metadata,
        }


def _registry_error(error: Exception) -> str:
    return str(error) if isinstance(error, SchemaRegistryError) else f"{type(error).__name__}: {error}"


def _metadata_state(stored: dict[str, str] | None, item: SubjectSchema) -> str:
    if not stored:
        return METADATA_IGNORED
    return METADATA_KEPT if stored == item.metadata_properties else f"differs: {stored}"


def _metadata_note(state: str, item: SubjectSchema) -> str:
    if state == METADATA_KEPT:
        return f"classification {item.classification} stored as schema metadata"
    if state in (METADATA_IGNORED, METADATA_REFUSED):
        return (
            f"schema metadata {state}: classification {item.classification} is recorded in the catalog only"
        )
    return f"schema metadata {state}"


def _properties(registered: RegisteredSchema) -> dict[str, str] | None:
    metadata = registered.schema.metadata
    if metadata is None or metadata.properties is None:
        return None
    return dict(metadata.properties.properties)


def observe(client: SchemaRegistryClient, item: SubjectSchema) -> SubjectPlan:
    """The subject as the registry holds it; changes nothing."""
    plan = SubjectPlan(subject=item.subject, compatibility=item.compatibility)
    try:
        try:
            plan.live_compatibility = client.get_compatibility(item.subject)
        except SchemaRegistryError as error:
            # 404: no subject-level setting yet (Confluent 40408; Apicurio 40401 for an unknown subject,
            # "NONE" for a known one without a rule).
            if error.http_status_code != 404:
                raise
        try:
            plan.versions = sorted(client.get_versions(item.subject))
        except SchemaRegistryError as error:
            if error.error_code != SUBJECT_NOT_FOUND:
                raise
        if plan.versions:
            # "latest" bypasses the client's cache, which lookup_schema fills with *our* schema object.
            latest = client.get_version(item.subject, "latest")
            plan.latest_schema = latest.schema.schema_str
            plan.latest_metadata = _properties(latest)
            try:
                plan.registered_version = client.lookup_schema(item.subject, item.schema()).version
            except SchemaRegistryError as error:
                if error.error_code != SCHEMA_NOT_FOUND:
                    raise
    except REGISTRY_ERRORS as error:
        plan.error = f"cannot read {item.subject} from the registry: {_registry_error(error)}"
    return plan


def _apply_compatibility(client: SchemaRegistryClient, plan: SubjectPlan, dry_run: bool) -> Result:
    check_id = f"schema.compatibility[{plan.subject}]"
    if plan.live_compatibility == plan.compatibility:
        return Result(
            id=check_id,
            status=Status.OK,
            message=f"{plan.subject}: compatibility {plan.compatibility}",
            observed=plan.live_compatibility,
            expected=plan.compatibility,
        )
    was = plan.live_compatibility or "not set"
    if dry_run:
        return Result(
            id=check_id,
            status=Status.WARN,
            severity=Severity.ADVISORY,
            message=f"{plan.subject}: would set compatibility {was} -> {plan.compatibility}",
            observed=plan.live_compatibility,
            expected=plan.compatibility,
        )
    try:
        client.set_compatibility(plan.subject, plan.compatibility)
    except REGISTRY_ERRORS as error:
        plan.error = f"cannot set compatibility of {plan.subject}: {_registry_error(error)}"
        return Result(
            id=check_id,
            status=Status.FAIL,
            message=plan.error,
            observed=plan.live_compatibility,
            expected=plan.compatibility,
        )
    return Result(
        id=check_id,
        status=Status.CHANGED,
        message=f"{plan.subject}: compatibility {was} -> {plan.compatibility}",
        observed=plan.live_compatibility,
        expected=plan.compatibility,
    )


def _test_new_version(client: SchemaRegistryClient, item: SubjectSchema, plan: SubjectPlan) -> None:
    """Ask the registry whether the new version may join the existing ones (under the subject's level)."""
    try:
        plan.compatible = client.test_compatibility_all_versions(item.subject, item.schema())
    except REGISTRY_ERRORS as error:
        plan.error = f"the registry could not test {item.subject}: {_registry_error(error)}"
        return
    if not plan.compatible and plan.latest_schema is not None:
        plan.changes = describe_changes(plan.latest_schema, item.schema_str)


def _register(client: SchemaRegistryClient, item: SubjectSchema) -> tuple[int | None, str]:
    """Register the new version; returns (version, metadata state). Falls back to no metadata when the
    registry refuses it."""
    metadata = METADATA_KEPT
    try:
        client.register_schema_full_response(item.subject, item.schema())
    except SchemaRegistryError as error:
        # 409 is an incompatibility and 5xx a failure; other client errors are the metadata field.
        if error.http_status_code not in (400, 422):
            raise
        client.register_schema_full_response(item.subject, item.schema(with_metadata=False))
        metadata = METADATA_REFUSED
    # Registration answers with the id only; the version and what was stored come from a fresh read.
    latest = client.get_version(item.subject, "latest")
    if metadata == METADATA_KEPT:
        metadata = _metadata_state(_properties(latest), item)
    return latest.version, metadata


def _expected(item: SubjectSchema) -> dict[str, Any]:
    return {"schema": item.source, "compatibility": item.compatibility, "classification": item.classification}


def reconcile_schemas(
    client: SchemaRegistryClient, subjects: Sequence[SubjectSchema], *, dry_run: bool = False
) -> SchemaOutcome:
    """Bring every subject to the catalog: compatibility level, then the schema as a new version where
    needed; with ``dry_run`` only observe and test (the registry's compatibility test changes nothing).
    """
    items = {item.subject: item for item in subjects}
    plans = {item.subject: observe(client, item) for item in subjects}
    results: list[Result] = []

    for plan in plans.values():
        if plan.error is None:
            results.append(_apply_compatibility(client, plan, dry_run))

    # Check all, then register: every new version is tested before the first one is registered.
    for subject, plan in plans.items():
        if plan.needs_version and plan.versions:
            _test_new_version(client, items[subject], plan)
    refused = [plan.subject for plan in plans.values() if plan.refused]

    metadata_states: set[str] = set()
    registered: list[str] = []
    for subject, plan in plans.items():
        result, state = _registration(client, plan, items[subject], dry_run=dry_run, refused=refused)
        results.append(result)
        if state is not None:
            metadata_states.add(state)
        if result.status is Status.CHANGED:
            registered.append(subject)

    known = metadata_states - {METADATA_UNCHECKED}
    metadata = ", ".join(sorted(known)) if known else METADATA_UNCHECKED
    return SchemaOutcome(
        results=results, plans=list(plans.values()), metadata=metadata, registered=registered
    )


def _registration(
    client: SchemaRegistryClient, plan: SubjectPlan, item: SubjectSchema, *, dry_run: bool, refused: list[str]
) -> tuple[Result, str | None]:
    """One subject's registration step — refused, already there, held back, planned or registered — and
    its metadata state when one is known."""
    check_id = f"schema.register[{plan.subject}]"
    expected = _expected(item)
    level = plan.compatibility if not dry_run else (plan.live_compatibility or "NONE")
    if plan.error is not None:
        return Result(id=check_id, status=Status.FAIL, message=plan.error, expected=expected), None
    if plan.compatible is False:
        return _incompatible(plan, item, level), None
    if plan.registered_version is not None:
        return _already_registered(plan, item)
    next_version = (plan.latest_version or 0) + 1
    if refused:
        return (
            Result(
                id=check_id,
                status=Status.SKIPPED,
                severity=Severity.ADVISORY,
                message=f"{plan.subject}: version {next_version} not registered: {', '.join(refused)} refused "
                "in this run, and a run registers all or nothing",
                observed={"versions": plan.versions},
                expected=expected,
            ),
            None,
        )
    verdict = f"compatible with versions {plan.versions} under {level}" if plan.versions else "first version"
    if dry_run:
        return (
            Result(
                id=check_id,
                status=Status.WARN,
                severity=Severity.ADVISORY,
                message=f"{plan.subject}: would register version {next_version} ({verdict})",
                observed={"versions": plan.versions},
                expected=expected,
            ),
            None,
        )
    return _registered(client, plan, item, verdict)


def _incompatible(plan: SubjectPlan, item: SubjectSchema, level: str) -> Result:
    what = "; ".join(plan.changes) or "no field-level difference found (see the registry log)"
    return Result(
        id=f"schema.register[{plan.subject}]",
        status=Status.FAIL,
        message=f"{plan.subject}: refused: the registry judges {item.source} incompatible with the "
        f"registered versions {plan.versions} under {level}: {what}",
        observed={"versions": plan.versions, "changes": plan.changes},
        expected=_expected(item),
    )


def _already_registered(plan: SubjectPlan, item: SubjectSchema) -> tuple[Result, str]:
    latest = plan.registered_version == plan.latest_version
    state = _metadata_state(plan.latest_metadata, item) if latest else METADATA_UNCHECKED
    result = Result(
        id=f"schema.register[{plan.subject}]",
        status=Status.OK if latest else Status.WARN,
        severity=Severity.BLOCKING if latest else Severity.ADVISORY,
        message=f"{plan.subject}: already registered as version {plan.registered_version}"
        + ("" if latest else f", but the latest version is {plan.latest_version}")
        + f"; {_metadata_note(state, item)}",
        observed={"version": plan.registered_version, "versions": plan.versions},
        expected=_expected(item),
        details={"metadata": state},
    )
    return result, state


def _registered(
    client: SchemaRegistryClient, plan: SubjectPlan, item: SubjectSchema, verdict: str
) -> tuple[Result, str | None]:
    check_id = f"schema.register[{plan.subject}]"
    try:
        version, state = _register(client, item)
    except REGISTRY_ERRORS as error:
        return (
            Result(
                id=check_id,
                status=Status.FAIL,
                message=f"{plan.subject}: registration failed: {_registry_error(error)}",
                observed={"versions": plan.versions},
                expected=_expected(item),
            ),
            None,
        )
    result = Result(
        id=check_id,
        status=Status.CHANGED,
        message=f"{plan.subject}: registered version {version} ({verdict}); {_metadata_note(state, item)}",
        observed={"version": version, "versions": [*plan.versions, version]},
        expected=_expected(item),
        details={"metadata": state},
    )
    return result, state
