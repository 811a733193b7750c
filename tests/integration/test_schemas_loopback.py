"""Stage 4 against real services on loopback: a single-node Kafka (KRaft, combined) and Apicurio Registry
from the lab archives, started in a temp dir on 127.0.0.1 only (as lab/artifacts/verify.sh does) and
stopped at teardown. No stand-ins: every check reads the broker or the registry, and the topic checks
are repeated with Kafka's own kafka-topics.sh / kafka-configs.sh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from confluent_kafka.schema_registry import SchemaRegistryClient

from event_broker_rollout import paths
from event_broker_rollout.cluster.clients import flavor_api_url
from event_broker_rollout.config.catalog import desired_topics, load_avro_schema, load_checked_catalog
from event_broker_rollout.evidence.results import Status
from event_broker_rollout.schemas import load_subject_schemas, reconcile

pytestmark = pytest.mark.integration

KAFKA_TGZ = paths.ARTIFACTS_DIR / "kafka_2.13-4.1.2.tgz"
APICURIO_TGZ = paths.ARTIFACTS_DIR / "apicurio-registry-3.0.9.tgz"
HOST = "127.0.0.1"
# A single broker holds one replica: the catalog's RF 3 / min ISR 2 are overridden, not edited.
SINGLE_NODE = {"replication_factor": 1, "min_insync_replicas": 1}


@dataclass(frozen=True)
class Services:
    bootstrap: str
    registry_url: str
    kafka_home: Path
    pids: tuple[int, ...]

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def registry(self) -> SchemaRegistryClient:
        # A new client per run, as separate DAG runs have: nothing answered from a client cache.
        return SchemaRegistryClient({"url": self.registry_url})

    def kafka_tool(self, tool: str, *args: str) -> str:
        proc = subprocess.run(
            [str(self.kafka_home / "bin" / tool), "--bootstrap-server", self.bootstrap, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return proc.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _extract(archive: Path, target: Path) -> Path:
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        tar.extractall(target, filter="tar")
    return target / top


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def _wait(what: str, seconds: float, proc: subprocess.Popen, log: Path, ready) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if ready():
                return
        except Exception:  # not up yet: refused connections, timeouts
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} not ready after {seconds}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    if shutil.which("java") is None:
        pytest.skip("no java on PATH: Kafka 4.1 and Apicurio 3.0.9 need Java 17")
    missing = [path.name for path in (KAFKA_TGZ, APICURIO_TGZ) if not path.is_file()]
    if missing:
        pytest.skip(f"lab archives missing in {paths.ARTIFACTS_DIR}: {', '.join(missing)} (make artifacts)")
    tmp = tmp_path_factory.mktemp("schemas-loopback")
    kafka_home = _extract(KAFKA_TGZ, tmp)
    registry_home = _extract(APICURIO_TGZ, tmp)
    kafka_port, controller_port, registry_port = _free_port(), _free_port(), _free_port()
    bootstrap = f"{HOST}:{kafka_port}"
    properties = tmp / "server.properties"
    properties.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers={HOST}:{controller_port}",
                f"listeners=PLAINTEXT://{HOST}:{kafka_port},CONTROLLER://{HOST}:{controller_port}",
                f"advertised.listeners=PLAINTEXT://{HOST}:{kafka_port},CONTROLLER://{HOST}:{controller_port}",
                "inter.broker.listener.name=PLAINTEXT",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
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
    cluster_id = subprocess.run(
        [storage, "random-uuid"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(
        [storage, "format", "-t", cluster_id, "-c", str(properties), "--standalone"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    (tmp / "registry-data").mkdir()
    kafka_log, registry_log = tmp / "kafka.out", tmp / "registry.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REGISTRY_"))}
    started: list[subprocess.Popen] = []
    try:
        with kafka_log.open("w") as out:
            started.append(
                subprocess.Popen(
                    [str(kafka_home / "bin" / "kafka-server-start.sh"), str(properties)],
                    env={**env, "LOG_DIR": str(tmp / "kafka-logs"), "KAFKA_HEAP_OPTS": "-Xms256m -Xmx512m"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        with registry_log.open("w") as out:
            started.append(
                subprocess.Popen(
                    [str(registry_home / "bin" / "apicurio-registry-start.sh")],
                    env={
                        **env,
                        "REGISTRY_HTTP_HOST": HOST,
                        "REGISTRY_HTTP_PORT": str(registry_port),
                        "REGISTRY_DATA_DIR": str(tmp / "registry-data"),
                    },
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        admin = AdminClient({"bootstrap.servers": bootstrap})
        _wait("Kafka", 90, started[0], kafka_log, lambda: admin.list_topics(timeout=2).brokers)

        def registry_ready() -> bool:
            with urllib.request.urlopen(f"http://{HOST}:{registry_port}/health/ready", timeout=2) as answer:
                return answer.status == 200

        _wait("Apicurio", 120, started[1], registry_log, registry_ready)
        yield Services(
            bootstrap=bootstrap,
            registry_url=flavor_api_url("apicurio", f"http://{HOST}:{registry_port}"),
            kafka_home=kafka_home,
            pids=tuple(proc.pid for proc in started),
        )
    finally:
        for proc in reversed(started):
            _stop(proc)


@pytest.fixture(scope="module")
def catalog_and_policies():
    return load_checked_catalog()


def _run(services, catalog, policies, **kwargs):
    return reconcile(
        catalog, policies, admin=services.admin(), registry=services.registry(), **SINGLE_NODE, **kwargs
    )


def _versions(services, catalog) -> dict[str, list[int]]:
    client = services.registry()
    return {item.subject: client.get_versions(item.subject) for item in load_subject_schemas(catalog)}


def _with_schema(catalog, event_name, tmp_path, change):
    """The catalog with one event's .avsc replaced by a changed copy (``change`` edits the data record)."""
    event = catalog.event(event_name)
    schema = load_avro_schema(event.schema_file)
    data = next(item for item in schema["fields"] if item["name"] == "data")["type"]
    change(data["fields"])
    path = tmp_path / Path(event.schema_file).name
    path.write_text(json.dumps(schema, indent=2))
    events = [
        e.model_copy(update={"schema_file": str(path)}) if e.name == event_name else e for e in catalog.events
    ]
    return catalog.model_copy(update={"events": events})


