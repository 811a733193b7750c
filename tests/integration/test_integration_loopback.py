"""Stage 5 against real services on loopback: the single-node Kafka and Apicurio of the schemas tests
(started for this module, 127.0.0.1 only), the catalog's topics and schemas reconciled by stage 4's
``schemas.reconcile``, then the end-to-end flow with real clients: synthetic events through every
producing and consuming component, and a file of bad events that must be named and dead-lettered.

A second single-node Kafka on loopback adds SASL/PLAIN and the StandardAuthorizer with the security
stage's ACLs (``security.access.desired_grants``): the contracts are proven there, with each component's
own user, and the bad-events run repeats under those grants (groups and dead letters included).
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from event_broker_rollout import paths
from event_broker_rollout.config.catalog import load_checked_catalog
from event_broker_rollout.config.components import Component, validated_components
from event_broker_rollout.evidence.results import Status
from event_broker_rollout.integration import contracts, events, flow
from event_broker_rollout.resources.access import desired_grants
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
    "discharged-home",
    # One Safe Harbor identifier of each kind (make_bad_events.IDENTIFIERS).
    "Maria Lopez",
    "12 Birch Lane",
    "02/27/2026",
    "617-555-0148",
    "j.roe@example.net",
    "W9981234",
    "77120034",
    "RN-445512",
    "4KXY219",
    "88AF-22019",
    "records.example.com",
    "10.20.30.40",
    "fingerprint scan on file",  # the whole text: GX names its own "pandas_data_fingerprint"
    "55012337",
)
PLANTED_RULES = {
    "time.not-in-future",
    "code.loinc-check-digit",
    "observation.ucum-unit",
    "reference.known-patient",
    "required.code",
    "fhir.r4-valid",
    "adt.trigger-status",
    "phi.name-in-free-text",
    "phi.geographic-subdivision",
    "phi.date",
    "phi.phone-fax",
    "phi.email",
    "phi.ssn",
    "phi.mrn",
    "phi.health-plan-number",
    "phi.account-number",
    "phi.certificate-licence-number",
    "phi.vehicle-identifier",
    "phi.device-identifier",
    "phi.url",
    "phi.ip-address",
    "phi.biometric-photo",
    "phi.other-unique-number",
}
PLANTED_EVENTS = 22  # events make_bad_events.py spoiled (some break two rules)


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
    assert len(letters) == len(outcome.quality.dead_letter) + 1 == PLANTED_EVENTS + 1
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
    assert sorted(stages) == ["deserialize"] + ["validate"] * PLANTED_EVENTS

    # No planted value in the report data, GX's result or the Data Docs.
    outputs = json.dumps([r.to_dict() for r in outcome.results()] + [outcome.summary()], default=str)
    outputs += json.dumps(outcome.quality.gx_result, default=str)
    outputs += "".join(page.read_text() for page in docs.rglob("*.html"))
    assert list(docs.rglob("validations/**/*.html"))
    for bad in PLANTED:
        assert bad not in outputs, bad


# --- under SASL and ACLs ----------------------------------------------------------------------

ADMIN = "admin"
PROBE = Component(name="ebr-probe", principal="ebr-probe")  # the service principal without grants


def _password(user: str) -> str:
    return f"{user}-loopback-secret"


@pytest.fixture(scope="module")
def secured(tmp_path_factory, cluster, loopback):
    """A SASL_PLAINTEXT (PLAIN) broker with the StandardAuthorizer and the security stage's grants."""
    components = cluster[1]
    tmp = tmp_path_factory.mktemp("secured-loopback")
    kafka_home = schemas_loopback._extract(schemas_loopback.KAFKA_TGZ, tmp)
    host = schemas_loopback.HOST
    port, controller = schemas_loopback._free_port(), schemas_loopback._free_port()
    users = [ADMIN, PROBE.principal, *(c.principal for c in components.components)]
    jaas = " ".join(
        [
            "org.apache.kafka.common.security.plain.PlainLoginModule required",
            f'username="{ADMIN}" password="{_password(ADMIN)}"',
            *(f'user_{user}="{_password(user)}"' for user in users),
        ]
    )
    properties = tmp / "server.properties"
    properties.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers={host}:{controller}",
                f"listeners=SASL_PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
                f"advertised.listeners=SASL_PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
                "inter.broker.listener.name=SASL_PLAINTEXT",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
                "sasl.enabled.mechanisms=PLAIN",
                "sasl.mechanism.inter.broker.protocol=PLAIN",
                f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas};",
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                # The loopback-only controller listener is plaintext: its principal is ANONYMOUS.
                f"super.users=User:{ADMIN};User:ANONYMOUS",
                "allow.everyone.if.no.acl.found=false",
                f"log.dirs={tmp / 'kraft-data'}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "",
            ]
        )
    )
    storage = str(kafka_home / "bin" / "kafka-storage.sh")
    cluster_id = subprocess.run([storage, "random-uuid"], capture_output=True, text=True, check=True).stdout
    subprocess.run(
        [storage, "format", "-t", cluster_id.strip(), "-c", str(properties), "--standalone"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    log = tmp / "kafka.out"
    with log.open("w") as out:
        broker = subprocess.Popen(
            [str(kafka_home / "bin" / "kafka-server-start.sh"), str(properties)],
            env={**env, "LOG_DIR": str(tmp / "kafka-logs"), "KAFKA_HEAP_OPTS": "-Xms256m -Xmx512m"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def config(user: str) -> dict:
            return {
                "bootstrap.servers": f"{host}:{port}",
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN",
                "sasl.username": user,
                "sasl.password": _password(user),
            }

        admin = AdminClient(config(ADMIN))
        schemas_loopback._wait("secured Kafka", 90, broker, log, lambda: admin.list_topics(timeout=2).brokers)
        catalog_, policies = load_checked_catalog()
        outcome = reconcile(
            catalog_,
            policies,
            admin=admin,
            registry=loopback.registry(),
            **schemas_loopback.SINGLE_NODE,
        )
        assert not [r for r in outcome.results if r.status is Status.FAIL], outcome.results
        grants = desired_grants(components)
        for future in admin.create_acls([g.binding() for g in grants]).values():
            future.result()
        # Created is not yet applied: the broker's authorizer takes the new ACLs from the metadata log.
        everything = AclBindingFilter(
            ResourceType.ANY,
            None,
            ResourcePatternType.ANY,
            None,
            None,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        schemas_loopback._wait(
            "ACLs", 60, broker, log, lambda: len(admin.describe_acls(everything).result()) == len(grants)
        )
        yield (
            catalog_,
            policies,
            components,
            {c.name: config(c.principal) for c in components.components},
            config,
        )
    finally:
        schemas_loopback._stop(broker)


def test_contracts_hold_under_the_security_stage_grants(secured, cluster):
    catalog, policies, components, _, config = secured
    registry = cluster[3]
    checked = {"analytics", "ehr-adt-adapter", "rollout-audit"}  # every kind of probe, in reasonable time
    results = []
    for component in [c for c in components.components if c.name in checked] + [PROBE]:
        results += contracts.verify_contract(
            component,
            config(component.principal),
            catalog=catalog,
            policies=policies,
            registry_config=registry,
            run_id="contracts-1",
            timeout=15,
        )
    by_id = {r.id: r for r in results}
    assert [(r.id, r.message) for r in results if r.status is not Status.PASS] == []
    assert set(by_id) == {
        "contract.consume[analytics:healthcare.observation.recorded.v1]",
        "contract.consume[analytics:healthcare.diagnosticreport.finalized.v1]",
        "contract.refused[analytics:consume:healthcare.patient.upserted.v1]",
        "contract.refused[analytics:produce:healthcare.patient.upserted.v1]",
        "contract.produce[ehr-adt-adapter:healthcare.patient.upserted.v1]",
        "contract.produce[ehr-adt-adapter:healthcare.encounter.events.v1]",
        "contract.refused[ehr-adt-adapter:consume:healthcare.patient.upserted.v1]",
        "contract.refused[ehr-adt-adapter:produce:healthcare.observation.recorded.v1]",
        "contract.produce[rollout-audit:ops.rollout.audit.v1]",
        "contract.refused[rollout-audit:consume:healthcare.patient.upserted.v1]",
        "contract.refused[rollout-audit:produce:healthcare.patient.upserted.v1]",
        "contract.refused[ebr-probe:consume:healthcare.patient.upserted.v1]",
        "contract.refused[ebr-probe:produce:healthcare.patient.upserted.v1]",
    }
    refused = by_id["contract.refused[analytics:consume:healthcare.patient.upserted.v1]"]
    assert refused.observed == "TOPIC_AUTHORIZATION_FAILED"
    assert by_id["contract.refused[analytics:produce:healthcare.patient.upserted.v1]"].observed == (
        "TOPIC_AUTHORIZATION_FAILED"
    )
    assert "no record written" in by_id["contract.produce[rollout-audit:ops.rollout.audit.v1]"].message


def test_a_wrong_grant_is_caught(secured, cluster):
    catalog, policies, components, _, config = secured
    # analytics' contract claimed a topic its grants do not cover: the check fails as a refusal.
    widened = next(c for c in components.components if c.name == "analytics").model_copy(
        update={"consumes": ["healthcare.observation.recorded.v1", "healthcare.consent.changed.v1"]}
    )
    results = contracts.verify_contract(
        widened,
        config("analytics"),
        catalog=catalog,
        policies=policies,
        registry_config=cluster[3],
        run_id="contracts-2",
        timeout=15,
    )
    failed = {r.id: r for r in results if r.status is Status.FAIL}
    assert set(failed) == {"contract.consume[analytics:healthcare.consent.changed.v1]"}
    assert (
        "although its contract grants it"
        in failed["contract.consume[analytics:healthcare.consent.changed.v1]"].message
    )


def test_bad_events_under_acls_use_the_granted_groups_and_dead_letter_topics(secured, cluster, tmp_path):
    catalog, _, components, configs, _ = secured
    loaded = events.load_samples(BAD_EVENTS, catalog)
    outcome = flow.run_end_to_end(
        loaded.events,
        catalog=catalog,
        components=components,
        client_configs=configs,
        registry_config=cluster[3],
        run_id="secured-bad-events",
    )
    results = {r.id: r for r in outcome.results()}
    delivered = [r for r in results.values() if r.id.startswith(("e2e.produce[", "e2e.delivered["))]
    assert delivered and all(r.status in (Status.PASS, Status.SKIPPED) for r in delivered), delivered
    assert {o.id for o in outcome.quality.failed} == PLANTED_RULES
    assert results["e2e.dead-letters"].status is Status.CHANGED
    assert sum(outcome.dead_letters.sent.values()) == PLANTED_EVENTS and not outcome.dead_letters.failed
