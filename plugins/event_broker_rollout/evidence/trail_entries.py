"""The entries a trail is made of: runs, task attempts, the ``ebr.audit`` records of their task logs, who
triggered a run and who answered its approvals — read from Airflow's task-log files or its REST API."""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from event_broker_rollout.evidence.audit import (
    AUDIT_EVENT,
    RECORD_KEY,
    without_secrets,
)

# Event-log owner of what the scheduler and workers do by themselves; every other owner is a person.
SYSTEM_OWNER = "airflow"

# Record kinds: what a task logged, who triggered a run, who answered an approval, what a person did.
AUDIT, TRIGGER, APPROVAL, USER_ACTION = "audit", "trigger", "approval", "user_action"

_ATTEMPT_FILE = re.compile(r"^attempt=(\d+)\.log$")


@dataclass(frozen=True)
class RunRef:
    dag_id: str
    run_id: str

    def to_dict(self) -> dict[str, str]:
        return {"dag_id": self.dag_id, "run_id": self.run_id}

    def __str__(self) -> str:
        return f"{self.dag_id}/{self.run_id}"


@dataclass(frozen=True)
class TaskAttempt:
    run: RunRef
    task_id: str
    map_index: int
    try_number: int


@dataclass(frozen=True)
class Entry:
    """One trail record before it is chained; ``log_index`` orders the records of one task attempt."""

    kind: str
    at: str
    run: RunRef
    data: Mapping[str, Any]
    task_id: str = ""
    map_index: int = -1
    try_number: int = 0
    log_index: int = 0

    def sort_key(self) -> tuple[Any, ...]:
        return (
            self.at,
            self.task_id,
            self.map_index,
            self.try_number,
            self.log_index,
            self.run.dag_id,
            self.run.run_id,
            self.kind,
        )

    def body(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": self.at,
            "dag_id": self.run.dag_id,
            "run_id": self.run.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
            "try_number": self.try_number,
            "log_index": self.log_index,
            "data": dict(self.data),
        }


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def utc_timestamp(value: str | datetime | None) -> str:
    """One spelling for every source's timestamps (log lines, API, task context), so they sort as text."""
    if value is None:
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _cleaned(data: Mapping[str, Any]) -> dict[str, Any]:
    """Records of any origin (an older task, a foreign log) lose fields named like secrets here too."""
    kept, removed = without_secrets(dict(data))
    if removed:
        kept["redacted"] = sorted({*kept.get("redacted", []), *removed})
    return dict(kept)


# --- reading task logs -------------------------------------------------------------------------------


def log_events(text: str) -> Iterator[Mapping[str, Any]]:
    """The JSON objects of a task log (lines that are not JSON, e.g. from an older log format, are skipped)."""
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


def audit_entries(events: Iterable[Mapping[str, Any]], attempt: TaskAttempt) -> list[Entry]:
    """The audit records among one task attempt's log events, in log order."""
    entries: list[Entry] = []
    for event in events:
        record = event.get(RECORD_KEY)
        if event.get("event") != AUDIT_EVENT or not isinstance(record, Mapping):
            continue
        entries.append(
            Entry(
                kind=AUDIT,
                at=utc_timestamp(record.get("at") or event.get("timestamp")),
                run=attempt.run,
                data=_cleaned(record),
                task_id=attempt.task_id,
                map_index=attempt.map_index,
                try_number=attempt.try_number,
                log_index=len(entries) + 1,
            )
        )
    return entries


def run_log_dir(base: Path, run: RunRef) -> Path:
    """Airflow's default log layout: ``dag_id=…/run_id=…/task_id=…/[map_index=N/]attempt=N.log``."""
    return base / f"dag_id={run.dag_id}" / f"run_id={run.run_id}"


def log_file_attempts(base: Path, run: RunRef) -> list[tuple[TaskAttempt, Path]]:
    found = []
    for path in sorted(run_log_dir(base, run).glob("task_id=*/**/attempt=*.log")):
        match = _ATTEMPT_FILE.match(path.name)
        if match is None:
            continue
        task_dir = path.parent
        map_index = -1
        if task_dir.name.startswith("map_index="):
            map_index = int(task_dir.name.removeprefix("map_index="))
            task_dir = task_dir.parent
        task_id = task_dir.name.removeprefix("task_id=")
        found.append((TaskAttempt(run, task_id, map_index, int(match.group(1))), path))
    return found


def read_log_files(base: Path, run: RunRef) -> list[Entry]:
    entries: list[Entry] = []
    for attempt, path in log_file_attempts(base, run):
        entries += audit_entries(log_events(path.read_text(errors="replace")), attempt)
    return entries


# --- the REST API ------------------------------------------------------------------------------------


