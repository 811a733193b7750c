"""The compliance run on the real, rolled-out lab: everything passes, then drift made behind the project's
back (an ACL for everyone, min.insync.replicas=1, a hand-made topic, a PLAINTEXT listener on one broker)
is caught by one run, each by its own check; the drift is undone and the next run passes again."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from event_broker_rollout.cluster import health
from event_broker_rollout.compliance import stage as compliance_stage
from event_broker_rollout.config.catalog import load_catalog, load_policies
from event_broker_rollout.config.environment import Environment, load_environment
from event_broker_rollout.config.policy import CHECK_IDS, load_policy
from event_broker_rollout.evidence.results import Result, Severity, Status
from event_broker_rollout.resources.verify import plaintext_answers
from tests.conftest import lab_ssh, needs_root, run_stage, secure_client_config

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

PHI_TOPIC = "healthcare.encounter.events.v1"
RESULTS_TOPIC = "ops.compliance.results.v1"
DRIFT_HOST, DRIFT_ADDRESS = "lab2", "10.77.0.12"
SERVER_PROPERTIES = "/etc/kafka/server.properties"
KEPT = f"{SERVER_PROPERTIES}.e2e-compliance"
SERVICE = "/opt/event-broker/bin/ebr-service"
QUORUM = (
    "echo now=$(date +%s%3N); /opt/kafka/current/bin/kafka-metadata-quorum.sh --bootstrap-controller "
    "10.77.0.11:9093 --command-config /etc/kafka/tls/tools.properties describe --replication"
)


def admin() -> AdminClient:
    return AdminClient(secure_client_config("admin"))


def everyone_reads_phi() -> AclBinding:
    return AclBinding(
        ResourceType.TOPIC,
        PHI_TOPIC,
        ResourcePatternType.LITERAL,
        "User:*",
        "*",
        AclOperation.READ,
        AclPermissionType.ALLOW,
    )


def set_topic_config(client: AdminClient, key: str, value: str) -> None:
    resource = ConfigResource(
        ResourceType.TOPIC,
        PHI_TOPIC,
        incremental_configs=[ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)],
    )
    for future in client.incremental_alter_configs([resource]).values():
        future.result()


def topic_config(client: AdminClient, key: str) -> str:
    resource = ConfigResource(ResourceType.TOPIC, PHI_TOPIC)
    return client.describe_configs([resource])[resource].result()[key].value


def restart_drift_broker() -> None:
    restarted = lab_ssh(DRIFT_ADDRESS, f"{SERVICE} restart kafka", timeout=240)
    assert restarted.returncode == 0, restarted.stderr


def wait_until_healthy(seconds: float = 180) -> None:
    """Every broker registered, every partition in sync and every controller caught up."""
    client = health.admin_client(secure_client_config("admin"))
    deadline = time.monotonic() + seconds
    observed: dict = {}
    while time.monotonic() < deadline:
        brokers = health.brokers_status(client, [1, 2, 3])
        partitions = health.partitions_status(client, 2)
        if brokers["healthy"] and partitions["healthy"]:
            quorum = health.quorum_status(lab_ssh("10.77.0.11", QUORUM).stdout, [1, 2, 3])
            if quorum["healthy"]:
                return
            observed = quorum
        else:
            observed = {"brokers": brokers, "partitions": partitions}
        time.sleep(2)
    pytest.fail(f"the lab did not become healthy in {seconds}s: {observed}")


def by_id(report: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for result in report["results"]:
        found.setdefault(result["id"], []).append(result)
    return found


def failed(report: dict, check_id: str) -> list[dict]:
    return [r for r in by_id(report).get(check_id, []) if r["status"] == "fail"]


def published_records(run_id: str, since: datetime) -> int:
    """Records of this run on the compliance results topic (read from the run's start on)."""
    consumer = Consumer(
        {**secure_client_config("admin"), "group.id": "e2e-compliance-reader", "enable.auto.commit": False}
    )
    try:
        start = int(since.timestamp() * 1000)
        partitions = consumer.offsets_for_times(
            [TopicPartition(RESULTS_TOPIC, p, start) for p in range(3)], timeout=15
        )
        consumer.assign(partitions)
        found, quiet_since = 0, time.monotonic()
        while time.monotonic() - quiet_since < 5:
            message = consumer.poll(1)
            if message is None or message.error() is not None:
                continue
            quiet_since = time.monotonic()
            found += f'"run_id": "{run_id}"'.encode() in message.value()
        return found
    finally:
        consumer.close()


def report_page(proc) -> Path:
    line = next(line for line in proc.stdout.splitlines() if line.startswith("report: "))
    return Path(line.removeprefix("report: ")).with_name("report.html")


def test_after_a_rollout_every_check_passes(integration_ready):
    proc, report = run_stage("compliance", timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["status"] == "passed"
    checks = by_id(report)
    # every check of the policy ran, but those of other mechanisms: the lab's clients log in with SCRAM
    other_mechanisms = {
        "compliance.auth.client-certificates",
        "compliance.auth.token-validation",
        "compliance.auth.kerberos-tickets",
    }
    assert set(CHECK_IDS) - other_mechanisms <= set(checks)
    # Only what the policy makes advisory may warn (on the lab, whose events are synthetic: the registry
    # declares no OIDC provider).
    policy = load_policy(load_catalog(), load_policies())
    advisory = {c for c, entry in policy.checks.items() if entry.severity is Severity.ADVISORY}
    not_passed = {r["id"] for r in report["results"] if r["status"] != "pass"}
    assert not_passed <= advisory, [
        r["message"] for r in report["results"] if r["id"] in not_passed - advisory
    ]
    assert all(r["details"]["hipaa"].startswith("45 CFR 164.312(") for r in report["results"])
    published = checks["compliance.results.published"][0]
    assert published["observed"]["delivered"] == len(report["results"]) - 1
    assert (
        published_records(report["run_id"], datetime.fromisoformat(report["started_at"]))
        == len(report["results"]) - 1
    )
    page = report_page(proc).read_text()
    assert "Trend of the last runs" in page and "<svg" in page and "<h2>Checks</h2>" in page


def test_an_anonymous_registry_fails_compliance_where_patient_data_is_held(integration_ready):
    """The lab's registry answers anyone (it declares no OIDC provider). The lab says its events are
    synthetic, so that is a warning there; the same real registry, for an environment that holds
    patient data, fails the run."""
    lab = load_environment("lab")

    def graded(environment: Environment) -> Result:
        step = compliance_stage.registry(environment)
        return next(r for r in step.results if r.id == "compliance.registry.authentication")

    synthetic = graded(lab)
    assert (synthetic.status, synthetic.severity) == (Status.WARN, Severity.ADVISORY), synthetic
    holding = graded(lab.model_copy(update={"holds_patient_data": True}))
    assert (holding.status, holding.severity) == (Status.FAIL, Severity.BLOCKING), holding
    assert holding.observed == "HTTP 200 to a client without credentials"


@pytest.fixture
def drift(integration_ready) -> Iterator[str]:
    """All four drifts at once, each undone whatever happens; the lab is healthy again afterwards."""
    client = admin()
    hand_made = f"e2e.compliance.by-hand.{uuid.uuid4().hex[:8]}"
    undo = []
    try:
        grant = everyone_reads_phi()
        client.create_acls([grant])[grant].result(30)
        undo.append(lambda: [f.result(30) for f in client.delete_acls([acl_filter()]).values()])

        previous = topic_config(client, "min.insync.replicas")
        set_topic_config(client, "min.insync.replicas", "1")
        undo.append(lambda: set_topic_config(client, "min.insync.replicas", previous))

        client.create_topics([NewTopic(hand_made, 1, 3, config={"min.insync.replicas": "2"})])[
            hand_made
        ].result(30)
        undo.append(lambda: client.delete_topics([hand_made])[hand_made].result(30))

        undo.append(
            lambda: (
                lab_ssh(DRIFT_ADDRESS, f"test -f {KEPT} && mv -f {KEPT} {SERVER_PROPERTIES}"),
                restart_drift_broker(),
            )
        )
        edited = lab_ssh(
            DRIFT_ADDRESS,
            f"set -e; f={SERVER_PROPERTIES}; cp -p $f {KEPT}; "
            f"sed -i -e 's#^listeners=#listeners=CLIENT://{DRIFT_ADDRESS}:9092,#' "
            f"-e 's#^advertised.listeners=#advertised.listeners=CLIENT://{DRIFT_ADDRESS}:9092,#' $f; "
            "grep -q '^listener.security.protocol.map=.*CLIENT:PLAINTEXT' $f || "
            "sed -i 's#^listener.security.protocol.map=#listener.security.protocol.map=CLIENT:PLAINTEXT,#' $f",
        )
        assert edited.returncode == 0, edited.stderr
        restart_drift_broker()
        wait_until_healthy()
        assert plaintext_answers(DRIFT_ADDRESS, 9092) is True
        yield hand_made
    finally:
        errors = []
        for step in reversed(undo):
            try:
                step()
            except Exception as error:  # undo the rest all the same; report every failure below
                errors.append(error)
        wait_until_healthy()
        assert not errors, errors


def acl_filter() -> AclBindingFilter:
    binding = everyone_reads_phi()
    return AclBindingFilter(
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.host,
        binding.operation,
        binding.permission_type,
    )


def test_drift_behind_the_projects_back_is_caught_each_by_its_own_check(drift):
    proc, report = run_stage("compliance", timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert report["status"] == "failed"

    wildcard = failed(report, "compliance.acl.no-wildcard-principal")
    assert len(wildcard) == 1 and PHI_TOPIC in wildcard[0]["message"]

    durability = failed(report, "compliance.durability.protected-topics")
    assert [r["details"]["target"] for r in durability] == [PHI_TOPIC]
    assert "min.insync.replicas 1 < 2" in durability[0]["message"]

    undeclared = failed(report, "compliance.topics.undeclared")
    assert len(undeclared) == 1 and undeclared[0]["observed"] == [drift]

    # The no-grants principal is granted READ by the User:* ACL, on that topic only.
    probed = failed(report, "compliance.authz.no-grants-refused")
    assert [r["details"]["target"] for r in probed] == [f"ebr-probe on {PHI_TOPIC}"]

    listeners = failed(report, "compliance.tls.only-tls-listeners")
    assert [r["host"] for r in listeners] == [DRIFT_HOST]
    assert "CLIENT:9092 (PLAINTEXT)" in listeners[0]["message"]
    plaintext = failed(report, "compliance.tls.plaintext-refused")
    assert [r["host"] for r in plaintext] == [DRIFT_HOST]

    # Nothing else broke: the failures are the drifts and the checks that see them from another side.
    assert set(report["summary"]["failed_checks"]) <= {
        "compliance.acl.no-wildcard-principal",
        "compliance.acl.known-principals",
        "compliance.acl.as-declared",
        "compliance.authz.no-grants-refused",
        "compliance.durability.protected-topics",
        "compliance.topics.as-catalog",
        "compliance.topics.undeclared",
        "compliance.tls.only-tls-listeners",
        "compliance.tls.plaintext-refused",
    }
    # A failed run still publishes and reports every finding.
    assert by_id(report)["compliance.results.published"][0]["status"] == "pass"


def test_once_the_drift_is_undone_the_next_run_passes(integration_ready):
    proc, report = run_stage("compliance", timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert not [r for r in report["results"] if r["status"] == "fail"]
    assert plaintext_answers(DRIFT_ADDRESS, 9092) is None  # the listener is gone again
