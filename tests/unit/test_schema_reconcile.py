"""Reconcile logic without services: topic plans, change descriptions, and the registry run's all-or-
nothing rule against an in-memory stand-in (the real registry is exercised by the integration test)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from confluent_kafka.schema_registry import RegisteredSchema, Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from event_broker_rollout.config.catalog import TopicSpec, load_catalog
from event_broker_rollout.evidence.results import Status
from event_broker_rollout.resources.changes import describe_changes
from event_broker_rollout.resources.registry import METADATA_IGNORED, METADATA_KEPT, METADATA_REFUSED
from event_broker_rollout.resources.topics import ObservedTopic
from event_broker_rollout.schemas import load_subject_schemas, plan_topic, reconcile_schemas

SPEC = TopicSpec(
    topic="healthcare.patient.upserted.v1",
    classification="phi",
    partitions=6,
    replication_factor=3,
    min_insync_replicas=2,
    cleanup_policy="delete",
    retention_days=14,
)
GOOD = dict(SPEC.configs)


def test_missing_topic_is_created():
    plan = plan_topic(SPEC, None)
    assert plan.create and not plan.set_configs and not plan.grow


def test_matching_topic_needs_nothing():
    plan = plan_topic(
        SPEC, ObservedTopic(partitions=6, replication_factor=3, configs={**GOOD, "segment.ms": "1"})
    )
    assert not plan.create and not plan.set_configs and not plan.held_configs and not plan.grow


def test_drifted_configs_are_set_back_where_safe():
    drifted = {
        **GOOD,
        "retention.ms": "-1",
        "min.insync.replicas": "1",
        "unclean.leader.election.enable": "true",
    }
    plan = plan_topic(SPEC, ObservedTopic(partitions=6, replication_factor=3, configs=drifted))
    assert plan.set_configs == {
        "retention.ms": GOOD["retention.ms"],
        "min.insync.replicas": "2",
        "unclean.leader.election.enable": "false",
    }
    assert not plan.held_configs


def test_unsafe_drift_is_reported_not_applied():
    compacted = {**GOOD, "cleanup.policy": "compact"}
    plan = plan_topic(SPEC, ObservedTopic(partitions=6, replication_factor=3, configs=compacted))
    assert "cleanup.policy" in plan.held_configs and not plan.set_configs
    # min.insync.replicas above the topic's real replica count would stop acks=all producers.
    low = {**GOOD, "min.insync.replicas": "1"}
    plan = plan_topic(SPEC, ObservedTopic(partitions=6, replication_factor=1, configs=low))
    assert "min.insync.replicas" in plan.held_configs and not plan.set_configs


def test_cleanup_policy_lists_compare_as_sets():
    spec = TopicSpec("t", "phi", 1, 3, 2, "compact", 7)
    assert spec.configs["cleanup.policy"] == "compact,delete"
    observed = {**spec.configs, "cleanup.policy": "delete,compact"}
    assert not plan_topic(spec, ObservedTopic(1, 3, observed)).held_configs


def test_partitions_grow_but_never_shrink():
    assert plan_topic(SPEC, ObservedTopic(partitions=3, replication_factor=3, configs=GOOD)).grow
    assert not plan_topic(SPEC, ObservedTopic(partitions=9, replication_factor=3, configs=GOOD)).grow


def test_describe_changes_names_fields():
    old = {
        "type": "record",
        "name": "E",
        "fields": [
            {"name": "id", "type": "string"},
            {
                "name": "data",
                "type": {"type": "record", "name": "D", "fields": [{"name": "status", "type": "string"}]},
            },
        ],
    }
    new = json.loads(json.dumps(old))
    new["fields"][1]["type"]["fields"] = [{"name": "note", "type": ["null", "string"], "default": None}]
    new["fields"][0]["type"] = "long"
    assert describe_changes(json.dumps(old), json.dumps(new)) == [
        "added field data.note (null | string, with a default)",
        "changed type of id: string -> long",
        "removed field data.status (string, no default)",
    ]


# --- the registry run against an in-memory stand-in ------------------------------------------------


class FakeRegistry:
    """The slice of SchemaRegistryClient the reconcile uses, with Confluent's error codes.

    ``incompatible`` holds schema texts the registry refuses; ``keeps_metadata``/``refuses_metadata``
    model the registry flavours.
    """

    def __init__(self, keeps_metadata=False, refuses_metadata=False):
        self.levels: dict[str, str] = {}
        self.versions: dict[str, list[Schema]] = {}
        self.incompatible: set[str] = set()
        self.keeps_metadata = keeps_metadata
        self.refuses_metadata = refuses_metadata
        self.writes = 0

    def get_compatibility(self, subject_name=None):
        if subject_name not in self.levels:
            raise SchemaRegistryError(404, 40408, "no subject-level compatibility")
        return self.levels[subject_name]

    def set_compatibility(self, subject_name=None, level=None):
        self.writes += 1
        self.levels[subject_name] = level
        return {"compatibility": level}

    def get_versions(self, subject_name, **_):
        if subject_name not in self.versions:
            raise SchemaRegistryError(404, 40401, "Subject not found")
        return list(range(1, len(self.versions[subject_name]) + 1))

    def _registered(self, subject, version):
        stored = self.versions[subject][version - 1]
        return RegisteredSchema(subject=subject, version=version, schema_id=version, guid=None, schema=stored)

    def get_version(self, subject_name, version="latest", **_):
        number = len(self.versions[subject_name]) if version == "latest" else version
        return self._registered(subject_name, number)

    def lookup_schema(self, subject_name, schema, **_):
        for number, stored in enumerate(self.versions.get(subject_name, []), start=1):
            if stored.schema_str == schema.schema_str:
                return self._registered(subject_name, number)
        raise SchemaRegistryError(404, 40403, "Schema not found")

    def test_compatibility_all_versions(self, subject_name, schema, **_):
        return schema.schema_str not in self.incompatible

    def register_schema_full_response(self, subject_name, schema, **_):
        if self.refuses_metadata and schema.metadata is not None:
            raise SchemaRegistryError(422, 42201, "Unrecognized field: metadata")
        if schema.schema_str in self.incompatible:
            raise SchemaRegistryError(409, 409, "incompatible")
        self.writes += 1
        kept = schema if self.keeps_metadata else Schema(schema.schema_str, "AVRO")
        self.versions.setdefault(subject_name, []).append(kept)
        return RegisteredSchema(subject=subject_name, version=None, schema_id=0, guid=None, schema=kept)


@pytest.fixture
def subjects():
    return load_subject_schemas(load_catalog())


def _statuses(outcome, prefix):
    return {
        r.id.removeprefix(prefix).rstrip("]"): r.status for r in outcome.results if r.id.startswith(prefix)
    }


def test_first_run_sets_levels_and_registers_everything_second_run_changes_nothing(subjects):
    registry = FakeRegistry()
    first = reconcile_schemas(registry, subjects)
    assert set(_statuses(first, "schema.register[").values()) == {Status.CHANGED}
    assert set(_statuses(first, "schema.compatibility[").values()) == {Status.CHANGED}
    assert registry.levels["healthcare.consent.changed.v1-value"] == "BACKWARD_TRANSITIVE"
    assert first.metadata == METADATA_IGNORED
    assert "classification phi is recorded in the catalog only" in first.results[-1].message
    writes = registry.writes
    second = reconcile_schemas(registry, subjects)
    assert {r.status for r in second.results} == {Status.OK}
    assert registry.writes == writes and second.registered == []


def test_dry_run_changes_nothing(subjects):
    registry = FakeRegistry()
    outcome = reconcile_schemas(registry, subjects, dry_run=True)
    assert registry.writes == 0 and registry.versions == {}
    assert {r.status for r in outcome.results} == {Status.WARN}
    assert any("would register version 1" in r.message for r in outcome.results)


def test_one_incompatible_subject_registers_nothing(subjects):
    registry = FakeRegistry()
    reconcile_schemas(registry, subjects)
    broken = next(item for item in subjects if item.subject == "healthcare.observation.recorded.v1-value")
    schema = json.loads(broken.schema_str)
    data = schema["fields"][-1]["type"]
    data["fields"] = [f for f in data["fields"] if f["name"] != "status"]
    changed = []
    for item in subjects:
        if item is broken:
            change = replace(item, schema_str=json.dumps(schema, separators=(",", ":")))
            registry.incompatible.add(change.schema_str)
        elif item.subject == "healthcare.patient.upserted.v1-value":  # a compatible change, same run
            widened = json.loads(item.schema_str)
            widened["fields"][-1]["type"]["fields"].append(
                {"name": "x", "type": ["null", "string"], "default": None}
            )
            change = replace(item, schema_str=json.dumps(widened, separators=(",", ":")))
        else:
            change = item
        changed.append(change)
    writes = registry.writes
    outcome = reconcile_schemas(registry, changed)
    assert registry.writes == writes
    statuses = _statuses(outcome, "schema.register[")
    assert statuses["healthcare.observation.recorded.v1-value"] is Status.FAIL
    assert statuses["healthcare.patient.upserted.v1-value"] is Status.SKIPPED
    refused = next(
        r for r in outcome.results if r.id == "schema.register[healthcare.observation.recorded.v1-value]"
    )
    assert "healthcare.observation.recorded.v1-value: refused" in refused.message
    assert "removed field data.status (string, no default)" in refused.message
    assert outcome.summary()["refused"] == ["healthcare.observation.recorded.v1-value"]


def test_metadata_kept_or_refused(subjects):
    keeper = FakeRegistry(keeps_metadata=True)
    assert reconcile_schemas(keeper, subjects).metadata == METADATA_KEPT
    assert reconcile_schemas(keeper, subjects).metadata == METADATA_KEPT
    refuser = FakeRegistry(refuses_metadata=True)
    outcome = reconcile_schemas(refuser, subjects)
    assert outcome.metadata == METADATA_REFUSED
    assert {r.status for r in outcome.results if r.id.startswith("schema.register[")} == {Status.CHANGED}


def test_unreadable_subject_blocks_every_registration(subjects):
    registry = FakeRegistry()

    def broken_versions(subject_name, **_):
        if subject_name.endswith("-key"):
            raise SchemaRegistryError(500, 50001, "storage error")
        raise SchemaRegistryError(404, 40401, "Subject not found")

    registry.get_versions = broken_versions
    outcome = reconcile_schemas(registry, subjects)
    statuses = _statuses(outcome, "schema.register[")
    assert statuses["healthcare.patient.upserted.v1-key"] is Status.FAIL
    assert statuses["healthcare.patient.upserted.v1-value"] is Status.SKIPPED
    assert registry.versions == {}
