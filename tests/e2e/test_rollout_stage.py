"""The rollout as operators run it: the controller DAG on the project's Airflow (standalone, scheduler,
triggerer), triggered through the REST API, onto the rolled-out lab.

Change control is exercised on `lab-change-controlled` (the lab under a change ticket and an approval):
`admin` triggers, and `approver1` (a second Airflow login, role `user`) is the approver it needs.
"""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import struct
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from event_broker_devtools import airflow_server
from event_broker_rollout.airflow.rest import AirflowApi, AirflowApiError
from event_broker_rollout.evidence.results import report_dir
from event_broker_rollout.evidence.trail import verify_trail
from tests.conftest import LAB_STATE, REPO, lab_credentials, needs_root, secure_client_config

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

CONTROLLER = "event_broker_rollout"
GATED = "lab-change-controlled"
DRIFT_TOPIC = "healthcare.consent.changed.v1"


def rollout_report(run_id: str) -> dict:
    return json.loads((report_dir(CONTROLLER, run_id) / "report.json").read_text())


def results_by_id(report: dict) -> dict[str, dict]:
    return {result["id"]: result for result in report["results"]}


def task_states(api, run_id: str) -> dict[str, str | None]:
    return {ti["task_id"]: ti.get("state") for ti in api.task_instances(CONTROLLER, run_id)}


