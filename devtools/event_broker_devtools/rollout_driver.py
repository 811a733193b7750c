"""Trigger a rollout on the project's Airflow through the REST API and show its progress in a terminal.

Stage by stage: when a controller task changes state it prints a line; while a stage runs, how many
of its tasks are done. An approval that is waiting is announced with where to answer it. At the end:
the verdict, each stage's time and changes, the report path, and the UI address and login.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from event_broker_devtools import airflow_server, airflow_stack
from event_broker_rollout.airflow.rest import AirflowApi
from event_broker_rollout.evidence.results import report_dir
from event_broker_rollout.rollout import controller as rollout

CONTROLLER = "event_broker_rollout"
DONE_STATES = {"success", "failed", "skipped", "upstream_failed", "removed"}


@dataclass(frozen=True)
class Deployment:
    """Where a rollout runs: the standalone Airflow (SQLite, the default) or the Celery stack."""

    server: airflow_server.ServerSettings
    start: Callable[[], bool]
    stop: Callable[[], bool]
    running: Callable[[], bool]
    log: Path
    stop_command: str


def deployment(executor: str = "standalone") -> Deployment:
    if executor == "celery":
        stack = airflow_stack.settings()
        return Deployment(
            server=stack.server,
            start=lambda: airflow_stack.start(stack),
            stop=lambda: airflow_stack.stop(stack),
            running=lambda: bool(airflow_stack.running_services(stack)),
            log=stack.home,
            stop_command="make airflow-down EXECUTOR=celery",
        )
    server = airflow_server.settings()
    return Deployment(
        server=server,
        start=lambda: airflow_server.start(server),
        stop=lambda: airflow_server.stop(server),
        running=lambda: airflow_server.running_pid(server) is not None,
        log=server.log_file,
        stop_command="make airflow-down",
    )


def api_for(server: airflow_server.ServerSettings) -> AirflowApi:
    return AirflowApi(server.url, airflow_server.USER, airflow_server.password(server))


def _stage_of(task_id: str) -> str:
    return task_id.removeprefix("stage_")


class ProgressPrinter:
    """Prints what changed since the last poll; nothing when nothing changed."""

    def __init__(self, api: AirflowApi, run_id: str, say: Callable[[str], None] = print) -> None:
        self.api = api
        self.run_id = run_id
        self.say = say
        self.states: dict[str, str | None] = {}
        self.child_progress: dict[str, str] = {}

    def poll(self) -> None:
        for ti in sorted(
            self.api.task_instances(CONTROLLER, self.run_id), key=lambda t: t.get("start_date") or "~"
        ):
            task_id, state = ti["task_id"], ti.get("state")
            if self.states.get(task_id) != state:
                self.states[task_id] = state
                if state is not None:
                    self.say(f"  {time.strftime('%H:%M:%S')}  {_stage_of(task_id):<22} {state}")
                if state == "awaiting_input":
                    self.say(
                        f"    an approval is waiting: {self.api.base_url}/dags/{CONTROLLER}/runs/{self.run_id}"
                    )
            if state == "deferred" and (task_id.startswith("stage_") or task_id == "dry_run_plan"):
                self._child(task_id)

    def _child(self, task_id: str) -> None:
        stage = rollout.PLAN_STAGE if task_id == "dry_run_plan" else _stage_of(task_id)
        prefix = "plan" if task_id == "dry_run_plan" else "rollout"
        child_run = f"{prefix}__{self.run_id}"
        try:
            tis = self.api.task_instances(rollout.stage_dag_id(stage), child_run)
        except Exception:  # the child run may not be visible yet
            return
        done = sum(1 for ti in tis if ti.get("state") in DONE_STATES)
        running = sorted({ti["task_id"] for ti in tis if ti.get("state") in ("running", "deferred")})
        line = f"{done}/{len(tis)} tasks done" + (f", now: {', '.join(running[:3])}" if running else "")
        if self.child_progress.get(task_id) != line:
            self.child_progress[task_id] = line
            self.say(f"  {time.strftime('%H:%M:%S')}    {stage}: {line}")


def rollout_report(run_id: str) -> dict[str, Any] | None:
    path = report_dir(CONTROLLER, run_id) / "report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def summary_lines(report: Mapping[str, Any] | None, path: Path) -> list[str]:
    if report is None:
        return ["  (no rollout report was written)"]
    lines = []
    seconds = (report.get("summary") or {}).get("stage_seconds", {})
    for result in report["results"]:
        observed = result.get("observed") or {}
        extra = ""
        if isinstance(observed, dict) and "changes" in observed:
            stage = result["id"].split("[", 1)[-1].rstrip("]")
            label = f"{stage} (plan)" if result["id"].startswith("rollout.plan") else stage
            took = seconds.get(label)
            extra = f"  changes: {observed.get('changes')}" + (
                f"  time: {took:.0f} s" if took is not None else ""
            )
        lines.append(f"  {result['status']:<8} {result['id']:<34} {result['message']}{extra}")
    lines.append(f"  total changes: {(report.get('summary') or {}).get('changes')}")
    lines.append(f"Report: {path.with_suffix('.html')}")
    return lines


def run_rollout(
    conf: Mapping[str, Any],
    *,
    keep_airflow: bool,
    timeout: float = 3600.0,
    say: Callable[[str], None] = print,
    executor: str = "standalone",
) -> tuple[str, str]:
    """Start Airflow if needed, trigger the rollout, follow it; returns (state, run_id)."""
    target = deployment(executor)
    server = target.server
    say(f"Airflow ({executor}): {server.url} (starting it if needed; logs {target.log})")
    started = target.start()
    api = api_for(server)
    try:
        errors = api.import_errors()
        if errors:
            raise SystemExit(f"DAG import errors: {[e.get('filename') for e in errors]}")
        run_id = api.trigger(CONTROLLER, conf)
        say(f"Triggered {CONTROLLER} run {run_id} with {json.dumps(dict(conf))}")
        progress = ProgressPrinter(api, run_id, say)
        deadline = time.monotonic() + timeout
        state = "queued"
        while time.monotonic() < deadline:
            progress.poll()
            state = api.dag_run(CONTROLLER, run_id)["state"]
            if state in ("success", "failed"):
                progress.poll()
                break
            time.sleep(3)
        report_path = report_dir(CONTROLLER, run_id) / "report.json"
        say(f"\n{CONTROLLER} run {run_id}: {state}")
        for line in summary_lines(rollout_report(run_id), report_path):
            say(line)
        return state, run_id
    finally:
        if started and not keep_airflow:
            target.stop()
        elif target.running():
            say(
                f"Airflow UI: {server.url}  login: {airflow_server.USER} / {airflow_server.password(server)}"
                f"  (stop it: {target.stop_command})"
            )
