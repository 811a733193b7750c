"""The audit trail against the lab's real audit topic: trails signed with the lab deployment's key,
published to ``ops.rollout.audit.v1`` on the secured cluster, read back as the compliance principal, and
compared with the files. A file rewritten by someone who holds the signing key verifies on its own; only
the topic's copy shows it, and ``audit_trail verify --cluster lab`` names the record. A published trail
whose file was removed is named too.

The test's trails form a chain of their own (an environment name made for this run, in a reports folder
of its own), so the lab's real chain, on disk and on the topic, is neither extended nor judged here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from event_broker_rollout.config.environment import load_environment
from event_broker_rollout.evidence import trail as audit_trail
from event_broker_rollout.evidence import trail_entries
from event_broker_rollout.evidence.trail_entries import RunRef
from event_broker_rollout.resources import audit_topic
from tests.conftest import LAB_STATE, REPO, needs_root

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

FIXTURE_LOGS = REPO / "tests" / "unit" / "fixtures" / "airflow_logs"
FIXTURE_RUN = RunRef("audit_probe", "manual__2026-11-27T15:20:44.901633+00:00")


def verify_cli(reports: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "event_broker_devtools.trail_cli", "verify", *args, "--cluster", "lab"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "EBR_REPORTS_DIR": str(reports)},
    )


def test_a_file_that_differs_from_the_audit_topic_is_named(schemas_ready, tmp_path, monkeypatch):
    reports = tmp_path / "reports"
    monkeypatch.setenv("EBR_REPORTS_DIR", str(reports))
    lab = load_environment("lab")
    chain = f"audit-e2e-{uuid.uuid4().hex[:8]}"
    # The lab deployment's key, as its ebr_audit_signing connection holds it (make lab-up wrote both).
    key = audit_trail.signing_key_from_file(LAB_STATE / audit_trail.LAB_PRIVATE_KEY_FILE)
    runs = [RunRef("audit_e2e", f"{chain}-{number}") for number in (1, 2, 3)]
    logs = tmp_path / "logs"
    for run in runs:
        shutil.copytree(
            trail_entries.run_log_dir(FIXTURE_LOGS, FIXTURE_RUN), trail_entries.run_log_dir(logs, run)
        )
    exports = [audit_trail.export_trail([run], environment=chain, signing_key=key, logs=logs) for run in runs]
    for exported in exports:
        audit_topic.publish_trail(exported.trail, lab)

    newest = exports[-1].path
    agreed = verify_cli(reports, str(newest))
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert "audit topic ops.rollout.audit.v1 agrees: 3 of 3 trails published there" in agreed.stdout

    # Someone holding the key rewrites a record of the newest trail and signs it again.
    lines = [json.loads(line) for line in newest.read_text().splitlines()]
    lines[2]["data"]["outcome"] = "ok" if lines[2]["data"].get("outcome") != "ok" else "changed"
    previous = lines[0]["chain_start"]
    for record in lines[1:]:
        record["prev"] = previous
        record["hash"] = previous = audit_trail.record_hash(record)
    lines[0]["head"] = previous
    lines[0]["header_hash"] = audit_trail.header_hash(lines[0])
    audit_trail.sign_header(lines[0], key)
    newest.write_text("".join(audit_trail.canonical_json(line) + "\n" for line in lines))
    assert audit_trail.verify_trail(newest).intact  # the file alone cannot show it

    rewritten = verify_cli(reports, str(newest))
    assert rewritten.returncode == 1, rewritten.stdout + rewritten.stderr
    label = f"audit_e2e/{chain}-3/audit-trail.jsonl"
    assert (
        f"audit topic ops.rollout.audit.v1 disagrees at {label}: record 2 (line 3) differs"
        in rewritten.stdout
    )

    # The newest file removed: the chain verifies up to trail 2, the topic still holds trail 3.
    shutil.rmtree(newest.parent)
    removed = verify_cli(reports, "--env", chain)
    assert removed.returncode == 1, removed.stdout + removed.stderr
    assert f"disagrees at audit_e2e/{chain}-3: published" in removed.stdout
    assert "but its file is not in the chain" in removed.stdout
