"""Structured audit records, written into the task log as JSON fields of one event name.

One record per check or change: who/what/where comes from the task's run context, the rest from the
caller. Values are evidence (ids, statuses, digests, settings); callers never pass secrets or payloads.
"""

from __future__ import annotations

from typing import Any

import structlog

AUDIT_EVENT = "ebr.audit"
_log = structlog.get_logger("event_broker_rollout.audit")


def _run_context() -> dict[str, Any]:
    try:
        from airflow.sdk import get_current_context

        context = get_current_context()
    except Exception:  # outside a running task (unit tests, CLI tools): no run context to add
        return {}
    ti = context.get("ti")
    return {
        "dag_id": getattr(ti, "dag_id", None),
        "run_id": context.get("run_id"),
        "task_id": getattr(ti, "task_id", None),
        "map_index": getattr(ti, "map_index", None),
        "try_number": getattr(ti, "try_number", None),
    }


def audit(action: str, *, target: str, outcome: str, host: str | None = None, **evidence: Any) -> None:
    _log.info(
        AUDIT_EVENT, action=action, target=target, outcome=outcome, host=host, **_run_context(), **evidence
    )
