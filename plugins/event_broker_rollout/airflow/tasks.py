"""What every stage DAG shares: the trigger-form params, loading the environment, and the run's closing
tasks (the audit trail's export, then the report from the evidence of every other task).

Nothing here reads a connection or variable at import time: DAG files must parse without them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from airflow.sdk import Param, get_current_context, task
from airflow.sdk.definitions.xcom_arg import PlainXComArg
from airflow.sdk.exceptions import AirflowFailException

from event_broker_rollout.airflow import runtime  # noqa: F401  (installs Airflow as the orchestrator)
from event_broker_rollout.airflow.trail_export import export_task_trail
from event_broker_rollout.config.environment import (
    Environment,
    available_environments,
    load_sizing_profiles,
)
from event_broker_rollout.config.validation import validated_environment
from event_broker_rollout.evidence.audit import KEY_MATERIAL, audit, audit_result
from event_broker_rollout.evidence.results import Result, Severity, StageReport, Status, report_dir, utcnow
from event_broker_rollout.evidence.steps import Step, is_step
from event_broker_rollout.preflight.governance import KNOWLEDGE_PREREQUISITES

TASK_FAILURES = "task-failures"  # a folder in the run's report directory, one file per failed task
# Exceptions whose text may enter a report: the rollout's own, Airflow's and the transports' (hosts,
# codes, reasons). Any other is named by its type only: a serializer's ValueError, say, quotes the record.
SPEAKING_MODULES = ("event_broker_rollout", "airflow")
ERROR_TEXT_LIMIT = 400


def failure_text(error: BaseException | str | None) -> str:
    """What the report may say about why a task failed."""
    if error is None:
        return "no exception recorded"
    if isinstance(error, str):  # Airflow passes a reason, not an exception, for some failures
        return error[:ERROR_TEXT_LIMIT]
    # Imported here, on failure only: the DAG files import this module and parse time counts.
    from confluent_kafka import KafkaException
    from confluent_kafka.schema_registry.error import SchemaRegistryError
    from paramiko import SSHException

    kind = type(error)
    transport = isinstance(error, OSError | KafkaException | SchemaRegistryError | SSHException)
    if kind.__module__.split(".")[0] not in SPEAKING_MODULES and not transport:
        return f"{kind.__name__} (its text stays in the task log)"
    text = " ".join(str(error).split())
    if KEY_MATERIAL.search(text):
        return f"{kind.__name__} (its text held key material and stays out of the report)"
    return f"{kind.__name__}: {text}"[:ERROR_TEXT_LIMIT]


def record_task_failure(context: Any) -> None:
    """on_failure_callback: why the task failed, for the stage's report (which runs after it) and the
    audit trail. A task that died mid-change may have left no evidence of its own."""
    ti = context["ti"]
    text = failure_text(context.get("exception"))
    map_index = getattr(ti, "map_index", -1)
    name = ti.task_id if map_index is None or map_index < 0 else f"{ti.task_id}.{map_index}"
    folder = report_dir(ti.dag_id, context["run_id"]) / TASK_FAILURES
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"task_id": ti.task_id, "error": text}) + "\n")
    audit("task.failed", target=ti.task_id, outcome="failed", error=text)


def recorded_failures(dag_id: str, run_id: str) -> dict[str, list[str]]:
    folder = report_dir(dag_id, run_id) / TASK_FAILURES
    found: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        record = json.loads(path.read_text())
        found.setdefault(record["task_id"], []).append(record["error"])
    return found


DEFAULT_ARGS: dict[str, Any] = {"owner": "platform", "retries": 0, "on_failure_callback": record_task_failure}


def environment_param() -> Any:
    names = available_environments()
    return Param(
        "lab" if "lab" in names else names[0],
        type="string",
        enum=names,
        title="Environment",
        description="Target environment: a file in config/environments/. It is validated before any host is touched.",
    )


# How long the cluster must stay healthy after a node (re)started before a gate passes. The brokers
# check connects to every registered broker and the partitions gate wants the node back in every ISR,
# so the window only has to catch a node that dies within seconds of starting; it no longer has to
# outlast a broker's session timeout (a killed broker stays registered that long).
DEFAULT_SETTLE_SECONDS = 3


def gate_settle_param(description: str) -> Any:
    return Param(
        DEFAULT_SETTLE_SECONDS,
        type="integer",
        minimum=0,
        title="Gate settle window (s)",
        description=description,
    )


def dry_run_param() -> Any:
    return Param(
        False,
        type="boolean",
        title="Dry run",
        description="Show the plan (what would change) and change nothing.",
    )


def sizing_profile_param() -> Any:
    profiles = sorted(load_sizing_profiles())
    return Param(
        None,
        type=["null", "string"],
        enum=[None, *profiles],
        title="Sizing profile override",
        description="Check the hosts against another sizing profile than the environment's (e.g. development).",
    )


def deployment_mode_param() -> Any:
    return Param(
        None,
        type=["null", "string"],
        enum=[None, "bare_metal", "docker", "kubernetes"],
        title="Deployment mode override",
        description="Check the prerequisites of another deployment mode than the environment's.",
    )


def knowledge_param() -> Any:
    # A nullable array with examples: the trigger form shows a multi-select that may stay empty.
    return Param(
        None,
        type=["null", "array"],
        items={"type": "string", "enum": list(KNOWLEDGE_PREREQUISITES)},
        examples=list(KNOWLEDGE_PREREQUISITES),
        values_display=dict(KNOWLEDGE_PREREQUISITES),
        title="Knowledge prerequisites acknowledged",
        description="The guide's knowledge prerequisites the operating team confirms it has: "
        + "; ".join(KNOWLEDGE_PREREQUISITES.values()),
    )


def environment_from(params: Mapping[str, Any]) -> Environment:
    """The run's environment after the same full validation as ``make validate`` (every file it
    references), so no task of any stage acts on a config that validation would refuse."""
    return validated_environment(str(params["environment"]))


def task_outcomes(context: Any) -> list[Result]:
    """Failed tasks become blocking findings (a task that died may have left no evidence of its own);
    tasks that never ran because an earlier one failed are listed as skipped, with that reason."""
    ti = context["ti"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[context["run_id"]]).get(context["run_id"], {})
    reasons = recorded_failures(ti.dag_id, context["run_id"])
    outcomes = []
    for task_id, state in sorted(states.items()):
        if task_id == ti.task_id:
            continue
        if state == "failed":
            why = "; ".join(reasons.get(task_id, [])) or "see its log"
            outcomes.append(
                Result(id=f"task.{task_id}", status=Status.FAIL, message=f"task {task_id} failed: {why}")
            )
        elif state == "upstream_failed":
            outcomes.append(
                Result(
                    id=f"task.{task_id}",
                    status=Status.SKIPPED,
                    message=f"task {task_id} did not run: an earlier step failed",
                    severity=Severity.ADVISORY,
                )
            )
    return outcomes


def publish_report(
    context: Any, dag_id: str, title: str, results: list[Result], summary: Mapping[str, Any]
) -> str:
    """A stage's last task: add the fate of every task, write the report, and fail the run if any
    blocking check failed (so Airflow's alerting fires)."""
    report = StageReport(
        dag_id=dag_id,
        run_id=context["run_id"],
        environment=str(context["params"]["environment"]),
        started_at=context["dag_run"].start_date,
        finished_at=utcnow(),
        results=[*results, *task_outcomes(context)],
        summary=summary,
        title=title,
        triggered_by=context["dag_run"].triggering_user_name,
    )
    print(f"report: {report.write()}")
    return finish(report)


def finish(report: StageReport) -> str:
    """The stage's verdict: fail the task (and so the run) when any blocking check failed."""
    failed = [r for r in report.results if r.status is Status.FAIL]
    if failed:
        listing = "; ".join(f"{r.id}@{r.host or 'cluster'}: {r.message}" for r in failed[:20])
        raise AirflowFailException(f"{len(failed)} blocking check(s) failed: {listing}")
    return str(report.write_path)


EXPORT_TASK_ID = "export_audit_trail"
REPORT_TASK_ID = "report"
DAG_ID_PREFIX = "event_broker_"

# What a DAG adds to its report: (the run's context, every task's results) -> (results, summary).
Conclude = Callable[[Mapping[str, Any], list[Result]], tuple[list[Result], Mapping[str, Any]]]
# A DAG whose report is more than results and a summary writes it itself and returns its path.
WriteReport = Callable[[Mapping[str, Any], list[Result]], str]


def recorded(step: Step, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What every step's task returns: one audit record per result (action ``<stage>.<task_id>``), then
    the step serialized for XCom. Changes are also audited where they are made, so a task that dies
    mid-change still leaves them; this record is the step's verdict on each."""
    ti = (context or get_current_context())["ti"]
    action = f"{ti.dag_id.removeprefix(DAG_ID_PREFIX)}.{ti.task_id}"
    for result in step.results:
        audit_result(action, result)
    return step.to_dict()


def evidence_in(value: Any) -> list[Result]:
    """The results a task's XCom holds when it is a step; anything else (an approval, a path) is not
    evidence."""
    return Step.from_dict(value).results if is_step(value) else []


def run_evidence(context: Mapping[str, Any], excluded: Iterable[str]) -> list[Result]:
    """Every result of every task of the run but ``excluded``, in the DAG's task order (every map index
    of a mapped task)."""
    ti = context["ti"]
    skip = set(excluded)
    results: list[Result] = []
    for task_id in context["dag"].task_ids:
        if task_id not in skip:
            for value in ti.xcom_pull(task_ids=[task_id]):
                results += evidence_in(value)
    return results


def closing_tasks(
    dag_id: str, title: str, conclude: Conclude | None = None, write_report: WriteReport | None = None
) -> None:
    """The run's last two tasks, after every other task whatever its outcome: export the audit trail,
    then the report from the evidence of every other task of the run (no task list to keep in step).
    Call it last in the DAG function: it wires itself after the DAG's current leaves."""

    @task(task_id=EXPORT_TASK_ID, trigger_rule="all_done")
    def export_audit_trail() -> dict[str, Any]:
        return export_task_trail(get_current_context(), dag_id)

    @task(task_id=REPORT_TASK_ID, trigger_rule="all_done")
    def report() -> str:
        context = get_current_context()
        results = run_evidence(context, excluded=(EXPORT_TASK_ID, REPORT_TASK_ID))
        if write_report is not None:
            return write_report(context, results)
        summary: Mapping[str, Any] = {}
        if conclude is not None:
            results, summary = conclude(context, results)
        return publish_report(context, dag_id, title, results, summary)

    trail, written = export_audit_trail(), report()
    # @task calls inside a DAG function: plain XComArgs whose operators belong to that DAG
    assert isinstance(trail, PlainXComArg) and isinstance(written, PlainXComArg)
    exporter = trail.operator
    assert exporter.dag is not None
    leaves = [
        t for t in exporter.dag.tasks if not t.downstream_list and t not in (exporter, written.operator)
    ]
    for leaf in leaves:
        leaf >> exporter
    exporter >> written.operator
