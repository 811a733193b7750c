"""The rollout: the guide's five stages in order, each a run of its own DAG, from one trigger form.

1. **Validate the request** — the environment file and the form; an environment under change control
   without a change ticket stops here, before any host is touched.
2. **Preflight** — the hosts against the guide's prerequisites.
3. **Plan and approval** (environments under change control) — the infrastructure stage's dry run, shown
   to an approver; a rejection stops the rollout and is recorded with who and when. Whoever triggered
   the rollout cannot approve it, nor can anyone outside the environment's `approvers`: such an answer
   is recorded as refused and the approval is asked again.
4. **Infrastructure, security, schemas, integration** — each stage DAG runs with the same environment and
   the controller waits for it without holding a worker slot; the first failed stage stops the rollout.
5. **Audit trail and report** — the hash-chained trail of every stage's task logs (who triggered, who
   approved, every change), then the rollout's report: a timeline of the stages, each stage's results and changes, the
   approval, links to every stage's own report.

Every stage is safe to re-run: choose a subset of stages to resume (e.g. from `security`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, chain, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from event_broker_rollout.airflow import tasks as dag_support
from event_broker_rollout.airflow.rollout_operators import (
    APPROVAL_TASK_ID,
    PLAN_TASK_ID,
    REQUEST_KEY,
    REQUEST_TASK_ID,
    RolloutApprovalOperator,
    StageRunOperator,
    approval_answers,
    build_rollout_report,
    triggered_stage_runs,
)
from event_broker_rollout.airflow.trail_export import export_task_trail
from event_broker_rollout.evidence.audit import audit
from event_broker_rollout.rollout import controller as rollout

DAG_ID = "event_broker_rollout"


@dag(
    dag_id=DAG_ID,
    schedule=None,
    catchup=False,
    default_args=dag_support.DEFAULT_ARGS,
    dagrun_timeout=timedelta(days=2),  # an approver may take a working day to answer
    doc_md=__doc__,
    tags=["event-broker", "rollout"],
    params={
        "environment": dag_support.environment_param(),
        "stages": Param(
            list(rollout.STAGES),
            type="array",
            items={"type": "string", "enum": list(rollout.STAGES)},
            examples=list(rollout.STAGES),
            title="Stages",
            description="The stages to run, always in the guide's order. Choose a subset to resume a "
            "rollout (e.g. security, schemas, integration): every stage is safe to run again.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Plan only: preflight, then the infrastructure and schemas stages show what they "
            "would change. Security and integration have no dry run and are skipped.",
        ),
        "change_ticket": Param(
            None,
            type=["null", "string"],
            title="Change ticket",
            description="The change ticket that authorises this rollout (e.g. CHG-1234). Required for "
            "environments under change control (production): without one the rollout stops before "
            "touching anything.",
        ),
        "knowledge_acknowledged": dag_support.knowledge_param(),
    },
)
def event_broker_rollout() -> None:
    @task.branch(task_id=REQUEST_TASK_ID)
    def validate_request(params: dict[str, Any]) -> list[str]:
        """Nothing is touched before the environment file and the form are valid. Then the branch: the
        plan and the approval are skipped here when the request needs neither, never started to skip."""
        ti = get_current_context()["ti"]
        try:
            request = rollout.build_request(dag_support.environment_from(params), params)
        except (rollout.RolloutRequestError, ValueError) as error:
            ti.xcom_push(key="refused", value=str(error))
            audit("rollout.request", target=str(params["environment"]), outcome="refused", reason=str(error))
            raise AirflowFailException(f"rollout refused before touching any host: {error}") from None
        audit(
            "rollout.request",
            target=request.environment,
            outcome="accepted",
            stages=list(request.stages),
            dry_run=request.dry_run,
            change_ticket=request.change_ticket,
            approval_required=request.approval_required,
        )
        ti.xcom_push(key=REQUEST_KEY, value=request.to_dict())
        plan = rollout.plan_decision(request)
        if not plan.run:
            audit(
                "rollout.stage.skip",
                target=rollout.stage_dag_id(rollout.PLAN_STAGE),
                outcome="skipped",
                reason=plan.reason,
            )
        return [
            "stage_preflight",
            *([PLAN_TASK_ID] if plan.run else []),
            *([APPROVAL_TASK_ID] if request.approval_required else []),
        ]

    @task(trigger_rule="all_done")
    def export_audit_trail() -> dict[str, Any]:
        """The rollout's trail: its own records and every stage run's, with who triggered and approved."""
        context = get_current_context()
        return export_task_trail(
            context, DAG_ID, extra_runs=triggered_stage_runs(context), approvals=approval_answers(context)
        )

    @task(trigger_rule="all_done")
    def report() -> str:
        context = get_current_context()
        path, verdict = build_rollout_report(context, DAG_ID)
        print(f"rollout report: {path}")
        if verdict:
            raise AirflowFailException(verdict)
        return str(path)

    request = validate_request()
    preflight = StageRunOperator(task_id="stage_preflight", stage="preflight")
    plan = StageRunOperator(
        task_id=PLAN_TASK_ID, stage=rollout.PLAN_STAGE, plan_only=True, trigger_rule="none_failed"
    )
    approval = RolloutApprovalOperator(task_id=APPROVAL_TASK_ID, trigger_rule="none_failed")
    changing = [
        StageRunOperator(task_id=f"stage_{stage}", stage=stage, trigger_rule="none_failed")
        for stage in rollout.CHANGING_STAGES
    ]
    chain(request, preflight, plan, approval, *changing, export_audit_trail(), report())
    # The branch skips the plan and the approval directly when the request needs neither, so whatever
    # follows them also waits for preflight itself (a skipped task is done before preflight is).
    request >> [plan, approval]
    preflight >> [approval, changing[0]]


event_broker_rollout()
