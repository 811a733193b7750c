"""The integration stage's plain logic: sample files, who produces and consumes what (with which group),
decoding and dead-letter reasons without values, latency percentiles, and the contract decisions."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from event_broker_rollout.config.catalog import load_checked_catalog
from event_broker_rollout.config.components import Component, validated_components
from event_broker_rollout.evidence.results import Status
from event_broker_rollout.integration import contracts, flow, latency
from event_broker_rollout.integration.events import (
    dump_samples,
    epoch_ms,
    load_samples,
    resolve_samples,
    synthetic_samples,
)
from event_broker_rollout.schemas import load_subject_schemas

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OBSERVATIONS = "healthcare.observation.recorded.v1"


@pytest.fixture(scope="module")
def catalog_and_policies():
    return load_checked_catalog()


@pytest.fixture(scope="module")
def catalog(catalog_and_policies):
    return catalog_and_policies[0]


@pytest.fixture(scope="module")
def components(catalog_and_policies):
    return validated_components("config/components.yaml", *catalog_and_policies)


@pytest.fixture(scope="module")
def samples(catalog):
    return synthetic_samples(300, seed=9, now=NOW, catalog=catalog).events


def _component(components, name):
    return next(c for c in components.components if c.name == name)


# --- sample files ----------------------------------------------------------------------------


def test_a_dumped_file_loads_back_as_the_same_events(catalog, samples, tmp_path):
    path = tmp_path / "samples.jsonl"
    dump_samples(samples, path, header=["synthetic"])
    loaded = load_samples(path, catalog)
    assert loaded.findings == [] and loaded.source == "samples.jsonl"
    assert [(e.topic, e.key, e.value) for e in loaded.events] == [(s.topic, s.key, s.value) for s in samples]
    assert [r.id for r in loaded.results()] == ["samples.loaded"]


def test_time_may_be_iso_8601_or_epoch_millis_and_fields_may_default(catalog, samples, tmp_path):
    patient = next(s for s in samples if s.event_name == "patient-upserted")
    value = json.loads(json.dumps(patient.value, default=str))
    value.pop("hl7trigger")
    del value["data"]["birthDate"]
    lines = [
        {"event_name": patient.event_name, "key": patient.key, "value": {**value, "time": epoch_ms(NOW)}},
        {"topic": patient.topic, "key": patient.key, "value": {**value, "time": "2026-11-27T12:00:00Z"}},
        {
            "topic": patient.topic,
            "event_name": patient.event_name,
            "key": patient.key,
            "value": {**value, "time": "2026-11-27T13:00:00+01:00"},
        },
    ]
    path = tmp_path / "times.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n# a comment\n")
    loaded = load_samples(path, catalog)
    assert loaded.findings == []
    assert [e.value["time"] for e in loaded.events] == [NOW, NOW, NOW]
    assert all(e.value["hl7trigger"] is None and e.value["data"]["birthDate"] is None for e in loaded.events)


def test_unusable_lines_become_findings_that_name_the_field_not_the_value(catalog, samples, tmp_path):
    observation = next(s for s in samples if s.event_name == "observation-recorded")
    good = json.loads(
        json.dumps(
            {"topic": observation.topic, "key": observation.key, "value": observation.value}, default=str
        )
    )
    wrong_type = json.loads(json.dumps(good))
    wrong_type["value"]["data"]["valueQuantity"]["value"] = "SECRET-078-05-1120"
    lines = [
        "{not json",
        "[1, 2]",
        json.dumps({**good, "extra": 1}),
        json.dumps({"key": "k", "value": good["value"]}),
        json.dumps({**good, "topic": "SECRET-topic"}),
        json.dumps({"event_name": "SECRET-event", "key": "k", "value": good["value"]}),
        json.dumps({**good, "event_name": "patient-upserted"}),
        json.dumps({**good, "key": 12}),
        json.dumps({**good, "value": "SECRET-text"}),
        json.dumps({**good, "value": {k: v for k, v in good["value"].items() if k != "time"}}),
        json.dumps({**good, "value": {**good["value"], "time": "2026-11-27T12:00:00"}}),
        json.dumps({**good, "value": {**good["value"], "time": True}}),
        json.dumps({**good, "value": {**good["value"], "time": "SECRET-when"}}),
        json.dumps(wrong_type),
        json.dumps(good),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    loaded = load_samples(path, catalog)
    assert len(loaded.events) == 1
    messages = {int(r.id.removeprefix("samples.line[").removesuffix("]")): r.message for r in loaded.findings}
    assert sorted(messages) == list(range(1, 15))
    expected = {
        1: "not JSON",
        2: "not a JSON object",
        3: "unexpected fields extra",
        4: "names no event type",
        5: "topic is not an event topic",
        6: "event_name is not an event",
        7: "name different event types",
        8: "key must be a non-empty string",
        9: "value must be a JSON object",
        10: "value.time is missing",
        11: "time has no UTC offset",
        12: "time must be ISO-8601 or epoch milliseconds",
        13: "time is not ISO-8601",
        14: "does not match the observation-recorded value schema at",
    }
    for line, text in expected.items():
        assert text in messages[line], (line, messages[line])
    assert "Quantity.value" in messages[14]
    assert all(r.status is Status.FAIL for r in loaded.findings)
    summary = loaded.results()[0]
    assert summary.status is Status.FAIL and summary.observed == {"events": 1, "unusable_lines": 14}
    assert "SECRET" not in json.dumps([r.to_dict() for r in loaded.results()])


def test_an_unreadable_file_is_one_finding(catalog, tmp_path):
    loaded = load_samples(tmp_path / "missing.jsonl", catalog)
    assert loaded.events == [] and [r.id for r in loaded.findings] == ["samples.file"]
    (tmp_path / "latin1.jsonl").write_bytes(b"\xff\xfe{}")
    assert [r.id for r in load_samples(tmp_path / "latin1.jsonl", catalog).findings] == ["samples.file"]


def test_samples_come_from_the_file_when_given_else_from_the_generator(catalog, samples, tmp_path):
    path = tmp_path / "s.jsonl"
    dump_samples(samples[:5], path)
    assert resolve_samples(str(path), count=50, seed=1, now=NOW, catalog=catalog).source == "s.jsonl"
    generated = resolve_samples(None, count=50, seed=1, now=NOW, catalog=catalog)
    assert generated.source == "synthetic" and len(generated.events) == 50


# --- who does what ---------------------------------------------------------------------------


def test_every_event_topic_is_produced_by_its_named_producer(catalog, components):
    producers = {e.topic: flow.producer_of(e.topic, components).name for e in catalog.events}
    assert producers == {
        "healthcare.patient.upserted.v1": "ehr-adt-adapter",
        "healthcare.encounter.events.v1": "ehr-adt-adapter",
        OBSERVATIONS: "fhir-server",
        "healthcare.diagnosticreport.finalized.v1": "fhir-server",
        "healthcare.medicationrequest.created.v1": "fhir-server",
        "healthcare.consent.changed.v1": "consent-service",
    }
    # Only a prefix grant covers the dead-letter topics: the validator's.
    assert flow.producer_of(f"{OBSERVATIONS}.dlq", components).name == "data-quality"
    assert flow.producer_of("nobody.writes.this", components) is None


def test_consumers_read_what_their_contract_names(catalog, components):
    topics = [e.topic for e in catalog.events]
    assert flow.consumed_topics(_component(components, "analytics"), topics) == [
        "healthcare.diagnosticreport.finalized.v1",
        OBSERVATIONS,
    ]
    assert flow.consumed_topics(_component(components, "data-quality"), topics) == sorted(topics)
    assert flow.consumed_topics(_component(components, "ehr-adt-adapter"), topics) == []


def test_rollout_groups_are_fresh_per_run_and_inside_the_group_grants(components):
    run_id = "scheduled__2026-11-27T12:00:00+00:00"
    grants = {principal: prefix for principal, kind, prefix in flow.group_grants_needed(components)}
    for component in components.components:
        if not component.group or not component.consumes:
            continue
        group = flow.rollout_group(component, run_id)
        assert group == f"{component.group}.rollout.scheduled__2026-11-27T12_00_00_00_00"
        assert group != flow.rollout_group(component, "scheduled__2026-11-28T12:00:00+00:00")
        assert group.startswith(grants[f"User:{component.principal}"])
        assert group.startswith(component.group)  # the security stage's PREFIXED grant on the group
        assert contracts.contract_group(component, run_id).startswith(grants[f"User:{component.principal}"])
    assert set(grants) == {
        "User:fhir-server",
        "User:consent-service",
        "User:analytics",
        "User:data-quality",
        "User:compliance",
    }
    with pytest.raises(ValueError, match="no consumer group"):
        flow.rollout_group(_component(components, "ehr-adt-adapter"), run_id)


def test_producers_use_the_delivery_guarantees():
    config = flow.producer_config({"bootstrap.servers": "127.0.0.1:9092", "acks": "1"})
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    assert flow.SERIALIZER_CONFIG["auto.register.schemas"] is False
    assert flow.SERIALIZER_CONFIG["use.latest.version"] is True


# --- decoding and dead letters ---------------------------------------------------------------


@pytest.fixture()
def registry(catalog):
    client = SchemaRegistryClient.new_client({"url": "mock://integration-unit"})
    for item in load_subject_schemas(catalog):
        client.register_schema(item.subject, Schema(item.schema_str, "AVRO"))
    return client


def _received(key, value, topic=OBSERVATIONS):
    return flow.Received(topic, 3, 41, key, value, produced_at_ms=1_000, consumed_at_ms=1_250)


def _serialized(registry, sample):
    serialize = AvroSerializer(registry, None, None, flow.SERIALIZER_CONFIG)
    key = serialize(sample.key, SerializationContext(sample.topic, MessageField.KEY))
    value = serialize(sample.value, SerializationContext(sample.topic, MessageField.VALUE))
    return key, value


def test_records_decode_with_their_schema_id(registry, samples):
    sample = next(s for s in samples if s.topic == OBSERVATIONS)
    key, value = _serialized(registry, sample)
    decoded = flow.Decoder(registry).decode(_received(key, value))
    assert isinstance(decoded, flow.Decoded)
    assert decoded.key == sample.key and decoded.value == sample.value
    registered = flow.registered_schema_ids(registry, [OBSERVATIONS, "no.such.topic"])
    assert decoded.schema_id == flow.wire_schema_id(value) == registered[OBSERVATIONS]
    assert registered["no.such.topic"] is None
    assert _received(key, value).latency_ms == 250


def test_undecodable_records_get_a_reason_without_values(registry, samples):
    sample = next(s for s in samples if s.topic == OBSERVATIONS)
    key, value = _serialized(registry, sample)
    decoder = flow.Decoder(registry)
    unknown_id = b"\x00" + (4242).to_bytes(4, "big") + value[5:]
    cases = {
        "value is not in the registry's wire format": _received(key, b"SECRET plain text"),
        "key is not in the registry's wire format": _received(b"SECRET", value),
        "value schema id is not registered": _received(key, unknown_id),
        "value is not valid Avro for its schema": _received(key, value[:5] + b"\x02SECRET"),
    }
    for reason, received in cases.items():
        assert decoder.decode(received) == reason
    assert flow.wire_schema_id(None) is None and flow.wire_schema_id(b"\x01\x00\x00\x00\x01x") is None


def test_dead_letters_carry_the_reason_and_the_source_in_headers_only():
    received = _received(b"\x00key", b"\x00SECRET-VALUE")
    letter = flow.DeadLetter(
        received, "validate", "failed data-quality rules", ("time.not-in-future", "code.loinc-check-digit")
    )
    headers = dict(letter.headers("run-1"))
    assert headers == {
        flow.RUN_HEADER: b"run-1",
        flow.DLQ_STAGE_HEADER: b"validate",
        flow.DLQ_REASON_HEADER: b"failed data-quality rules",
        flow.DLQ_RULES_HEADER: b"time.not-in-future,code.loinc-check-digit",
        "ebr-source-topic": OBSERVATIONS.encode(),
        "ebr-source-partition": b"3",
        "ebr-source-offset": b"41",
    }
    assert flow.dead_letter_topic(OBSERVATIONS) == f"{OBSERVATIONS}.dlq"


# --- latency ---------------------------------------------------------------------------------


def test_latency_percentiles_are_nearest_rank():
    summary = latency.summarize(range(1, 101))
    assert summary is not None
    assert (summary.count, summary.p50_ms, summary.p95_ms, summary.p99_ms, summary.max_ms) == (
        100,
        50,
        95,
        99,
        100,
    )
    assert latency.summarize([7]).to_dict() == {
        "count": 1,
        "p50_ms": 7,
        "p95_ms": 7,
        "p99_ms": 7,
        "max_ms": 7,
    }
    assert latency.summarize([]) is None


# --- contracts -------------------------------------------------------------------------------


def test_contract_checks_cover_every_grant_and_try_a_refusal(catalog_and_policies, components):
    catalog, policies = catalog_and_policies
    checks = {c.id: c for c in contracts.plan_checks(_component(components, "analytics"), catalog, policies)}
    assert set(checks) == {
        f"contract.consume[analytics:{OBSERVATIONS}]",
        "contract.consume[analytics:healthcare.diagnosticreport.finalized.v1]",
        "contract.refused[analytics:consume:healthcare.patient.upserted.v1]",  # PHI it does not read
        "contract.refused[analytics:produce:healthcare.patient.upserted.v1]",
    }
    fhir = {c.id: c for c in contracts.plan_checks(_component(components, "fhir-server"), catalog, policies)}
    assert fhir[f"contract.produce[fhir-server:{OBSERVATIONS}]"].probe == "record"
    assert f"contract.refused[fhir-server:consume:{OBSERVATIONS}]" in fhir
    assert "contract.refused[fhir-server:produce:healthcare.patient.upserted.v1]" in fhir


def test_the_validator_writes_dead_letters_without_records_and_is_refused_outside_healthcare(
    catalog_and_policies, components
):
    catalog, policies = catalog_and_policies
    checks = contracts.plan_checks(_component(components, "data-quality"), catalog, policies)
    produce = {c.topic: c.probe for c in checks if c.action == "produce" and c.granted}
    assert produce[OBSERVATIONS] == "record"
    assert produce[f"{OBSERVATIONS}.dlq"] == "authorized-operations"
    assert produce["ops.data-quality.results.v1"] == "authorized-operations"
    refused = [c for c in checks if not c.granted]
    assert [(c.action, c.topic.startswith("ops.")) for c in refused] == [("consume", True)]


def test_a_principal_without_grants_is_expected_refused_on_phi(catalog_and_policies):
    catalog, policies = catalog_and_policies
    probe = Component(name="ebr-probe", principal="ebr-probe")
    checks = contracts.plan_checks(probe, catalog, policies)
    assert [(c.id, c.granted) for c in checks] == [
        ("contract.refused[ebr-probe:consume:healthcare.patient.upserted.v1]", False),
        ("contract.refused[ebr-probe:produce:healthcare.patient.upserted.v1]", False),
    ]
    assert contracts.contract_group(probe, "r1") == "ebr-probe.rollout.r1.contract"


GRANTED = contracts.ContractCheck("analytics", "consume", OBSERVATIONS, True, "subscribe")
REFUSED = contracts.ContractCheck("analytics", "produce", OBSERVATIONS, False, "record")


@pytest.mark.parametrize(
    ("check", "error", "passed", "says"),
    [
        (GRANTED, None, True, "may consume from"),
        (GRANTED, "TOPIC_AUTHORIZATION_FAILED", False, "although its contract grants it"),
        (GRANTED, "_TRANSPORT", False, "could not verify"),
        (REFUSED, "TOPIC_AUTHORIZATION_FAILED", True, "is refused to produce to"),
        (REFUSED, "GROUP_AUTHORIZATION_FAILED", True, "outside its contract"),
        (REFUSED, None, False, "may produce to healthcare.observation.recorded.v1, outside its contract"),
        (REFUSED, "_MSG_TIMED_OUT", False, "inconclusive"),
        (REFUSED, "SASL_AUTHENTICATION_FAILED", False, "cannot authenticate"),
        (GRANTED, "_AUTHENTICATION", False, "cannot authenticate"),
    ],
)
def test_contract_verdicts(check, error, passed, says):
    result = contracts.judge(check, error)
    assert (result.status is Status.PASS) == passed
    assert says in result.message
    assert result.id == check.id


def test_contract_check_ids():
    assert GRANTED.id == f"contract.consume[analytics:{OBSERVATIONS}]"
    assert REFUSED.id == f"contract.refused[analytics:produce:{OBSERVATIONS}]"