def _topic_describe(services) -> dict[str, dict[str, str]]:
    """kafka-topics.sh --describe: topic -> PartitionCount, ReplicationFactor and the topic's configs."""
    described = {}
    for line in services.kafka_tool("kafka-topics.sh", "--describe").splitlines():
        match = re.match(
            r"Topic: (\S+)\s+TopicId: \S+\s+PartitionCount: (\d+)\s+ReplicationFactor: (\d+)\s+Configs: ?(\S*)",
            line,
        )
        if match:
            topic, partitions, replication, configs = match.groups()
            described[topic] = {"partitions": partitions, "replication": replication}
            described[topic].update(dict(item.split("=", 1) for item in configs.split(",") if "=" in item))
    return described


def _configs_describe(services, topic: str | None = None) -> dict[str, dict[str, str]]:
    """kafka-configs.sh --describe: topic -> its own (dynamic) configs; every topic when none is named."""
    args = ["--describe", "--entity-type", "topics"] + (["--entity-name", topic] if topic else [])
    configs: dict[str, dict[str, str]] = {}
    current = None
    for line in services.kafka_tool("kafka-configs.sh", *args).splitlines():
        header = re.match(r"Dynamic configs for topic (\S+) are:", line)
        if header:
            current = configs.setdefault(header.group(1), {})
            continue
        entry = re.match(r"^\s+([a-z.]+)=(\S*) sensitive=", line)
        if entry and current is not None:
            current[entry.group(1)] = entry.group(2)
    return configs


def _alter_behind_our_back(services, topic: str, configs: str) -> None:
    services.kafka_tool(
        "kafka-configs.sh",
        "--alter",
        "--entity-type",
        "topics",
        "--entity-name",
        topic,
        "--add-config",
        configs,
    )


def test_services_listen_on_loopback_only(services):
    if shutil.which("ss") is None:
        pytest.skip("ss not installed")
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    for pid in services.pids:
        addresses = [line.split()[3] for line in listening.splitlines() if f"pid={pid}," in line]
        assert addresses, f"pid {pid} listens on nothing"
        assert all(re.sub(r"^\[::ffff:(.*)\]", r"\1", a).startswith(f"{HOST}:") for a in addresses), addresses


