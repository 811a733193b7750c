"""A run's audit trail: the ``ebr.audit`` records of its task logs plus who triggered and who approved, in
one deterministic order, chained with SHA-256 hashes, written beside the reports and published to the
audit topic. ``verify`` checks an exported trail and names its first break.

The trail is JSON lines. Line 1 is the header: the runs it covers, the counts, the chain's start (derived
from the runs) and head (the last record's hash), and a hash over the header itself. Every further line is
one record with its sequence number, the previous record's hash (``prev``) and its own hash over its
canonical JSON (``prev`` included), so an edited record no longer matches its hash and a removed or
reordered one no longer follows its predecessor.

Plain Python: log files or Airflow's REST API (``/api/v2``) as the source, so it runs inside a task, from
the command line and in tests. One trail may cover several runs (a rollout: the controller run and its
stage runs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from event_broker_rollout.audit import AUDIT_EVENT, RECORD_KEY, audit, canonical_json, without_secrets
from event_broker_rollout.environment import Environment
from event_broker_rollout.evidence import report_dir

TRAIL_KIND = "ebr.audit-trail"
TRAIL_VERSION = 1
TRAIL_FILE_NAME = "audit-trail.jsonl"
# The catalog's operational topic the trail is published to (config/catalog.yaml).
AUDIT_TOPIC_NAME = "rollout-audit"
# Event-log owner of what the scheduler and workers do by themselves; every other owner is a person.
SYSTEM_OWNER = "airflow"
API_PAGE = 100  # the API's default maximum page size
HTTP_TIMEOUT = 30.0

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


class ApiError(RuntimeError):
    pass


class AirflowApi:
    """The few ``/api/v2`` reads the trail needs, with a JWT from ``/auth/token``."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token

    @classmethod
    def login(cls, base_url: str, user: str, password: str) -> AirflowApi:
        answer = _http_json(
            "POST", base_url.rstrip("/") + "/auth/token", body={"username": user, "password": password}
        )
        return cls(base_url, str(answer["access_token"]))

    def get(self, path: str, **params: Any) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return _http_json("GET", f"{self.base_url}{path}{query}", token=self._token)

    def get_all(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged collection."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.get(path, **params, limit=API_PAGE, offset=len(items))
            batch = page.get(key) or []
            items += batch
            if not batch or len(items) >= int(page.get("total_entries", 0)):
                return items


def _http_json(method: str, url: str, *, token: str | None = None, body: Any = None) -> Any:
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    path = urllib.parse.urlsplit(url).path
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise ApiError(f"{method} {path}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise ApiError(f"{method} {path}: {error.reason}") from None


def _run_path(run: RunRef) -> str:
    quote = urllib.parse.quote
    return f"/api/v2/dags/{quote(run.dag_id, safe='')}/dagRuns/{quote(run.run_id, safe='')}"


def read_api_logs(api: AirflowApi, run: RunRef) -> list[Entry]:
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


def read_api_people(api: AirflowApi, run: RunRef) -> list[Entry]:
    """Who triggered the run, who answered its approvals, and what else people did to it."""
    entries = [trigger_entry(run, api.get(_run_path(run)), "dag run")]
    entries += approval_entries(run, api.get_all(f"{_run_path(run)}/hitlDetails", "hitl_details"))
    events = api.get_all("/api/v2/eventLogs", "event_logs", dag_id=run.dag_id, run_id=run.run_id)
    return entries + user_action_entries(run, events)


# --- the chained trail -------------------------------------------------------------------------------


def chain_start(runs: Sequence[RunRef]) -> str:
    """The hash the first record chains from: bound to the runs the trail says it covers."""
    return sha256_hex(
        canonical_json(
            {"kind": TRAIL_KIND, "version": TRAIL_VERSION, "runs": [run.to_dict() for run in runs]}
        )
    )


def record_hash(record: Mapping[str, Any]) -> str:
    """A record's hash: its canonical JSON without the hash itself (``prev`` included)."""
    return sha256_hex(canonical_json({key: value for key, value in record.items() if key != "hash"}))


def header_hash(header: Mapping[str, Any]) -> str:
    return sha256_hex(canonical_json({key: value for key, value in header.items() if key != "header_hash"}))


@dataclass(frozen=True)
class Trail:
    header: Mapping[str, Any]
    records: Sequence[Mapping[str, Any]]

    @property
    def head(self) -> str:
        return str(self.header["head"])

    @property
    def key(self) -> str:
        """The Kafka key of its messages: the first run (a rollout's controller run)."""
        first = self.header["runs"][0]
        return f"{first['dag_id']}/{first['run_id']}"

    def lines(self) -> list[str]:
        return [canonical_json(self.header), *(canonical_json(record) for record in self.records)]


def build_trail(
    runs: Sequence[RunRef],
    entries: Iterable[Entry],
    *,
    source: str,
    notes: Sequence[str] = (),
    exported_at: datetime | None = None,
) -> Trail:
    """Order the entries (timestamp, task, map index, try, position in the log) and chain them."""
    if not runs:
        raise ValueError("a trail covers at least one run")
    start = chain_start(runs)
    previous = start
    records = []
    kinds: dict[str, int] = {}
    for seq, entry in enumerate(sorted(entries, key=Entry.sort_key), start=1):
        record = {"seq": seq, **entry.body(), "prev": previous}
        record["hash"] = previous = record_hash(record)
        records.append(record)
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    header: dict[str, Any] = {
        "kind": TRAIL_KIND,
        "version": TRAIL_VERSION,
        "runs": [run.to_dict() for run in runs],
        "exported_at": utc_timestamp(exported_at or datetime.now(UTC)),
        "source": source,
        "notes": list(notes),
        "records": len(records),
        "counts": dict(sorted(kinds.items())),
        "chain_start": start,
        "head": previous,
    }
    header["header_hash"] = header_hash(header)
    return Trail(header=header, records=records)


def trail_path(run: RunRef) -> Path:
    """Beside the run's reports: ``reports/<dag_id>/<run_id>/audit-trail.jsonl``."""
    return report_dir(run.dag_id, run.run_id) / TRAIL_FILE_NAME


def write_trail(trail: Trail, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(trail.lines()) + "\n")
    tmp.replace(path)
    return path


# --- verification ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    intact: bool
    records: int
    head: str | None = None
    break_at: int | None = None  # 0: the header; n: the n-th record (line n + 1)
    problem: str | None = None

    def summary(self) -> str:
        if self.intact:
            return f"trail intact: {self.records} records, head {self.head}"
        where = "the header" if self.break_at == 0 else f"record {self.break_at}"
        return f"trail broken at {where} (line {(self.break_at or 0) + 1}): {self.problem}"


def _broken(at: int, problem: str, records: int = 0) -> Verification:
    return Verification(intact=False, records=records, break_at=at, problem=problem)


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _header_problem(header: dict[str, Any] | None) -> str | None:
    if header is None:
        return "bad header: not a JSON object"
    if header.get("kind") != TRAIL_KIND or header.get("version") != TRAIL_VERSION:
        return f"bad header: not a {TRAIL_KIND} version {TRAIL_VERSION} header"
    missing = [
        name for name in ("runs", "records", "chain_start", "head", "header_hash") if name not in header
    ]
    if missing:
        return f"bad header: missing {', '.join(missing)}"
    if header["header_hash"] != header_hash(header):
        return "bad header: edited (its content no longer matches its header_hash)"
    runs = header["runs"]
    if (
        not isinstance(runs, list)
        or not runs
        or not all(isinstance(r, dict) and {"dag_id", "run_id"} <= set(r) for r in runs)
    ):
        return "bad header: runs must list dag_id/run_id pairs"
    if header["chain_start"] != chain_start([RunRef(r["dag_id"], r["run_id"]) for r in runs]):
        return "bad header: chain_start does not belong to the runs the header names"
    return None


def _out_of_place(number: int, record: Mapping[str, Any], later: Sequence[dict[str, Any] | None]) -> str:
    """Why a record that is intact in itself does not follow its predecessor."""
    seq = record.get("seq")
    if seq == number:
        before = "the header's chain start" if number == 1 else f"record {number - 1}"
        return f"edited: it does not chain from {before} (rewritten with a new hash, or from another trail)"
    if any(other is not None and other.get("seq") == number for other in later):
        return f"reordered: record {number} appears later; this place holds record {seq}"
    if isinstance(seq, int) and seq > number:
        missing = str(number) if seq == number + 1 else f"{number}-{seq - 1}"
        return f"removed: record(s) {missing} missing; this place holds record {seq}"
    return f"reordered: this place holds record {seq}, which belongs earlier"


def verify_trail(path: Path) -> Verification:
    """Check the header, then each record's hash and its link to the one before; the first break wins."""
    lines = path.read_text().splitlines()
    if not lines:
        return _broken(0, "bad header: the file is empty")
    header = _json_object(lines[0])
    problem = _header_problem(header)
    if problem is not None or header is None:
        return _broken(0, problem or "bad header")
    records = [_json_object(line) for line in lines[1:]]
    previous = str(header["chain_start"])
    for number, record in enumerate(records, start=1):
        if record is None:
            return _broken(number, "edited: not a JSON object", number - 1)
        if record.get("hash") != record_hash(record):
            return _broken(number, "edited: its content no longer matches its hash", number - 1)
        if record.get("prev") != previous:
            return _broken(number, _out_of_place(number, record, records[number:]), number - 1)
        previous = str(record["hash"])
    count = len(records)
    if count < int(header["records"]):
        return _broken(
            count + 1,
            f"removed: the trail ends after {count} records; the header lists {header['records']}",
            count,
        )
    if count > int(header["records"]):
        return _broken(
            int(header["records"]) + 1,
            f"appended: the header lists {header['records']} records; the trail has {count}",
            count,
        )
    if previous != header["head"]:
        return _broken(count, "the last record is not the header's head (records replaced at the end)", count)
    return Verification(intact=True, records=count, head=previous)


# --- publishing --------------------------------------------------------------------------------------


class PublishError(RuntimeError):
    pass


class AuditTopicMissing(PublishError):
    pass


class ClusterUnreachable(PublishError):
    pass


def audit_topic(environment: Environment) -> str:
    from event_broker_rollout.catalog import load_catalog

    for item in load_catalog(environment.catalog).operational_topics:
        if item.name == AUDIT_TOPIC_NAME:
            return item.topic
    raise PublishError(f"the catalog {environment.catalog} declares no {AUDIT_TOPIC_NAME} topic")


def publisher_principal(environment: Environment, topic: str) -> str:
    """The component whose contract produces the audit topic: the trail is published with least privilege."""
    from event_broker_rollout.components import matches
    from event_broker_rollout.security.stage import components_of

    for component in components_of(environment).components:
        if any(matches(pattern, topic) for pattern in component.produces):
            return component.principal
    raise PublishError(f"no component contract produces the audit topic {topic}")


def publish_trail(
    trail: Trail, environment: Environment, *, phase: str = "secured", timeout: float = 30.0
) -> tuple[str, int]:
    """Produce every line (header first) to the audit topic with acks=all, idempotently, and wait until
    each is acknowledged; returns (topic, messages delivered)."""
    from confluent_kafka import KafkaException, Producer

    from event_broker_rollout import clients
    from event_broker_rollout.security.credentials import load_credentials, password_for

    topic = audit_topic(environment)
    principal = publisher_principal(environment, topic)
    password = password_for(load_credentials(environment), principal)
    producer = Producer(
        {
            **clients.kafka_config(environment, phase, principal, password),
            "acks": "all",
            "enable.idempotence": True,
            "client.id": "ebr-audit-trail",
            "message.timeout.ms": int(timeout * 1000),
        }
    )
    try:
        metadata = producer.list_topics(topic, timeout=min(timeout, 10.0))
    except KafkaException as error:
        raise ClusterUnreachable(f"cannot reach the cluster as {principal}: {error}") from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        raise AuditTopicMissing(f"audit topic {topic} is not available: {described and described.error}")
    failures: list[str] = []
    delivered = 0

    def on_delivery(error: Any, _message: Any) -> None:
        nonlocal delivered
        if error is None:
            delivered += 1
        else:
            failures.append(str(error))

    lines = trail.lines()
    for line in lines:
        producer.produce(
            topic,
            key=trail.key.encode(),
            value=line.encode(),
            headers={"ebr-trail-head": trail.head.encode()},
            on_delivery=on_delivery,
        )
        producer.poll(0)
    unsent = producer.flush(timeout)
    if unsent or failures or delivered != len(lines):
        reason = failures[0] if failures else f"{unsent} not acknowledged within {timeout:.0f}s"
        raise PublishError(
            f"{len(lines) - delivered} of {len(lines)} trail messages not delivered to {topic}: {reason}"
        )
    return topic, delivered


def publication_blocker(environment: Environment) -> str | None:
    """Why the trail is not published to this environment now (None: it is published). Only a secured
    cluster receives it: the audit topic's producer authenticates."""
    if environment.security is None:
        return "not published: the environment has no security section"
    from event_broker_rollout.infrastructure.stage import recorded_phase

    try:
        phase = recorded_phase(environment)
    except Exception as error:  # any reason the hosts cannot say their phase means: not known to be secured
        return f"not published: the cluster's security phase is unknown ({error})"
    if phase != "secured":
        return f"not published: the cluster is not secured yet (its hosts record {phase})"
    return None


# --- exporting ---------------------------------------------------------------------------------------


@dataclass
class Export:
    path: Path
    trail: Trail
    publication: str = "not published"
    published: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trail": str(self.path),
            "records": int(self.trail.header["records"]),
            "head": self.trail.head,
            "published": self.published,
            "publication": self.publication,
        }


def export_trail(
    runs: Sequence[RunRef],
    *,
    logs: Path | None = None,
    api: AirflowApi | None = None,
    people: Sequence[Entry] = (),
    out: Path | None = None,
) -> Export:
    """Assemble and write the runs' trail: records from log files under ``logs`` (else from ``api``);
    who triggered and approved from ``api`` when given, plus ``people`` a caller already knows."""
    if logs is None and api is None:
        raise ValueError("a trail needs log files or the REST API as its source")
    entries: list[Entry] = list(people)
    notes: list[str] = []
    for run in runs:
        if logs is not None:
            if not run_log_dir(logs, run).is_dir():
                notes.append(
                    f"{run}: no task log files under {logs} (an in-process dag.test() run writes none): "
                    "no audit records"
                )
            entries += read_log_files(logs, run)
        else:
            assert api is not None
            entries += read_api_logs(api, run)
        if api is not None:
            entries += read_api_people(api, run)
    if api is None and not people and entries:
        notes.append("who triggered and who approved: not read (no REST API given)")
    source = "log files" if logs is not None else "rest api"
    if api is not None and logs is not None:
        source += " + rest api"
    trail = build_trail(runs, entries, source=source, notes=notes)
    path = write_trail(trail, out or trail_path(runs[0]))
    return Export(path=path, trail=trail, notes=notes)


def _context_people(
    run: RunRef, context: Mapping[str, Any], approvals: Iterable[Mapping[str, Any]]
) -> list[Entry]:
    """Who triggered the current run (the task's own dag run) and the approvals its caller hands over."""
    dag_run = context["dag_run"]
    trigger = trigger_entry(
        run,
        {
            "triggering_user_name": getattr(dag_run, "triggering_user_name", None),
            "run_type": getattr(dag_run, "run_type", None),
            "run_after": getattr(dag_run, "run_after", None) or getattr(dag_run, "start_date", None),
        },
        "task context",
    )
    return [trigger, *approval_entries(run, approvals)]


def export_task_trail(
    context: Mapping[str, Any],
    dag_id: str,
    *,
    extra_runs: Sequence[tuple[str, str]] = (),
    approvals: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A DAG's export task: the current run's trail (plus ``extra_runs``, e.g. a rollout's stage runs)
    from this Airflow's task log files, written beside the reports and published when the environment's
    cluster is secured and reachable. ``approvals`` are HITL answers the DAG holds (an approval task's
    XCom: chosen_options, responded_by_user, responded_at, task_id). Returns the trail's path, record
    count, head and whether it was published."""
    from airflow.configuration import conf

    from event_broker_rollout.environment import load_environment

    runs = [RunRef(dag_id, str(context["run_id"])), *(RunRef(d, r) for d, r in extra_runs)]
    logs = Path(conf.get("logging", "base_log_folder"))
    # Without log files (an in-process dag.test() run) the trail says so and holds no records at all.
    logged = any(run_log_dir(logs, run).is_dir() for run in runs)
    exported = export_trail(
        runs, logs=logs, people=_context_people(runs[0], context, approvals) if logged else ()
    )
    environment = load_environment(str(context["params"]["environment"]))
    blocker = publication_blocker(environment)
    if blocker is None:
        try:
            topic, delivered = publish_trail(exported.trail, environment)
        except (AuditTopicMissing, ClusterUnreachable) as error:
            exported.publication = f"not published: {error}"
        else:
            exported.published = True
            exported.publication = f"published {delivered} messages to {topic}"
    else:
        exported.publication = blocker
    records = int(exported.trail.header["records"])
    # The export itself is audited: a rollout's trail then carries each stage trail's head.
    audit(
        "audit.trail_export",
        target=str(exported.path),
        outcome="published" if exported.published else "written",
        after=exported.trail.head,
        records=records,
    )
    print(
        f"audit trail: {exported.path} ({records} records, head {exported.trail.head}); {exported.publication}"
    )
    for note in exported.notes:
        print(f"note: {note}")
    return exported.to_dict()


# --- command line ------------------------------------------------------------------------------------


def _runs_from(args: argparse.Namespace) -> list[RunRef]:
    if len(args.dag_id) != len(args.run_id):
        raise SystemExit("give --dag-id and --run-id in pairs, one --run-id per --dag-id")
    return [RunRef(d, r) for d, r in zip(args.dag_id, args.run_id, strict=True)]


def export_command(args: argparse.Namespace) -> int:
    runs = _runs_from(args)
    api = None
    if args.api:
        if not args.user or not args.password_file:
            raise SystemExit("--api needs --user and --password-file")
        api = AirflowApi.login(args.api, args.user, Path(args.password_file).read_text().strip())
    if args.logs is None and api is None:
        raise SystemExit("give --logs DIR (Airflow's base_log_folder) or --api URL")
    exported = export_trail(
        runs,
        logs=Path(args.logs) if args.logs else None,
        api=api,
        out=Path(args.out) if args.out else None,
    )
    records = exported.trail.header["records"]
    print(f"trail: {exported.path} ({records} records, head {exported.trail.head})")
    for note in exported.notes:
        print(f"note: {note}")
    if args.publish:
        from event_broker_rollout.environment import load_environment

        try:
            topic, delivered = publish_trail(exported.trail, load_environment(args.publish))
        except PublishError as error:
            print(f"not published: {error}", file=sys.stderr)
            return 1
        print(f"published {delivered} messages to {topic}")
    return 0


def verify_command(args: argparse.Namespace) -> int:
    result = verify_trail(Path(args.trail))
    print(result.summary())
    return 0 if result.intact else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m event_broker_rollout.audit_trail")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export", help="assemble, chain and write the audit trail of one or more runs"
    )
    export.add_argument("--dag-id", action="append", required=True, help="repeat with --run-id for each run")
    export.add_argument("--run-id", action="append", required=True)
    export.add_argument("--logs", help="Airflow's base_log_folder (task log files)")
    export.add_argument(
        "--api", help="Airflow's base URL, e.g. http://127.0.0.1:8080 (logs unless --logs; and people)"
    )
    export.add_argument("--user", help="Airflow user for --api")
    export.add_argument("--password-file", help="file holding that user's password")
    export.add_argument("--out", help="where to write the trail (default: beside the first run's reports)")
    export.add_argument(
        "--publish", metavar="ENV", help="publish it to ENV's audit topic (a secured cluster)"
    )
    export.set_defaults(handler=export_command)
    verify = commands.add_parser("verify", help="check a trail file; name its first break")
    verify.add_argument("trail")
    verify.set_defaults(handler=verify_command)
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
