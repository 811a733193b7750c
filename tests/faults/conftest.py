"""What every fault scenario shares: a record of its outcome, a canary that counts lost records across
the fault, a stage run that can be interrupted, and the checks that the lab is healthy again.

Each scenario fills its record (detected and how fast, recovered, messages lost); at the end of the
session the records are written to ``bench/results/faults-<timestamp>.json``, failed scenarios included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from event_broker_rollout.cluster import health
from event_broker_rollout.security.canary import Canary
from tests.conftest import REPO, lab_ssh, lab_up, run_stage, secure_client_config

# Published results by default; `make test` runs the quick scenarios with their results in test-artifacts/.
RESULTS = REPO / os.environ.get("EBR_FAULT_RESULTS_DIR", "bench/results")
LAB_SH = REPO / "lab" / "lab.sh"
SERVICE = "/opt/event-broker/bin/ebr-service"
CANARY_TOPIC = "ops.rollout.canary.v1"
QUORUM = (
    "echo now=$(date +%s%3N); /opt/kafka/current/bin/kafka-metadata-quorum.sh --bootstrap-controller "
    "10.77.0.11:9093 --command-config /etc/kafka/tls/tools.properties describe --replication"
)

_RECORDS: list[dict[str, Any]] = []
_STARTED = datetime.now(UTC)
_OUTCOME = pytest.StashKey[list[pytest.TestReport]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or report.failed:
        item.stash.setdefault(_OUTCOME, []).append(report)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _RECORDS:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"faults-{_STARTED.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(
        json.dumps(
            {
                "started": _STARTED.isoformat(),
                "finished": datetime.now(UTC).isoformat(),
                "scenarios": _RECORDS,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nfault results: {path}")


@pytest.fixture
def fault(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The scenario's record; the test fills it, the outcome is added when the test is over."""
    record: dict[str, Any] = {
        "scenario": request.node.name.removeprefix("test_"),
        "detected": False,
        "detection_seconds": None,
        "recovered": False,
        "messages": None,
    }
    yield record
    reports = request.node.stash.get(_OUTCOME, [])
    failed = [r for r in reports if r.failed]
    record["outcome"] = "failed" if failed else "passed"
    if failed:
        record["failure"] = str(failed[0].longrepr)[-1500:]
    _RECORDS.append(record)


class RunningCanary:
    """The security migration's canary (numbered records, acks=all, idempotent) run in this process."""

    def __init__(self, scenario: str) -> None:
        config = {**secure_client_config("canary"), "ssl.endpoint.identification.algorithm": "https"}
        self.canary = Canary(
            config,
            CANARY_TOPIC,
            f"canary.fault-{scenario}-{int(time.time())}",  # the canary's ACL grants groups prefixed "canary"
            Path(f"/tmp/ebr-fault-canary-{scenario}.json"),
        )
        self.thread = threading.Thread(target=self.canary.run, daemon=True)
        self.thread.start()

    def finish(self, seconds: float = 120) -> dict[str, Any]:
        """Stop producing, read back every acknowledged record (or give up), and count."""
        self.canary.stopping.set()
        self.thread.join(seconds)
        stats = self.canary.stats(final=not self.thread.is_alive())
        return {key: stats[key] for key in ("produced", "consumed", "lost", "duplicated", "delivery_errors")}


@pytest.fixture
def canary(request: pytest.FixtureRequest) -> Iterator[RunningCanary]:
    running = RunningCanary(request.node.name.removeprefix("test_")[:40])
    time.sleep(3)  # producing before the fault
    yield running
    running.canary.stopping.set()


def lab_sh(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(LAB_SH), *arguments], capture_output=True, text=True, timeout=timeout, check=True
    )


def cluster_health() -> dict[str, Any]:
    client = health.admin_client(secure_client_config("admin"))
    return {
        "brokers": health.brokers_status(client, [1, 2, 3]),
        "partitions": health.partitions_status(client, 2),
    }


def wait_until_healthy(seconds: float = 240) -> float:
    """Every broker registered, every partition in sync, every controller caught up; returns the wait."""
    started = time.monotonic()
    observed: dict[str, Any] = {}
    while time.monotonic() - started < seconds:
        observed = cluster_health()
        if observed["brokers"]["healthy"] and observed["partitions"]["healthy"]:
            quorum = health.quorum_status(lab_ssh("10.77.0.11", QUORUM).stdout, [1, 2, 3])
            if quorum["healthy"]:
                return round(time.monotonic() - started, 1)
            observed = {"quorum": quorum}
        time.sleep(2)
    raise AssertionError(f"the lab did not become healthy in {seconds}s: {observed}")


def ensure_kafka_running(address: str) -> None:
    if lab_ssh(address, f"{SERVICE} status kafka").returncode != 0:
        started = lab_ssh(address, f"{SERVICE} start kafka", timeout=240)
        assert started.returncode == 0, started.stderr


class StageRun:
    """A stage run through the CLI in the background, its output read line by line with arrival times."""

    def __init__(
        self, stage: str, conf: dict[str, Any] | None = None, connections: Path | None = None
    ) -> None:
        command = [
            sys.executable,
            "-m",
            "event_broker_devtools.cli",
            "stage",
            "--stage",
            stage,
            "--env",
            "lab",
        ]
        command += ["--conf", json.dumps({"environment": "lab", **(conf or {})})]
        if connections is not None:
            command += ["--connections", str(connections)]
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self.seen = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.seen:
                self.lines.append(line)
                self.seen.notify_all()
        with self.seen:  # the output ended: a waiter for a line that never came need not wait longer
            self.seen.notify_all()

    def wait_for(self, text: str, seconds: float) -> None:
        with self.seen:
            found = self.seen.wait_for(
                lambda: any(text in line for line in self.lines) or self.process.poll() is not None, seconds
            )
        assert found and any(text in line for line in self.lines), "".join(self.lines[-40:])

    def finish(self, seconds: float = 600) -> int:
        code = self.process.wait(seconds)
        self.reader.join(10)
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def report_path(self) -> Path:
        line = next(
            line for line in self.lines if line.startswith("report: ") and line.strip().endswith(".json")
        )
        return Path(line.removeprefix("report: ").strip())

    def report(self) -> dict[str, Any]:
        return dict(json.loads(self.report_path().read_text()))


def failed_results(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["results"] if r["status"] == "fail"]


def changed_results(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in report["results"] if r["status"] == "changed"]


PHASE_FILE = "/etc/event-broker/security-phase"


def recorded_phases() -> dict[str, str]:
    return {
        address: lab_ssh(address, f"cat {PHASE_FILE} 2>/dev/null").stdout.strip() or "plaintext"
        for address in ("10.77.0.11", "10.77.0.12", "10.77.0.13")
    }


@pytest.fixture
def plaintext_cluster(infrastructure_ready: dict[str, Any]) -> None:
    """The cluster as the infrastructure stage leaves it, before any security phase. A lab secured by an
    earlier run (kept with EBR_KEEP_LAB) is rebuilt from empty hosts: phases only move forward."""
    if set(recorded_phases().values()) == {"plaintext"}:
        return
    lab_sh("down", "--purge")
    lab_up()
    proc, _ = run_stage("infrastructure", {"gate_settle_seconds": 5})
    assert proc.returncode == 0, proc.stdout[-3000:]
