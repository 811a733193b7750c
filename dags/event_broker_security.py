"""Stage 3 — Security: TLS everywhere, authenticated clients, ACL authorization, verified from outside.

A running cluster moves from plaintext to TLS + SASL without downtime, one gated rolling restart per
phase (secure listeners added -> brokers replicate over TLS and the authorizer comes on -> PLAINTEXT
removed and unknown principals denied). A canary producer and consumer run through the migration and
the report counts what they sent and read back. The stage ends by probing the cluster from outside.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from event_broker_rollout.airflow import tasks as dag_support
from event_broker_rollout.airflow.operators import RollingRestartOperator
from event_broker_rollout.airflow.sensors import ClusterHealthSensor
from event_broker_rollout.evidence.results import Result, report_dir
from event_broker_rollout.security import stage

DAG_ID = "event_broker_security"
ENV = "{{ params.environment }}"
GATE_TIMEOUT = "{{ params.gate_timeout_seconds }}"
SETTLE = "{{ params.gate_settle_seconds }}"


def run_dir() -> Path:
    context = get_current_context()
    return report_dir(DAG_ID, context["run_id"])


@dag(
    dag_id=DAG_ID,
    schedule=None,
    catchup=False,
    default_args=dag_support.DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=1),
    doc_md=__doc__,
    tags=["event-broker", "stage-3"],
    params={
        "environment": dag_support.environment_param(),
        "gate_timeout_seconds": Param(
            300,
            type="integer",
            minimum=10,
            title="Gate timeout (s)",
            description="How long a health gate waits before it stops the migration.",
        ),
        "gate_settle_seconds": dag_support.gate_settle_param(
            "How long the cluster must stay healthy after each restart before the next node."
        ),
    },
)
def event_broker_security() -> None:
    @task(multiple_outputs=True)
    def configure(target: str, params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.configure_phase(dag_support.environment_from(params), target))

    @task
    def restart_registry(plans: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.restart_registry(dag_support.environment_from(params), plans))

    @task
    def commit(target: str, params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.commit_phase(dag_support.environment_from(params), target))

    @task
    def client_identities(params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.ensure_client_identities(dag_support.environment_from(params)))

    @task
    def start_canary(params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.start_canary(dag_support.environment_from(params), run_dir()))

    @task
    def acls_and_quotas(params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.ensure_acls_and_quotas(dag_support.environment_from(params)))

    @task(trigger_rule="all_done")
    def stop_canary() -> dict[str, Any]:
        return dag_support.recorded(stage.stop_canary(run_dir()))

    @task
    def verify_from_outside(params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.verify_from_outside(dag_support.environment_from(params)))

    previous = None
    for target in stage.STEPS:
        configured = configure.override(task_id=f"configure_{target}")(target)
        roll = RollingRestartOperator(
            task_id=f"roll_{target}",
            environment_name=ENV,
            plan_task_id=f"configure_{target}",
            phase=f"{{{{ ti.xcom_pull(task_ids='configure_{target}', key='summary')['{stage.CLIENT_PHASE}'] }}}}",
            gate_timeout=GATE_TIMEOUT,
            settle_seconds=SETTLE,
        )
        registry = restart_registry.override(task_id=f"registry_{target}")(configured["data"])
        registry_gate = ClusterHealthSensor(
            task_id=f"gate_registry_{target}",
            check="registry",
            environment_name=ENV,
            phase=f"{{{{ ti.xcom_pull(task_ids='configure_{target}', key='summary')['{stage.EFFECTIVE_PHASE}'] }}}}",
            gate_timeout=GATE_TIMEOUT,
            settle_seconds=0,
        )
        committed = commit.override(task_id=f"commit_{target}")(target)
        if previous is not None:
            previous >> configured
        # The registry restarts beside the brokers' roll: neither waits on the other (its store is its own),
        # and the phase is committed only once both are through their gates.
        configured >> [roll, registry]
        registry >> registry_gate
        [roll, registry_gate] >> committed
        if target == "listeners":
            users = client_identities()
            canary = start_canary()
            committed >> users >> canary
            previous = canary
        elif target == "interbroker":
            acls = acls_and_quotas()
            committed >> acls
            previous = acls
        else:
            stopped = stop_canary()
            verified = verify_from_outside()
            committed >> stopped >> verified
            committed >> verified  # verify a finished migration only, not one a gate stopped halfway
            previous = verified
    dag_support.closing_tasks(DAG_ID, "Security: TLS, authentication, authorization", conclude)


def conclude(context: Mapping[str, Any], results: list[Result]) -> tuple[list[Result], dict[str, Any]]:
    """The canary's zero-loss verdict and the migration chart's data are the report's summary."""
    migration = next((r for r in results if r.id == "canary.zero_loss"), None)
    summary = {
        "migration": migration.observed if migration else None,
        "changes": sum(1 for r in results if r.status.value == "changed"),
        **stage.migration_chart_data(results),
    }
    return results, summary


event_broker_security()
