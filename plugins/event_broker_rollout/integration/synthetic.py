"""Deterministic synthetic healthcare events, and the code-format rules they (and real data) must meet.

``generate`` tells small, plausible patient stories (registration, consent, admissions with vitals,
labs, reports and orders, transfers, discharges, the odd cancelled admission) with a seeded
``random.Random``: the same seed and ``now`` give the same events. Everything is clearly test data:
names are ``Synthetic-*``, ids are random UUIDs (no MRN, SSN, phone or address), every resource carries
the HTEST security label and every envelope a ``urn:cmm:synthetic:*`` source.

The tables (LOINC -> UCUM unit and physiologic range, conditions in SNOMED CT / ICD-10-CM with RxNorm
orders, ADT trigger -> Encounter.status) and the code checks are module-level data so data-quality
rules can use them too.
"""

from __future__ import annotations

import gc
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from event_broker_rollout.config.catalog import Catalog, load_catalog

LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
SNOMED_SYSTEM = "http://snomed.info/sct"
ICD10CM_SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM_SYSTEM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ACT_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
DIAGNOSTIC_SECTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
CONSENT_SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
DISCHARGE_DISPOSITION_SYSTEM = "http://terminology.hl7.org/CodeSystem/discharge-disposition"

SOURCE_PREFIX = "urn:cmm:synthetic:"
TYPE_PREFIX = "org.cmm.healthcare."

# --- code formats --------------------------------------------------------------------------------

_LOINC = re.compile(r"^(\d{1,7})-(\d)$")
_SNOMED = re.compile(r"^[1-9]\d{5,17}$")
_ICD10CM = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")

# Verhoeff's dihedral-group tables (SNOMED CT ids end in a Verhoeff check digit).
_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def loinc_is_valid(code: str) -> bool:
    """``NNNNN-C`` with LOINC's mod-10 check digit (Luhn over the number part)."""
    match = _LOINC.match(code)
    if not match:
        return False
    total = 0
    for position, char in enumerate(reversed(match.group(1))):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            digit = digit // 10 + digit % 10
        total += digit
    return (10 - total % 10) % 10 == int(match.group(2))


def snomed_is_valid(code: str) -> bool:
    """A SNOMED CT identifier: 6 to 18 digits, no leading zero, Verhoeff check digit."""
    if not _SNOMED.match(code):
        return False
    check = 0
    for position, char in enumerate(reversed(code)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][int(char)]]
    return check == 0


def icd10cm_format_ok(code: str) -> bool:
    """The ICD-10-CM code shape (letter, digit, alphanumeric, optional dot and up to 4 more)."""
    return bool(_ICD10CM.match(code))


# --- terminology tables --------------------------------------------------------------------------


@dataclass(frozen=True)
class ObservationCode:
    display: str
    unit: str  # UCUM
    category: Literal["vital-signs", "laboratory"]
    physiologic: tuple[float, float]  # outside: not a human measurement (a data error, not a finding)
    typical: tuple[float, float]  # what the generator draws from
    decimals: int


