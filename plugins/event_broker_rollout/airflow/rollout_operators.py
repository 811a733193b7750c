"""The controller's operators: run one stage DAG and wait for it; ask an approver.

Both are the standard provider's operators with the rollout's decisions in front (rollout.py): a stage
that was not chosen, has no dry-run mode, or lacks an approval is skipped with the reason in its log.
Waiting on a stage run is deferred (DagStateTrigger), so no worker slot is held while a stage runs.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Context, conf
from airflow.sdk.exceptions import AirflowSkipException
from airflow.sdk.execution_time.hitl import HITLUser

from event_broker_rollout.airflow.rest import LAST_ASKED_XCOM_KEY
from event_broker_rollout.airflow.tasks import task_outcomes
from event_broker_rollout.evidence.audit import audit
from event_broker_rollout.evidence.results import Result, StageReport, Status, utcnow
from event_broker_rollout.evidence.runs import child_run_id
from event_broker_rollout.rollout import controller as rollout
from event_broker_rollout.rollout.controller import CHANGING_STAGES, PLAN_STAGE, RolloutRequest
from event_broker_rollout.rollout.report import StageOutcome, build_report, load_stage_report, parse_time

REQUEST_TASK_ID = "validate_request"
REQUEST_KEY = "request"  # the accepted request (the task's return value is the branch it chose)
APPROVAL_TASK_ID = "approval"
PLAN_TASK_ID = "dry_run_plan"
ANSWER_KEY = "answer"  # the approval's XCom: chosen_options, responded_by_user, responded_at
REFUSED_KEY = "refused"  # the approval's XCom: every answer that did not count, and why
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def rollout_request(context: Context) -> rollout.RolloutRequest:
    return rollout.RolloutRequest.from_dict(
        context["ti"].xcom_pull(task_ids=REQUEST_TASK_ID, key=REQUEST_KEY)
    )


class StageRunOperator(TriggerDagRunOperator):
    """Trigger one stage DAG with the rollout's conf and wait (deferred) until it succeeds or fails."""

    def __init__(self, *, stage: str, plan_only: bool = False, **kwargs: Any) -> None:
        super().__init__(
            trigger_dag_id=rollout.stage_dag_id(stage),
            wait_for_completion=True,
            deferrable=True,
            poke_interval=1,  # the triggerer's check of the stage run's state: one cheap query
            # A cleared task re-runs its stage (that is how an operator retries a failed stage).
            reset_dag_run=True,
            fail_when_dag_is_paused=True,
            **kwargs,
        )
        self.stage = stage
        self.plan_only = plan_only

    def execute(self, context: Context) -> Any:
        request = rollout_request(context)
        if self.plan_only:
            decision = rollout.plan_decision(request)
        else:
            approval = context["ti"].xcom_pull(task_ids=APPROVAL_TASK_ID, key=ANSWER_KEY)
            decision = rollout.decide_stage(request, self.stage, approval)
        if not decision.run:
            audit("rollout.stage.skip", target=self.trigger_dag_id, outcome="skipped", reason=decision.reason)
            raise AirflowSkipException(decision.reason)
        self.conf = dict(decision.conf)
        self.trigger_run_id = child_run_id(context["run_id"], self.plan_only)
        self.note = f"{'Plan for' if self.plan_only else 'Part of'} rollout {context['run_id']}" + (
            f", change {request.change_ticket}" if request.change_ticket else ""
        )
        audit(
            "rollout.stage.trigger",
            target=self.trigger_dag_id,
            outcome="triggered",
            stage_run_id=self.trigger_run_id,
            dry_run=bool(self.conf.get("dry_run", False)),
        )
        return super().execute(context)


def configured_user_roles() -> dict[str, str] | None:
    """Each Airflow user's role, when the auth manager is SimpleAuthManager (its users are configuration
    every Airflow component reads); None for any other auth manager, whose roles a task cannot look up."""
    if conf.get("core", "auth_manager", fallback=SIMPLE_AUTH_MANAGER) != SIMPLE_AUTH_MANAGER:
        return None
    return rollout.user_roles_from_config(conf.getlist("core", "simple_auth_manager_users", fallback=[]))


