"""Structured audit records, written into the task log as one event name (``ebr.audit``).

One record per check or change: who/what/where comes from the task's run context (dag, run, task, map
index, try), the rest from the caller: action, target, outcome, host, the result id that is the evidence
reference, before/after states of a change, and details. Callers pass ids, statuses, digests and settings,
never secrets or payloads; fields named like a secret are dropped here all the same, and large values are
recorded as their SHA-256 digest.

The record travels nested under one key of the log line: Airflow's task supervisor re-logs every line of
the task's log with the line's fields as keyword arguments, and a top-level field named ``target``,
``level`` or ``msg`` collides with its own parameters and kills the task.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from event_broker_rollout import orchestrator
from event_broker_rollout.evidence.results import Result, Status

AUDIT_EVENT = "ebr.audit"
RECORD_KEY = "audit"  # the log line's field that holds the record
RECORD_VERSION = 1
# Field names that may hold a credential or key material: such fields never enter a record.
SECRET_FIELD = re.compile(r"passw(or)?d|secret|token|private[-_.]?key|credential|api[-_.]?key", re.IGNORECASE)
# Text that is key material whatever its field is called.
KEY_MATERIAL = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
# Values longer than this (as canonical JSON) are recorded as their digest, so a record stays evidence
# about a value rather than a copy of it.
INLINE_LIMIT = 256

_log = structlog.get_logger("event_broker_rollout.evidence.audit")

# Records are numbered per task attempt and per process part of it: a task that defers and resumes (a
# gate, an approval) continues in a new process, possibly on another worker, which numbers its part from 1
# again under its own part id. A reader that finds a part's numbers not running 1..n has lost records.
_PART = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + f"-{os.getpid()}"
_sequences: dict[tuple[Any, ...], int] = {}


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no whitespace, UTF-8 kept (what digests and hashes cover)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(value: Any) -> str:
    """``sha256:<hex>`` of a string as it is, of anything else as canonical JSON."""
    text = value if isinstance(value, str) else canonical_json(value)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def is_secret_field(name: str) -> bool:
    return bool(SECRET_FIELD.search(name))


def without_secrets(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """The value with every field named like a secret (at any depth) and any key material removed;
    returns it and the paths of what was removed (names only, never values)."""
    removed: list[str] = []
    if isinstance(value, Mapping):
        kept: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if is_secret_field(str(key)):
                removed.append(where)
                continue
            kept[str(key)], inner = without_secrets(item, where)
            removed += inner
        return kept, removed
    if isinstance(value, list | tuple):
        items = []
        for index, item in enumerate(value):
            cleaned, inner = without_secrets(item, f"{path}[{index}]")
            items.append(cleaned)
            removed += inner
        return items, removed
    if isinstance(value, str) and KEY_MATERIAL.search(value):
        return "(key material removed)", [path]
    return value, removed


def compact(value: Any) -> Any:
    """The value itself when short, its digest otherwise."""
    return value if len(canonical_json(value)) <= INLINE_LIMIT else digest(value)


def _run_context() -> dict[str, Any]:
    return orchestrator.current().task_identity()


def _numbered(context: Mapping[str, Any]) -> dict[str, Any]:
    """This record's place among its attempt's records: the process part and the number within it."""
    attempt = tuple(context.get(key) for key in ("dag_id", "run_id", "task_id", "map_index", "try_number"))
    _sequences[attempt] = _sequences.get(attempt, 0) + 1
    return {"part": _PART, "seq": _sequences[attempt]}


def audit_record(
    action: str,
    *,
    target: str,
    outcome: str,
    host: str | None = None,
    result_id: str | None = None,
    before: Any = None,
    after: Any = None,
    **details: Any,
) -> dict[str, Any]:
    """The record ``audit`` logs: run context, what was done to what with which outcome, the evidence
    reference, before/after (a change's states or digests) and details; secret-named fields removed."""
    context = _run_context()
    record: dict[str, Any] = {
        "v": RECORD_VERSION,
        "at": datetime.now(UTC).isoformat(),
        **context,
        **_numbered(context),
        "action": action,
        "target": target,
        "outcome": outcome,
        "host": host,
        "result_id": result_id,
    }
    if before is not None or after is not None:
        record["before"] = compact(before)
        record["after"] = compact(after)
    if details:
        record["details"] = {key: compact(value) for key, value in details.items() if value is not None}
    cleaned, removed = without_secrets(record)
    if removed:
        cleaned["redacted"] = removed
    return dict(cleaned)


def audit(
    action: str,
    *,
    target: str,
    outcome: str,
    host: str | None = None,
    result_id: str | None = None,
    before: Any = None,
    after: Any = None,
    **details: Any,
) -> None:
    """Log one audit record into the task log (see ``audit_record`` for its fields)."""
    record = audit_record(
        action,
        target=target,
        outcome=outcome,
        host=host,
        result_id=result_id,
        before=before,
        after=after,
        **details,
    )
    _log.info(AUDIT_EVENT, **{RECORD_KEY: record})


def audit_result(action: str, result: Result | Mapping[str, Any]) -> None:
    """One record for a check's or change's result: a change's observed/expected are its before/after."""
    item = result if isinstance(result, Result) else Result.from_dict(result)
    states = (
        {"before": item.observed, "after": item.expected}
        if item.status is Status.CHANGED
        else {"observed": item.observed, "expected": item.expected}
    )
    # A finding that cites a policy clause (compliance) records its clause and severity as well.
    cited = (
        {"clause": item.details["clause"], "severity": str(item.severity)}
        if item.details.get("clause")
        else {}
    )
    audit(
        action,
        target=str(item.details.get("target") or item.id),
        outcome=str(item.status),
        host=item.host,
        result_id=item.id,
        **states,
        **cited,
    )
