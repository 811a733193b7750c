"""How runs are named: the stage runs a rollout triggers carry its run id."""

from __future__ import annotations

# Stage runs a rollout triggers are named after it, so the UI, reports and audit trail tie them together.
CHILD_RUN_PREFIXES = {False: "rollout", True: "plan"}


def child_run_id(controller_run_id: str, plan_only: bool) -> str:
    """The run id of a stage run a rollout triggers (``plan_only``: the dry run an approver reads)."""
    return f"{CHILD_RUN_PREFIXES[plan_only]}__{controller_run_id}"


def is_child_run_id(run_id: str) -> bool:
    return run_id.startswith(tuple(f"{prefix}__" for prefix in CHILD_RUN_PREFIXES.values()))