OBSERVATION_CODES: Mapping[str, ObservationCode] = {
    "8867-4": ObservationCode("Heart rate", "/min", "vital-signs", (20, 250), (55, 110), 0),
    "8480-6": ObservationCode("Systolic blood pressure", "mm[Hg]", "vital-signs", (50, 260), (95, 160), 0),
    "8462-4": ObservationCode("Diastolic blood pressure", "mm[Hg]", "vital-signs", (30, 150), (55, 100), 0),
    "8310-5": ObservationCode("Body temperature", "Cel", "vital-signs", (32, 43), (36.0, 38.6), 1),
    "9279-1": ObservationCode("Respiratory rate", "/min", "vital-signs", (4, 60), (12, 22), 0),
    "59408-5": ObservationCode(
        "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "vital-signs", (50, 100), (91, 100), 0
    ),
    "29463-7": ObservationCode("Body weight", "kg", "vital-signs", (0.5, 350), (45, 120), 1),
    "8302-2": ObservationCode("Body height", "cm", "vital-signs", (40, 250), (150, 195), 0),
    "2339-0": ObservationCode(
        "Glucose [Mass/volume] in Blood", "mg/dL", "laboratory", (20, 1000), (70, 190), 0
    ),
    "2951-2": ObservationCode(
        "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", "laboratory", (100, 180), (133, 147), 0
    ),
    "2823-3": ObservationCode(
        "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", "laboratory", (1.5, 9), (3.3, 5.3), 1
    ),
    "2160-0": ObservationCode(
        "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "laboratory", (0.1, 20), (0.6, 1.6), 2
    ),
    "718-7": ObservationCode(
        "Hemoglobin [Mass/volume] in Blood", "g/dL", "laboratory", (3, 25), (9.5, 17.0), 1
    ),
    "6690-2": ObservationCode(
        "Leukocytes [#/volume] in Blood by Automated count",
        "10*3/uL",
        "laboratory",
        (0.1, 200),
        (3.5, 14.0),
        1,
    ),
    "777-3": ObservationCode(
        "Platelets [#/volume] in Blood by Automated count", "10*3/uL", "laboratory", (5, 2000), (140, 420), 0
    ),
}
LOINC_UCUM_UNITS: Mapping[str, str] = {code: spec.unit for code, spec in OBSERVATION_CODES.items()}
PHYSIOLOGIC_RANGES: Mapping[str, tuple[float, float]] = {
    code: spec.physiologic for code, spec in OBSERVATION_CODES.items()
}

VITAL_SIGNS = ("8867-4", "8480-6", "8462-4", "8310-5", "9279-1", "59408-5")


@dataclass(frozen=True)
class Panel:
    display: str
    section: tuple[str, str]  # v2-0074 diagnostic service section (code, display)
    members: tuple[str, ...]


LAB_PANELS: Mapping[str, Panel] = {
    "58410-2": Panel(
        "CBC panel - Blood by Automated count", ("HM", "Hematology"), ("718-7", "6690-2", "777-3")
    ),
    "51990-0": Panel(
        "Basic metabolic panel - Blood", ("CH", "Chemistry"), ("2339-0", "2951-2", "2823-3", "2160-0")
    ),
}


@dataclass(frozen=True)
class Condition:
    snomed: str
    snomed_display: str
    icd10cm: str
    icd10cm_display: str
    medications: tuple[tuple[str, str], ...]  # RxNorm (code, display)


CONDITIONS: tuple[Condition, ...] = (
    Condition(
        "59621000",
        "Essential hypertension",
        "I10",
        "Essential (primary) hypertension",
        (("314076", "lisinopril 10 MG Oral Tablet"), ("197361", "amlodipine 5 MG Oral Tablet")),
    ),
    Condition(
        "44054006",
        "Diabetes mellitus type 2",
        "E11.9",
        "Type 2 diabetes mellitus without complications",
        (("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet"),),
    ),
    Condition(
        "233604007",
        "Pneumonia",
        "J18.9",
        "Pneumonia, unspecified organism",
        (("562251", "amoxicillin 250 MG / clavulanate 125 MG Oral Tablet"),),
    ),
    Condition(
        "444814009",
        "Viral sinusitis",
        "J01.90",
        "Acute sinusitis, unspecified",
        (("313782", "acetaminophen 325 MG Oral Tablet"),),
    ),
    Condition("271737000", "Anemia", "D64.9", "Anemia, unspecified", ()),
)

# HL7 v2-to-FHIR: ADT trigger -> Encounter.status (A08 updates demographics and carries no status).
ADT_ENCOUNTER_STATUS: Mapping[str, str] = {
    "A01": "in-progress",
    "A02": "in-progress",
    "A03": "finished",
    "A04": "planned",
    "A05": "planned",
    "A11": "cancelled",
    "A13": "in-progress",
}
_ENCOUNTER_TYPES = {
    "A01": "encounter.admitted",
    "A02": "encounter.transferred",
    "A03": "encounter.discharged",
    "A04": "encounter.registered",
    "A11": "encounter.cancelled",
}

