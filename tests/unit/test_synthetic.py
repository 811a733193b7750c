"""The synthetic event generator: deterministic, ordered per patient, never in the future, valid codes."""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from event_broker_rollout.config.catalog import load_catalog
from event_broker_rollout.integration.synthetic import (
    ADT_ENCOUNTER_STATUS,
    CONDITIONS,
    ICD10CM_SYSTEM,
    LAB_PANELS,
    LOINC_SYSTEM,
    LOINC_UCUM_UNITS,
    OBSERVATION_CODES,
    PHYSIOLOGIC_RANGES,
    RXNORM_SYSTEM,
    SNOMED_SYSTEM,
    UCUM_SYSTEM,
    generate,
    icd10cm_format_ok,
    loinc_is_valid,
    snomed_is_valid,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
FHIR_TIME_FIELDS = ("lastUpdated", "effectiveDateTime", "issued", "authoredOn", "dateTime", "start", "end")


@pytest.fixture(scope="module")
def events():
    return generate(5000, seed=42, now=NOW)


def _walk(value, key=None):
    """Every (key, leaf) pair in a nested value."""
    if isinstance(value, dict):
        for k, item in value.items():
            yield from _walk(item, k)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, key)
    else:
        yield key, value


def _codings(value, system):
    if isinstance(value, dict):
        if value.get("system") == system and "code" in value:
            yield value["code"]
        for item in value.values():
            yield from _codings(item, system)
    elif isinstance(value, list):
        for item in value:
            yield from _codings(item, system)


def test_code_format_helpers():
    assert loinc_is_valid("8867-4") and loinc_is_valid("718-7") and loinc_is_valid("2339-0")
    assert not loinc_is_valid("8867-5") and not loinc_is_valid("8867") and not loinc_is_valid("88674-")
    # SNOMED CT: the root concept, "Clinical finding", "Disease" (known ids) pass; a changed digit fails.
    assert snomed_is_valid("138875005") and snomed_is_valid("404684003") and snomed_is_valid("64572001")
    assert (
        not snomed_is_valid("404684004")
        and not snomed_is_valid("12345")
        and not snomed_is_valid("0404684003")
    )
    assert icd10cm_format_ok("I10") and icd10cm_format_ok("E11.9") and icd10cm_format_ok("J45.909")
    assert (
        not icd10cm_format_ok("e11.9") and not icd10cm_format_ok("I1") and not icd10cm_format_ok("E11.12345")
    )


def test_terminology_tables_hold_valid_codes():
    for code, spec in OBSERVATION_CODES.items():
        assert loinc_is_valid(code), code
        low, high = spec.typical
        assert spec.physiologic[0] <= low < high <= spec.physiologic[1], code
    assert all(loinc_is_valid(code) for code in LAB_PANELS)
    assert {m for panel in LAB_PANELS.values() for m in panel.members} <= set(OBSERVATION_CODES)
    for condition in CONDITIONS:
        assert snomed_is_valid(condition.snomed) and icd10cm_format_ok(condition.icd10cm)
        assert all(code.isdigit() for code, _ in condition.medications)
    # The units the brief names, as UCUM.
    assert LOINC_UCUM_UNITS["8867-4"] == "/min" and LOINC_UCUM_UNITS["8480-6"] == "mm[Hg]"
    assert LOINC_UCUM_UNITS["8462-4"] == "mm[Hg]" and LOINC_UCUM_UNITS["8310-5"] == "Cel"
    assert LOINC_UCUM_UNITS["29463-7"] == "kg" and LOINC_UCUM_UNITS["2339-0"] == "mg/dL"
    assert LOINC_UCUM_UNITS["718-7"] == "g/dL"
    assert ADT_ENCOUNTER_STATUS["A01"] == ADT_ENCOUNTER_STATUS["A02"] == "in-progress"
    assert ADT_ENCOUNTER_STATUS["A03"] == "finished" and ADT_ENCOUNTER_STATUS["A11"] == "cancelled"
    assert ADT_ENCOUNTER_STATUS["A04"] == "planned"


def test_same_seed_same_events_other_seed_other_events(events):
    again = generate(5000, seed=42, now=NOW)
    assert [(e.topic, e.key, e.value) for e in again] == [(e.topic, e.key, e.value) for e in events]
    other = generate(5000, seed=43, now=NOW)
    assert [e.value["id"] for e in other] != [e.value["id"] for e in events]


def test_count_topics_and_time_order(events):
    assert len(events) == 5000
    catalog = load_catalog()
    topics = {event.name: event.topic for event in catalog.events}
    assert {e.event_name for e in events} == set(topics)
    assert all(e.topic == topics[e.event_name] for e in events)
    times = [e.time for e in events]
    assert times == sorted(times)


def test_every_patient_in_order_and_nothing_in_the_future(events):
    per_patient = defaultdict(list)
    for event in events:
        per_patient[event.key].append(event.time)
        assert event.time <= NOW
        for key, leaf in _walk(event.value["data"]):
            if key in FHIR_TIME_FIELDS and leaf is not None:
                assert datetime.fromisoformat(leaf) <= event.time, (key, leaf)
    assert len(per_patient) > 50
    for times in per_patient.values():
        assert all(a < b for a, b in itertools.pairwise(times))
    # Stories start within 30 days before now.
    assert min(e.time for e in events) >= NOW - timedelta(days=30)


