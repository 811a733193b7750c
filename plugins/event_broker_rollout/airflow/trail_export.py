"""The export task every DAG ends with: the run's signed, chained audit trail from this Airflow's task
logs, written beside the reports and published to the audit topic once the cluster is secured."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from event_broker_rollout import orchestrator
from event_broker_rollout.airflow import runtime  # noqa: F401  (installs Airflow as the orchestrator)
from event_broker_rollout.config.environment import load_environment
from event_broker_rollout.evidence.audit import audit
from event_broker_rollout.evidence.trail import export_trail, signing_key_from_connection
from event_broker_rollout.evidence.trail_entries import (
    Entry,
    RunRef,
    approval_entries,
    run_log_dir,
    trigger_entry,
)
from event_broker_rollout.resources.audit_topic import (
    AuditTopicMissing,
    ClusterUnreachable,
    publication_blocker,
    publish_trail,
)


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
    from this Airflow's task log files, signed with the key of the ``ebr_audit_signing`` connection,
    chained to the environment's previous trail, written beside the reports and published when the
    environment's cluster is secured and reachable. ``approvals`` are HITL answers the DAG holds (an
    approval task's XCom: chosen_options, responded_by_user, responded_at, task_id). Returns the trail's
    path, record count, head, previous head, signing key id and whether it was published."""
    runs = [RunRef(dag_id, str(context["run_id"])), *(RunRef(d, r) for d, r in extra_runs)]
    logs = orchestrator.current().task_log_folder()
    environment = load_environment(str(context["params"]["environment"]))
    # Without log files (an in-process dag.test() run) the trail says so and holds no records at all.
    logged = any(run_log_dir(logs, run).is_dir() for run in runs)
    exported = export_trail(
        runs,
        environment=environment.name,
        signing_key=signing_key_from_connection(),
        logs=logs,
        people=_context_people(runs[0], context, approvals) if logged else (),
    )
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
        before=exported.trail.previous_head,
        after=exported.trail.head,
        records=records,
        signed_by=exported.trail.header["signature"]["key_id"],
    )
    print(
        f"audit trail: {exported.path} ({records} records, head {exported.trail.head}, chained from "
        f"{exported.trail.previous_head or 'nothing: the first trail of ' + environment.name}); "
        f"{exported.publication}"
    )
    for note in exported.notes:
        print(f"note: {note}")
    return exported.to_dict()
