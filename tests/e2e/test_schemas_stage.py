"""The schemas stage on the secured lab, checked with Kafka's own tools and the registry's API."""

from __future__ import annotations

import json
import subprocess

import pytest

from event_broker_rollout.config.catalog import desired_topics, load_checked_catalog
from tests.conftest import LAB_STATE, lab_ssh, needs_root, run_stage

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

TOOLS = "/opt/kafka/current/bin"
CONFIG = "--bootstrap-server 10.77.0.12:9095 --command-config /etc/kafka/tls/tools.properties"
REGISTRY = "https://10.77.0.11:8443/apis/ccompat/v7"


def registry(path: str) -> object:
    out = subprocess.run(
        ["curl", "-sf", "--cacert", str(LAB_STATE / "ca" / "ca.crt"), f"{REGISTRY}{path}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


def test_every_topic_has_the_catalogs_settings(schemas_ready):
    catalog, policies = load_checked_catalog()
    for spec in desired_topics(catalog, policies):
        described = lab_ssh(
            "10.77.0.12", f"{TOOLS}/kafka-topics.sh {CONFIG} --describe --topic {spec.topic}"
        ).stdout
        header = described.splitlines()[0]
        assert f"ReplicationFactor: {spec.replication_factor}" in header, header
        assert f"PartitionCount: {spec.partitions}" in header, header
        effective = lab_ssh(
            "10.77.0.12",
            f"{TOOLS}/kafka-configs.sh {CONFIG} --describe --all --entity-type topics --entity-name {spec.topic}",
        ).stdout
        for key in (
            "min.insync.replicas",
            "cleanup.policy",
            "retention.ms",
            "unclean.leader.election.enable",
        ):
            assert f"  {key}={spec.configs[key]} " in effective, (spec.topic, key)


def test_every_subject_is_registered_with_its_compatibility(schemas_ready):
    catalog, _ = load_checked_catalog()
    subjects = set(registry("/subjects"))
    for event in catalog.events:
        for kind in ("key", "value"):
            assert f"{event.topic}-{kind}" in subjects
        level = registry(f"/config/{event.topic}-value")["compatibilityLevel"]
        assert level == (event.compatibility or catalog.defaults.compatibility)


def test_second_run_and_dry_run_change_nothing(schemas_ready):
    versions = {s: registry(f"/subjects/{s}/versions") for s in registry("/subjects")}
    for conf in ({}, {"dry_run": True}):
        proc, report = run_stage("schemas", conf)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert report["counts"]["changed"] == 0
    assert {s: registry(f"/subjects/{s}/versions") for s in registry("/subjects")} == versions
