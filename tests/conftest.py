"""Test-wide settings: Airflow points at a private SQLite home before anything imports it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_AIRFLOW_HOME = Path(os.environ.get("EBR_TEST_AIRFLOW_HOME", tempfile.mkdtemp(prefix="ebr-airflow-")))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_AIRFLOW_HOME}/airflow.db")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parents[1] / "dags"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")


import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

# Plain code under test reads its SSH and Kafka connections through the orchestrator, as in a task.
import event_broker_rollout.airflow.runtime  # noqa: E402, F401
from event_broker_devtools.lab_shell import lab_ssh  # noqa: E402  (the tests' way onto lab hosts)

REPO = Path(__file__).resolve().parents[1]
LAB_STATE = Path(os.environ.get("LAB_STATE", "/var/lib/event-broker-lab"))


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        os.geteuid() != 0, reason="the lab needs root (network namespaces, bind mounts, sshd)"
    )


def lab_up() -> None:
    """The 3-host lab up (idempotent), with its Airflow connections file written."""
    subprocess.run(
        ["bash", str(REPO / "lab" / "lab.sh"), "up", "3"], check=True, capture_output=True, timeout=180
    )
    subprocess.run(
        [sys.executable, "-m", "event_broker_devtools.lab_connections", "lab"],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def lab_hosts() -> Iterator[dict]:
    """The 3-host lab, up (idempotent), with its Airflow connections file written; returns lab.json."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    lab_up()
    for host in ("lab1", "lab2", "lab3"):
        subprocess.run(
            ["bash", str(REPO / "lab" / "lab.sh"), "heal", host], check=True, capture_output=True, timeout=60
        )
    yield json.loads((LAB_STATE / "lab.json").read_text())
    if os.environ.get("EBR_KEEP_LAB") == "1":  # a developer exploring the lab after the tests
        return
    # Leave no namespace, link or process behind (installed software stays for the next run).
    subprocess.run(
        ["bash", str(REPO / "lab" / "lab.sh"), "down"], check=False, capture_output=True, timeout=120
    )


def run_stage(
    stage: str, conf: dict | None = None, timeout: int = 900
) -> tuple[subprocess.CompletedProcess, dict | None]:
    """`make stage` as an operator runs it (the CLI it calls); returns the process and the report."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    conf = {"environment": "lab", **(conf or {})}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "event_broker_devtools.cli",
            "stage",
            "--stage",
            stage,
            "--env",
            conf["environment"],
            "--conf",
            json.dumps(conf),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        check=False,
    )
    report = None
    for line in proc.stdout.splitlines():
        if line.startswith("report: ") and line.endswith(".json"):
            report = json.loads(Path(line.removeprefix("report: ")).read_text())
    return proc, report


@pytest.fixture(scope="session")
def infrastructure_ready(lab_hosts) -> dict:
    """The lab with the cluster and registry rolled out (runs the infrastructure stage when needed)."""
    proc, report = run_stage("infrastructure", {"gate_settle_seconds": 5})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return report


@pytest.fixture(scope="session")
def security_ready(infrastructure_ready) -> dict:
    """The lab cluster secured (the security stage run, or re-run with nothing to do)."""
    proc, report = run_stage("security", {"gate_settle_seconds": 5})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return {"report": report, "output": proc.stdout + proc.stderr}


def lab_credentials() -> dict[str, str]:
    return json.loads((LAB_STATE / "secrets" / "credentials.json").read_text())


def secure_client_config(user: str) -> dict:
    return {
        "bootstrap.servers": "10.77.0.11:9094,10.77.0.12:9094,10.77.0.13:9094",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": lab_credentials()[user],
        "ssl.ca.location": str(LAB_STATE / "ca" / "ca.crt"),
    }


@pytest.fixture(scope="session")
def schemas_ready(security_ready) -> dict:
    proc, report = run_stage("schemas")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return report


@pytest.fixture(scope="session")
def integration_ready(schemas_ready) -> dict:
    proc, report = run_stage("integration")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return report


def recorded_security_phase() -> str:
    text = lab_ssh("10.77.0.11", "cat /etc/event-broker/security-phase 2>/dev/null").stdout.strip()
    return text or "plaintext"


def cluster_client_config() -> dict:
    """Admin client settings for the lab cluster as it is now: plaintext before the security stage, SASL_SSL after."""
    if recorded_security_phase() in ("plaintext",):
        return {"bootstrap.servers": "10.77.0.11:9092,10.77.0.12:9092,10.77.0.13:9092"}
    return secure_client_config("admin")


def kcat_arguments(config: dict) -> list[str]:
    arguments = ["-b", config["bootstrap.servers"]]
    for key, value in config.items():
        if key != "bootstrap.servers":
            arguments += ["-X", f"{key}={value}"]
    return arguments


@pytest.fixture(scope="session")
def airflow_api(integration_ready) -> Iterator[Any]:
    """The project's Airflow (standalone) on the rolled-out lab, as `make demo` runs it; stopped at the end."""
    from event_broker_devtools import airflow_server
    from event_broker_devtools.rollout_driver import api_for

    server = airflow_server.settings()
    started = airflow_server.start(server)
    try:
        yield api_for(server)
    finally:
        if started:
            airflow_server.stop(server)


# Tests that need the real parts (the lab, loopback servers, Airflow, the browser). On CI
# (EBR_REQUIRE_LAB=1, set by .ci/run, or CI=true) such a test that skips fails instead: a green run
# must prove the real parts ran, never hide a missing prerequisite.
REAL_PART_MARKERS = ("integration", "lab", "e2e")
REAL_PART_FOLDERS = ("integration", "e2e", "faults")


def real_parts_required() -> bool:
    return os.environ.get("EBR_REQUIRE_LAB") == "1" or os.environ.get("CI", "").lower() == "true"


def needs_real_parts(item: pytest.Item) -> bool:
    folder = Path(str(item.fspath)).relative_to(REPO / "tests").parts[0]
    return folder in REAL_PART_FOLDERS or any(item.get_closest_marker(m) for m in REAL_PART_MARKERS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and real_parts_required() and needs_real_parts(item):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where the real parts must run (EBR_REQUIRE_LAB=1 or CI=true): {reason}"
