"""Write include/sample_events/bad_events.jsonl: synthetic events with planted defects, for the
integration stage's negative run (``sample_events`` pointing at it) and its tests.

Every line loads (each matches its Avro schema; the first has its time in epoch ms); the defects are for the data-quality rules to find:

* an observation dated in 2099                      -> time.not-in-future
* heart rate coded 8867-3 (the check digit is 4)    -> code.loinc-check-digit (and observation.ucum-unit)
* a patient whose family name holds an SSN           -> phi.ssn
* a report conclusion quoting an MRN                 -> phi.mrn
* an admission for a patient never registered       -> reference.known-patient
* a body temperature in [degF] (LOINC 8310-5: Cel)   -> observation.ucum-unit
* one Safe Harbor identifier of every other kind, each in another text field (``IDENTIFIERS``)
                                                     -> its phi.* rule
* an observation whose code holds nothing            -> fhir.r4-valid (data.code), required.code
* a discharge with an Encounter.status outside its value set
                                                     -> fhir.r4-valid (data.status), adt.trigger-status

Run from the project root: ``.venv/bin/python include/sample_events/make_bad_events.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from event_broker_rollout.config.catalog import load_catalog
from event_broker_rollout.integration.events import SampleEvent, dump_samples, epoch_ms, synthetic_samples

TARGET = Path(__file__).with_name("bad_events.jsonl")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FUTURE = datetime(2099, 1, 1, tzinfo=UTC)
SSN = "219-09-9999"
MRN = "MRN 4402119"
UNKNOWN_PATIENT = "5e1f0c3a-9d2b-4c7e-8f10-000000000bad"
UNKNOWN_ENCOUNTER_EVENT = "0b7d4c1e-2f3a-4b5c-9d6e-000000000bad"
BAD_ENCOUNTER_STATUS = "discharged-home"
# (rule, event name, field path below data, planted text): every text is made up.
IDENTIFIERS: tuple[tuple[str, str, tuple[str | int, ...], str], ...] = (
    (
        "phi.name-in-free-text",
        "diagnostic-report-finalized",
        ("conclusionCode", 0, "text"),
        "Reviewed with Maria Lopez",
    ),
    ("phi.geographic-subdivision", "observation-recorded", ("code", "text"), "Home: 12 Birch Lane"),
    ("phi.date", "observation-recorded", ("category", 0, "text"), "Collected 02/27/2026"),
    ("phi.phone-fax", "observation-recorded", ("subject", "display"), "Tel 617-555-0148"),
    ("phi.email", "observation-recorded", ("encounter", "display"), "contact j.roe@example.net"),
    (
        "phi.health-plan-number",
        "observation-recorded",
        ("meta", "security", 0, "display"),
        "Subscriber ID W9981234",
    ),
    ("phi.account-number", "encounter-event", ("class", "display"), "Account No. 77120034"),
    (
        "phi.certificate-licence-number",
        "observation-recorded",
        ("code", "coding", 0, "display"),
        "License no. RN-445512",
    ),
    (
        "phi.vehicle-identifier",
        "observation-recorded",
        ("category", 0, "coding", 0, "display"),
        "plate # 4KXY219",
    ),
    (
        "phi.device-identifier",
        "diagnostic-report-finalized",
        ("category", 0, "text"),
        "Implant serial number 88AF-22019",
    ),
    ("phi.url", "observation-recorded", ("code", "text"), "http://records.example.com/r/7"),
    ("phi.ip-address", "observation-recorded", ("subject", "display"), "10.20.30.40"),
    ("phi.biometric-photo", "diagnostic-report-finalized", ("code", "text"), "fingerprint scan on file"),
    ("phi.other-unique-number", "observation-recorded", ("category", 0, "text"), "Ref 55012337"),
)


def _first(events: list[SampleEvent], predicate: Callable[[SampleEvent], bool], skip: set[int]) -> int:
    for index, event in enumerate(events):
        if index not in skip and predicate(event):
            skip.add(index)
            return index
    raise LookupError("the generated events have no candidate")


def _named(event_name: str) -> Callable[[SampleEvent], bool]:
    return lambda event: event.event_name == event_name


def _plant(data: dict[str, Any], path: tuple[str | int, ...], text: str) -> None:
    node: Any = data
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = text


def _code(event: SampleEvent) -> str | None:
    concept = event.value["data"].get("code")
    return concept["coding"][0]["code"] if concept else None


def build() -> list[SampleEvent]:
    events = [copy.deepcopy(e) for e in synthetic_samples(60, seed=5, now=NOW, catalog=load_catalog()).events]
    used: set[int] = set()
    events[0].value["time"] = epoch_ms(events[0].value["time"])  # the file format takes epoch ms too

    future = _first(events, lambda e: e.event_name == "observation-recorded", used)
    events[future].value["time"] = FUTURE

    loinc = _first(events, lambda e: _code(e) == "8867-4", used)
    events[loinc].value["data"]["code"]["coding"][0]["code"] = "8867-3"

    patient = _first(events, lambda e: e.event_name == "patient-upserted", used)
    name = events[patient].value["data"]["name"][0]
    name["family"] = f"{name['family']} {SSN}"

    report = _first(events, lambda e: e.event_name == "diagnostic-report-finalized", used)
    events[report].value["data"]["conclusion"] += f" ({MRN})"

    unit = _first(events, lambda e: _code(e) == "8310-5", used)
    quantity = events[unit].value["data"]["valueQuantity"]
    quantity["unit"] = quantity["code"] = "[degF]"

    for _, event_name, path, text in IDENTIFIERS:
        planted = _first(events, _named(event_name), used)
        _plant(events[planted].value["data"], path, text)

    codeless = _first(events, lambda e: e.event_name == "observation-recorded", used)
    events[codeless].value["data"]["code"] = {"coding": [], "text": None}

    discharge = _first(events, lambda e: e.value.get("hl7trigger") == "A03", used)
    events[discharge].value["data"]["status"] = BAD_ENCOUNTER_STATUS

    admitted = events[_first(events, lambda e: e.value.get("hl7trigger") == "A01", used)]
    stranger = copy.deepcopy(admitted.value)
    stranger["id"] = UNKNOWN_ENCOUNTER_EVENT
    stranger["subject"] = f"Patient/{UNKNOWN_PATIENT}"
    stranger["data"]["subject"]["reference"] = f"Patient/{UNKNOWN_PATIENT}"
    events.append(SampleEvent(admitted.event_name, admitted.topic, UNKNOWN_PATIENT, stranger))
    return events


if __name__ == "__main__":
    dump_samples(
        build(),
        TARGET,
        header=[
            "Synthetic events with planted defects (written by make_bad_events.py; see its docstring).",
            "Format: one event per line, {topic|event_name, key, value}; value.time ISO-8601 or epoch ms.",
        ],
    )
    print(f"wrote {TARGET}")