HTEST = {"system": ACT_REASON_SYSTEM, "code": "HTEST", "display": "test health data"}

_GIVEN = ("Ada", "Bram", "Cleo", "Dax", "Edda", "Finn", "Gale", "Hugo", "Ines", "Jory", "Kaia", "Lior")
_FAMILY = ("Alder", "Birch", "Cedar", "Elm", "Hazel", "Juniper", "Larch", "Maple", "Rowan", "Willow")
_WARDS = (
    "Location/synthetic-ward-a",
    "Location/synthetic-ward-b",
    "Location/synthetic-icu",
    "Location/synthetic-step-down",
)
_GENDERS = ("female", "male", "other", "unknown")
_GENDER_WEIGHTS = (48, 48, 2, 2)

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WINDOW_MS = 30 * DAY_MS  # stories start within the 30 days before ``now``
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_V4 = (0x4000 << 64) | (0x8000 << 48)


@dataclass(frozen=True, slots=True)
class SyntheticEvent:
    event_name: str  # the catalog's event name
    topic: str
    key: str  # the opaque patient id
    value: dict[str, Any]  # matches the event type's Avro value schema

    @property
    def time(self) -> datetime:
        moment = self.value["time"]
        assert isinstance(moment, datetime)
        return moment


def fhir_json(value: Any) -> Any:
    """The FHIR JSON shape of a ``data`` record: Avro's nulls and empty arrays left out."""
    if isinstance(value, dict):
        return {key: fhir_json(item) for key, item in value.items() if item is not None and item != []}
    if isinstance(value, list):
        return [fhir_json(item) for item in value]
    return value


class _StoryEnds(Exception):
    """The patient's next step would happen after ``now``."""


class _Enough(Exception):
    """``count`` events are made."""


def _coding(system: str, code: str, display: str | None) -> dict[str, Any]:
    return {"system": system, "code": code, "display": display}


def _concept(system: str, code: str, display: str | None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)], "text": None}


def _ref(reference: str) -> dict[str, Any]:
    return {"reference": reference, "display": None}


class _Patient:
    __slots__ = ("consent_id", "id", "ref", "t")

    def __init__(self, patient_id: str, consent_id: str, t: int) -> None:
        self.id = patient_id
        self.ref = f"Patient/{patient_id}"
        self.consent_id = consent_id
        self.t = t


