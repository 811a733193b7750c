"""Data quality of consumed events: a Great Expectations suite, and which events to dead-letter.

Each consumed event becomes one flat row (``flatten``, which also validates the resource as FHIR R4:
per event, like decoding); ``prepare`` adds the columns some rules need (check digits, the value's place
in its physiologic range, per-patient order, known patients, where Safe Harbor identifiers are). A rule
is one GX expectation with a stable id and a human name and, when it is about single events, the
same predicate in pandas: GX gives the verdict for the report, pandas names the rows to dead-letter.

Nothing leaves this module with a value from the data in it. GX echoes failing values by default
(``partial_unexpected_list``): it runs with ``BOOLEAN_ONLY`` results here, the Data Docs are built from
those results, and the report carries rule ids, names and counts. The suite itself holds only
reference data (value sets, code/unit pairs, the clock); where a rule found something, the report
names field paths (``data.conclusion``), never what it found.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pandas as pd

from event_broker_rollout import paths
from event_broker_rollout.config.catalog import Catalog
from event_broker_rollout.evidence.results import Result, Status
from event_broker_rollout.integration import fhir, identifiers
from event_broker_rollout.integration.events import epoch_ms
from event_broker_rollout.integration.synthetic import (
    ACT_REASON_SYSTEM,
    ADT_ENCOUNTER_STATUS,
    ICD10CM_SYSTEM,
    LOINC_SYSTEM,
    PHYSIOLOGIC_RANGES,
    RXNORM_SYSTEM,
    SNOMED_SYSTEM,
    TYPE_PREFIX,
    loinc_is_valid,
    snomed_is_valid,
)

# GX is imported where it is used: its import takes seconds, and the DAG files import this module.
if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.expectations.expectation import Expectation

# --- flat rows -----------------------------------------------------------------------------------

COLUMNS = (
    "topic",
    "partition",
    "offset",
    "event_id",
    "type",
    "source",
    "specversion",
    "time_ms",
    "subject",
    "subject_patient_id",
    "hl7trigger",
    "key",
    "resource_type",
    "resource_id",
    "status",
    "patient_ref",
    "patient_id",
    "code_system",
    "code",
    "unit",
    "value",
    "loinc_codes",
    "snomed_codes",
    "icd10cm_codes",
    "rxnorm_codes",
    "htest",
    "name_text",
    "free_text",
    "text_fields",
    "fhir_issues",
    "schema_id",
    "registered_schema_id",
    "produced_at_ms",
    "consumed_at_ms",
)
_PATIENT_PREFIX = "Patient/"
_CODE_COLUMNS = {
    LOINC_SYSTEM: "loinc_codes",
    SNOMED_SYSTEM: "snomed_codes",
    ICD10CM_SYSTEM: "icd10cm_codes",
    RXNORM_SYSTEM: "rxnorm_codes",
}


def _millis(moment: Any) -> int | None:
    if isinstance(moment, datetime):
        return epoch_ms(moment) if moment.tzinfo else None
    if isinstance(moment, int) and not isinstance(moment, bool):
        return moment
    return None


def _patient_id(reference: Any) -> str | None:
    if isinstance(reference, str) and reference.startswith(_PATIENT_PREFIX):
        return reference[len(_PATIENT_PREFIX) :] or None
    return None


def _walk(node: Any, codes: dict[str, list[str]]) -> None:
    """Codings by system (references hold none)."""
    if isinstance(node, dict):
        if "reference" in node:
            return
        system, code = node.get("system"), node.get("code")
        if isinstance(system, str) and isinstance(code, str):
            codes.setdefault(system, []).append(code)
        for item in node.values():
            if isinstance(item, dict | list):
                _walk(item, codes)
    elif isinstance(node, list):
        for item in node:
            _walk(item, codes)


def flatten(
    event: Mapping[str, Any],
    kafka_key: str | None,
    schema_id: int | None,
    produced_at: int | None,
    consumed_at: int | None,
    *,
    topic: str,
    partition: int | None = None,
    offset: int | None = None,
    registered_schema_id: int | None = None,
) -> dict[str, Any]:
    """One consumed event (the decoded envelope) as a row of ``COLUMNS``; times in epoch ms.

    Codes are gathered from every coding of the resource by system (``|``-joined); texts from the
    schema's text fields (``fhir.text_fields``): ``text_fields`` holds (field path, kind, text) per
    text, ``name_text`` / ``free_text`` a kind's texts joined; ``fhir_issues`` the field paths where
    the resource is not valid FHIR R4 (``|``-joined), null when it is.
    """
    data = event.get("data")
    if not isinstance(data, Mapping):
        data = {}
    resource_type = data.get("resourceType")
    reference = data.get("patient" if resource_type == "Consent" else "subject")
    patient_ref = reference.get("reference") if isinstance(reference, Mapping) else None
    patient_id = data.get("id") if resource_type == "Patient" else _patient_id(patient_ref)
    concept = data.get("code") or data.get("medicationCodeableConcept")
    coding = (concept.get("coding") or [None])[0] if isinstance(concept, Mapping) else None
    quantity = data.get("valueQuantity")
    quantity = quantity if isinstance(quantity, Mapping) else {}
    codes: dict[str, list[str]] = {}
    _walk(data, codes)
    texts = tuple(
        (field.name, field.kind, text)
        for field in (fhir.text_fields().get(resource_type, ()) if isinstance(resource_type, str) else ())
        for text in fhir.values_at(data, field.path)
    )
    security = (data.get("meta") or {}).get("security") or []
    row = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "event_id": event.get("id"),
        "type": event.get("type"),
        "source": event.get("source"),
        "specversion": event.get("specversion"),
        "time_ms": _millis(event.get("time")),
        "subject": event.get("subject"),
        "subject_patient_id": _patient_id(event.get("subject")),
        "hl7trigger": event.get("hl7trigger"),
        "key": kafka_key,
        "resource_type": resource_type,
        "resource_id": data.get("id"),
        "status": data.get("status"),
        "patient_ref": patient_ref,
        "patient_id": patient_id,
        "code_system": coding.get("system") if isinstance(coding, Mapping) else None,
        "code": coding.get("code") if isinstance(coding, Mapping) else None,
        "unit": quantity.get("code") or quantity.get("unit"),
        "value": quantity.get("value"),
        "htest": any(
            isinstance(item, Mapping)
            and item.get("system") == ACT_REASON_SYSTEM
            and item.get("code") == "HTEST"
            for item in security
        ),
        "name_text": _joined(texts, "name"),
        "free_text": _joined(texts, "free_text"),
        "text_fields": texts,
        "fhir_issues": "|".join(fhir.validate(data)) or None,
        "schema_id": schema_id,
        "registered_schema_id": registered_schema_id,
        "produced_at_ms": produced_at,
        "consumed_at_ms": consumed_at,
    }
    for system, column in _CODE_COLUMNS.items():
        found = codes.get(system)
        row[column] = "|".join(found) if found else None
    return row


def _joined(texts: Iterable[tuple[str, str, str]], kind: str) -> str | None:
    return identifiers.FIELD_SEPARATOR.join(text for _, of_kind, text in texts if of_kind == kind) or None


def _all_valid(check: Callable[[str], bool]) -> Callable[[Any], Any]:
    def judge(joined: Any) -> Any:
        return all(check(code) for code in joined.split("|")) if isinstance(joined, str) else pd.NA

    return judge


_PAIR_SEPARATOR = " "  # no code, UCUM unit, trigger, type, topic or status contains one


def pair_key(first: Any, second: Any) -> str:
    return f"{first}{_PAIR_SEPARATOR}{second}"


def _pair_column(frame: pd.DataFrame, first: str, second: str) -> pd.Series:
    # One column for a pair, checked with a vectorized in-set: GX's pair-in-set walks the rows one by one.
    a, b = frame[first].astype(object), frame[second].astype(object)
    return (a + _PAIR_SEPARATOR + b).where(a.notna() & b.notna())


def prepare(
    rows: Iterable[Mapping[str, Any]],
    *,
    now_ms: int,
    clock_skew_ms: int,
    known_patients: Collection[str] = (),
) -> pd.DataFrame:
    """The rows as a frame (positional index) with the derived columns the rules check.

    * ``loinc_valid`` / ``snomed_valid``: every such code has its check digit right (null: none);
    * ``range_fraction``: an observation's value within its LOINC code's physiologic range, 0..1;
    * ``in_patient_order``: not older than the patient's previous event in the topic (offset order;
      events in the future are judged by their own rule, not here, so one bad clock flags one event);
    * ``patient_known``: the resource's patient is among this run's Patient events or ``known_patients``;
    * ``topic_type``, ``topic_resource``, ``trigger_status``, ``code_unit``: pairs as one value
      (``pair_key``), null when either part is missing (the required-field rules report that);
    * ``found_column(rule id)`` per identifier rule: the field paths where it found an identifier
      (``|``-joined), null where none.
    """
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    frame["topic_type"] = _pair_column(frame, "topic", "type")
    frame["topic_resource"] = _pair_column(frame, "topic", "resource_type")
    frame["trigger_status"] = _pair_column(frame, "hl7trigger", "status")
    frame["code_unit"] = _pair_column(frame, "code", "unit")
    for rule_id, found in identifiers.scan(frame, identifiers.identifier_rules()).items():
        frame[found_column(rule_id)] = found
    frame["loinc_valid"] = frame["loinc_codes"].map(_all_valid(loinc_is_valid)).astype("boolean")
    frame["snomed_valid"] = frame["snomed_codes"].map(_all_valid(snomed_is_valid)).astype("boolean")

    value = pd.to_numeric(frame["value"], errors="coerce")
    observed = frame["resource_type"] == "Observation"
    low = frame["code"].map({code: bounds[0] for code, bounds in PHYSIOLOGIC_RANGES.items()})
    high = frame["code"].map({code: bounds[1] for code, bounds in PHYSIOLOGIC_RANGES.items()})
    frame["range_fraction"] = ((value - low) / (high - low)).where(observed)

    time_ms = pd.to_numeric(frame["time_ms"], errors="coerce")
    plausible = frame.loc[
        time_ms.notna() & (time_ms <= now_ms + clock_skew_ms), ["topic", "key", "partition", "offset"]
    ]
    plausible = plausible.assign(time_ms=time_ms, position=plausible.index)
    plausible = plausible.sort_values(["topic", "key", "partition", "offset", "position"], kind="stable")
    previous = plausible.groupby(["topic", "key"], dropna=False, sort=False)["time_ms"].shift()
    in_order = pd.Series(pd.NA, index=frame.index, dtype="boolean")
    in_order[plausible.index] = previous.isna() | (plausible["time_ms"] >= previous)
    frame["in_patient_order"] = in_order

    patients = set(known_patients) | set(
        frame.loc[frame["resource_type"] == "Patient", "patient_id"].dropna()
    )
    judged = (frame["resource_type"] != "Patient") & frame["patient_id"].notna()
    frame["patient_known"] = frame["patient_id"].isin(patients).astype("boolean").where(judged, pd.NA)
    return frame


def found_column(rule_id: str) -> str:
    return f"found[{rule_id}]"


# --- rules ---------------------------------------------------------------------------------------

LOINC_UCUM_TABLE = paths.INCLUDE_DIR / "reference" / "loinc_ucum_units.csv"


def load_loinc_units(table: Path = LOINC_UCUM_TABLE) -> dict[str, str]:
    """LOINC code -> the UCUM unit its observations carry."""
    with table.open(newline="") as source:
        return {row["loinc"]: row["ucum"] for row in csv.DictReader(source)}


CODED_RESOURCES = ("Observation", "DiagnosticReport", "MedicationRequest")
# CloudEvents types per catalog event name.
EVENT_TYPES: Mapping[str, tuple[str, ...]] = {
    "patient-upserted": ("patient.upserted",),
    "encounter-event": (
        "encounter.admitted",
        "encounter.transferred",
        "encounter.discharged",
        "encounter.registered",
        "encounter.cancelled",
    ),
    "observation-recorded": ("observation.recorded",),
    "diagnostic-report-finalized": ("diagnosticreport.finalized",),
    "medication-request-created": ("medicationrequest.created",),
    "consent-changed": ("consent.changed",),
}
_ICD10CM = r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?"
_RXNORM = r"[0-9]{1,10}"

Where = tuple[str, tuple[Any, ...]]  # (column, allowed values): the rows a rule applies to


@dataclass(frozen=True)
class Rule:
    id: str  # stable: reports, dead-letter headers and tests refer to it
    name: str
    expectation: Expectation
    failing: Callable[[pd.DataFrame], pd.Series] | None  # rows breaking it; None: about the whole table
    fields_column: str | None = None  # per row, the field paths ('|'-joined) where it is broken
    scans: tuple[str, ...] = ()  # the field paths it reads, when it says so


@dataclass(frozen=True)
class SuiteSettings:
    now_ms: int  # the clock the future-time rule uses
    expected_rows: int  # events produced: every one must be consumed
    topic_types: frozenset[tuple[str, str]]  # (topic, CloudEvents type)
    topic_resources: frozenset[tuple[str, str]]  # (topic, FHIR resource type)
    clock_skew_ms: int = 60_000

    @classmethod
    def for_catalog(
        cls, catalog: Catalog, *, now_ms: int, expected_rows: int, clock_skew_ms: int = 60_000
    ) -> SuiteSettings:
        return cls(
            now_ms=now_ms,
            expected_rows=expected_rows,
            topic_types=frozenset(
                (event.topic, TYPE_PREFIX + kind)
                for event in catalog.events
                for kind in EVENT_TYPES.get(event.name, ())
            ),
            topic_resources=frozenset((event.topic, event.fhir_resource) for event in catalog.events),
            clock_skew_ms=clock_skew_ms,
        )


def _applies(frame: pd.DataFrame, where: Where | None) -> pd.Series:
    if where is None:
        return pd.Series(True, index=frame.index)
    return frame[where[0]].isin(where[1])


def _condition(where: Where | None) -> Any:
    if where is None:
        return None
    from great_expectations.expectations.row_conditions import Column

    return Column(where[0]).is_in(where[1])


def _meta(rule_id: str, name: str) -> dict[str, Any]:
    return {"meta": {"rule_id": rule_id}, "description": name}


def _not_null(rule_id: str, name: str, column: str, where: Where | None = None) -> Rule:
    import great_expectations.expectations as gxe

    return Rule(
        rule_id,
        name,
        gxe.ExpectColumnValuesToNotBeNull(
            column=column, row_condition=_condition(where), **_meta(rule_id, name)
        ),
        lambda frame: _applies(frame, where) & frame[column].isna(),
    )


def _unique(rule_id: str, name: str, column: str) -> Rule:
    import great_expectations.expectations as gxe

    # GX counts every copy; only the later copies are dead-lettered (the first one is the event).
    return Rule(
        rule_id,
        name,
        gxe.ExpectColumnValuesToBeUnique(column=column, **_meta(rule_id, name)),
        lambda frame: frame[column].notna() & frame[column].duplicated(keep="first"),
    )


def _in_set(rule_id: str, name: str, column: str, values: Sequence[Any]) -> Rule:
    import great_expectations.expectations as gxe

    return Rule(
        rule_id,
        name,
        gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(values), **_meta(rule_id, name)),
        lambda frame: frame[column].notna() & ~frame[column].isin(values).fillna(False).astype(bool),
    )


def _matches(series: pd.Series, pattern: str) -> pd.Series:
    return series.astype(str).str.contains(pattern, regex=True)


def _regex(rule_id: str, name: str, column: str, pattern: str) -> Rule:
    import great_expectations.expectations as gxe

    return Rule(
        rule_id,
        name,
        gxe.ExpectColumnValuesToMatchRegex(column=column, regex=pattern, **_meta(rule_id, name)),
        lambda frame: frame[column].notna() & ~_matches(frame[column], pattern),
    )


def _null(rule_id: str, name: str, column: str, scans: tuple[str, ...] = ()) -> Rule:
    """The column holds, per row, the field paths where the rule is broken: null means none."""
    import great_expectations.expectations as gxe

    return Rule(
        rule_id,
        name,
        gxe.ExpectColumnValuesToBeNull(column=column, **_meta(rule_id, name)),
        lambda frame: frame[column].notna(),
        fields_column=column,
        scans=scans,
    )


def _between(rule_id: str, name: str, column: str, low: float | None, high: float | None) -> Rule:
    import great_expectations.expectations as gxe

    def failing(frame: pd.DataFrame) -> pd.Series:
        values = pd.to_numeric(frame[column], errors="coerce")
        outside = pd.Series(False, index=frame.index)
        if low is not None:
            outside |= values < low
        if high is not None:
            outside |= values > high
        return values.notna() & outside

    return Rule(
        rule_id,
        name,
        gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=low, max_value=high, **_meta(rule_id, name)
        ),
        failing,
    )


def _pair_equal(rule_id: str, name: str, column_a: str, column_b: str) -> Rule:
    import great_expectations.expectations as gxe

    def failing(frame: pd.DataFrame) -> pd.Series:
        a, b = frame[column_a], frame[column_b]
        judged = a.notna() | b.notna()  # GX's default: ignore a row only when both are missing
        return judged & ~(a == b).fillna(False).astype(bool)

    return Rule(
        rule_id,
        name,
        gxe.ExpectColumnPairValuesToBeEqual(column_A=column_a, column_B=column_b, **_meta(rule_id, name)),
        failing,
    )


def _row_count(rule_id: str, name: str, expected: int) -> Rule:
    import great_expectations.expectations as gxe

    return Rule(rule_id, name, gxe.ExpectTableRowCountToEqual(value=expected, **_meta(rule_id, name)), None)


_REQUIRED = (
    ("event_id", "id"),
    ("type", "type"),
    ("source", "source"),
    ("specversion", "specversion"),
    ("time_ms", "time"),
    ("subject", "subject"),
    ("key", "Kafka key"),
    ("resource_type", "resource type"),
    ("resource_id", "resource id"),
    ("patient_id", "the resource's patient"),
)


def build_rules(settings: SuiteSettings) -> list[Rule]:
    """The suite: every rule with its stable id, human name, GX expectation and row predicate."""
    return [
        *_required_rules(),
        *_envelope_rules(settings),
        *_consistency_rules(settings),
        *_code_rules(),
        *_observation_and_time_rules(settings),
        *_identifier_rules(),
    ]


def _required_rules() -> list[Rule]:
    """Required fields, by resource type where only some carry them."""
    return [
        *(
            _not_null(f"required.{column}", f"Required field present: {label}", column)
            for column, label in _REQUIRED
        ),
        _not_null(
            "required.status",
            "FHIR status present (every resource but Patient)",
            "status",
            where=("resource_type", fhir.STATUS_RESOURCES),
        ),
        _not_null("required.code", "Coded concept present", "code", where=("resource_type", CODED_RESOURCES)),
        _not_null(
            "required.value", "Observation has a value", "value", where=("resource_type", ("Observation",))
        ),
        _not_null(
            "required.unit", "Observation has a unit", "unit", where=("resource_type", ("Observation",))
        ),
    ]


def _envelope_rules(settings: SuiteSettings) -> list[Rule]:
    """The CloudEvents envelope: ids, version, source, test label, type and resource per topic, subject."""
    return [
        _unique("envelope.unique-id", "Event ids are unique", "event_id"),
        _in_set("envelope.specversion", "CloudEvents specversion is 1.0", "specversion", ["1.0"]),
        _regex(
            "envelope.synthetic-source",
            "Source is a synthetic-data URN (urn:cmm:synthetic:<system>)",
            "source",
            r"^urn:cmm:synthetic:[a-z0-9][a-z0-9-]*$",
        ),
        _in_set("envelope.test-data-label", "Resource carries the HTEST security label", "htest", [True]),
        _in_set(
            "envelope.type-matches-topic",
            "Event type belongs to its topic",
            "topic_type",
            [pair_key(*pair) for pair in settings.topic_types],
        ),
        _in_set(
            "envelope.resource-matches-topic",
            "FHIR resource type belongs to its topic",
            "topic_resource",
            [pair_key(*pair) for pair in settings.topic_resources],
        ),
        _regex(
            "envelope.subject-format",
            "Subject is Patient/<opaque FHIR id>",
            "subject",
            r"^Patient/[A-Za-z0-9.-]{1,64}$",
        ),
    ]


def _consistency_rules(settings: SuiteSettings) -> list[Rule]:
    """What must agree across the event: subject and payload, key and patient, schema id, counts, FHIR validity."""
    return [
        _pair_equal(
            "envelope.subject-matches-payload",
            "Envelope subject is the resource's patient",
            "subject_patient_id",
            "patient_id",
        ),
        _pair_equal(
            "kafka.key-matches-patient", "Kafka key is the payload's patient id", "key", "patient_id"
        ),
        _pair_equal(
            "schema.registered-latest",
            "Schema id on the wire is the registered latest version",
            "schema_id",
            "registered_schema_id",
        ),
        _row_count(
            "count.produced-equals-consumed", "Consumed events equal produced events", settings.expected_rows
        ),
        _null(
            "fhir.r4-valid",
            "Resource is valid FHIR R4 (structure, types, required elements, required bindings)",
            "fhir_issues",
        ),
    ]


def _code_rules() -> list[Rule]:
    """Clinical codes and ADT triggers: status per trigger, LOINC, SNOMED CT, ICD-10-CM, RxNorm."""
    return [
        # Patient events carry a trigger but no status: ignored, as are encounters without a trigger.
        _in_set(
            "adt.trigger-status",
            "Encounter status matches its HL7 v2 ADT trigger",
            "trigger_status",
            [pair_key(*pair) for pair in ADT_ENCOUNTER_STATUS.items()],
        ),
        _in_set(
            "code.loinc-check-digit", "LOINC codes well formed, check digit valid", "loinc_valid", [True]
        ),
        _in_set(
            "code.snomed-check-digit",
            "SNOMED CT ids well formed, Verhoeff check digit valid",
            "snomed_valid",
            [True],
        ),
        _regex(
            "code.icd10cm-format",
            "ICD-10-CM codes well formed",
            "icd10cm_codes",
            rf"^{_ICD10CM}(?:\|{_ICD10CM})*$",
        ),
        _regex("code.rxnorm-format", "RxNorm codes numeric", "rxnorm_codes", rf"^{_RXNORM}(?:\|{_RXNORM})*$"),
    ]


def _observation_and_time_rules(settings: SuiteSettings) -> list[Rule]:
    """Observations (units, physiologic ranges), event time, patient order and references."""
    return [
        # Only observations have a unit; a missing one is required.unit's finding.
        _in_set(
            "observation.ucum-unit",
            "UCUM unit matches the LOINC code",
            "code_unit",
            [pair_key(*pair) for pair in load_loinc_units().items()],
        ),
        _between(
            "observation.physiologic-range",
            "Observation value within the physiologic range of its LOINC code",
            "range_fraction",
            0,
            1,
        ),
        _between(
            "time.not-in-future",
            "Event time not in the future",
            "time_ms",
            None,
            settings.now_ms + settings.clock_skew_ms,
        ),
        _in_set(
            "time.patient-order",
            "A patient's events in time order within a topic",
            "in_patient_order",
            [True],
        ),
        _in_set("reference.known-patient", "Resource references a known patient", "patient_known", [True]),
    ]


def _identifier_rules() -> list[Rule]:
    """No direct identifier anywhere in a payload (the identifiers module's rules)."""
    return [
        *(
            _null(rule.id, rule.name, found_column(rule.id), scans=rule.scans())
            for rule in identifiers.identifier_rules()
        ),
    ]


# --- running the suite ---------------------------------------------------------------------------

SUITE_NAME = "healthcare-events"
DOCS_SITE = "integration"
BOOLEAN_ONLY = {"result_format": "BOOLEAN_ONLY"}  # verdicts only: GX's default echoes failing values
WITHHELD = "withheld: the exception text of an expectation can quote data values"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class RuleOutcome:
    id: str
    name: str
    success: bool
    events: int | None  # events breaking the rule; None for a rule about the whole table
    evaluated: bool = True  # False: GX raised while evaluating it (counted as a failure)
    fields: tuple[str, ...] = ()  # field paths where the failing events break it (rules that say)
    scans: tuple[str, ...] = ()


@dataclass
class QualityReport:
    outcomes: list[RuleOutcome]
    event_ids: list[Any]  # per row, for naming the dead-lettered events
    dead_letter: dict[int, tuple[str, ...]]  # row position -> ids of the row-level rules it breaks
    gx_result: dict[str, Any]  # GX's validation result as JSON: verdicts, no values (BOOLEAN_ONLY)
    docs_index: Path | None = None

    @property
    def success(self) -> bool:
        return all(outcome.success for outcome in self.outcomes)

    @property
    def failed(self) -> list[RuleOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.success]

    @property
    def dead_letter_ids(self) -> set[Any]:
        return {self.event_ids[row] for row in self.dead_letter}

    def results(self) -> list[Result]:
        """``quality.suite`` (failed expectations by name), then one result per rule."""
        failed = self.failed
        summary = Result(
            id="quality.suite",
            status=Status.FAIL if failed else Status.PASS,
            message=f"{len(self.outcomes) - len(failed)} of {len(self.outcomes)} expectations met"
            + (": failed " + "; ".join(outcome.name for outcome in failed) if failed else ""),
            observed={
                "failed": [outcome.id for outcome in failed],
                "events_to_dead_letter": len(self.dead_letter),
            },
            expected={"failed": []},
            details={"data_docs": str(self.docs_index) if self.docs_index else None},
        )
        results = [summary]
        for outcome in self.outcomes:
            if outcome.success:
                message = outcome.name
            elif not outcome.evaluated:
                message = f"{outcome.name}: could not be evaluated"
            elif outcome.events is None:
                message = f"{outcome.name}: failed"
            else:
                message = f"{outcome.name}: failed ({outcome.events} events)"
                if outcome.fields:
                    message += f" in {', '.join(outcome.fields)}"
            observed: dict[str, Any] | None = None
            if outcome.events is not None:
                observed = {"failing_events": outcome.events}
                if outcome.fields:
                    observed["fields"] = list(outcome.fields)
            results.append(
                Result(
                    id=f"quality[{outcome.id}]",
                    status=Status.PASS if outcome.success else Status.FAIL,
                    message=message,
                    observed=observed,
                    expected={"failing_events": 0} if outcome.events is not None else None,
                    details={"scans": list(outcome.scans)} if outcome.scans else {},
                )
            )
        return results


def load_validator() -> None:
    """Import Great Expectations (seconds of imports): the flow does it while its consumers join."""
    import great_expectations  # noqa: F401


def _gx_context(docs_dir: Path | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites[DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        data_docs_sites=sites,
        progress_bars=ProgressBarsConfig(globally=False),  # no progress bars in task logs
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def raised(exception_info: Mapping[str, Any] | None) -> bool:
    """Whether GX raised evaluating an expectation (its info is flat, or keyed by metric)."""
    info = exception_info or {}
    if info.get("raised_exception"):
        return True
    return any(isinstance(item, Mapping) and item.get("raised_exception") for item in info.values())


def scrub(result: ExpectationSuiteValidationResult) -> None:
    """Replace exception texts and tracebacks: BOOLEAN_ONLY does not cover them."""
    for item in result.results:
        if raised(item.exception_info):
            item.exception_info = {
                "raised_exception": True,
                "exception_message": WITHHELD,
                "exception_traceback": None,
            }


@contextmanager
def _quiet_gx_logs() -> Iterator[None]:
    # GX logs a metric's exception text, which can quote data values; the outcome says what failed.
    gx_logger = logging.getLogger("great_expectations")
    level = gx_logger.level
    gx_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        gx_logger.setLevel(level)


def run_suite(
    frame: pd.DataFrame, rules: Sequence[Rule], *, run_name: str, docs_dir: Path | None = None
) -> tuple[ExpectationSuiteValidationResult, Path | None]:
    """GX over the frame (ephemeral context, BOOLEAN_ONLY); Data Docs into ``docs_dir`` when given.

    Returns the validation result and the Data Docs index page.
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    context = _gx_context(docs_dir)
    batch = (
        context.data_sources.add_pandas("consumed-events")
        .add_dataframe_asset("events")
        .add_batch_definition_whole_dataframe("run")
    )
    suite = context.suites.add(
        gx.ExpectationSuite(name=SUITE_NAME, expectations=[rule.expectation for rule in rules])
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="integration", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name="integration", validation_definitions=[definition], result_format=BOOLEAN_ONLY)
    )
    with _quiet_gx_logs():
        outcome = checkpoint.run(
            batch_parameters={"dataframe": frame},
            run_id=RunIdentifier(run_name=_UNSAFE_NAME.sub("_", run_name)),
        )
    ((key, result),) = outcome.run_results.items()
    scrub(result)
    if docs_dir is None:
        return result, None
    # The docs render the stored result: store the scrubbed one in its place first.
    context.validation_results_store.set(key, result)
    context.build_data_docs(site_names=[DOCS_SITE])
    url = context.get_docs_sites_urls(site_name=DOCS_SITE)[0]["site_url"]
    return result, Path(unquote(urlparse(url).path))


def assess(
    rows: Iterable[Mapping[str, Any]],
    settings: SuiteSettings,
    *,
    known_patients: Collection[str] = (),
    run_name: str = "integration",
    docs_dir: Path | None = None,
) -> QualityReport:
    """Validate flattened events: GX's verdict per rule, and the rows to dead-letter with their rules."""
    frame = prepare(
        rows, now_ms=settings.now_ms, clock_skew_ms=settings.clock_skew_ms, known_patients=known_patients
    )
    rules = build_rules(settings)
    result, docs_index = run_suite(frame, rules, run_name=run_name, docs_dir=docs_dir)
    verdicts: dict[str, tuple[bool, bool]] = {}
    for item in result.results:
        config = item.expectation_config
        assert config is not None
        rule_id = config.meta["rule_id"]
        evaluated = not raised(item.exception_info)
        verdicts[rule_id] = (bool(item.success) and evaluated, evaluated)
    dead_letter: dict[int, list[str]] = {}
    outcomes = []
    for rule in rules:
        success, evaluated = verdicts.get(rule.id, (False, False))
        events = None
        fields: set[str] = set()
        if rule.failing is not None:
            rows_failing = frame.index[rule.failing(frame).to_numpy(dtype=bool)]
            events = len(rows_failing)
            for row in rows_failing:
                dead_letter.setdefault(int(row), []).append(rule.id)
            if rule.fields_column is not None:
                for joined in frame.loc[rows_failing, rule.fields_column].dropna():
                    fields.update(joined.split("|"))
        outcomes.append(
            RuleOutcome(rule.id, rule.name, success, events, evaluated, tuple(sorted(fields)), rule.scans)
        )
    return QualityReport(
        outcomes=outcomes,
        event_ids=frame["event_id"].tolist(),
        dead_letter={row: tuple(ids) for row, ids in dead_letter.items()},
        gx_result=result.to_json_dict(),
        docs_index=docs_index,
    )
