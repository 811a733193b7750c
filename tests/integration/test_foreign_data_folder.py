"""A data folder formatted for another cluster, on the real lab (no mocks): preflight blocks naming the
host and the folder, and the infrastructure stage stops at its plan and changes nothing.

The rolled-out lab cluster is never at risk: the test runs a variant of the lab environment with one
more data folder (``PROBE_DIR``, a private config folder through EBR_CONFIG_DIR), plants another
cluster's meta.properties only there, on lab1, and removes the folder afterwards. Were the stage to go
on, it would add that folder (a second log dir) rather than touch the cluster's own data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, lab_ssh, needs_root, run_stage

pytestmark = [pytest.mark.integration, pytest.mark.lab, needs_root()]

PROBE_ENVIRONMENT = "lab-foreign-probe"
PROBE_DIR = "/var/lib/kafka/ebr-foreign-probe"
FOREIGN_CLUSTER_ID = "ForeignClusterId000000"
ADDRESSES = {"lab1": "10.77.0.11", "lab2": "10.77.0.12", "lab3": "10.77.0.13"}
# What the infrastructure stage would change first on a host: its files, its data folders, its services.
FINGERPRINT = (
    "sha256sum /etc/kafka/server.properties /etc/event-broker/services/kafka.conf; "
    "ls -A /var/lib/kafka; readlink /opt/kafka/current; /opt/event-broker/bin/ebr-service started kafka"
)


@pytest.fixture
def probe_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The lab plus PROBE_DIR as a data folder, in a private config folder (the shared tree is untouched)."""
    config = tmp_path / "config"
    (config / "environments").mkdir(parents=True)
    for item in (REPO / "config").iterdir():
        if item.name != "environments":
            (config / item.name).symlink_to(item)
    for item in (REPO / "config" / "environments").iterdir():
        (config / "environments" / item.name).symlink_to(item)
    (config / "environments" / f"{PROBE_ENVIRONMENT}.yaml").write_text(
        f"extends: lab\nname: {PROBE_ENVIRONMENT}\n"
        "description: the lab with one more data folder, for the foreign-data-folder test\n"
        f"kafka:\n  data_dirs: [/var/lib/kafka/data, {PROBE_DIR}]\n"
    )
    monkeypatch.setenv("EBR_CONFIG_DIR", str(config))
    return PROBE_ENVIRONMENT


@pytest.fixture
def foreign_folder_on_lab1(lab_hosts: dict) -> Iterator[str]:
    for address in ADDRESSES.values():
        assert lab_ssh(address, f"test ! -e {PROBE_DIR}").returncode == 0, f"{PROBE_DIR} exists on {address}"
    planted = lab_ssh(
        ADDRESSES["lab1"],
        f"mkdir {PROBE_DIR} && printf 'version=1\\ncluster.id={FOREIGN_CLUSTER_ID}\\nnode.id=1\\n' "
        f"> {PROBE_DIR}/meta.properties",
    )
    assert planted.returncode == 0, planted.stderr
    try:
        yield PROBE_DIR
    finally:
        for address in ADDRESSES.values():
            lab_ssh(address, f"rm -rf -- {PROBE_DIR}")


def fingerprints() -> dict[str, str]:
    found = {}
    for name, address in ADDRESSES.items():
        result = lab_ssh(address, FINGERPRINT)
        assert result.returncode == 0, result.stderr
        found[name] = result.stdout
    return found


def test_a_data_folder_of_another_cluster_blocks_preflight_and_the_stage_changes_nothing(
    probe_environment: str, foreign_folder_on_lab1: str
) -> None:
    before = fingerprints()

    proc, report = run_stage("preflight", {"environment": probe_environment})
    assert proc.returncode != 0 and report is not None and report["status"] == "failed"
    failed = [r for r in report["results"] if r["status"] == "fail"]
    storage_id = f"infra.storage.cluster_id[{PROBE_DIR}]"
    assert [(r["id"], r["host"]) for r in failed] == [(storage_id, "lab1")], failed
    (finding,) = failed
    assert finding["severity"] == "blocking"
    assert finding["observed"] == f"cluster.id={FOREIGN_CLUSTER_ID}"
    assert PROBE_DIR in finding["message"] and FOREIGN_CLUSTER_ID in finding["message"]
    # Every other place the change steps would take was judged on the rolled-out lab, and is ours.
    judged = {
        (r["host"], r["id"].partition("[")[0]) for r in report["results"] if r["id"].startswith("infra.")
    }
    for host in ADDRESSES:
        assert {
            (host, "infra.storage.cluster_id"),
            (host, "infra.file.managed"),
            (host, "infra.install.dir"),
            (host, "infra.install.current"),
            (host, "infra.port.owner"),
        } <= judged

    proc, report = run_stage("infrastructure", {"environment": probe_environment, "gate_settle_seconds": 5})
    assert proc.returncode != 0 and report is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    outcomes = {r["id"]: r for r in report["results"] if r["id"].startswith("task.")}
    refusals = [r for r in report["results"] if r["status"] == "fail" and r["id"] not in outcomes]
    assert [(r["id"], r["host"]) for r in refusals] == [(storage_id, "lab1")], refusals
    stopped = outcomes["task.proceed"]  # the plan's gate, before the install and configure steps
    assert stopped["status"] == "fail" and f"lab1: data folder {PROBE_DIR}" in stopped["message"]
    assert outcomes["task.configure"]["status"] == "skipped"
    assert not [r for r in report["results"] if r["status"] == "changed"]
    assert report["summary"]["changes"] == 0
    assert fingerprints() == before  # lab2 and lab3 did not get the folder the plan would have formatted
