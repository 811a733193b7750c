"""The preflight stage against the real lab over SSH (no mocks): `make stage STAGE=preflight`."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import REPO, needs_root, run_stage

pytestmark = [pytest.mark.integration, pytest.mark.lab, needs_root()]

STAGE_BUDGET_SECONDS = 120  # the DAG's own timeouts bound a cut host to seconds; this is the outer bound


def results_of(report, host=None):
    return [r for r in report["results"] if host is None or r["host"] == host]


def test_preflight_passes_on_the_lab(lab_hosts):
    proc, report = run_stage("preflight")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["status"] == "passed"
    for host in ("lab1", "lab2", "lab3"):
        ids = {r["id"] for r in results_of(report, host)}
        assert {
            "host.reachable",
            "hw.vcpus.minimum",
            "sw.java",
            "net.port.free[9092]",
            "net.port.reachable[9092]",
            "net.dns.forward",
        } <= ids
    cluster = {r["id"]: r for r in results_of(report) if r["host"] is None}
    assert cluster["hw.servers.minimum"]["status"] == "pass"
    throughput = [r for r in report["results"] if r["id"].startswith("net.throughput[")]
    assert len(throughput) == 3 and all(r["status"] == "pass" for r in throughput)


def test_development_profile_fails_on_vcpus_with_complete_results(lab_hosts):
    proc, report = run_stage("preflight", {"sizing_profile": "development"})
    assert proc.returncode != 0
    assert report["status"] == "failed"
    for host in ("lab1", "lab2", "lab3"):
        vcpus = next(r for r in results_of(report, host) if r["id"] == "hw.vcpus.minimum")
        assert (vcpus["status"], vcpus["observed"], vcpus["expected"]) == ("fail", "2", ">= 4")
        assert len(results_of(report, host)) >= 25  # every other check still ran
    servers = {r["id"]: r["status"] for r in report["results"] if r["id"].startswith("hw.servers")}
    assert servers == {"hw.servers.minimum": "pass", "hw.servers.recommended": "warn"}


def test_a_cut_host_is_reported_unreachable_and_the_others_complete(lab_hosts):
    subprocess.run(["bash", str(REPO / "lab" / "lab.sh"), "cut", "lab2"], check=True, capture_output=True)
    try:
        started = time.monotonic()
        proc, report = run_stage("preflight")
        elapsed = time.monotonic() - started
    finally:
        subprocess.run(
            ["bash", str(REPO / "lab" / "lab.sh"), "heal", "lab2"], check=True, capture_output=True
        )
    assert proc.returncode != 0
    assert elapsed < STAGE_BUDGET_SECONDS
    (unreachable,) = [r for r in results_of(report, "lab2") if r["status"] == "fail"]
    assert unreachable["id"] == "host.reachable" and "unreachable" in unreachable["message"]
    failed = [r for r in report["results"] if r["status"] == "fail"]
    assert failed == [unreachable], failed
    for host in ("lab1", "lab3"):
        assert len(results_of(report, host)) >= 25