def wait_for_task_state(api, run_id: str, task_id: str, state: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = task_states(api, run_id)
        if states.get(task_id) == state:
            return
        assert api.dag_run(CONTROLLER, run_id)["state"] not in ("success", "failed"), states
        time.sleep(3)
    raise AssertionError(f"{task_id} never reached {state}: {task_states(api, run_id)}")


def wait_until_asked_again(api, run_id: str, timeout: float = 300) -> dict:
    """After an answer that did not count: the approval task waits again, its request unanswered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if task_states(api, run_id).get("approval") == "awaiting_input":
            [request] = api.hitl_details(CONTROLLER, run_id)
            if not request["response_received"]:
                return request
        assert api.dag_run(CONTROLLER, run_id)["state"] == "running", task_states(api, run_id)
        time.sleep(3)
    raise AssertionError(f"the approval was not asked again: {task_states(api, run_id)}")


@pytest.fixture
def approver_api(airflow_api):
    """The second login: an approver of lab-change-controlled who did not trigger the rollout."""
    server = airflow_server.settings()
    approver = airflow_server.APPROVER
    return AirflowApi(server.url, approver, airflow_server.password(server, approver))


def trail_records(run_id: str) -> list[dict]:
    trail = report_dir(CONTROLLER, run_id) / "audit-trail.jsonl"
    return [json.loads(line) for line in trail.read_text().splitlines()[1:]]


def stage_run_exists(api, stage: str, run_id: str) -> bool:
    try:
        api.dag_run(f"event_broker_{stage}", run_id)
    except AirflowApiError as error:
        assert "404" in str(error), error
        return False
    return True


def test_change_control_without_a_ticket_fails_before_touching_any_host(airflow_api):
    run_id = airflow_api.trigger(CONTROLLER, {"environment": GATED})
    run = airflow_api.wait_for_run(CONTROLLER, run_id, timeout=180)

    assert run["state"] == "failed"
    states = task_states(airflow_api, run_id)
    assert states["validate_request"] == "failed"
    assert {states[f"stage_{s}"] for s in ("preflight", "infrastructure", "security")} == {"upstream_failed"}
    for stage in ("preflight", "infrastructure"):
        assert not stage_run_exists(airflow_api, stage, f"rollout__{run_id}")
    refusal = results_by_id(rollout_report(run_id))["rollout.request"]
    assert refusal["status"] == "fail"
    assert "change_ticket" in refusal["message"] and "before touching any host" in refusal["message"]


def test_with_a_ticket_the_rollout_waits_for_approval_and_a_rejection_stops_it(airflow_api):
    run_id = airflow_api.trigger(
        CONTROLLER,
        {"environment": GATED, "change_ticket": "CHG-1001", "stages": ["preflight", "infrastructure"]},
    )
    wait_for_task_state(airflow_api, run_id, "approval", "awaiting_input")

    states = task_states(airflow_api, run_id)
    assert states["stage_preflight"] == "success" and states["dry_run_plan"] == "success"
    assert states["stage_infrastructure"] is None, "no stage that changes hosts may start before the answer"
    plan_run = airflow_api.dag_run("event_broker_infrastructure", f"plan__{run_id}")
    assert plan_run["conf"]["dry_run"] is True
    [request] = airflow_api.hitl_details(CONTROLLER, run_id)
    assert "CHG-1001" in request["subject"]
    assert "Plan (" in request["body"] and "Preflight:" in request["body"]

    airflow_api.answer_approval(CONTROLLER, run_id, "approval", "Reject")
    run = airflow_api.wait_for_run(CONTROLLER, run_id, timeout=180)

    assert run["state"] == "failed"
    assert task_states(airflow_api, run_id)["stage_infrastructure"] == "skipped"
    assert not stage_run_exists(airflow_api, "infrastructure", f"rollout__{run_id}")
    report = rollout_report(run_id)
    rejection = results_by_id(report)["rollout.approval"]
    assert rejection["status"] == "fail"
    assert rejection["observed"]["by"] == "admin" and rejection["observed"]["at"]
    assert "rejected by admin" in rejection["message"]
    html = (report_dir(CONTROLLER, run_id) / "report.html").read_text()
    assert "rejected by admin" in html


def test_approval_by_whoever_triggered_is_refused_and_an_approvers_answer_proceeds(airflow_api, approver_api):
    run_id = airflow_api.trigger(  # as admin
        CONTROLLER, {"environment": GATED, "change_ticket": "CHG-1002", "stages": ["schemas"]}
    )
    wait_for_task_state(airflow_api, run_id, "approval", "awaiting_input")
    [request] = airflow_api.hitl_details(CONTROLLER, run_id)
    # The approvers (approver1, and role admin: admin) plus the requester, who may only reject.
    assert sorted(user["id"] for user in request["assigned_users"]) == ["admin", "approver1"]

    airflow_api.answer_approval(CONTROLLER, run_id, "approval", "Approve")  # admin approves own rollout
    wait_until_asked_again(airflow_api, run_id)

    states = task_states(airflow_api, run_id)
    assert states["stage_schemas"] is None, "a refused approval must not start a stage that changes hosts"
    assert airflow_api.dag_run(CONTROLLER, run_id)["state"] == "running"

    approver_api.answer_approval(CONTROLLER, run_id, "approval", "Approve")
    run = airflow_api.wait_for_run(CONTROLLER, run_id, timeout=300)

    assert run["state"] == "success", task_states(airflow_api, run_id)
    results = results_by_id(rollout_report(run_id))
    assert results["rollout.approval"]["status"] == "pass"
    assert results["rollout.approval"]["observed"]["by"] == "approver1"
    refused = results["rollout.approval.refused[1]"]
    assert refused["status"] == "warn" and refused["observed"]["by"] == "admin"
    assert "admin triggered this rollout and may not approve it" in refused["message"]
    assert "rollout.approval.refused[2]" not in results
    assert results["rollout.stage[schemas]"]["status"] == "pass"
    assert results["rollout.stage[preflight]"]["status"] == "skipped"

    records = trail_records(run_id)
    actions = [r["data"] for r in records if r["kind"] == "audit" and r["dag_id"] == CONTROLLER]
    [refusal] = [a for a in actions if a["action"] == "rollout.approval.refused"]
    assert refusal["details"]["responded_by"] == "admin" and refusal["outcome"] == "refused"
    assert "separation of duties" in refusal["details"]["reason"]
    [accepted] = [a for a in actions if a["action"] == "rollout.approval.answer"]
    assert accepted["details"]["responded_by"] == "approver1" and accepted["outcome"] == "approved"
    approvals = [r for r in records if r["kind"] == "approval"]
    assert approvals and "approver1" in json.dumps(approvals[0]["data"])


def drift_a_topic_config() -> None:
    """What someone does behind the project's back: a PHI topic's retention changed by hand."""
    admin = AdminClient(secure_client_config("admin"))
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        DRIFT_TOPIC,
        incremental_configs=[
            ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(30)


def test_make_rollout_converges_the_lab_lists_every_change_in_a_tamper_evident_trail(airflow_api, tmp_path):
    drift_a_topic_config()
    proc = subprocess.run(
        [sys.executable, "-m", "event_broker_devtools.cli", "rollout", "--env", "lab"],
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    run_id = next(
        line.removeprefix(f"{CONTROLLER} run ").rsplit(": ", 1)[0]
        for line in proc.stdout.splitlines()
        if line.startswith(f"{CONTROLLER} run ")
    )
    assert "security" in proc.stdout and "tasks done" in proc.stdout  # progress, stage by stage
    print(proc.stdout)  # the per-stage times land in the test log (figures for the README)

    report = rollout_report(run_id)
    results = results_by_id(report)
    for stage in ("preflight", "infrastructure", "security", "schemas", "integration"):
        assert results[f"rollout.stage[{stage}]"]["status"] == "pass", results[f"rollout.stage[{stage}]"]
    changes = {
        stage: results[f"rollout.stage[{stage}]"]["observed"]["changes"]
        for stage in ("infrastructure", "security", "schemas")
    }
    assert changes == {"infrastructure": 0, "security": 0, "schemas": 1}, "only the drift is corrected"
    html = (report_dir(CONTROLLER, run_id) / "report.html").read_text()
    assert 'class="timeline"' in html and html.count('class="bar ') == 5

    trail_path = report_dir(CONTROLLER, run_id) / "audit-trail.jsonl"
    assert verify_trail(trail_path).intact
    lines = trail_path.read_text().splitlines()
    header, records = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    assert {run["dag_id"] for run in header["runs"]} == {
        CONTROLLER,
        *(f"event_broker_{s}" for s in ("preflight", "infrastructure", "security", "schemas", "integration")),
    }
    triggers = [r for r in records if r["kind"] == "trigger" and r["dag_id"] == CONTROLLER]
    assert triggers and triggers[0]["data"]["user"] == "admin"
    audited = {(r["dag_id"], r["data"].get("result_id")) for r in records if r["kind"] == "audit"}
    for stage in ("preflight", "infrastructure", "security", "schemas", "integration"):
        stage_run = results[f"rollout.stage[{stage}]"]["details"]["run_id"]
        stage_report = json.loads(
            (report_dir(f"event_broker_{stage}", stage_run) / "report.json").read_text()
        )
        for changed in (r for r in stage_report["results"] if r["status"] == "changed"):
            assert (f"event_broker_{stage}", changed["id"]) in audited, (
                f"{stage}: {changed['id']} not in the trail"
            )
    assert any(dag == "event_broker_schemas" and DRIFT_TOPIC in str(rid) for dag, rid in audited)

    edited, removed = tmp_path / "edited.jsonl", tmp_path / "removed.jsonl"
    shutil.copy(trail_path, edited)
    tampered = lines[:]
    record = json.loads(tampered[3])
    record["data"]["outcome"] = "ok" if record["data"].get("outcome") != "ok" else "changed"
    tampered[3] = json.dumps(record)
    edited.write_text("\n".join(tampered) + "\n")
    removed.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    for broken, seq in ((edited, 3), (removed, 5)):
        verification = verify_trail(broken)
        assert not verification.intact
        assert verification.break_at == seq, verification
    cli = subprocess.run(
        [sys.executable, "-m", "event_broker_devtools.trail_cli", "verify", str(edited)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 1 and "3" in cli.stdout + cli.stderr

    # Run again: the stages that changed nothing above were already converged; the one that corrected
    # the drift now has nothing left to do either.
    rerun = subprocess.run(
        [
            sys.executable,
            "-m",
            "event_broker_devtools.cli",
            "rollout",
            "--env",
            "lab",
            "--conf",
            json.dumps({"stages": ["schemas"]}),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=REPO,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stdout[-5000:]
    assert "total changes: 0" in rerun.stdout


def secret_values() -> dict[str, str]:
    """Every secret the lab deployment holds, by where it lives (the name is what a failure shows):
    the generated passwords and registry client secrets, each private key's PEM body lines, the Airflow
    logins' passwords."""
    secrets = {f"credentials.json[{user}]": value for user, value in lab_credentials().items()}
    # the mTLS and OAUTHBEARER rollouts' (run earlier)
    oidc_clients = LAB_STATE / "secrets" / "oidc-clients.json"
    if oidc_clients.is_file():
        secrets.update(
            {
                f"oidc-clients.json[{who}]": value
                for who, value in json.loads(oidc_clients.read_text()).items()
            }
        )
    # the Kerberos rollout's keytabs (each key, as hex and base64) and the directory's passwords
    for keytab in LAB_STATE.rglob("*.keytab"):
        for n, key in enumerate(keytab_keys(keytab.read_bytes())):
            secrets[f"{keytab.relative_to(LAB_STATE)} key {n} (hex)"] = key.hex()
            secrets[f"{keytab.relative_to(LAB_STATE)} key {n} (base64)"] = base64.b64encode(key).decode()
    directory = LAB_STATE / "idp" / "directory-passwords.json"
    if directory.is_file():
        secrets.update(
            {f"directory password of {who}": v for who, v in json.loads(directory.read_text()).items()}
        )
    for key_file in LAB_STATE.rglob("*.key"):
        body = [line for line in key_file.read_text().splitlines() if line and not line.startswith("-----")]
        secrets.update({f"{key_file.relative_to(LAB_STATE)} line {n}": line for n, line in enumerate(body)})
    server = airflow_server.settings()
    logins = json.loads(server.passwords_file.read_text())
    secrets.update({f"Airflow login {user}": password for user, password in logins.items()})
    secrets["Airflow's JWT secret"] = (server.home / "jwt_secret").read_text().strip()
    return secrets


def keytab_keys(content: bytes) -> list[bytes]:
    """The key of every entry of an MIT keytab (version 0x0502: a 4-byte length before each entry)."""
    keys, offset = [], 2
    while offset + 4 <= len(content):
        (size,) = struct.unpack_from(">i", content, offset)
        record, offset = content[offset + 4 : offset + 4 + abs(size)], offset + 4 + abs(size)
        if size <= 0:  # a hole left by a removed entry
            continue
        (components,) = struct.unpack_from(">H", record, 0)
        position = 2
        for _ in range(components + 1):  # the realm, then each name component
            (length,) = struct.unpack_from(">H", record, position)
            position += 2 + length
        position += 4 + 4 + 1 + 2  # name type, timestamp, 8-bit key version, encryption type
        (key_length,) = struct.unpack_from(">H", record, position)
        keys.append(record[position + 2 : position + 2 + key_length])
    return keys


def leaks(secrets: dict[str, str], haystacks: dict[str, str]) -> list[str]:
    return [
        f"{name} in {where}"
        for name, value in secrets.items()
        for where, text in haystacks.items()
        if value in text
    ]


def airflow_records() -> dict[str, str]:
    """What the project's Airflow keeps in its database about runs: XCom values, rendered task fields,
    run confs and approval requests."""
    database = sqlite3.connect(airflow_server.settings().home / "airflow.db")
    try:
        queries = {
            "xcom": "SELECT dag_id, run_id, task_id, map_index, key, value FROM xcom",
            "rendered fields": "SELECT dag_id, run_id, task_id, map_index, rendered_fields FROM rendered_task_instance_fields",
            "run conf": "SELECT dag_id, run_id, conf FROM dag_run",
            "approval request": "SELECT ti_id, subject, body, params, params_input FROM hitl_detail",
        }
        return {
            f"{table}: {' '.join(map(str, row[:-1]))}": str(row[-1])
            for table, query in queries.items()
            for row in database.execute(query)
        }
    finally:
        database.close()


def test_no_secret_in_any_report_trail_task_log_or_xcom_of_the_rollouts(airflow_api):
    """Runs after the rollouts above: every stage's reports and trails, every task log and the server's
    own log, and what Airflow stored (XCom, rendered fields, confs, approvals) hold no secret."""
    secrets = secret_values()
    assert len(secrets) > 10
    assert any(" key 0 (hex)" in name for name in secrets), "the Kerberos rollout's keytabs are scanned"
    records = airflow_records()
    stages = {
        f"event_broker_{s}" for s in ("preflight", "infrastructure", "security", "schemas", "integration")
    }
    assert {CONTROLLER, *stages} <= {where.split()[1] for where in records if where.startswith("xcom:")}
    files = [
        *(p for p in (REPO / "reports").rglob("*") if p.is_file()),
        *(p for p in airflow_server.settings().task_logs.rglob("*") if p.is_file()),
        airflow_server.settings().log_file,
    ]
    assert any(p.name == "audit-trail.jsonl" for p in files) and any(p.suffix == ".log" for p in files)
    haystacks = {**records, **{str(p): p.read_text(errors="replace") for p in files}}
    name, value = next(iter(secrets.items()))
    assert leaks({name: value}, {"a planted copy": f"x{value}x"}) == [f"{name} in a planted copy"]
    assert leaks(secrets, haystacks) == []