class _Generator:
    def __init__(self, count: int, seed: int, now: datetime, catalog: Catalog) -> None:
        self.count = count
        self.rng = random.Random(seed)
        self.now_ms = (now - _EPOCH) // timedelta(milliseconds=1)
        self.topics = {
            name: catalog.event(name).topic
            for name in (
                "patient-upserted",
                "encounter-event",
                "observation-recorded",
                "diagnostic-report-finalized",
                "medication-request-created",
                "consent-changed",
            )
        }
        self.made: list[tuple[int, int, SyntheticEvent]] = []

    # -- helpers --

    def uuid(self) -> str:
        # A version-4 UUID from the seeded generator, formatted by hand: uuid.UUID() is the slowest step.
        bits = self.rng.getrandbits(128) & _UUID_CLEAR | _UUID_V4
        h = f"{bits:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def advance(self, patient: _Patient, low_ms: int, high_ms: int) -> int:
        """Move the patient's clock forward (strictly) and return the new time."""
        patient.t += self.rng.randint(max(low_ms, 1000), max(high_ms, 1000))
        if patient.t > self.now_ms:
            raise _StoryEnds
        return patient.t

    @staticmethod
    def iso(t_ms: int) -> str:
        return (_EPOCH + timedelta(milliseconds=t_ms)).isoformat(timespec="milliseconds")

    def meta(self, t_ms: int, component: str) -> dict[str, Any]:
        return {"lastUpdated": self.iso(t_ms), "source": SOURCE_PREFIX + component, "security": [dict(HTEST)]}

    def emit(
        self,
        event_name: str,
        patient: _Patient,
        component: str,
        event_type: str,
        data: dict[str, Any],
        hl7trigger: str | None = None,
        adt: bool = False,
    ) -> None:
        topic = self.topics[event_name]
        value: dict[str, Any] = {
            "id": self.uuid(),
            "source": SOURCE_PREFIX + component,
            "type": TYPE_PREFIX + event_type,
            "specversion": "1.0",
            "time": _EPOCH + timedelta(milliseconds=patient.t),
            "subject": patient.ref,
            "dataschema": f"urn:cmm:schema:{topic}-value",
            "datacontenttype": "application/avro",
        }
        if adt:
            value["hl7trigger"] = hl7trigger
        value["data"] = data
        self.made.append((patient.t, len(self.made), SyntheticEvent(event_name, topic, patient.id, value)))
        if len(self.made) >= self.count:
            raise _Enough

    # -- resources --

    def patient_upserted(
        self, patient: _Patient, trigger: str, name: tuple[str, str], gender: str, birth: str
    ) -> None:
        data = {
            "resourceType": "Patient",
            "id": patient.id,
            "meta": self.meta(patient.t, "adt-feed"),
            "active": True,
            "name": [{"use": "official", "family": f"Synthetic-{name[1]}", "given": [name[0]]}],
            "gender": gender,
            "birthDate": birth,
        }
        self.emit("patient-upserted", patient, "adt-feed", "patient.upserted", data, trigger, adt=True)

    def encounter(
        self,
        patient: _Patient,
        trigger: str,
        encounter_id: str,
        encounter_class: tuple[str, str],
        start: int,
        locations: list[tuple[str, str]],
        end: int | None = None,
    ) -> None:
        data = {
            "resourceType": "Encounter",
            "id": encounter_id,
            "meta": self.meta(patient.t, "adt-feed"),
            "status": ADT_ENCOUNTER_STATUS[trigger],
            "class": _coding(ACT_CODE_SYSTEM, *encounter_class),
            "type": [],
            "subject": _ref(patient.ref),
            "period": {"start": self.iso(start), "end": self.iso(end) if end is not None else None},
            "location": [{"location": _ref(where), "status": status} for where, status in locations],
            "hospitalization": (
                {"dischargeDisposition": _concept(DISCHARGE_DISPOSITION_SYSTEM, "home", "Home")}
                if trigger == "A03"
                else None
            ),
        }
        self.emit("encounter-event", patient, "adt-feed", _ENCOUNTER_TYPES[trigger], data, trigger, adt=True)

    def observation(
        self, patient: _Patient, encounter_id: str, code: str, effective: int, component: str
    ) -> str:
        spec = OBSERVATION_CODES[code]
        low, high = spec.typical
        observation_id = self.uuid()
        data = {
            "resourceType": "Observation",
            "id": observation_id,
            "meta": self.meta(patient.t, component),
            "status": "final",
            "category": [
                _concept(
                    OBSERVATION_CATEGORY_SYSTEM,
                    spec.category,
                    "Vital Signs" if spec.category == "vital-signs" else "Laboratory",
                )
            ],
            "code": _concept(LOINC_SYSTEM, code, spec.display),
            "subject": _ref(patient.ref),
            "encounter": _ref(f"Encounter/{encounter_id}"),
            "effectiveDateTime": self.iso(effective),
            "issued": self.iso(patient.t),
            "valueQuantity": {
                "value": round(self.rng.uniform(low, high), spec.decimals),
                "unit": spec.unit,
                "system": UCUM_SYSTEM,
                "code": spec.unit,
            },
        }
        self.emit("observation-recorded", patient, component, "observation.recorded", data)
        return observation_id

    def diagnostic_report(
        self,
        patient: _Patient,
        encounter_id: str,
        panel_code: str,
        collected: int,
        results: list[str],
        condition: Condition,
    ) -> None:
        panel = LAB_PANELS[panel_code]
        data = {
            "resourceType": "DiagnosticReport",
            "id": self.uuid(),
            "meta": self.meta(patient.t, "lab-system"),
            "status": "final",
            "category": [_concept(DIAGNOSTIC_SECTION_SYSTEM, *panel.section)],
            "code": _concept(LOINC_SYSTEM, panel_code, panel.display),
            "subject": _ref(patient.ref),
            "encounter": _ref(f"Encounter/{encounter_id}"),
            "effectiveDateTime": self.iso(collected),
            "issued": self.iso(patient.t),
            "result": [_ref(f"Observation/{item}") for item in results],
            "conclusion": f"Synthetic report: findings consistent with {condition.snomed_display.lower()}",
            "conclusionCode": [
                {
                    "coding": [
                        _coding(SNOMED_SYSTEM, condition.snomed, condition.snomed_display),
                        _coding(ICD10CM_SYSTEM, condition.icd10cm, condition.icd10cm_display),
                    ],
                    "text": condition.snomed_display,
                }
            ],
        }
        self.emit("diagnostic-report-finalized", patient, "lab-system", "diagnosticreport.finalized", data)

    def medication_request(
        self, patient: _Patient, encounter_id: str, medication: tuple[str, str], condition: Condition
    ) -> None:
        data = {
            "resourceType": "MedicationRequest",
            "id": self.uuid(),
            "meta": self.meta(patient.t, "order-entry"),
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": _concept(RXNORM_SYSTEM, *medication),
            "subject": _ref(patient.ref),
            "encounter": _ref(f"Encounter/{encounter_id}"),
            "authoredOn": self.iso(patient.t),
            "reasonCode": [_concept(ICD10CM_SYSTEM, condition.icd10cm, condition.icd10cm_display)],
            "dosageInstruction": [{"text": "1 tablet by mouth once daily"}],
        }
        self.emit("medication-request-created", patient, "order-entry", "medicationrequest.created", data)

    def consent(self, patient: _Patient, opt_in: bool, revoked: bool = False) -> None:
        rule = ("OPTIN", "opt-in") if opt_in else ("OPTOUT", "opt-out")
        data = {
            "resourceType": "Consent",
            "id": patient.consent_id,  # one Consent per patient: the compacted topic keeps its latest state
            "meta": self.meta(patient.t, "consent-portal"),
            "status": "inactive" if revoked else "active",
            "scope": _concept(CONSENT_SCOPE_SYSTEM, "patient-privacy", "Privacy Consent"),
            "category": [_concept(LOINC_SYSTEM, "59284-0", "Patient Consent")],
            "patient": _ref(patient.ref),
            "dateTime": self.iso(patient.t),
            "policyRule": _concept(ACT_CODE_SYSTEM, *rule),
            "provision": {
                "type": "permit" if opt_in else "deny",
                "period": {"start": self.iso(patient.t), "end": None},
            },
        }
        self.emit("consent-changed", patient, "consent-portal", "consent.changed", data)

    # -- stories --

    def vitals(self, patient: _Patient, encounter_id: str) -> None:
        self.advance(patient, 10 * MINUTE_MS, 4 * HOUR_MS)
        taken = patient.t
        for code in VITAL_SIGNS:
            self.advance(patient, 1000, 20_000)
            self.observation(patient, encounter_id, code, taken, "vitals-monitor")

    def labs(self, patient: _Patient, encounter_id: str, condition: Condition) -> None:
        for panel_code, panel in LAB_PANELS.items():
            collected = self.advance(patient, 15 * MINUTE_MS, 3 * HOUR_MS)
            self.advance(patient, 30 * MINUTE_MS, 2 * HOUR_MS)
            results = []
            for code in panel.members:
                self.advance(
                    patient, 1000, 30_000
                )  # results release one by one: every event has its own time
                results.append(self.observation(patient, encounter_id, code, collected, "lab-system"))
            self.advance(patient, 1000, 10 * MINUTE_MS)
            self.diagnostic_report(patient, encounter_id, panel_code, collected, results, condition)

    def inpatient_stay(self, patient: _Patient) -> None:
        rng = self.rng
        encounter_id = self.uuid()
        ward = rng.choice(_WARDS)
        admitted = self.advance(patient, HOUR_MS, 5 * DAY_MS)
        self.encounter(
            patient, "A01", encounter_id, ("IMP", "inpatient encounter"), admitted, [(ward, "active")]
        )
        if rng.random() < 0.08:
            self.advance(patient, 5 * MINUTE_MS, 2 * HOUR_MS)
            self.encounter(
                patient, "A11", encounter_id, ("IMP", "inpatient encounter"), admitted, [(ward, "completed")]
            )
            return
        condition = rng.choice(CONDITIONS)
        self.advance(patient, 1000, 5 * MINUTE_MS)
        self.observation(patient, encounter_id, "29463-7", patient.t, "vitals-monitor")
        self.vitals(patient, encounter_id)
        self.labs(patient, encounter_id, condition)
        for medication in condition.medications:
            self.advance(patient, 10 * MINUTE_MS, 2 * HOUR_MS)
            self.medication_request(patient, encounter_id, medication, condition)
        locations = [(ward, "active")]
        if rng.random() < 0.5:
            moved = rng.choice([w for w in _WARDS if w != ward])
            self.advance(patient, 2 * HOUR_MS, 2 * DAY_MS)
            locations = [(ward, "completed"), (moved, "active")]
            self.encounter(patient, "A02", encounter_id, ("IMP", "inpatient encounter"), admitted, locations)
        for _ in range(rng.randint(1, 3)):
            self.vitals(patient, encounter_id)
        discharged = self.advance(patient, 4 * HOUR_MS, 3 * DAY_MS)
        final = [(where, "completed") for where, _ in locations]
        self.encounter(
            patient, "A03", encounter_id, ("IMP", "inpatient encounter"), admitted, final, end=discharged
        )

    def story(self, patient: _Patient) -> None:
        rng = self.rng
        name = (rng.choice(_GIVEN), rng.choice(_FAMILY))
        gender = rng.choices(_GENDERS, _GENDER_WEIGHTS)[0]
        birth = f"{rng.randint(1935, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        self.patient_upserted(patient, "A04", name, gender, birth)
        if rng.random() < 0.6:
            self.advance(patient, MINUTE_MS, 20 * MINUTE_MS)
            self.consent(patient, opt_in=True)
        for _ in range(rng.randint(1, 2)):
            if rng.random() < 0.7:
                self.inpatient_stay(patient)
            else:
                visit = self.advance(patient, HOUR_MS, 7 * DAY_MS)
                self.encounter(patient, "A04", self.uuid(), ("AMB", "ambulatory"), visit, [])
            if rng.random() < 0.2:
                self.advance(patient, HOUR_MS, 5 * DAY_MS)
                self.patient_upserted(patient, "A08", name, gender, birth)
        if rng.random() < 0.1:
            self.advance(patient, HOUR_MS, 10 * DAY_MS)
            self.consent(patient, opt_in=False, revoked=rng.random() < 0.5)

    def run(self) -> list[SyntheticEvent]:
        try:
            while True:
                start = self.now_ms - self.rng.randrange(WINDOW_MS)
                patient = _Patient(self.uuid(), self.uuid(), start)
                try:
                    self.story(patient)
                except _StoryEnds:
                    continue
        except _Enough:
            pass
        self.made.sort(key=lambda item: (item[0], item[1]))
        return [event for _, _, event in self.made]


def generate(count: int, seed: int, now: datetime, catalog: Catalog | None = None) -> list[SyntheticEvent]:
    """``count`` synthetic events in time order, none after ``now`` (timezone-aware), deterministic by seed.

    Each patient's events are strictly increasing in time; topics come from the catalog's event names.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if count <= 0:
        return []
    generator = _Generator(count, seed, now, catalog or load_catalog())
    # The events are acyclic dicts: the cyclic collector would only rescan them, over and over (twice
    # the run time at 100,000 events, far more when earlier batches are still alive).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return generator.run()
    finally:
        if collecting:
            gc.enable()
