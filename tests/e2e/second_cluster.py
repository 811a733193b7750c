"""A second lab cluster beside the main one, rolled out by every stage as operators run them, for the
e2e tests of another client-authentication mechanism; thrown away after its module."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from event_broker_devtools.lab_shell import discard_cluster
from tests.conftest import REPO, run_stage

STAGES = ("preflight", "infrastructure", "security", "schemas", "integration", "compliance")
GATED = ("infrastructure", "security")  # the stages with health gates: a short settle keeps the suite fast
PYTHON = str(REPO / ".venv" / "bin" / "python")


def devtool(module: str, argument: str, check: bool = True) -> None:
    subprocess.run(
        [PYTHON, "-m", f"event_broker_devtools.{module}", argument],
        check=check,
        capture_output=True,
        cwd=REPO,
        timeout=300,
    )


def lab_with_provider(lab_size: int) -> None:
    """Lab hosts 1..``lab_size`` up, their Airflow connections written, the OIDC provider up."""
    subprocess.run(
        ["bash", str(REPO / "lab" / "lab.sh"), "up", str(lab_size)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    devtool("lab_connections", "lab")
    devtool("lab_idp", "up")


@contextlib.contextmanager
def rolled_out(environment: str, hosts: tuple[str, ...]) -> Iterator[dict[str, dict]]:
    """Every stage run onto ``environment`` in order, each report by stage. After: its services killed
    (the cluster is thrown away, and its JVMs would only take CPU from the tests after it) and the
    provider stopped."""
    reports: dict[str, dict] = {}
    try:
        for stage in STAGES:
            conf: dict = {"environment": environment}
            if stage in GATED:
                conf["gate_settle_seconds"] = 5
            proc, report = run_stage(stage, conf)
            assert proc.returncode == 0, f"{stage}: " + proc.stdout[-4000:] + proc.stderr[-2000:]
            assert report is not None, stage
            reports[stage] = report
        yield reports
    finally:
        discard_cluster(hosts, registry_host=hosts[0])
        devtool("lab_idp", "down", check=False)


def results_by_id(report: dict) -> dict[str, dict]:
    return {result["id"]: result for result in report["results"]}
