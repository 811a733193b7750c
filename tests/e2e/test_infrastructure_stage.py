"""The infrastructure stage on the real lab: a 3-node KRaft cluster and the registry, gated, idempotent."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import REPO, cluster_client_config, kcat_arguments, lab_ssh, needs_root, run_stage

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

BOOTSTRAP = "10.77.0.11:9092,10.77.0.12:9092,10.77.0.13:9092"
HOSTS = {"lab1": "10.77.0.11", "lab2": "10.77.0.12", "lab3": "10.77.0.13"}
MANAGED = "/etc/kafka /etc/schema-registry /etc/event-broker /opt/event-broker"


def processes() -> dict[str, str]:
    """Each service's pid and kernel start time on each host: equal before and after means no restart."""
    found = {}
    for name, address in HOSTS.items():
        out = lab_ssh(
            address,
            'for s in kafka schema-registry; do p=$(/opt/event-broker/bin/ebr-service pid $s 2>/dev/null) && echo "$s $p $(cut -d" " -f22 /proc/$p/stat)"; done',
        ).stdout
        for line in out.splitlines():
            service, pid, started = line.split()
            found[f"{name}/{service}"] = f"{pid}@{started}"
    return found


def digests() -> dict[str, str]:
    return {
        name: lab_ssh(address, f"find {MANAGED} -type f 2>/dev/null | sort | xargs -r sha256sum").stdout
        for name, address in HOSTS.items()
    }


def test_cluster_is_rolled_out_and_usable(infrastructure_ready):
    config = cluster_client_config()  # plaintext on a fresh rollout, SASL_SSL once the security stage ran
    listing = subprocess.run(
        [str(REPO / "lab" / "bin" / "kcat"), *kcat_arguments(config), "-L", "-m", "10"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert re.search(r"\b3 brokers:", listing), listing
    for node, address in ((1, "10.77.0.11"), (2, "10.77.0.12"), (3, "10.77.0.13")):
        assert f"broker {node} at {address}:" in listing

    admin = AdminClient(config)
    topic = f"e2e.infra.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 3, 3, config={"min.insync.replicas": "2"})])[topic].result(30)
    try:  # the topic goes away even when a check fails (a leftover is drift to the compliance run)
        producer = Producer({**config, "acks": "all", "enable.idempotence": True})
        for i in range(50):
            producer.produce(topic, key=str(i % 5), value=f"message-{i}")
        assert producer.flush(30) == 0
        consumer = Consumer({**config, "group.id": f"e2e-{topic}", "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        received = set()
        deadline = time.monotonic() + 60
        while len(received) < 50 and time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None and message.error() is None:
                received.add(message.value().decode())
        consumer.close()
        assert len(received) == 50

        # Kafka's own tools from the installed archive, speaking TLS to the controllers with the node's certificate.
        tools = "/opt/kafka/current/bin"
        tls = "--command-config /etc/kafka/tls/tools.properties"
        broker = "10.77.0.12:9092" if "security.protocol" not in config else f"10.77.0.12:9095 {tls}"
        topics = lab_ssh(
            "10.77.0.12", f"{tools}/kafka-topics.sh --bootstrap-server {broker} --describe --topic {topic}"
        ).stdout
        assert "ReplicationFactor: 3" in topics, topics
        quorum = lab_ssh(
            "10.77.0.13",
            f"{tools}/kafka-metadata-quorum.sh --bootstrap-controller 10.77.0.13:9093 {tls} describe --status",
        ).stdout
        voters = re.search(r"CurrentVoters:\s+(\[.*\])", quorum)
        assert voters, quorum
        assert len(re.findall(r'"id":\s*\d+', voters.group(1))) == 3
    finally:
        admin.delete_topics([topic])


def test_second_run_changes_nothing_and_restarts_nothing(infrastructure_ready):
    before_processes, before_files = processes(), digests()
    proc, report = run_stage("infrastructure", {"gate_settle_seconds": 5})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert report["counts"]["changed"] == 0
    assert report["summary"]["changes"] == 0
    assert all(r["status"] in ("ok", "pass") for r in report["results"])
    assert processes() == before_processes
    assert digests() == before_files


def test_dry_run_shows_the_plan_and_changes_nothing(infrastructure_ready):
    lab_ssh("10.77.0.13", "sed -i 's/^num.partitions=3/num.partitions=2/' /etc/kafka/server.properties")
    try:
        before_processes, before_files = processes(), digests()
        proc, report = run_stage("infrastructure", {"dry_run": True})
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert processes() == before_processes
        assert digests() == before_files
        planned = {r["id"]: r for r in report["results"] if r["host"] == "lab3"}
        change = planned["plan.file[/etc/kafka/server.properties]"]
        assert (
            "-num.partitions=2" in change["details"]["diff"]
            and "+num.partitions=3" in change["details"]["diff"]
        )
        assert "plan.restart[kafka]" in planned
        assert report["summary"]["dry_run"] is True
    finally:
        lab_ssh("10.77.0.13", "sed -i 's/^num.partitions=2/num.partitions=3/' /etc/kafka/server.properties")


def test_a_broker_killed_before_the_gate_fails_the_stage_naming_it_then_a_rerun_converges(
    infrastructure_ready,
):
    """The broker dies after the stage planned (so it does not restart it): the gate must not pass."""
    command = [
        sys.executable,
        "-m",
        "event_broker_devtools.cli",
        "stage",
        "--stage",
        "infrastructure",
        "--env",
        "lab",
        "--conf",
        '{"environment": "lab", "gate_timeout_seconds": 40, "gate_settle_seconds": 12}',
    ]
    stage = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    planned = threading.Event()

    def read() -> None:
        for line in stage.stdout:
            output.append(line)
            if "starting task_id=proceed" in line:
                planned.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert planned.wait(120), "".join(output[-50:])
    lab_ssh("10.77.0.13", "kill -9 $(/opt/event-broker/bin/ebr-service pid kafka)")
    assert stage.wait(300) != 0
    reader.join(10)
    report_line = next(line for line in output if line.startswith("report: "))
    text = Path(report_line.removeprefix("report: ").strip()).read_text()
    assert "lab3 (node 3)" in text, text[-3000:]

    proc, report = run_stage("infrastructure", {"gate_settle_seconds": 5})
    assert proc.returncode == 0, proc.stdout[-3000:]
    started = [r for r in report["results"] if r["id"] == "infra.start[kafka]"]
    assert [r["host"] for r in started] == ["lab3"]
