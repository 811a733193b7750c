"""The catalog (validation with YAML paths, desired topic configs) and its Avro schemas (parse, round
trip, FHIR R4 shape of the payloads)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import pytest
import yaml
from fastavro.validation import validate
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient

from event_broker_rollout import paths
from event_broker_rollout.config.base import CatalogConfigError
from event_broker_rollout.config.catalog import (
    MS_PER_DAY,
    check_catalog,
    desired_topics,
    load_avro_schema,
    load_catalog,
    load_checked_catalog,
    load_policies,
    validate_catalog,
)
from event_broker_rollout.integration.synthetic import fhir_json, generate
from event_broker_rollout.schemas import KEY_SCHEMA, load_subject_schemas

FHIR_MODELS = {
    "Patient": Patient,
    "Encounter": Encounter,
    "Observation": Observation,
    "DiagnosticReport": DiagnosticReport,
    "MedicationRequest": MedicationRequest,
    "Consent": Consent,
}
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def policies():
    return load_policies()


@pytest.fixture(scope="module")
def samples(catalog):
    events = generate(3000, seed=11, now=NOW, catalog=catalog)
    by_name: dict[str, list] = {}
    for event in events:
        by_name.setdefault(event.event_name, []).append(event)
    return by_name


def _named_types(schema, found):
    """Every named type defined in full inside ``schema``: fullname -> definition."""
    if isinstance(schema, list):
        for member in schema:
            _named_types(member, found)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            found.setdefault(f"{schema['namespace']}.{schema['name']}", []).append(schema)
            for item in schema.get("fields", []):
                _named_types(item["type"], found)
        elif schema.get("type") == "array":
            _named_types(schema["items"], found)
        elif schema.get("type") == "map":
            _named_types(schema["values"], found)


# --- the catalog ---------------------------------------------------------------------------------


def test_catalog_is_valid_against_the_policies(catalog, policies):
    assert validate_catalog(catalog, policies) == []
    loaded, _ = load_checked_catalog()
    assert loaded == catalog


def test_catalog_declares_the_healthcare_event_types(catalog):
    names = {event.name for event in catalog.events}
    assert names == {
        "patient-upserted",
        "encounter-event",
        "observation-recorded",
        "diagnostic-report-finalized",
        "medication-request-created",
        "consent-changed",
    }
    encounter = catalog.event("encounter-event")
    assert {"A01", "A02", "A03", "A11"} <= set(encounter.hl7_triggers)
    assert set(catalog.event("patient-upserted").hl7_triggers) == {"A04", "A08"}
    for event in catalog.events:
        assert catalog.compatibility(event) in ("FULL_TRANSITIVE", "BACKWARD_TRANSITIVE")
        assert event.key == "patient_id"
    # The preflight stage reads topics(): dead-letter topics included, same classification.
    topics = dict(catalog.topics())
    assert topics["healthcare.consent.changed.v1.dlq"] == "phi"
    assert topics["ops.rollout.audit.v1"] == "audit"


def test_desired_topic_configs_per_class(catalog, policies):
    specs = {spec.topic: spec for spec in desired_topics(catalog, policies)}
    assert len(specs) == 16  # 6 event topics, 6 dead-letter topics, 4 operational topics
    for spec in specs.values():
        assert spec.replication_factor == 3
        assert spec.configs["min.insync.replicas"] == "2"
        assert spec.configs["unclean.leader.election.enable"] == "false"
    patient = specs["healthcare.patient.upserted.v1"]
    assert patient.configs == {
        "cleanup.policy": "delete",
        "retention.ms": str(14 * MS_PER_DAY),
        "min.insync.replicas": "2",
        "unclean.leader.election.enable": "false",
    }
    assert patient.partitions == 6
    assert specs["healthcare.observation.recorded.v1"].partitions == 12
    consent = specs["healthcare.consent.changed.v1"]
    assert consent.configs["cleanup.policy"] == "compact" and consent.configs["retention.ms"] == "-1"
    # A dead-letter topic is deleted by age even when its source topic is compacted.
    consent_dlq = specs["healthcare.consent.changed.v1.dlq"]
    assert consent_dlq.classification == "phi"
    assert consent_dlq.configs["cleanup.policy"] == "delete"
    assert consent_dlq.configs["retention.ms"] == str(14 * MS_PER_DAY)
    assert specs["ops.rollout.audit.v1"].configs["retention.ms"] == str(2192 * MS_PER_DAY)
    assert specs["ops.rollout.audit.v1"].partitions == 1
    assert specs["ops.compliance.results.v1"].configs["retention.ms"] == str(2192 * MS_PER_DAY)
    assert specs["ops.data-quality.results.v1"].configs["retention.ms"] == str(90 * MS_PER_DAY)


def test_replication_overrides_for_a_small_cluster(catalog, policies):
    specs = desired_topics(catalog, policies, replication_factor=1, min_insync_replicas=1)
    assert {(s.replication_factor, s.configs["min.insync.replicas"]) for s in specs} == {(1, "1")}
    assert validate_catalog(catalog, policies) == []  # the catalog itself is untouched


def _problems(catalog, policies):
    return {problem.path: problem.message for problem in validate_catalog(catalog, policies)}


def test_validation_names_the_yaml_path_of_each_problem(catalog, policies):
    events = list(catalog.events)
    events[0] = events[0].model_copy(update={"retention_days": 90})  # PHI above the 35-day maximum
    events[1] = events[1].model_copy(update={"compatibility": "BACKWARD"})
    events[2] = events[2].model_copy(update={"min_insync_replicas": 3})  # = the replication factor
    events[3] = events[3].model_copy(update={"schema_file": "include/schemas/missing.avsc"})
    events[4] = events[4].model_copy(update={"cleanup_policy": "delete", "retention_days": None})
    events[5] = events[5].model_copy(update={"hl7_triggers": ["ADT^A01"]})
    ops = list(catalog.operational_topics)
    ops[2] = ops[2].model_copy(update={"retention_days": 365})  # audit below 6 years
    ops[1] = ops[1].model_copy(update={"classification": "secret-ish"})
    ops[0] = ops[0].model_copy(update={"topic": "healthcare.patient.upserted.v1", "replication_factor": 2})
    broken = catalog.model_copy(update={"events": events, "operational_topics": ops})
    problems = _problems(broken, policies)
    assert "above the class maximum of 35" in problems["events[0].retention_days"]
    assert "healthcare.patient.upserted.v1 (phi)" in problems["events[0].retention_days"]
    assert "*_TRANSITIVE" in problems["events[1].compatibility"]
    assert "must be below the replication factor 3" in problems["events[2].min_insync_replicas"]
    assert "cannot read include/schemas/missing.avsc" in problems["events[3].schema"]
    assert "kept forever" in problems["events[4].retention_days"]
    assert "not an HL7 v2 ADT trigger" in problems["events[5].hl7_triggers[0]"]
    assert "below the class minimum of 2192" in problems["operational_topics[2].retention_days"]
    assert "unknown class 'secret-ish'" in problems["operational_topics[1].classification"]
    assert "duplicate topic" in problems["operational_topics[0].topic"]
    assert "below the class minimum of 3" in problems["operational_topics[0].replication_factor"]


def test_defaults_problems_point_at_defaults(catalog, policies):
    broken = catalog.model_copy(
        update={
            "defaults": catalog.defaults.model_copy(
                update={"min_insync_replicas": 3, "dead_letter_retention_days": 60}
            )
        }
    )
    problems = _problems(broken, policies)
    assert "must be below the replication factor" in problems["defaults.min_insync_replicas"]
    assert "above the class maximum" in problems["defaults.dead_letter_retention_days"]


def test_a_compacted_audit_topic_would_lose_history(catalog, policies):
    ops = list(catalog.operational_topics)
    ops[2] = ops[2].model_copy(update={"cleanup_policy": "compact", "retention_days": None})
    problems = _problems(catalog.model_copy(update={"operational_topics": ops}), policies)
    assert (
        "compaction keeps only the latest record per key" in problems["operational_topics[2].cleanup_policy"]
    )


def test_check_catalog_raises_with_every_path(tmp_path, catalog, policies):
    raw = yaml.safe_load((paths.CONFIG_DIR / "catalog.yaml").read_text())
    raw["events"][0]["retention_days"] = 400
    raw["operational_topics"][2]["retention_days"] = 30
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(CatalogConfigError) as caught:
        load_checked_catalog(path)
    text = str(caught.value)
    assert "events[0].retention_days" in text and "operational_topics[2].retention_days" in text
    assert "2 problems" in text
    check_catalog(catalog, policies)  # the real one passes


# --- the schemas ---------------------------------------------------------------------------------


def test_every_schema_parses_standalone_and_uses_no_enums(catalog):
    for event in catalog.events:
        schema = load_avro_schema(event.schema_file)
        fastavro.parse_schema(schema)  # each file on its own, no shared named-type registry
        assert schema["namespace"] == "org.cmm.healthcare.v1"
        fields = {item["name"]: item for item in schema["fields"]}
        assert {
            "id",
            "source",
            "type",
            "specversion",
            "time",
            "subject",
            "dataschema",
            "datacontenttype",
            "data",
        } <= set(fields)
        assert fields["time"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
        assert ("hl7trigger" in fields) == bool(event.hl7_triggers)
        if event.hl7_triggers:
            assert (
                fields["hl7trigger"]["type"] == ["null", "string"] and fields["hl7trigger"]["default"] is None
            )
        data = fields["data"]["type"]
        assert data["name"] == event.fhir_resource and data["namespace"] == "org.cmm.healthcare.v1.fhir"
        found: dict[str, list] = {}
        _named_types(schema, found)
        assert all(definition["type"] != "enum" for defs in found.values() for definition in defs)


def test_shared_named_types_have_one_definition(catalog):
    definitions: dict[str, set[str]] = {}
    for event in catalog.events:
        found: dict[str, list] = {}
        _named_types(load_avro_schema(event.schema_file), found)
        for name, defs in found.items():
            assert len(defs) == 1, f"{name} defined twice in {event.schema_file}"
            definitions.setdefault(name, set()).add(json.dumps(defs[0], sort_keys=True))
    shared = {
        name for name, texts in definitions.items() if name.endswith((".Coding", ".Meta", ".Reference"))
    }
    assert len(shared) == 3
    assert all(len(texts) == 1 for texts in definitions.values()), "a named type differs between files"


def test_generated_samples_validate_and_round_trip(catalog, samples):
    for event in catalog.events:
        parsed = fastavro.parse_schema(load_avro_schema(event.schema_file))
        records = samples[event.name]
        assert records, event.name
        for record in records[:200]:
            assert validate(record.value, parsed, strict=True, raise_errors=True)
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, parsed, record.value)
            buffer.seek(0)
            assert fastavro.schemaless_reader(buffer, parsed, parsed) == record.value


def test_sample_payloads_are_fhir_r4_resources(samples):
    seen = set()
    for records in samples.values():
        for record in records[:100]:
            resource = fhir_json(record.value["data"])
            model = FHIR_MODELS[resource["resourceType"]]
            parsed = model.model_validate(resource)
            assert parsed.meta.security[0].code == "HTEST"
            seen.add(resource["resourceType"])
    assert seen == set(FHIR_MODELS)


def test_subjects_per_event_type(catalog):
    subjects = load_subject_schemas(catalog)
    assert len(subjects) == 12
    by_name = {item.subject: item for item in subjects}
    value = by_name["healthcare.observation.recorded.v1-value"]
    assert value.compatibility == "FULL_TRANSITIVE" and value.classification == "phi"
    assert value.schema_str == json.dumps(
        json.loads(Path(paths.PROJECT_ROOT / value.source).read_text()), separators=(",", ":")
    )
    assert by_name["healthcare.consent.changed.v1-value"].compatibility == "BACKWARD_TRANSITIVE"
    key = by_name["healthcare.observation.recorded.v1-key"]
    assert key.schema_str == KEY_SCHEMA == '"string"'
    schema = value.schema()
    assert schema.metadata.properties.properties == {"classification": "phi", "event": "observation-recorded"}
    assert hash(schema)  # the client caches schemas by hash
    assert value.schema(with_metadata=False).metadata is None
