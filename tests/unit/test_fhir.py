"""FHIR R4 validation of the events' resources: synthetic ones are valid; an invalid one is named by
field path (structure, formats, required bindings), never by value; the LOINC/UCUM table."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest

from event_broker_rollout.config.catalog import load_catalog
from event_broker_rollout.integration import fhir, quality
from event_broker_rollout.integration.events import synthetic_samples
from event_broker_rollout.integration.synthetic import OBSERVATION_CODES, loinc_is_valid

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def resources():
    events = synthetic_samples(400, seed=11, now=NOW, catalog=load_catalog()).events
    return {e.event_name: copy.deepcopy(e.value["data"]) for e in reversed(events)}


def test_synthetic_resources_are_valid_fhir(resources):
    assert len(resources) == 6
    assert {name: fhir.validate(data) for name, data in resources.items()} == dict.fromkeys(resources, ())


@pytest.mark.parametrize(
    ("event_name", "change", "paths"),
    [
        ("observation-recorded", lambda d: d.update(code={"coding": [], "text": None}), ("data.code",)),
        ("observation-recorded", lambda d: d.pop("code"), ("data.code",)),
        ("encounter-event", lambda d: d.update(status="discharged-home"), ("data.status",)),
        ("medication-request-created", lambda d: d.update(intent="wish"), ("data.intent",)),
        ("consent-changed", lambda d: d["provision"].update(type="maybe"), ("data.provision.type",)),
        ("patient-upserted", lambda d: d.update(gender="x-unlisted"), ("data.gender",)),
        ("patient-upserted", lambda d: d.update(birthDate="1990-13-45"), ("data.birthDate",)),
        ("diagnostic-report-finalized", lambda d: d.update(issued="yesterday"), ("data.issued",)),
        (
            "observation-recorded",
            lambda d: d["valueQuantity"].update(value="high"),
            ("data.valueQuantity.value",),
        ),
        ("observation-recorded", lambda d: d.update(resourceType="Nonesuch"), ("data.resourceType",)),
    ],
)
def test_an_invalid_resource_is_named_by_field_path(resources, event_name, change, paths):
    data = copy.deepcopy(resources[event_name])
    change(data)
    assert fhir.validate(data) == paths


def test_an_unknown_key_is_not_quoted_as_a_path(resources):
    data = copy.deepcopy(resources["observation-recorded"])
    data["jane.doe@example.org"] = "x"
    data["code"]["078-05-1120"] = "y"
    found = fhir.validate(data)
    assert found and not any("@" in path or "078" in path for path in found)
    assert set(found) <= {"data", "data.code"}


def test_flatten_carries_the_paths_not_the_values(resources):
    event = {"id": "e", "data": dict(copy.deepcopy(resources["encounter-event"]), status="discharged-home")}
    row = quality.flatten(event, "k", 1, 0, 0, topic="t")
    assert row["fhir_issues"] == "data.status"
    assert "discharged-home" not in json.dumps({k: v for k, v in row.items() if k != "status"}, default=str)


def test_the_loinc_ucum_table_covers_the_generator_with_valid_codes():
    units = quality.load_loinc_units()
    assert all(loinc_is_valid(code) for code in units)
    assert {code: spec.unit for code, spec in OBSERVATION_CODES.items()}.items() <= units.items()
    assert units["8310-5"] == "Cel" and units["8867-4"] == "/min" and units["8480-6"] == "mm[Hg]"