class RolloutApprovalOperator(ApprovalOperator):
    """The change gate: an approver reads the dry-run plan and approves or rejects the rollout.

    Separation of duties (rollout.answer_refusal): whoever triggered the rollout may not approve it, and
    only the environment's approvers may. An answer that does not count is recorded (audit record, XCom
    for the report) and the request is asked again; the task keeps waiting, with a fresh response
    timeout. A rejection skips the stages that change hosts (they check the answer themselves too), and
    the rollout report records who decided and when.
    """

    def __init__(self, *, response_timeout: timedelta = timedelta(hours=24), **kwargs: Any) -> None:
        super().__init__(
            subject="Approve the event broker rollout",
            body="(filled in with the plan when the task runs)",
            response_timeout=response_timeout,
            **kwargs,
        )

    def execute(self, context: Context) -> Any:
        request = rollout_request(context)
        if not request.approval_required:
            raise AirflowSkipException(
                "no approval needed (dry run, or the environment is not under change control)"
            )
        run_id = context["run_id"]
        plan_run = context["ti"].xcom_pull(task_ids=PLAN_TASK_ID, key="trigger_run_id")
        preflight_run = context["ti"].xcom_pull(task_ids="stage_preflight", key="trigger_run_id")
        self.subject = f"Approve rollout of {request.environment} under change {request.change_ticket}"
        self.body = rollout.approval_body(
            request,
            load_stage_report("preflight", preflight_run),
            load_stage_report(rollout.PLAN_STAGE, plan_run),
        )
        triggered_by = context["dag_run"].triggering_user_name
        assignees = rollout.approval_assignees(request, triggered_by, configured_user_roles())
        # SimpleAuthManager's user id is the user name (assignees are listed only for it).
        self.assigned_users = [HITLUser(id=name, name=name) for name in assignees]
        asked_at = utcnow().isoformat()
        context["ti"].xcom_push(key="asked_at", value=asked_at)
        context["ti"].xcom_push(key=LAST_ASKED_XCOM_KEY, value=asked_at)
        audit(
            "rollout.approval.request",
            target=run_id,
            outcome="awaiting",
            change_ticket=request.change_ticket,
            triggered_by=triggered_by,
            approver_users=list(request.approver_users),
            approver_roles=list(request.approver_roles),
            assigned_users=assignees,
        )
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if "error" not in event:  # a timeout has no answer to record; the base class fails the task
            answer = {
                "chosen_options": list(event["chosen_options"]),
                "responded_by_user": dict(event.get("responded_by_user") or {}),
                "responded_at": str(event.get("responded_at")),
            }
            triggered_by = context["dag_run"].triggering_user_name
            refusal = rollout.answer_refusal(
                rollout_request(context), answer, triggered_by, configured_user_roles()
            )
            if refusal is not None:
                return self._ask_again(context, answer, refusal)
            # Recorded before the base class acts: on a rejection it skips the downstream tasks by
            # raising, so nothing after it would run (and a resumed task's return value is not kept).
            context["ti"].xcom_push(key=ANSWER_KEY, value=answer)
            audit(
                "rollout.approval.answer",
                target=context["run_id"],
                outcome="approved" if rollout.approved(answer) else "rejected",
                responded_by=rollout.approval_user(answer),
                responded_at=answer["responded_at"],
            )
        return super().execute_complete(context, event)

    def _ask_again(self, context: Context, answer: dict[str, Any], refusal: str) -> Any:
        """Record an answer that does not count, then ask again: Airflow's request for this task
        instance is kept and its answer cleared (upsert_hitl_detail), and the task waits once more."""
        ti = context["ti"]
        refused = list(ti.xcom_pull(task_ids=ti.task_id, key=REFUSED_KEY) or [])
        refused.append({**answer, "reason": refusal})
        ti.xcom_push(key=REFUSED_KEY, value=refused)
        audit(
            "rollout.approval.refused",
            target=context["run_id"],
            outcome="refused",
            chosen_options=answer["chosen_options"],
            responded_by=rollout.approval_user(answer),
            responded_at=answer["responded_at"],
            reason=refusal,
        )
        self.log.warning("Answer refused, asking again: %s", refusal)
        ti.xcom_push(key=LAST_ASKED_XCOM_KEY, value=utcnow().isoformat())
        return super().execute(context)


STAGE_TASKS = (
    ("stage_preflight", "preflight"),
    (PLAN_TASK_ID, rollout.PLAN_STAGE),
    *((f"stage_{stage}", stage) for stage in rollout.CHANGING_STAGES),
)


