"""Stage 5 against real services on loopback: the single-node Kafka and Apicurio of the schemas tests
(started for this module, 127.0.0.1 only), the catalog's topics and schemas reconciled by stage 4's
``schemas.reconcile``, then the end-to-end flow with real clients: synthetic events through every
producing and consuming component, and a file of bad events that must be named and dead-lettered.
Plaintext without ACLs: the contracts need the secured lab.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from event_broker_rollout import paths
from event_broker_rollout.catalog import load_checked_catalog
from event_broker_rollout.components import validated_components
from event_broker_rollout.evidence import Status
from event_broker_rollout.integration import events, flow
from event_broker_rollout.schemas import reconcile
from tests.integration import test_schemas_loopback as schemas_loopback

pytestmark = pytest.mark.integration

# The schemas tests' fixture under another name: this module gets services of its own.
loopback = schemas_loopback.services

BAD_EVENTS = paths.INCLUDE_DIR / "sample_events" / "bad_events.jsonl"
# What make_bad_events.py planted: none of it may appear in any output.
UNKNOWN_PATIENT_EVENT = "0b7d4c1e-2f3a-4b5c-9d6e-000000000bad"
PLANTED = (
    "219-09-9999",
    "4402119",
    "8867-3",
    "[degF]",
    "5e1f0c3a-9d2b-4c7e-8f10-000000000bad",
    "2099-01-01",
    str(events.epoch_ms(datetime(2099, 1, 1, tzinfo=UTC))),
)
PLANTED_RULES = {
    "time.not-in-future",
    "code.loinc-check-digit",
    "observation.ucum-unit",
    "phi.identifiers-in-names",
    "phi.identifiers-in-free-text",
    "reference.known-patient",
}


@pytest.fixture(scope="module")
def cluster(loopback):
    catalog, policies = load_checked_catalog()
    outcome = reconcile(
        catalog,
        policies,
        admin=loopback.admin(),
        registry=loopback.registry(),
        **schemas_loopback.SINGLE_NODE,
    )
    assert not [r for r in outcome.results if r.status is Status.FAIL], outcome.results
    components = validated_components("config/components.yaml", catalog, policies)
    # Plaintext loopback: every component's settings differ only by client id (the lab adds SASL).
    configs = {
        c.name: {"bootstrap.servers": loopback.bootstrap, "client.id": c.name} for c in components.components
    }
    return catalog, components, configs, {"url": loopback.registry_url}


def _dead_letters(bootstrap: str, topics: list[str], run_id: str) -> list:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"test.dlq.{run_id}", "enable.auto.commit": False}
    )
    partitions = []
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions += [TopicPartition(topic, p, 0) for p in metadata.partitions]
    consumer.assign(partitions)
    letters, idle = [], 0
    while idle < 5:
        batch = consumer.consume(500, timeout=1.0)
        idle = 0 if batch else idle + 1
        letters += [
            m for m in batch if m.error() is None and (flow.RUN_HEADER, run_id.encode()) in m.headers()
        ]
    consumer.close()
    return letters


def test_synthetic_events_flow_through_every_component_and_pass_every_rule(cluster, loopback, tmp_path):
    catalog, components, configs, registry = cluster
    samples = events.synthetic_samples(1200, seed=11, now=datetime.now(UTC), catalog=catalog)
    run_id = "manual__2026-11-27T12:00:00+00:00"

    outcome = flow.run_end_to_end(
        samples.events,
        catalog=catalog,
        components=components,
        client_configs=configs,
        registry_config=registry,
        run_id=run_id,
        docs_dir=tmp_path / "docs",
    )

    results = outcome.results()
    assert [r for r in results if r.status is Status.FAIL] == []
    assert outcome.produced.total == 1200
    assert outcome.quality is not None and outcome.quality.success
    assert len(outcome.quality.outcomes) >= 12
    assert outcome.quality.dead_letter == {}
    by_type = {c.event_name: c for c in outcome.counts}
    assert {name: c.produced for name, c in by_type.items()} == {
        name: sum(1 for s in samples.events if s.event_name == name) for name in by_type
    }
    assert all(c.consumed == c.produced == c.valid and c.dead_lettered == 0 for c in by_type.values())
    # Every consuming component read exactly its contract's share, in a group of its own for the run.
    delivered = [r for r in results if r.id.startswith("e2e.delivered[")]
    assert {r.id.split("[")[1].split(":")[0] for r in delivered} == {
        "fhir-server",
        "consent-service",
        "analytics",
        "data-quality",
    }
    assert outcome.sessions["fhir-server"].group == "fhir-server.rollout.manual__2026-11-27T12_00_00_00_00"
    assert outcome.latency is not None and outcome.latency.count == sum(
        len(s.received) for s in outcome.sessions.values()
    )
    assert 0 <= outcome.latency.p50_ms <= outcome.latency.p99_ms < 30_000
    assert outcome.quality.docs_index is not None and outcome.quality.docs_index.is_file()
    assert _dead_letters(loopback.bootstrap, [f"{e.topic}.dlq" for e in catalog.events], run_id) == []
    json.dumps(outcome.summary())  # JSON-safe for XCom and the report


def test_bad_events_are_named_dead_lettered_with_reasons_and_never_echoed(cluster, loopback, tmp_path):
    catalog, components, configs, registry = cluster
    loaded = events.load_samples(BAD_EVENTS, catalog)
    assert loaded.findings == []
    run_id = "bad-events-1"
    topics = {s.topic for s in loaded.events}
    sessions = flow.start_consumers(topics, components=components, client_configs=configs, run_id=run_id)
    produced = flow.produce_samples(
        loaded.events, components=components, client_configs=configs, registry_config=registry, run_id=run_id
    )
    # A record no registry serializer wrote, in the run: dead-lettered at deserialization.
    poison = Producer({"bootstrap.servers": loopback.bootstrap})
    poison.produce(
        "healthcare.patient.upserted.v1",
        key=b"k",
        value=b"not avro",
        headers=[(flow.RUN_HEADER, run_id.encode())],
    )
    poison.flush(10)
    flow.finish_consumers(sessions)
    docs = tmp_path / "docs"
    outcome = flow.conclude(
        loaded.events,
        produced,
        sessions,
        catalog=catalog,
        client_configs=configs,
        registry_config=registry,
        run_id=run_id,
        docs_dir=docs,
    )

    # This run read only its own records: the synthetic run's are still in the topics.
    assert produced.total == len(loaded.events)
    assert sum(c.consumed for c in outcome.counts) == len(loaded.events)
    assert outcome.quality is not None
    assert {o.id for o in outcome.quality.failed} == PLANTED_RULES
    results = {r.id: r for r in outcome.results()}
    suite = results["quality.suite"]
    assert suite.status is Status.FAIL
    for failed in outcome.quality.failed:
        assert failed.name in suite.message
        assert results[f"quality[{failed.id}]"].status is Status.FAIL
    assert results["quality[count.produced-equals-consumed]"].status is Status.PASS
    assert results["e2e.deserialized"].status is Status.FAIL and results["e2e.deserialized"].observed == 1

    # The dead letters: the planted events (original bytes) and the poison, each with its reason.
    letters = _dead_letters(loopback.bootstrap, [f"{e.topic}.dlq" for e in catalog.events], run_id)
    assert len(letters) == len(outcome.quality.dead_letter) + 1 == 7
    deserialize = AvroDeserializer(SchemaRegistryClient(registry))
    seen_ids, stages = set(), []
    for letter in letters:
        headers = dict(letter.headers())
        stages.append(headers[flow.DLQ_STAGE_HEADER].decode())
        if headers[flow.DLQ_STAGE_HEADER] == b"deserialize":
            assert headers[flow.DLQ_REASON_HEADER] == b"key is not in the registry's wire format"
            assert letter.value() == b"not avro" and letter.topic() == "healthcare.patient.upserted.v1.dlq"
            continue
        rules = set(headers[flow.DLQ_RULES_HEADER].decode().split(","))
        assert rules and rules <= PLANTED_RULES
        source = headers["ebr-source-topic"].decode()
        assert letter.topic() == f"{source}.dlq"
        value = deserialize(letter.value(), SerializationContext(source, MessageField.VALUE))
        seen_ids.add(value["id"])
        for name, header in headers.items():
            assert not any(bad.encode() in header for bad in PLANTED), name
    assert seen_ids == outcome.quality.dead_letter_ids and UNKNOWN_PATIENT_EVENT in seen_ids
    assert sorted(stages) == ["deserialize"] + ["validate"] * 6

    # No planted value in the report data, GX's result or the Data Docs.
    outputs = json.dumps([r.to_dict() for r in outcome.results()] + [outcome.summary()], default=str)
    outputs += json.dumps(outcome.quality.gx_result, default=str)
    outputs += "".join(page.read_text() for page in docs.rglob("*.html"))
    assert list(docs.rglob("validations/**/*.html"))
    for bad in PLANTED:
        assert bad not in outputs, bad
