from __future__ import annotations

import json

from event_broker_rollout.catalog import load_catalog, load_policies
from event_broker_rollout.environment import load_environment
from event_broker_rollout.evidence import Status
from event_broker_rollout.preflight import governance, network


def test_connect_output_round_trip():
    command = network.connect_command([("10.77.0.12", 9092), ("10.77.0.13", 9093)])
    assert "/dev/tcp/10.77.0.12/9092" in command and "timeout 2" in command
    parsed = network.parse_connect_output("10.77.0.12 9092 ok\n10.77.0.13 9093 fail\nnoise\n")
    assert parsed == {("10.77.0.12", 9092): True, ("10.77.0.13", 9093): False}


def test_probe_command_waits_until_every_port_listens():
    command = network.start_probe_command("10.77.0.11", [9092, 9093])
    assert command.count("setsid python3") == 2
    assert "sport = :9092" in command and "sport = :9093" in command


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
