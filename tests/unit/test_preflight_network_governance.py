from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

from event_broker_rollout.config.catalog import load_catalog, load_policies
from event_broker_rollout.config.environment import load_environment
from event_broker_rollout.evidence.results import Status
from event_broker_rollout.preflight import governance, network


def test_connect_command_reports_each_loopback_port():
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen(4)
        closed.bind(("127.0.0.1", 0))  # bound, never listening: a connect is refused
        open_port, closed_port = listening.getsockname()[1], closed.getsockname()[1]
        command = network.connect_command([("127.0.0.1", open_port), ("127.0.0.1", closed_port)])
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert network.parse_connect_output(output) == {
        ("127.0.0.1", open_port): True,
        ("127.0.0.1", closed_port): False,
    }
    assert network.parse_connect_output("noise\n") == {}


def test_probe_command_returns_once_every_port_listens():
    ports = []
    for _ in range(2):
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            ports.append(free.getsockname()[1])
    output = subprocess.run(
        network.start_probe_command("127.0.0.1", ports),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    pids = [int(pid) for pid in output.split()]
    try:
        assert len(pids) == 1  # one listener for every port
        for port in ports:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        # the connect command, as a source host runs it: every target at once, answered in order
        with socket.socket() as gone:
            gone.bind(("127.0.0.1", 0))
            closed = gone.getsockname()[1]
        targets = [("127.0.0.1", ports[0]), ("127.0.0.1", closed), ("127.0.0.1", ports[1])]
        answered = subprocess.run(
            network.connect_command(targets), capture_output=True, text=True, check=True, timeout=30
        ).stdout
        assert answered.splitlines() == [
            f"127.0.0.1 {ports[0]} ok",
            f"127.0.0.1 {closed} fail",
            f"127.0.0.1 {ports[1]} ok",
        ]
        assert network.parse_connect_output(answered) == {
            ("127.0.0.1", ports[0]): True,
            ("127.0.0.1", closed): False,
            ("127.0.0.1", ports[1]): True,
        }
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)


def test_reachability_names_the_sources_that_failed():
    lab = load_environment("lab")
    matrix = [
        network.Reachability("lab2", "lab1", 9092, True),
        network.Reachability("lab3", "lab1", 9092, False),
        network.Reachability("lab2", "lab1", 9093, True),
        network.Reachability("lab3", "lab1", 9093, True),
        network.Reachability("lab2", "lab1", 8081, True),
        network.Reachability("lab3", "lab1", 8081, True),
    ]
    results = {(r.id, r.host): r for r in network.reachability_results(lab, matrix, cut_off=["lab2", "lab3"])}
    assert results[("net.port.reachable[9092]", "lab1")].status is Status.FAIL
    assert results[("net.port.reachable[9092]", "lab1")].observed == "refused or timed out from lab3"
    assert results[("net.port.reachable[9093]", "lab1")].status is Status.PASS
    assert {host for _, host in results} == {"lab1"}  # cut-off hosts are reported unreachable elsewhere


def test_broker_ring_covers_each_broker_once_each_way():
    lab = load_environment("lab")
    ring = network.broker_ring(lab.brokers)
    assert [(a.name, b.name) for a, b in ring] == [("lab1", "lab2"), ("lab2", "lab3"), ("lab3", "lab1")]
    assert len(network.broker_ring(lab.brokers[:2])) == 1
    assert network.broker_ring(lab.brokers[:1]) == []


def test_iperf_json_parsing():
    sample = {"end": {"sum_received": {"bits_per_second": 9.4e9}, "sum_sent": {"bits_per_second": 9.5e9}}}
    assert network.parse_iperf_gbps(json.dumps(sample)) == 9.4
    try:
        network.parse_iperf_gbps(json.dumps({"error": "unable to connect to server"}))
    except ValueError as error:
        assert "unable to connect" in str(error)
    else:
        raise AssertionError("an iperf3 error must not read as a measurement")


def test_every_catalog_topic_has_a_known_classification():
    results = governance.classification_checks(load_catalog(), load_policies())
    assert results and all(r.status is Status.PASS for r in results)
    ids = {r.id for r in results}
    assert "data.classification[healthcare.consent.changed.v1.dlq]" in ids
    assert "data.policy[phi]" in ids


def test_unknown_classification_is_blocking():
    catalog = load_catalog()
    broken = catalog.model_copy(
        update={"events": [catalog.events[0].model_copy(update={"classification": "secret-ish"})]}
    )
    results = governance.classification_checks(broken, load_policies())
    failed = [r for r in results if r.status is Status.FAIL]
    assert {r.id for r in failed} == {
        "data.classification[healthcare.patient.upserted.v1]",
        "data.classification[healthcare.patient.upserted.v1.dlq]",
    }


def test_knowledge_acknowledgements_are_recorded_as_advisory():
    results = {r.id: r for r in governance.knowledge_checks(["linux_administration"])}
    assert results["knowledge.linux_administration"].status is Status.PASS
    assert results["knowledge.healthcare_data_formats"].status is Status.WARN
    assert len(results) == 4


def test_a_throughput_sample_is_half_a_second_at_the_environments_bar():
    from event_broker_rollout.preflight.network import sample_bytes

    assert sample_bytes(10) == 625_000_000  # the guide's production bar
    assert sample_bytes(1) == 62_500_000  # the lab's
