"""Safe Harbor identifier rules: each finds its kind and nothing in realistic clinical text; the fields
they scan come from the schemas; a finding names field paths, never the text."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from event_broker_rollout.config.catalog import load_catalog
from event_broker_rollout.integration import fhir, identifiers, quality
from event_broker_rollout.integration.events import synthetic_samples

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

# Per rule: texts it must find, and near misses it must not (realistic text that looks alike).
CASES = {
    "phi.name-in-free-text": (
        [
            "Seen by Dr. Okafor today",
            "Give to John Smith at bedside",
            "Mrs Whitfield called back",
            "her husband Bartholomew Quince",
        ],
        ["Addison disease", "Graves disease", "Bell palsy", "Glasgow Coma Scale", "Patient Consent Form"],
    ),
    "phi.geographic-subdivision": (
        ["lives at 42 Oak Street", "350 5th Avenue", "PO Box 1234", "Springfield, MA 01101", "Boston, MA"],
        [
            "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
            "1 unit 3 times daily",
            "Take 2 Dr visits",
            "Breast, CA",
            "Insulin, SC",
        ],
    ),
    "phi.date": (
        [
            "admitted 03/14/2026",
            "seen 2026-03-14",
            "14.03.2026",
            "on March 14th",
            "a 93-year-old woman",
            "DOB",
        ],
        ["BP 120/80 mmHg", "take 2 tablets, refill in 2026", "10*3/uL", "aged 45 years"],
    ),
    "phi.phone-fax": (
        ["call (617) 555-0199", "617-555-0199", "fax: 617 555 0100", "+44 20 7946 0958", "call 555-1234"],
        ["Platelets 250 10*3/uL", "sodium 140 mmol/L at 10:30:45"],
    ),
    "phi.email": (["reply to jane.doe@example.org"], ["opt-in @ registration", "a@b"]),
    "phi.ssn": (["078-05-1120", "SSN on file"], ["ratio 1:2:4", "Type 2 diabetes mellitus"]),
    "phi.mrn": (
        ["MRN 4402119", "medical record number 88", "chart no. 88123"],
        ["per medical record review"],
    ),
    "phi.health-plan-number": (
        ["Member ID: XKZ4471029", "policy number 88-1234-77", "Medicare 1EG4TE5MK73"],
        ["Group A streptococcus", "Type 1 plan of care"],
    ),
    "phi.account-number": (
        ["Acct # 0012345", "card 4111 1111 1111 1111", "IBAN DE89 3704 0044 0532 0130 00"],
        ["billing reviewed", "account for fluid balance"],
    ),
    "phi.certificate-licence-number": (
        ["Driver's license no. D1234567", "licence 12345678", "DEA AB1234563"],
        ["certificate of need", "licensed practical nurse 2"],
    ),
    "phi.vehicle-identifier": (
        ["VIN 1HGCM82633A004352", "1HGCM82633A004352", "license plate 7ABC123"],
        ["growth plate fracture at 2 sites", "VINCRISTINE 1 MG/ML"],
    ),
    "phi.device-identifier": (
        ["pacemaker serial number PX-99812", "S/N 77812AB", "UDI (01)00844588003288"],
        ["serial troponin measurements", "device check normal"],
    ),
    "phi.url": (
        ["see https://portal.example.com/p/1", "www.example.com"],
        ["Hemoglobin A1c/Hemoglobin.total in Blood", "Leukocytes [#/volume] in Blood by Automated count"],
    ),
    "phi.ip-address": (
        ["from 192.168.10.4", "fe80::1ff:fe23:4567:890a", "IP address logged"],
        ["version 2.1.3", "sodium 140 mmol/L at 10:30:45"],
    ),
    "phi.biometric-photo": (
        ["fingerprint on file", "retinal scan done", "wound photo attached", "img_2031.jpg"],
        ["phototherapy for jaundice", "retinal hemorrhage"],
    ),
    "phi.other-unique-number": (
        ["ref 99120453"],
        ["penicillin G benzathine 1200000 UNT/ML Injectable Suspension", "1 tablet by mouth once daily"],
    ),
}


def _frame(texts, kind="free_text"):
    field = "data.code.text" if kind == "free_text" else "data.subject.display"
    rows = [
        {
            "name_text": text if kind == "name" else None,
            "free_text": text if kind == "free_text" else None,
            "text_fields": ((field, kind, text),),
        }
        for text in texts
    ]
    return pd.DataFrame(rows, columns=["name_text", "free_text", "text_fields"])


def test_there_is_a_rule_for_every_safe_harbor_kind_that_text_can_hold():
    rules = identifiers.identifier_rules()
    assert [rule.id for rule in rules] == list(CASES)
    items = {item.strip() for rule in rules for item in rule.safe_harbor.split(",")}
    assert items == {f"({letter})" for letter in "ABCDEFGHIJKLMNOPQR"}


@pytest.mark.parametrize("rule_id", list(CASES))
def test_a_rule_finds_its_kind_and_not_the_near_misses(rule_id):
    positives, negatives = CASES[rule_id]
    found = identifiers.scan(_frame(positives + negatives), identifiers.identifier_rules())
    assert found[rule_id].iloc[: len(positives)].tolist() == ["data.code.text"] * len(positives)
    for other, column in found.items():  # no near miss trips any rule
        assert column.iloc[len(positives) :].isna().all(), other


def test_the_name_rule_scans_free_text_only_and_the_others_names_too():
    rules = {rule.id: rule for rule in identifiers.identifier_rules()}
    names = _frame(["John Smith", "Jane Roe 078-05-1120"], kind="name")
    found = identifiers.scan(names, list(rules.values()))
    assert found["phi.name-in-free-text"].isna().all()
    assert found["phi.ssn"].tolist() == [None, "data.subject.display"]
    name_fields = rules["phi.name-in-free-text"].scans()
    assert "data.conclusion" in name_fields and "data.name.family" not in name_fields
    assert {"data.name.family", "data.name.given", "data.conclusion"} <= set(rules["phi.ssn"].scans())


def test_the_catch_all_number_yields_to_a_labelled_kind():
    found = identifiers.scan(_frame(["Acct 12345678", "ref 12345678"]), identifiers.identifier_rules())
    assert found["phi.account-number"].notna().tolist() == [True, False]
    assert found["phi.other-unique-number"].notna().tolist() == [False, True]


def test_a_match_never_spans_two_fields():
    pairs = (("data.code.text", "free_text", "Given by John"), ("data.category.text", "free_text", "Smith"))
    frame = pd.DataFrame(
        [
            {
                "name_text": None,
                "free_text": identifiers.FIELD_SEPARATOR.join(t for *_, t in pairs),
                "text_fields": pairs,
            }
        ]
    )
    assert identifiers.scan(frame, identifiers.identifier_rules())["phi.name-in-free-text"].isna().all()


def test_the_scanned_fields_come_from_the_schemas():
    fields = {resource: {f.name: f.kind for f in found} for resource, found in fhir.text_fields().items()}
    assert set(fields) == {e.fhir_resource for e in load_catalog().events}
    assert fields["MedicationRequest"]["data.dosageInstruction.text"] == "free_text"
    assert fields["DiagnosticReport"]["data.conclusion"] == "free_text"
    assert fields["DiagnosticReport"]["data.conclusionCode.coding.display"] == "free_text"
    assert fields["Patient"] == {
        "data.meta.security.display": "free_text",
        "data.name.family": "name",
        "data.name.given": "name",
    }
    # A reference's display names a person only where the reference may point at one.
    assert fields["Encounter"]["data.subject.display"] == "name"
    assert fields["Encounter"]["data.location.location.display"] == "free_text"
    assert fields["DiagnosticReport"]["data.result.display"] == "free_text"
    every = {name for found in fields.values() for name in found}
    # Codes, ids, URIs, dates and literal references are not text.
    assert not every & {"data.status", "data.id", "data.meta.source", "data.subject.reference", "data.issued"}


def test_synthetic_text_trips_no_identifier_rule():
    catalog = load_catalog()
    rows = [
        quality.flatten(s.value, s.key, 1, 0, 0, topic=s.topic)
        for seed in (1, 2)
        for s in synthetic_samples(1500, seed=seed, now=NOW, catalog=catalog).events
    ]
    frame = pd.DataFrame(rows, columns=list(quality.COLUMNS))
    for rule_id, column in identifiers.scan(frame, identifiers.identifier_rules()).items():
        assert column.isna().all(), rule_id
    assert frame["fhir_issues"].isna().all()
