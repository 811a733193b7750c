"""Preflight checks over recorded host outputs: a lab host (recorded from the lab, Debian 12), a RHEL 9
production broker and an Ubuntu 20.04 development host (outputs in the formats those systems print)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from event_broker_rollout.config.environment import load_environment, load_sizing_profiles
from event_broker_rollout.evidence.results import Status
from event_broker_rollout.preflight import checks
from event_broker_rollout.preflight.facts import HostFacts, java_major, parse_facts

FIXTURES = Path(__file__).parent / "fixtures" / "host_facts"


def facts(name: str) -> HostFacts:
    return parse_facts((FIXTURES / f"{name}.txt").read_text())


def by_id(results):
    return {r.id: r for r in results}


@pytest.fixture(scope="module")
def profiles():
    return load_sizing_profiles()


def test_parse_recorded_debian_lab_host():
    lab = facts("debian12_lab")
    assert (lab.os_id, lab.os_version, lab.vcpus) == ("debian", "12", 2)
    assert lab.memory_total_gb == pytest.approx(23.5, abs=0.1)
    assert lab.memory_available_gb == pytest.approx(22.5, abs=0.1)
    (disk,) = lab.disks
    assert (disk.directory, disk.mount_point, disk.source, disk.rotational) == (
        "/var/lib/kafka/data",
        "/var/lib/kafka",
        "/dev/vda",
        True,
    )
    assert disk.size_gb == pytest.approx(270.6, abs=0.1)  # decimal GB, as disks are sold
    assert lab.java_version == "17.0.15"
    assert [(item.port, item.process) for item in lab.listeners] == [(22, "sshd")]
    assert lab.forward == {"lab1": "10.77.0.11", "lab2": "10.77.0.12", "lab3": "10.77.0.13"}
    assert "10.77.0.11" in lab.interface_addresses
    assert lab.tools["iperf3"]


def test_facts_survive_the_xcom_round_trip():
    original = facts("rhel9_broker")
    assert HostFacts.from_dict(original.to_dict()) == original


@pytest.mark.parametrize(
    ("text", "major"), [("1.8.0_392", 8), ("11.0.24", 11), ("17.0.12", 17), ("21", 21), ("21-ea", 21)]
)
def test_java_major(text, major):
    assert java_major(text) == major


def test_lab_host_passes_the_lab_profile(profiles):
    lab = load_environment("lab")
    results = checks.host_checks(
        lab.host("lab1"), facts("debian12_lab"), lab, "lab", profiles["lab"], "bare_metal"
    )
    assert not [r for r in results if r.status is Status.FAIL]
    skipped = by_id(results)
    assert skipped["sw.docker"].status is Status.SKIPPED
    assert "deployment mode is bare_metal" in skipped["sw.docker"].message
    assert skipped["sw.confluent"].status is Status.SKIPPED


def test_a_nearly_full_data_disk_blocks_however_large_it_is(profiles):
    lab = load_environment("lab")
    recorded = facts("debian12_lab")
    (disk,) = recorded.disks
    full = dataclasses.replace(recorded, disks=(dataclasses.replace(disk, available_gb=8.1),))  # 3.0 %
    results = by_id(checks.host_checks(lab.host("lab1"), full, lab, "lab", profiles["lab"], "bare_metal"))
    blocked = results["hw.disk.free.minimum[/var/lib/kafka/data]"]
    assert (blocked.status, blocked.observed, blocked.expected) == (Status.FAIL, "3 % free", ">= 5 % free")
    assert "8.1 of 270.6 GB" in blocked.message
    assert results["hw.disk.size.minimum[/var/lib/kafka/data]"].status is Status.PASS  # size alone passes
    roomy = by_id(checks.host_checks(lab.host("lab1"), recorded, lab, "lab", profiles["lab"], "bare_metal"))
    assert roomy["hw.disk.free.minimum[/var/lib/kafka/data]"].observed == "30.6 % free"
    assert roomy["hw.disk.free.recommended[/var/lib/kafka/data]"].status is Status.PASS


def test_lab_host_against_development_profile_fails_on_vcpus(profiles):
    lab = load_environment("lab")
    results = by_id(
        checks.host_checks(
            lab.host("lab1"), facts("debian12_lab"), lab, "development", profiles["development"], "bare_metal"
        )
    )
    vcpus = results["hw.vcpus.minimum"]
    assert (vcpus.status, vcpus.observed, vcpus.expected) == (Status.FAIL, "2", ">= 4")
    assert results["hw.vcpus.recommended"].status is Status.WARN
    assert results["hw.memory.total.minimum"].status is Status.PASS
    assert results["hw.disk.type[/var/lib/kafka/data]"].status is Status.FAIL


def test_rhel_broker_meets_production_minimum_not_recommended(profiles):
    prod = load_environment("prod")
    host = prod.host("kbrk-1")
    results = by_id(
        checks.host_checks(
            host, facts("rhel9_broker"), prod, "production", profiles["production"], "bare_metal"
        )
    )
    for check_id in (
        "hw.memory.total.minimum",
        "hw.vcpus.minimum",
        "hw.disk.size.minimum[/data/kafka/1]",
        "hw.disk.type[/data/kafka/1]",
        "sw.os",
        "sw.java",
        "sw.confluent",
        "net.subnet",
        "net.dns.forward",
        "net.dns.reverse",
        "os.nofile",
        "os.vm.swappiness",
        "os.vm.max_map_count",
    ):
        assert results[check_id].status is Status.PASS, (check_id, results[check_id])
    assert results["hw.memory.total.recommended"].status is Status.WARN
    assert results["sw.os"].expected == "RHEL 8+"
    # The second data dir was not measured in this recording: only what was measured is reported.
    assert "hw.disk.size.minimum[/data/kafka/2]" not in results


def test_memory_tolerance_accepts_a_16gb_server_reading_15_5_gib(profiles):
    dev = load_environment("dev")
    results = by_id(
        checks.host_checks(
            dev.host("kafka-dev-1"),
            facts("ubuntu2004_dev"),
            dev,
            "development",
            profiles["development"],
            "bare_metal",
        )
    )
    assert results["hw.memory.total.minimum"].status is Status.PASS
    assert results["hw.memory.total.minimum"].observed == "15.5 GB"


def test_ubuntu_dev_host_findings(profiles):
    dev = load_environment("dev")
    results = by_id(
        checks.host_checks(
            dev.host("kafka-dev-1"),
            facts("ubuntu2004_dev"),
            dev,
            "development",
            profiles["development"],
            "bare_metal",
        )
    )
    assert results["sw.os"].status is Status.PASS  # Ubuntu 20.04 is the guide's minimum
    java = results["sw.java"]
    assert (java.status, java.observed) == (Status.FAIL, "11.0.24")  # Confluent Platform 8 needs 17
    port = results["net.port.free[9092]"]
    assert port.status is Status.FAIL and port.observed == "in use by node"
    assert results["hw.disk.size.minimum[/var/lib/kafka/data]"].status is Status.PASS  # 103.9 GB
    assert results["hw.disk.type[/var/lib/kafka/data]"].status is Status.FAIL
    # A busy host: judged on MemAvailable (2.8 GB, page cache reclaimable), never MemFree (0.4 GB);
    # still too little for the development heaps (4 GB broker + 1 GB registry, x1.5).
    available = results["hw.memory.available"]
    assert (available.status, available.observed) == (Status.FAIL, "2.8 GB available")
    forward, reverse = results["net.dns.forward"], results["net.dns.reverse"]
    assert forward.status is Status.FAIL and forward.observed == {"kafka-dev-3": "unresolved"}
    assert reverse.status is Status.FAIL and reverse.observed == {"203.0.113.23": "unresolved"}
    for tuning in ("os.nofile", "os.vm.swappiness", "os.vm.max_map_count"):
        assert results[tuning].status is Status.WARN  # advisory, never blocking


def test_java_11_is_enough_for_confluent_7():
    dev = load_environment("dev").model_copy(
        update={"distribution": load_environment("dev").distribution.model_copy(update={"version": "7.6.1"})}
    )
    assert checks.required_java(dev) == 11


def test_port_held_by_the_brokers_own_jvm_is_not_a_conflict():
    lab = load_environment("lab")
    recorded = facts("debian12_lab")
    with_broker = HostFacts.from_dict(
        {**recorded.to_dict(), "listeners": [{"address": "10.77.0.11", "port": 9092, "process": "java"}]}
    )
    results = by_id(checks.port_checks(lab.host("lab1"), with_broker, lab))
    assert results["net.port.free[9092]"].status is Status.PASS


def test_modes_docker_and_kubernetes_are_checked_only_when_chosen():
    lab = load_environment("lab")
    recorded = facts("debian12_lab")
    docker = by_id(checks.software_checks(lab.host("lab1"), recorded, lab, "docker"))
    assert docker["sw.docker"].status is Status.FAIL and docker["sw.docker"].observed == "not found"
    assert docker["sw.kubernetes"].status is Status.SKIPPED
    with_docker = HostFacts.from_dict({**recorded.to_dict(), "docker_version": "24.0.7"})
    assert (
        by_id(checks.software_checks(lab.host("lab1"), with_docker, lab, "docker"))["sw.docker"].status
        is Status.PASS
    )
    old_kube = HostFacts.from_dict({**recorded.to_dict(), "kubernetes_version": "1.20.15"})
    assert (
        by_id(checks.software_checks(lab.host("lab1"), old_kube, lab, "kubernetes"))["sw.kubernetes"].status
        is Status.FAIL
    )


def test_unsupported_os_is_blocking():
    lab = load_environment("lab")
    centos7 = HostFacts.from_dict(
        {
            **facts("debian12_lab").to_dict(),
            "os_id": "centos",
            "os_version": "7",
            "os_pretty": "CentOS Linux 7 (Core)",
        }
    )
    result = by_id(checks.software_checks(lab.host("lab1"), centos7, lab, "bare_metal"))["sw.os"]
    assert result.status is Status.FAIL


def test_server_count_and_clock():
    lab = load_environment("lab")
    profiles = load_sizing_profiles()
    counted = by_id(checks.server_count_checks(lab, "development", profiles["development"]))
    assert counted["hw.servers.minimum"].status is Status.PASS
    assert counted["hw.servers.recommended"].status is Status.WARN
    samples = [checks.ClockSample("a", 0.0, 1.0), checks.ClockSample("b", 300.0, 1.0)]
    (clock,) = checks.clock_checks(samples, 250)
    assert clock.status is Status.FAIL and clock.details == {"a": 0.0, "b": 300.0}
    (single,) = checks.clock_checks(samples[:1], 250)
    assert single.status is Status.SKIPPED


def test_a_clock_spread_within_the_measurements_uncertainty_is_inconclusive_not_a_failure():
    blurred = [checks.ClockSample("a", 0.0, 400.0), checks.ClockSample("b", 255.0, 20.0)]
    (clock,) = checks.clock_checks(blurred, 250)
    assert clock.status is Status.WARN and "inconclusive" in clock.message
    beyond = [checks.ClockSample("a", 0.0, 10.0), checks.ClockSample("b", 900.0, 10.0)]
    assert checks.clock_checks(beyond, 250)[0].status is Status.FAIL


def test_unreachable_host_is_a_blocking_finding_naming_host_and_error():
    lab = load_environment("lab")
    result = checks.unreachable(lab.host("lab2"), "lab2 (10.77.0.12): unreachable (connection timed out)")
    assert result.status is Status.FAIL and result.host == "lab2" and "timed out" in result.message


def test_what_a_change_step_would_refuse_is_a_blocking_preflight_finding(profiles):
    """Preflight judges the infrastructure plan's observation: each place a change step would take is a
    result (pass when ours or free), and what it would refuse fails, naming host, place and owner."""
    from event_broker_rollout.hosts import desired, preconditions

    lab = load_environment("lab").model_copy(update={"security": None})  # as preflight judges it
    host = lab.host("lab2")
    state = desired.desired_state(lab, host, "lab", profiles["lab"])
    occupancy = preconditions.Occupancy(
        markers={"/etc/kafka/server.properties": "unmarked"},
        listeners={9093: [preconditions.Holder(77, (77, 1), "java")]},
    )
    judged = preconditions.evaluate(
        state,
        occupancy,
        {"/var/lib/kafka/data": "OtherCluster0000000000"},
        {"kafka": None},
        lab.kafka.cluster_id,
    )
    results = by_id(checks.change_precondition_checks(host, judged))
    failed = {r.id for r in results.values() if r.status is Status.FAIL}
    assert failed == {
        "infra.storage.cluster_id[/var/lib/kafka/data]",
        "infra.file.managed[/etc/kafka/server.properties]",
        "infra.port.owner[9093]",
    }
    storage = results["infra.storage.cluster_id[/var/lib/kafka/data]"]
    assert (storage.host, storage.severity, storage.observed) == (
        "lab2",
        "blocking",
        "cluster.id=OtherCluster0000000000",
    )
    assert storage.expected == f"not formatted, or cluster.id={lab.kafka.cluster_id}"
    assert "/var/lib/kafka/data is formatted for cluster OtherCluster0000000000" in storage.message
    passed = {r.id for r in results.values() if r.status is Status.PASS}
    assert {
        "infra.port.owner[9092]",
        "infra.file.managed[/etc/kafka/kafka.env]",
        "infra.install.dir[/opt/kafka/kafka_2.13-4.1.2]",
    } <= passed


def test_preconditions_that_cannot_be_judged_are_a_warning_with_the_reason():
    host = load_environment("lab").host("lab1")
    result = checks.change_preconditions_unjudged(
        host, "installing from a package repository is not supported"
    )
    assert (result.id, result.status, result.severity) == ("infra.preconditions", Status.WARN, "advisory")
    assert "package repository" in result.message


def test_hosts_are_dealt_into_at_most_a_few_inspection_tasks():
    from event_broker_rollout.preflight import stage

    lab = load_environment("lab")
    assert stage.host_batches(lab) == [["lab1"], ["lab2"], ["lab3"]]  # one task per host, as few hosts
    hosts = [lab.hosts[0].model_copy(update={"name": f"lab{i}"}) for i in range(1, 28)]
    batches = stage.host_batches(lab.model_copy(update={"hosts": hosts}))
    assert len(batches) == stage.INSPECTION_TASKS
    assert sorted(name for batch in batches for name in batch) == sorted(h.name for h in hosts)
    assert max(map(len, batches)) - min(map(len, batches)) <= 1


# getent as glibc's answers: one line per key it resolves, in key order, exit 2 if any key failed.
FAKE_GETENT = """#!/bin/sh
shift
status=0
for key in "$@"; do
  case $key in
    alpha|10.0.0.1) echo "10.0.0.1        alpha" ;;
    beta|10.0.0.2) echo "10.0.0.2        beta beta.lab" ;;
    *) status=2 ;;
  esac