def triggered_stage_runs(context: Context) -> list[tuple[str, str]]:
    """(dag_id, run_id) of every stage run this rollout triggered, in rollout order."""
    runs = []
    for task_id, stage in STAGE_TASKS:
        run_id = context["ti"].xcom_pull(task_ids=task_id, key="trigger_run_id")
        if run_id:
            runs.append((rollout.stage_dag_id(stage), str(run_id)))
    return runs


def approval_answers(context: Context) -> list[dict[str, Any]]:
    answer = context["ti"].xcom_pull(task_ids=APPROVAL_TASK_ID, key=ANSWER_KEY)
    return [{**answer, "task_id": APPROVAL_TASK_ID}] if answer else []


def refused_answers(context: Context) -> list[dict[str, Any]]:
    """The approval's answers that did not count (who, when, which option, why), in order."""
    return list(context["ti"].xcom_pull(task_ids=APPROVAL_TASK_ID, key=REFUSED_KEY) or [])


def build_rollout_report(context: Any, dag_id: str) -> tuple[Path, str | None]:
    """The controller's last task: gather what each task did, write the report; returns its path and,
    when the rollout did not complete, why (the caller fails the run with it)."""
    ti = context["ti"]
    run_id = context["run_id"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
    raw_request = ti.xcom_pull(task_ids=REQUEST_TASK_ID, key=REQUEST_KEY)
    dag_run = context["dag_run"]
    if raw_request is None:
        refused = ti.xcom_pull(task_ids=REQUEST_TASK_ID, key="refused")
        environment = str(context["params"]["environment"])
        report = StageReport(
            dag_id=dag_id,
            run_id=run_id,
            environment=environment,
            started_at=dag_run.start_date,
            finished_at=utcnow(),
            results=[
                Result(
                    "rollout.request",
                    Status.FAIL,
                    f"refused before touching any host: {refused or 'the request task failed; see its log'}",
                    observed=dict(context["params"]),
                    expected="a valid environment and trigger form",
                )
            ],
            summary={"triggered_by": dag_run.triggering_user_name},
            title="Rollout",
            triggered_by=dag_run.triggering_user_name,
        )
        return report.write(), "the rollout request was refused before touching any host"
    request = RolloutRequest.from_dict(raw_request)
    outcomes = []
    for stage, task_id, plan_only in [
        ("preflight", "stage_preflight", False),
        (PLAN_STAGE, PLAN_TASK_ID, True),
        *[(stage, f"stage_{stage}", False) for stage in CHANGING_STAGES],
    ]:
        stage_run = ti.xcom_pull(task_ids=task_id, key="trigger_run_id")
        outcomes.append(
            StageOutcome(
                stage=stage,
                task_id=task_id,
                task_state=states.get(task_id),
                run_id=stage_run,
                report=load_stage_report(stage, stage_run),
                plan_only=plan_only,
            )
        )
    approval = ti.xcom_pull(task_ids=APPROVAL_TASK_ID, key=ANSWER_KEY)
    asked = parse_time(ti.xcom_pull(task_ids=APPROVAL_TASK_ID, key="asked_at"))
    report = build_report(
        dag_id=dag_id,
        run_id=run_id,
        request=request,
        triggered_by=dag_run.triggering_user_name,
        started_at=dag_run.start_date,
        finished_at=utcnow(),
        outcomes=outcomes,
        approval=approval,
        approval_task_state=states.get(APPROVAL_TASK_ID),
        approval_asked=asked,
        refused_answers=refused_answers(context),
    )
    trail = ti.xcom_pull(task_ids="export_audit_trail") or {}
    report.summary = {
        **report.summary,
        "audit_trail": {key: trail.get(key) for key in ("trail", "records", "head", "published")}
        if trail
        else None,
    }
    stage_tasks = {outcome.task_id for outcome in outcomes}
    extra = [r for r in task_outcomes(context) if r.id.removeprefix("task.") not in stage_tasks]
    report.results = [*report.results, *extra]
    path = report.write()
    failed = [r for r in report.results if r.status is Status.FAIL]
    verdict = "; ".join(f"{r.id}: {r.message}" for r in failed) if failed else None
    return path, verdict