def test_dry_run_then_first_reconcile_creates_every_topic_and_registers_every_subject(
    services, catalog_and_policies
):
    catalog, policies = catalog_and_policies
    dry = _run(services, catalog, policies, dry_run=True)
    assert {r.status for r in dry.results} == {Status.WARN}
    assert not set(services.admin().list_topics(timeout=10).topics) & {t for t, _ in catalog.topics()}
    assert services.registry().get_subjects() == []

    outcome = _run(services, catalog, policies)
    failed = [r for r in outcome.results if r.status in (Status.FAIL, Status.WARN)]
    assert not failed, failed
    specs = {spec.topic: spec for spec in desired_topics(catalog, policies, **SINGLE_NODE)}
    assert {r.id for r in outcome.results if r.status is Status.CHANGED} >= {
        f"topic.create[{t}]" for t in specs
    }
    assert len(outcome.schemas.registered) == 12
    assert outcome.schemas.metadata == "ignored by the registry"  # Apicurio 3.0.9 drops schema metadata

    # The admin client's view ...
    admin = services.admin()
    metadata = admin.list_topics(timeout=10)
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in specs])
    for resource, future in described.items():
        spec = specs[resource.name]
        entries = future.result()
        assert len(metadata.topics[resource.name].partitions) == spec.partitions
        assert {key: entries[key].value for key in spec.configs} == spec.configs
    # ... and Kafka's own tools.
    tool_view = _topic_describe(services)
    tool_configs = _configs_describe(services)
    for topic, spec in specs.items():
        assert tool_configs[topic] == spec.configs
        assert tool_view[topic]["partitions"] == str(spec.partitions)
        assert tool_view[topic]["replication"] == "1"
        assert {key: tool_view[topic][key] for key in spec.configs} == spec.configs
    # The registry: one version per subject, the declared compatibility level.
    client = services.registry()
    for item in load_subject_schemas(catalog):
        assert client.get_versions(item.subject) == [1]
        assert client.get_compatibility(item.subject) == item.compatibility
        assert client.get_latest_version(item.subject).schema.schema_str == item.schema_str


def test_second_reconcile_changes_nothing(services, catalog_and_policies):
    catalog, policies = catalog_and_policies
    before = _versions(services, catalog)
    outcome = _run(services, catalog, policies)
    assert {r.status for r in outcome.results} == {Status.OK}
    assert outcome.schemas.registered == []
    assert _versions(services, catalog) == before


def test_removing_a_required_field_is_refused_and_nothing_is_registered(
    services, catalog_and_policies, tmp_path
):
    catalog, policies = catalog_and_policies
    before = _versions(services, catalog)
    broken = _with_schema(
        catalog,
        "observation-recorded",
        tmp_path,
        lambda fields: fields.remove(next(f for f in fields if f["name"] == "status")),
    )
    # In the same run, a change that alone would be accepted.
    both = _with_schema(
        broken,
        "patient-upserted",
        tmp_path,
        lambda fields: fields.append(
            {"name": "deceasedBoolean", "type": ["null", "boolean"], "default": None}
        ),
    )
    outcome = _run(services, both, policies)
    results = {r.id: r for r in outcome.results}
    refused = results["schema.register[healthcare.observation.recorded.v1-value]"]
    assert refused.status is Status.FAIL
    assert "healthcare.observation.recorded.v1-value: refused" in refused.message
    assert "FULL_TRANSITIVE" in refused.message and "removed field data.status" in refused.message
    assert results["schema.register[healthcare.patient.upserted.v1-value]"].status is Status.SKIPPED
    assert outcome.schemas.registered == []
    assert _versions(services, catalog) == before


