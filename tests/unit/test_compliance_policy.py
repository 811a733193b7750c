"""The compliance policy: the shipped file, and a broken one reported with every YAML path at once."""

from __future__ import annotations

import copy

import pytest
import yaml

from event_broker_rollout import paths
from event_broker_rollout.config.base import PolicyConfigError
from event_broker_rollout.config.catalog import load_catalog, load_policies
from event_broker_rollout.config.policy import (
    CHECK_IDS,
    POLICY_FILE,
    applicable_files,
    catalog_topics,
    load_policy,
    parse_policy,
)
from event_broker_rollout.evidence.results import Severity


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def policies():
    return load_policies()


@pytest.fixture(scope="module")
def policy(catalog, policies):
    return load_policy(catalog, policies)


@pytest.fixture
def raw():
    return yaml.safe_load(paths.resolve_project_path(POLICY_FILE).read_text())


def test_every_check_has_a_hipaa_164_312_clause(policy):
    assert list(policy.checks) == list(CHECK_IDS)
    clauses = {policy.clause(check_id) for check_id in CHECK_IDS}
    assert clauses == {
        "45 CFR 164.312(a)(1) Access control",
        "45 CFR 164.312(b) Audit controls",
        "45 CFR 164.312(c)(1) Integrity",
        "45 CFR 164.312(d) Person or entity authentication",
        "45 CFR 164.312(e)(1) Transmission security",
    }
    assert policy.clause("compliance.tls.only-tls-listeners").endswith("Transmission security")
    assert policy.clause("compliance.acl.no-wildcard-principal").endswith("Access control")


def test_shipped_thresholds_and_rules(policy, catalog):
    assert (policy.certificates.warn_days, policy.certificates.fail_days) == (30, 7)
    assert policy.retention["audit"].min_days == 2192  # six years
    assert policy.retention["phi"].infinite != "allowed"
    assert policy.durability.min_replication_factor == 3 and policy.durability.min_insync_replicas == 2
    advisory = {check_id for check_id, entry in policy.checks.items() if entry.severity is Severity.ADVISORY}
    assert advisory == {"compliance.registry.authentication", "compliance.audit.recent-records"}
    topics = catalog_topics(policy, catalog)
    assert (topics.audit, topics.results) == ("ops.rollout.audit.v1", "ops.compliance.results.v1")


def test_broken_policy_reports_every_mistake_with_its_yaml_path(raw, catalog, policies):
    broken = copy.deepcopy(raw)
    broken["certificates"] = {"warn_days": 7, "fail_days": 30}  # fails before it warns
    broken["certificates_typo"] = {}
    del broken["checks"]["compliance.tls.certificates"]
    broken["checks"]["compliance.tls.bogus"] = {"clause": "transmission_security", "description": "x"}
    broken["checks"]["compliance.acl.as-declared"]["clause"] = "access-control"
    broken["checks"]["compliance.health.brokers"]["severity"] = "sometimes"
    broken["protected_classifications"] = ["phi", "top-secret"]
    del broken["retention"]["internal"]
    broken["retention"]["audit"]["max_days"] = 30  # below its minimum
    broken["retention"]["sensitive"]["infinite"] = "compacted_only"  # but only delete allowed
    broken["durability"]["min_insync_replicas"] = 3
    broken["audit_topic"]["catalog_entry"] = "rollout-trail"
    broken["host_files"][0]["max_mode"] = "600"
    with pytest.raises(PolicyConfigError) as caught:
        parse_policy(broken, "compliance.yaml", catalog, policies)
    found = {problem.path for problem in caught.value.problems}
    assert {
        "certificates.fail_days",
        "certificates_typo",
        "checks",
        "checks.compliance.tls.bogus",
        "checks.compliance.acl.as-declared.clause",
        "checks.compliance.health.brokers.severity",
        "protected_classifications[1]",
        "retention",
        "retention.audit.min_days",
        "retention.sensitive.infinite",
        "durability.min_insync_replicas",
        "audit_topic.catalog_entry",
        "host_files[0].max_mode",
    } <= found
    message = str(caught.value)
    assert message.startswith("compliance.yaml: ")
    assert "no policy for the check compliance.tls.certificates" in message
    assert "no retention rule for the classification internal" in message
    assert "certificates_typo: unknown key" in message


def test_a_policy_that_is_not_a_mapping_is_refused(catalog, policies):
    with pytest.raises(PolicyConfigError, match="expected a mapping"):
        parse_policy(["not", "a", "mapping"], "compliance.yaml", catalog, policies)


def test_host_files_follow_the_roles_and_the_registry_flavor(policy):
    kafka_only = {item.path for item in applicable_files(policy, ["controller", "broker"], "apicurio")}
    assert kafka_only == {"/etc/kafka/tls/node.pem", "/etc/kafka/server.properties"}
    apicurio = {item.path for item in applicable_files(policy, ["schema_registry"], "apicurio")}
    assert "/etc/schema-registry/application.properties" in apicurio
    assert "/etc/schema-registry/schema-registry.properties" not in apicurio
    confluent = {item.path for item in applicable_files(policy, ["schema_registry"], "confluent")}
    assert "/etc/schema-registry/schema-registry.properties" in confluent
