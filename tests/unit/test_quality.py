"""The Great Expectations suite over flattened events: generated events meet every rule; each planted
defect fails its named expectation and selects exactly its event for the dead-letter topic; nothing GX
or this stage writes (results, Data Docs) carries a failing value."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from event_broker_rollout.config.catalog import load_catalog
from event_broker_rollout.integration import quality
from event_broker_rollout.integration.events import SampleEvent, epoch_ms, synthetic_samples

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SCHEMA_ID = 7
UNKNOWN_PATIENT = "d3adbeef-0000-4000-8000-00000000f00d"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def generated(catalog):
    return synthetic_samples(600, seed=3, now=NOW, catalog=catalog).events


def _rows(samples, schema_ids=None):
    schema_ids = schema_ids or {}
    return [
        quality.flatten(
            s.value,
            s.key,
            schema_ids.get(s.event_id, SCHEMA_ID),
            epoch_ms(NOW),
            epoch_ms(NOW) + 5,
            topic=s.topic,
            registered_schema_id=SCHEMA_ID,
        )
        for s in samples
    ]


def _assess(catalog, samples, tmp_path=None, expected_rows=None, schema_ids=None):
    settings = quality.SuiteSettings.for_catalog(
        catalog, now_ms=epoch_ms(NOW), expected_rows=len(samples) if expected_rows is None else expected_rows
    )
    return quality.assess(_rows(samples, schema_ids), settings, run_name="unit", docs_dir=tmp_path)


def _copy(samples):
    return [SampleEvent(s.event_name, s.topic, s.key, copy.deepcopy(s.value)) for s in samples]


def _first(samples, predicate):
    return next(s for s in samples if predicate(s))


def _nth(samples, event_name, n):
    return [s for s in samples if s.event_name == event_name][n]


def _code(sample):
    concept = sample.value["data"].get("code")
    return concept["coding"][0]["code"] if concept else None


# Each defect: (what it plants -> the planted value), the rules that must fail.
def future_time(samples):
    event = _first(samples, lambda s: s.event_name == "observation-recorded")
    event.value["time"] = NOW + timedelta(days=3)
    return event, str(epoch_ms(NOW + timedelta(days=3)))


def invalid_loinc(samples):
    event = _first(samples, lambda s: _code(s) == "8867-4")
    event.value["data"]["code"]["coding"][0]["code"] = "8867-3"
    return event, "8867-3"


def ssn_in_name(samples):
    event = _first(samples, lambda s: s.event_name == "patient-upserted")
    event.value["data"]["name"][0]["family"] = "Synthetic-Elm 078-05-1120"
    return event, "078-05-1120"


def mrn_in_free_text(samples):
    event = _first(samples, lambda s: s.event_name == "diagnostic-report-finalized")
    event.value["data"]["conclusion"] = "Synthetic report for MRN: 99120453"
    return event, "99120453"


def unknown_patient(samples):
    event = _first(samples, lambda s: s.value.get("hl7trigger") == "A01")
    event.value["subject"] = f"Patient/{UNKNOWN_PATIENT}"
    event.value["data"]["subject"]["reference"] = f"Patient/{UNKNOWN_PATIENT}"
    moved = SampleEvent(event.event_name, event.topic, UNKNOWN_PATIENT, event.value)
    samples[samples.index(event)] = moved
    return moved, UNKNOWN_PATIENT


def wrong_unit(samples):
    event = _first(samples, lambda s: _code(s) == "8310-5")
    quantity = event.value["data"]["valueQuantity"]
    quantity["unit"] = quantity["code"] = "{beats}/s"
    return event, "{beats}/s"


def implausible_value(samples):
    event = _first(samples, lambda s: _code(s) == "8867-4")
    event.value["data"]["valueQuantity"]["value"] = 611.37
    return event, "611.37"


def bogus_status(samples):
    event = _first(samples, lambda s: s.event_name == "medication-request-created")
    event.value["data"]["status"] = "bogus-status"
    return event, "bogus-status"


def observation_without_code(samples):
    event = _nth(samples, "observation-recorded", 3)
    event.value["data"]["code"] = {"coding": [], "text": None}  # valid Avro, no FHIR code
    return event, "observation-without-code"


def encounter_status_outside_value_set(samples):
    event = _first(samples, lambda s: s.value.get("hl7trigger") == "A03")
    event.value["data"]["status"] = "discharged-home"
    return event, "discharged-home"


def key_not_patient(samples):
    event = _first(samples, lambda s: s.event_name == "observation-recorded")
    moved = SampleEvent(event.event_name, event.topic, "another-patient-key", event.value)
    samples[samples.index(event)] = moved
    return moved, "another-patient-key"


def out_of_order(samples):
    observations = [s for s in samples if s.event_name == "observation-recorded"]
    stream = [s for s in observations if s.key == observations[-1].key]  # a patient no other defect touches
    stream[-1].value["time"] = stream[-2].value["time"] - timedelta(hours=1)
    return stream[-1], str(epoch_ms(stream[-1].value["time"]))


# One Safe Harbor identifier of each kind, each in its own event and in a field the kinds above do not
# use: (rule, event name, the field's setter, planted text).
def _set(*path):
    def setter(data, text):
        node = data
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = text

    return setter


IDENTIFIER_PLANTS = [
    (
        "phi.name-in-free-text",
        "medication-request-created",
        _set("dosageInstruction", 0, "text"),
        "Give to John Smith at bedside",
    ),
    ("phi.geographic-subdivision", "observation-recorded", _set("code", "text"), "home 42 Oak Street"),
    ("phi.date", "diagnostic-report-finalized", _set("conclusionCode", 0, "text"), "seen 03/14/2026"),
    ("phi.phone-fax", "consent-changed", _set("scope", "text"), "call (617) 555-0199"),
    ("phi.email", "observation-recorded", _set("category", 0, "text"), "reply jane.doe@example.org"),
    ("phi.ssn", "patient-upserted", _set("name", 0, "given", 0), "Ines 078-05-1120"),
    ("phi.mrn", "encounter-event", _set("class", "display"), "inpatient MRN 4402119"),
    (
        "phi.health-plan-number",
        "medication-request-created",
        _set("reasonCode", 0, "text"),
        "Member ID: XKZ4471029",
    ),
    ("phi.account-number", "observation-recorded", _set("meta", "security", 0, "display"), "Acct # 0012345"),
    (
        "phi.certificate-licence-number",
        "diagnostic-report-finalized",
        _set("category", 0, "text"),
        "licence 12345678",
    ),
    ("phi.vehicle-identifier", "consent-changed", _set("policyRule", "text"), "VIN 1HGCM82633A004352"),
    ("phi.device-identifier", "encounter-event", _set("subject", "display"), "pacemaker S/N PX-99812"),
    (
        "phi.url",
        "medication-request-created",
        _set("medicationCodeableConcept", "text"),
        "see https://portal.example.com/p/1",
    ),
    ("phi.ip-address", "observation-recorded", _set("encounter", "display"), "from 192.168.10.4"),
    ("phi.biometric-photo", "diagnostic-report-finalized", _set("result", 0, "display"), "wound photo.jpg"),
    ("phi.other-unique-number", "consent-changed", _set("category", 0, "text"), "ref 99120453"),
]


def _identifier_plant(rule_id, event_name, setter, text, n):
    def plant(samples):
        # From the end, past the last one (out_of_order's): the other defects pick the first events.
        event = _nth(samples, event_name, -2 - n)
        setter(event.value["data"], text)
        return event, text

    plant.__name__ = rule_id.removeprefix("phi.")
    return plant, {rule_id}


DEFECTS = [
    (future_time, {"time.not-in-future"}),
    (invalid_loinc, {"code.loinc-check-digit", "observation.ucum-unit"}),
    (ssn_in_name, {"phi.ssn"}),
    (mrn_in_free_text, {"phi.mrn"}),
    (unknown_patient, {"reference.known-patient"}),
    (wrong_unit, {"observation.ucum-unit"}),
    (implausible_value, {"observation.physiologic-range"}),
    (bogus_status, {"fhir.r4-valid"}),
    (observation_without_code, {"fhir.r4-valid", "required.code"}),
    (encounter_status_outside_value_set, {"fhir.r4-valid", "adt.trigger-status"}),
    (key_not_patient, {"kafka.key-matches-patient"}),
    (out_of_order, {"time.patient-order"}),
    *(
        _identifier_plant(*plant, [other[1] for other in IDENTIFIER_PLANTS[:n]].count(plant[1]))
        for n, plant in enumerate(IDENTIFIER_PLANTS)
    ),
]


def test_generated_events_meet_every_rule(catalog, generated):
    report = _assess(catalog, generated)
    assert [o for o in report.outcomes if not o.success] == []
    assert report.success and report.dead_letter == {}
    assert all(o.evaluated for o in report.outcomes)
    assert len({o.id.split(".")[0] for o in report.outcomes}) >= 10  # rule families
    assert len(report.outcomes) >= 12
    assert len({o.id for o in report.outcomes}) == len(report.outcomes)  # stable, unique ids
    suite = report.results()[0]
    assert suite.id == "quality.suite" and suite.status == "pass"


@pytest.mark.parametrize(("plant", "rules"), DEFECTS, ids=[plant.__name__ for plant, _ in DEFECTS])
def test_each_defect_fails_its_named_expectation_and_selects_its_event(catalog, generated, plant, rules):
    samples = _copy(generated)
    event, bad_value = plant(samples)
    report = _assess(catalog, samples)
    assert {o.id for o in report.failed} == rules
    assert report.dead_letter_ids == {event.event_id}
    (row,) = report.dead_letter
    assert set(report.dead_letter[row]) == rules
    suite = report.results()[0]
    assert suite.status == "fail"
    for outcome in report.failed:
        assert outcome.name in suite.message and outcome.events == 1
    assert bad_value not in json.dumps([r.to_dict() for r in report.results()])
    assert bad_value not in json.dumps(report.gx_result, default=str)


def test_failing_run_results_and_data_docs_hold_no_failing_value(catalog, generated, tmp_path):
    samples = _copy(generated)
    planted = {plant.__name__: plant(samples) for plant, _ in DEFECTS}
    docs = tmp_path / "docs"
    report = _assess(catalog, samples, tmp_path=docs)

    assert {o.id for o in report.failed} == set().union(*(rules for _, rules in DEFECTS))
    assert report.dead_letter_ids == {event.event_id for event, _ in planted.values()}
    # BOOLEAN_ONLY: a verdict per expectation, no unexpected values or counts.
    assert all(item["result"] == {} for item in report.gx_result["results"])
    gx_json = json.dumps(report.gx_result, default=str)
    assert "partial_unexpected_list" not in gx_json
    assert report.docs_index is not None and report.docs_index.is_file()
    pages = list(docs.rglob("*.html"))
    assert any("validations" in str(page) for page in pages)
    html = "".join(page.read_text() for page in pages)
    assert "No social security number" in html  # the rules are there, by name
    reported = json.dumps([r.to_dict() for r in report.results()])
    for name, (_, bad_value) in planted.items():
        for output in (gx_json, html, reported):
            assert bad_value not in output, name


def test_gx_and_the_row_checks_agree_on_every_rule(catalog, generated):
    samples = _copy(generated)
    for plant, _ in DEFECTS:
        plant(samples)
    report = _assess(catalog, samples)
    for outcome in report.outcomes:
        if outcome.events is not None:
            assert outcome.success == (outcome.events == 0), outcome.id


def test_a_duplicate_dead_letters_only_the_later_copy(catalog, generated):
    samples = _copy(generated)
    copy_of = samples[10]
    samples.insert(
        11, SampleEvent(copy_of.event_name, copy_of.topic, copy_of.key, copy.deepcopy(copy_of.value))
    )
    report = _assess(catalog, samples)
    assert {o.id for o in report.failed} == {"envelope.unique-id"}
    assert list(report.dead_letter) == [11]


def test_consumed_count_and_schema_id_are_checked(catalog, generated):
    samples = _copy(generated)
    report = _assess(catalog, samples, expected_rows=len(samples) + 1, schema_ids={samples[5].event_id: 99})
    failed = {o.id: o for o in report.failed}
    assert set(failed) == {"count.produced-equals-consumed", "schema.registered-latest"}
    assert failed["count.produced-equals-consumed"].events is None  # about the table: no event to dead-letter
    assert report.dead_letter_ids == {samples[5].event_id}


def test_missing_required_fields_are_named(catalog, generated):
    samples = _copy(generated)
    observation = _first(samples, lambda s: s.event_name == "observation-recorded")
    observation.value["data"]["valueQuantity"] = None
    report = _assess(catalog, samples)
    assert {o.id for o in report.failed} == {"required.value", "required.unit"}
    assert report.dead_letter_ids == {observation.event_id}


def test_future_events_do_not_make_their_successors_out_of_order(catalog, generated):
    frame = quality.prepare(
        [
            {"topic": "t", "key": "p", "time_ms": 1_000},
            {"topic": "t", "key": "p", "time_ms": 9_000_000},  # in the future: judged by its own rule
            {"topic": "t", "key": "p", "time_ms": 2_000},
            {"topic": "t", "key": "p", "time_ms": 1_500},
            {"topic": "u", "key": "p", "time_ms": 500},  # another topic: its own order
        ],
        now_ms=10_000,
        clock_skew_ms=0,
    )
    assert frame["in_patient_order"].tolist() == [True, pd.NA, True, False, True]


def test_flatten_gathers_codes_names_and_free_text(generated):
    report = _first(generated, lambda s: s.event_name == "diagnostic-report-finalized")
    row = quality.flatten(report.value, report.key, 3, 10, 25, topic=report.topic, partition=2, offset=40)
    assert row["resource_type"] == "DiagnosticReport" and row["patient_id"] == report.key
    assert row["subject_patient_id"] == report.key and row["code_system"] == "http://loinc.org"
    assert row["snomed_codes"] and row["icd10cm_codes"] and row["loinc_codes"].startswith(row["code"])
    assert "Synthetic report" in row["free_text"] and row["htest"] is True
    assert (row["partition"], row["offset"], row["schema_id"], row["consumed_at_ms"]) == (2, 40, 3, 25)
    assert row["time_ms"] == epoch_ms(report.value["time"])
    patient = _first(generated, lambda s: s.event_name == "patient-upserted")
    assert quality.flatten(patient.value, patient.key, 3, 0, 0, topic=patient.topic)["name_text"].startswith(
        "Synthetic-"
    )
    assert set(row) == set(quality.COLUMNS)


def test_an_expectation_gx_cannot_evaluate_fails_without_its_exception_text(catalog, generated):
    import great_expectations.expectations as gxe

    frame = quality.prepare(_rows(generated[:50]), now_ms=epoch_ms(NOW), clock_skew_ms=0)
    broken = quality.Rule(
        "broken", "Broken", gxe.ExpectColumnValuesToBeInSet(column="no_such_column", value_set=[1]), None
    )
    result, _ = quality.run_suite(frame, [broken], run_name="unit")
    (item,) = result.results
    assert not item.success
    assert item.exception_info == {
        "raised_exception": True,
        "exception_message": quality.WITHHELD,
        "exception_traceback": None,
    }


def test_fhir_and_identifier_findings_name_their_field_paths(catalog, generated):
    samples = _copy(generated)
    observation_without_code(samples)
    encounter_status_outside_value_set(samples)
    name_plant, _ = _identifier_plant(*IDENTIFIER_PLANTS[0], 0)
    name_plant(samples)
    report = _assess(catalog, samples)
    results = {r.id: r for r in report.results()}
    fhir_result = results["quality[fhir.r4-valid]"]
    assert fhir_result.observed == {"failing_events": 2, "fields": ["data.code", "data.status"]}
    assert "data.code" in fhir_result.message and "data.status" in fhir_result.message
    name_result = results["quality[phi.name-in-free-text]"]
    assert name_result.observed == {"failing_events": 1, "fields": ["data.dosageInstruction.text"]}
    assert "data.dosageInstruction.text" in name_result.details["scans"]
    assert "data.name.family" not in name_result.details["scans"]  # names belong there
    assert "data.name.family" in results["quality[phi.ssn]"].details["scans"]