done
exit $status
"""


def _resolved_by_the_facts_script(tmp_path: Path, names: str, addresses: str) -> dict[str, dict[str, str]]:
    """The collector run here as a host runs it, its lookups answered by a stand-in for getent (a real
    lookup of an unknown name would leave the machine)."""
    from event_broker_rollout.preflight.facts import FACTS_SCRIPT, split_sections

    getent = tmp_path / "getent"
    getent.write_text(FAKE_GETENT)
    getent.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}:/usr/sbin:/usr/bin:/sbin:/bin",
        "EBR_NAMES": names,
        "EBR_ADDRESSES": addresses,
    }
    output = subprocess.run(["sh", str(FACTS_SCRIPT)], env=env, capture_output=True, text=True, check=True)
    sections = split_sections(output.stdout)
    return {
        section: dict(line.partition(" ")[::2] for line in sections[section].splitlines())
        for section in ("resolve_forward", "resolve_reverse")
    }


def test_the_facts_script_resolves_every_key_in_one_lookup_or_each_alone_when_one_fails(tmp_path):
    together = _resolved_by_the_facts_script(tmp_path, "alpha beta", "10.0.0.1 10.0.0.2")
    assert together == {
        "resolve_forward": {"alpha": "10.0.0.1", "beta": "10.0.0.2"},
        "resolve_reverse": {"10.0.0.1": "alpha", "10.0.0.2": "beta"},
    }
    alone = _resolved_by_the_facts_script(tmp_path, "alpha gamma beta", "10.0.0.9 10.0.0.2")
    assert alone == {
        "resolve_forward": {"alpha": "10.0.0.1", "gamma": "", "beta": "10.0.0.2"},
        "resolve_reverse": {"10.0.0.9": "", "10.0.0.2": "beta"},
    }


def _java_seen_by_the_facts_script(java_home: Path) -> str | None:
    from event_broker_rollout.preflight.facts import FACTS_SCRIPT

    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "EBR_JAVA_HOME": str(java_home)}
    output = subprocess.run(["sh", str(FACTS_SCRIPT)], env=env, capture_output=True, text=True, check=True)
    return parse_facts(output.stdout).java_version


def test_the_facts_script_reads_the_jdks_release_file_and_starts_java_only_without_one(tmp_path):
    java_home = tmp_path / "jdk"
    (java_home / "bin").mkdir(parents=True)
    started = tmp_path / "java-was-started"
    java = java_home / "bin" / "java"
    java.write_text(f"#!/bin/sh\ntouch {started}\necho 'openjdk version \"11.0.24\" 2024-07-16' >&2\n")
    java.chmod(0o755)
    (java_home / "release").write_text('IMPLEMENTOR="Eclipse Adoptium"\nJAVA_VERSION="21.0.5"\n')
    assert _java_seen_by_the_facts_script(java_home) == "21.0.5"
    assert not started.exists()

    (java_home / "release").unlink()
    assert _java_seen_by_the_facts_script(java_home) == "11.0.24"
    assert started.exists()