def test_envelope_is_cloudevents_shaped_and_synthetic(events):
    for event in events:
        value = event.value
        assert value["specversion"] == "1.0"
        assert value["source"].startswith("urn:cmm:synthetic:")
        assert value["type"].startswith("org.cmm.healthcare.")
        assert uuid.UUID(value["id"]).version == 4
        assert value["subject"] == f"Patient/{event.key}"
        assert uuid.UUID(event.key)  # opaque: a random UUID, no MRN
        assert value["time"].tzinfo is not None and value["time"].microsecond % 1000 == 0
        data = value["data"]
        assert data["meta"]["security"] == [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "code": "HTEST",
                "display": "test health data",
            }
        ]
        assert data["meta"]["source"].startswith("urn:cmm:synthetic:")
    assert len({e.value["id"] for e in events}) == len(events)


def test_patients_carry_no_identifiers(events):
    patients = [e.value["data"] for e in events if e.event_name == "patient-upserted"]
    assert patients
    for patient in patients:
        assert {"identifier", "telecom", "address"}.isdisjoint(patient)
        assert patient["name"][0]["family"].startswith("Synthetic-")
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", patient["birthDate"])
    text = " ".join(str(e.value) for e in events[:500])
    assert not re.search(r"\b\d{3}-\d{2}-\d{4}\b", text)  # nothing SSN-shaped


def test_adt_sequences_and_encounter_status(events):
    by_encounter = defaultdict(list)
    for event in events:
        if event.event_name == "encounter-event":
            trigger = event.value["hl7trigger"]
            data = event.value["data"]
            assert data["status"] == ADT_ENCOUNTER_STATUS[trigger]
            by_encounter[data["id"]].append(trigger)
        elif event.event_name == "patient-upserted":
            assert event.value["hl7trigger"] in ("A04", "A08")
    assert by_encounter
    seen = set()
    for triggers in by_encounter.values():
        seen.update(triggers)
        if triggers[0] == "A04":
            assert triggers == ["A04"]
            continue
        assert triggers[0] == "A01"
        assert triggers.count("A01") == 1
        middle = triggers[1:-1] if triggers[-1] in ("A03", "A11") else triggers[1:]
        assert set(middle) <= {"A02"}
        if "A11" in triggers:
            assert triggers == ["A01", "A11"]
    assert seen == {"A01", "A02", "A03", "A04", "A11"}


def test_observations_have_valid_loinc_matching_units_and_physiologic_values(events):
    observations = [e.value["data"] for e in events if e.event_name == "observation-recorded"]
    categories = set()
    for observation in observations:
        (code,) = list(_codings(observation["code"], LOINC_SYSTEM))
        assert loinc_is_valid(code)
        quantity = observation["valueQuantity"]
        assert quantity["system"] == UCUM_SYSTEM
        assert quantity["code"] == quantity["unit"] == LOINC_UCUM_UNITS[code]
        low, high = PHYSIOLOGIC_RANGES[code]
        assert low <= quantity["value"] <= high
        categories.add(observation["category"][0]["coding"][0]["code"])
    assert categories == {"vital-signs", "laboratory"}


def test_reports_and_orders_are_coded_and_linked(events):
    emitted_observations = set()
    reports = orders = 0
    for event in events:
        data = event.value["data"]
        if event.event_name == "observation-recorded":
            emitted_observations.add(data["id"])
        elif event.event_name == "diagnostic-report-finalized":
            reports += 1
            assert data["status"] == "final"
            assert all(snomed_is_valid(code) for code in _codings(data["conclusionCode"], SNOMED_SYSTEM))
            assert all(icd10cm_format_ok(code) for code in _codings(data["conclusionCode"], ICD10CM_SYSTEM))
            assert next(_codings(data["code"], LOINC_SYSTEM)) in LAB_PANELS
            for reference in data["result"]:
                assert reference["reference"].removeprefix("Observation/") in emitted_observations
        elif event.event_name == "medication-request-created":
            orders += 1
            assert data["intent"] == "order" and data["status"] == "active"
            assert all(code.isdigit() for code in _codings(data["medicationCodeableConcept"], RXNORM_SYSTEM))
            assert all(icd10cm_format_ok(code) for code in _codings(data["reasonCode"], ICD10CM_SYSTEM))
    assert reports and orders


def test_consent_keeps_one_resource_per_patient(events):
    consent_ids = defaultdict(set)
    for event in events:
        if event.event_name == "consent-changed":
            consent_ids[event.key].add(event.value["data"]["id"])
            assert event.value["data"]["patient"]["reference"] == event.value["subject"]
    assert consent_ids and all(len(ids) == 1 for ids in consent_ids.values())


def test_needs_an_aware_now():
    with pytest.raises(ValueError, match="timezone-aware"):
        generate(10, seed=1, now=datetime(2026, 1, 1))
    assert generate(0, seed=1, now=NOW) == []


def test_hundred_thousand_events_in_a_few_seconds():
    started = time.perf_counter()
    events = generate(100_000, seed=7, now=NOW)
    elapsed = time.perf_counter() - started
    assert len(events) == 100_000
    assert elapsed < 10, f"100,000 events took {elapsed:.1f} s"
