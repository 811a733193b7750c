"""The rollout on Airflow's distributed setup: PostgreSQL, Redis, two Celery workers.

The stack comes up from nothing, a change-controlled rollout of the preflight and schemas stages runs on
it on the rolled-out lab (preflight's mapped per-host tasks, the controller's deferred stage tasks, the
approval a stage that changes hosts needs, answered by a second login), and the
exported trail holds every audit record the tasks logged, from every part of every attempt — whichever
worker ran each part — with its chain intact. Then the stack is gone: no process, port or data folder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter

import pytest

from event_broker_devtools import airflow_server, airflow_stack
from event_broker_rollout.airflow.rest import AirflowApi
from event_broker_rollout.evidence.audit import AUDIT_EVENT, RECORD_KEY
from event_broker_rollout.evidence.trail import trail_path, verify_chain, verify_trail
from event_broker_rollout.evidence.trail_entries import RunRef
from tests.conftest import needs_root

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

CONTROLLER = "event_broker_rollout"
PREFLIGHT = "event_broker_preflight"
GATED = "lab-change-controlled"
EXPORTER = "export_audit_trail"
STACK_PORTS = (
    airflow_stack.DEFAULT_API_PORT,
    airflow_stack.POSTGRES_PORT,
    airflow_stack.REDIS_PORT,
    airflow_stack.SCHEDULER_HEALTH_PORT,
    airflow_stack.TRIGGER_LOG_SERVER_PORT,
    *airflow_stack.WORKERS.values(),
)


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((airflow_stack.HOST, port)) == 0


def logged_records(stack: airflow_stack.StackSettings, run: RunRef) -> list[dict]:
    """Every audit record the run's tasks wrote, read straight from every log file of the run."""
    folder = stack.task_logs / f"dag_id={run.dag_id}" / f"run_id={run.run_id}"
    records = []
    for path in sorted(folder.rglob("attempt=*.log*")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == AUDIT_EVENT:
                records.append(event[RECORD_KEY])
    return records


def record_key(record: dict) -> tuple:
    return tuple(record.get(k) for k in ("dag_id", "task_id", "map_index", "try_number", "part", "seq"))


def wait_for_approval_request(api: AirflowApi, run_id: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {ti["task_id"]: ti.get("state") for ti in api.task_instances(CONTROLLER, run_id)}
        if states.get("approval") == "awaiting_input":
            return
        assert api.dag_run(CONTROLLER, run_id)["state"] not in ("success", "failed"), states
        time.sleep(3)
    raise AssertionError(f"the approval was never asked: {states}")


def test_a_gated_rollout_on_two_celery_workers_keeps_its_audit_trail_whole(lab_hosts):
    # The default home (.airflow-celery): PostgreSQL runs as its own user, who cannot enter pytest's
    # private tmp folders.
    stack = airflow_stack.settings()
    assert not any(port_open(port) for port in STACK_PORTS), "a Celery stack is already running"
    assert not stack.home.exists(), f"{stack.home} is left from an earlier stack"
    assert airflow_stack.start(stack) is True
    try:
        pids = airflow_stack.running_services(stack)
        assert set(pids) == set(airflow_stack.SERVICES)
        admin = AirflowApi(stack.url, airflow_server.USER, airflow_server.password(stack.server))
        approver = AirflowApi(
            stack.url, airflow_server.APPROVER, airflow_server.password(stack.server, airflow_server.APPROVER)
        )
        run_id = admin.trigger(
            CONTROLLER,
            {"environment": GATED, "change_ticket": "CHG-2201", "stages": ["preflight", "schemas"]},
        )
        wait_for_approval_request(admin, run_id)
        approver.answer_approval(CONTROLLER, run_id, "approval", "Approve")
        assert admin.wait_for_run(CONTROLLER, run_id, timeout=1200)["state"] == "success"

        workers = airflow_stack.workers_by_task(stack)
        child = f"rollout__{run_id}"
        mapped = [w for key, w in workers.items() if key.run_id == child and key.task_id == "inspect_hosts"]
        assert len(mapped) == 3
        # Which worker takes which task is Celery's choice (three mapped tasks can all land on one worker
        # that finishes fast); over both runs' task parts both workers must have worked.
        in_runs = [parts for key, parts in workers.items() if key.run_id in (run_id, child)]
        assert {worker for parts in in_runs for worker in parts} == set(airflow_stack.WORKERS), workers
        # The approval and the stage tasks deferred and resumed: two workloads for one attempt each.
        resumed = {
            key.task_id: parts
            for key, parts in workers.items()
            if key.run_id == run_id and key.task_id in ("approval", "stage_preflight", "stage_schemas")
        }
        assert all(len(parts) >= 2 for parts in resumed.values()) and len(resumed) == 3, resumed
        print(f"workers of the resumed tasks' parts: {resumed}")  # which worker resumed is Celery's choice

        trail = trail_path(RunRef(CONTROLLER, run_id))
        assert verify_trail(trail).intact
        assert verify_chain(trail).intact
        lines = [json.loads(line) for line in trail.read_text().splitlines()]
        header, records = lines[0], lines[1:]
        assert not [note for note in header.get("notes", []) if "missing" in note], header.get("notes")
        runs = [RunRef(run["dag_id"], run["run_id"]) for run in header["runs"]]
        assert RunRef(PREFLIGHT, child) in runs
        in_trail = Counter(record_key(r["data"]) for r in records if r["kind"] == "audit")
        logged = Counter(
            record_key(record)
            for run in runs
            for record in logged_records(stack, run)
            # the controller's exporter logs its own record after the export
            if (record.get("dag_id"), record.get("task_id")) != (CONTROLLER, EXPORTER)
        )
        assert logged and in_trail == logged
        # A resumed task's records come from both of its parts (before the deferral and after).
        approval_parts = {key[4] for key in in_trail if key[1] == "approval"}
        assert len(approval_parts) == 2, approval_parts
    finally:
        airflow_stack.stop(stack)
    assert not airflow_stack.running_services(stack)
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(port_open(port) for port in STACK_PORTS)
    assert not stack.home.exists()
    assert not stack.postgres_data.exists() and not stack.postgres_socket_dir.exists()