def test_adding_an_optional_field_registers_exactly_one_version(services, catalog_and_policies, tmp_path):
    catalog, policies = catalog_and_policies
    before = _versions(services, catalog)
    widened = _with_schema(
        catalog,
        "observation-recorded",
        tmp_path,
        lambda fields: fields.append(
            {
                "name": "interpretation",
                "type": {"type": "array", "items": "org.cmm.healthcare.v1.fhir.CodeableConcept"},
                "default": [],
            }
        ),
    )
    outcome = _run(services, widened, policies)
    changed = [r.id for r in outcome.results if r.status is Status.CHANGED]
    assert changed == ["schema.register[healthcare.observation.recorded.v1-value]"]
    after = _versions(services, catalog)
    assert after == {**before, "healthcare.observation.recorded.v1-value": [1, 2]}
    again = _run(services, widened, policies)
    assert {r.status for r in again.results} == {Status.OK}
    assert _versions(services, catalog) == after
    # Back to the older schema: found as version 1, not registered again, flagged as not the latest.
    rolled_back = _run(services, catalog, policies)
    result = next(
        r for r in rolled_back.results if r.id == "schema.register[healthcare.observation.recorded.v1-value]"
    )
    assert result.status is Status.WARN and "latest version is 2" in result.message
    assert _versions(services, catalog) == after


def test_drifted_configs_are_corrected_and_unsafe_drift_is_reported(services, catalog_and_policies):
    catalog, policies = catalog_and_policies
    topic = "ops.data-quality.results.v1"
    spec = next(s for s in desired_topics(catalog, policies, **SINGLE_NODE) if s.topic == topic)
    _alter_behind_our_back(
        services, topic, "retention.ms=1000,min.insync.replicas=2,unclean.leader.election.enable=true"
    )
    assert _configs_describe(services, topic)[topic]["retention.ms"] == "1000"
    outcome = _run(services, catalog, policies)
    result = next(r for r in outcome.results if r.id == f"topic.config[{topic}]")
    assert result.status is Status.CHANGED and "drift corrected" in result.message
    assert _configs_describe(services, topic)[topic] == spec.configs
    topic_results = [r for r in outcome.results if r.id.startswith("topic.")]
    assert [r.id for r in topic_results if r.status is not Status.OK] == [f"topic.config[{topic}]"]

    # Switching the cleanup policy of a live topic is not undone automatically: reported, left alone.
    audit = "ops.rollout.audit.v1"
    _alter_behind_our_back(services, audit, "cleanup.policy=compact")
    outcome = _run(services, catalog, policies)
    result = next(r for r in outcome.results if r.id == f"topic.config[{audit}]")
    assert result.status is Status.FAIL and "cleanup.policy is compact" in result.message
    assert _configs_describe(services, audit)[audit]["cleanup.policy"] == "compact"
    _alter_behind_our_back(services, audit, "cleanup.policy=delete")


def test_partitions_grow_but_are_never_shrunk(services, catalog_and_policies):
    catalog, policies = catalog_and_policies
    ops = list(catalog.operational_topics)
    grow = next(i for i, item in enumerate(ops) if item.topic == "ops.data-quality.results.v1")
    shrink = next(i for i, item in enumerate(ops) if item.topic == "ops.compliance.results.v1")
    ops[grow] = ops[grow].model_copy(update={"partitions": 5})
    ops[shrink] = ops[shrink].model_copy(update={"partitions": 2})
    changed = catalog.model_copy(update={"operational_topics": ops})
    outcome = _run(services, changed, policies)
    results = {r.id: r for r in outcome.results}
    grown = results["topic.partitions[ops.data-quality.results.v1]"]
    assert grown.status is Status.CHANGED and "grown 3 -> 5" in grown.message
    kept = results["topic.partitions[ops.compliance.results.v1]"]
    assert kept.status is Status.WARN and "more than the 2 declared" in kept.message
    tool_view = _topic_describe(services)
    assert tool_view["ops.data-quality.results.v1"]["partitions"] == "5"
    assert tool_view["ops.compliance.results.v1"]["partitions"] == "3"
    again = [r for r in _run(services, changed, policies).results if r.id.startswith("topic.")]
    assert again and all(
        r.status is Status.OK or r.id == "topic.partitions[ops.compliance.results.v1]" for r in again
    )


def test_replication_differences_are_reported_not_applied(services, catalog_and_policies):
    catalog, policies = catalog_and_policies
    # The catalog's own RF 3 against the single broker: every topic reports it, nothing is changed.
    outcome = reconcile(
        catalog, policies, admin=services.admin(), registry=services.registry(), min_insync_replicas=1
    )
    replication = [r for r in outcome.results if r.id.startswith("topic.replication[")]
    assert replication and all(
        r.status is Status.FAIL and "not changed here" in r.message for r in replication
    )
    assert {v["replication"] for v in _topic_describe(services).values()} == {"1"}