class ApiReader(Protocol):
    """The reads the trail needs from Airflow's REST API (``airflow.rest.AirflowApi`` is the one client)."""

    def get(self, path: str, **params: Any) -> Any: ...

    def get_all(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]: ...


def _run_path(run: RunRef) -> str:
    quote = urllib.parse.quote
    return f"/api/v2/dags/{quote(run.dag_id, safe='')}/dagRuns/{quote(run.run_id, safe='')}"


def read_api_logs(api: ApiReader, run: RunRef) -> list[Entry]:
    """Every try of every task instance of the run, read through the log endpoint."""
    entries: list[Entry] = []
    instances = api.get_all(f"{_run_path(run)}/taskInstances", "task_instances")
    for instance in sorted(instances, key=lambda ti: (ti["task_id"], ti.get("map_index", -1))):
        task_id, map_index = str(instance["task_id"]), int(instance.get("map_index", -1))
        for try_number in range(1, int(instance.get("try_number") or 0) + 1):
            answer = api.get(
                f"{_run_path(run)}/taskInstances/{urllib.parse.quote(task_id, safe='')}/logs/{try_number}",
                full_content="true",
                map_index=map_index,
            )
            content = answer.get("content") or []
            events = [event for event in content if isinstance(event, Mapping)]
            entries += audit_entries(events, TaskAttempt(run, task_id, map_index, try_number))
    return entries


def trigger_entry(run: RunRef, dag_run: Mapping[str, Any], source: str) -> Entry:
    """Who (or what) triggered the run, from the dag run itself."""
    return Entry(
        kind=TRIGGER,
        at=utc_timestamp(dag_run.get("run_after") or dag_run.get("queued_at")),
        run=run,
        data=_cleaned(
            {
                "user": dag_run.get("triggering_user_name"),
                "triggered_by": dag_run.get("triggered_by"),
                # the task context holds an enum, the API its value
                "run_type": getattr(dag_run.get("run_type"), "value", dag_run.get("run_type")),
                "source": source,
            }
        ),
    )


def approval_entries(run: RunRef, details: Iterable[Mapping[str, Any]]) -> list[Entry]:
    """Each human-in-the-loop request of the run and its answer: who, when, which option. The request's
    free-form inputs and body stay out (they are the approver's text, not evidence of the decision)."""
    entries: list[Entry] = []
    for detail in details:
        instance = detail.get("task_instance") or {}
        responder = detail.get("responded_by_user") or detail.get("responded_by")
        answered = detail.get("response_received", responder is not None)
        entries.append(
            Entry(
                kind=APPROVAL,
                at=utc_timestamp(detail.get("responded_at") or detail.get("created_at")),
                run=run,
                data=_cleaned(
                    {
                        "subject": detail.get("subject"),
                        "options": detail.get("options"),
                        "chosen_options": detail.get("chosen_options"),
                        "responded_by": responder,
                        "responded_at": utc_timestamp(detail.get("responded_at")) or None,
                        "requested_at": utc_timestamp(detail.get("created_at")) or None,
                        "answered": bool(answered),
                    }
                ),
                task_id=str(instance.get("task_id") or detail.get("task_id") or ""),
                map_index=int(instance.get("map_index", detail.get("map_index", -1))),
            )
        )
    return entries


def user_action_entries(run: RunRef, event_logs: Iterable[Mapping[str, Any]]) -> list[Entry]:
    """What people did to the run (trigger, approve, clear, mark states), from Airflow's event log. The
    entries' ``extra`` stays out: it may carry a run's conf."""
    entries: list[Entry] = []
    for event in event_logs:
        owner = event.get("owner")
        if not owner or owner == SYSTEM_OWNER:
            continue
        entries.append(
            Entry(
                kind=USER_ACTION,
                at=utc_timestamp(event.get("when")),
                run=run,
                data=_cleaned(
                    {"event": event.get("event"), "user": owner, "event_log_id": event.get("event_log_id")}
                ),
                task_id=str(event.get("task_id") or ""),
                map_index=-1 if event.get("map_index") is None else int(event["map_index"]),
                try_number=int(event.get("try_number") or 0),
            )
        )
    return entries


def read_api_people(api: ApiReader, run: RunRef) -> list[Entry]:
    """Who triggered the run, who answered its approvals, and what else people did to it."""
    entries = [trigger_entry(run, api.get(_run_path(run)), "dag run")]
    entries += approval_entries(run, api.get_all(f"{_run_path(run)}/hitlDetails", "hitl_details"))
    events = api.get_all("/api/v2/eventLogs", "event_logs", dag_id=run.dag_id, run_id=run.run_id)
    return entries + user_action_entries(run, events)
