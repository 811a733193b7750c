"""What every stage DAG shares: the trigger-form params, loading the environment, writing the report.

Nothing here reads a connection or variable at import time: DAG files must parse without them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from event_broker_rollout.config.environment import (
    Environment,
    available_environments,
    load_sizing_profiles,
)
from event_broker_rollout.config.validation import validated_environment
from event_broker_rollout.evidence.audit import KEY_MATERIAL, audit
from event_broker_rollout.evidence.results import Result, Severity, StageReport, Status, report_dir, utcnow
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
    from airflow.sdk import Param

    names = available_environments()
    return Param(
        "lab" if "lab" in names else names[0],
        type="string",
        enum=names,
        title="Environment",
        description="Target environment: a file in config/environments/. It is validated before any host is touched.",
    )


def dry_run_param() -> Any:
    from airflow.sdk import Param

    return Param(
        False,
        type="boolean",
        title="Dry run",
        description="Show the plan (what would change) and change nothing.",
    )


def sizing_profile_param() -> Any:
    from airflow.sdk import Param

    profiles = sorted(load_sizing_profiles())
    return Param(
        None,
        type=["null", "string"],
        enum=[None, *profiles],
        title="Sizing profile override",
        description="Check the hosts against another sizing profile than the environment's (e.g. development).",
    )


def deployment_mode_param() -> Any:
    from airflow.sdk import Param

    return Param(
        None,
        type=["null", "string"],
        enum=[None, "bare_metal", "docker", "kubernetes"],
        title="Deployment mode override",
        description="Check the prerequisites of another deployment mode than the environment's.",
    )


def knowledge_param() -> Any:
    from airflow.sdk import Param

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


def results_from(*groups: Iterable[Mapping[str, Any]] | None) -> list[Result]:
    """Results from XCom: each group a list of result dicts, or of dicts that carry ``results``."""
    results: list[Result] = []
    for group in groups:
        for item in group or []:
            if item is None:
                continue
            if "results" in item:
                results += [Result.from_dict(r) for r in item["results"]]
            else:
                results.append(Result.from_dict(item))
    return results


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
    from airflow.sdk.exceptions import AirflowFailException

    failed = [r for r in report.results if r.status is Status.FAIL]
    if failed:
        listing = "; ".join(f"{r.id}@{r.host or 'cluster'}: {r.message}" for r in failed[:20])
        raise AirflowFailException(f"{len(failed)} blocking check(s) failed: {listing}")
    return str(report.write_path)
