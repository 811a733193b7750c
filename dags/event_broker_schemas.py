"""Stage 4 — Schemas: the healthcare event catalog as topics and registered schemas, compatibility enforced.

Topics are created with their catalog settings (partitions grow, never shrink; replication differences
are reported, not applied). Every new schema version is tested against the live registry before
anything is registered: if one subject is incompatible, nothing from the run is registered. The same
schema twice registers no new version. `dry_run` shows the plan and changes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, get_current_context, task

from event_broker_rollout.airflow import tasks as dag_support
from event_broker_rollout.airflow.trail_export import export_task_trail
from event_broker_rollout.schemas import stage

DAG_ID = "event_broker_schemas"


@dag(
    dag_id=DAG_ID,
    schedule=None,
    catchup=False,
    default_args=dag_support.DEFAULT_ARGS,
    dagrun_timeout=timedelta(minutes=20),
    doc_md=__doc__,
    tags=["event-broker", "stage-4"],
    params={"environment": dag_support.environment_param(), "dry_run": dag_support.dry_run_param()},
)
def event_broker_schemas() -> None:
    @task
    def validate_catalog(params: dict[str, Any]) -> list[dict[str, Any]]:
        """Fails here, before the cluster is touched, if the catalog breaks a policy (YAML paths named)."""
        return stage.validate(dag_support.environment_from(params))

    @task
    def reconcile(params: dict[str, Any]) -> list[dict[str, Any]]:
        return stage.reconcile_environment(dag_support.environment_from(params), dry_run=params["dry_run"])

    @task(trigger_rule="all_done")
    def export_audit_trail() -> dict[str, Any]:
        return export_task_trail(get_current_context(), DAG_ID)

    @task(trigger_rule="all_done")
    def report(params: dict[str, Any]) -> str:
        ti = get_current_context()["ti"]
        results = dag_support.results_from(
            ti.xcom_pull(task_ids="validate_catalog"), ti.xcom_pull(task_ids="reconcile")
        )
        summary = stage.summary(results, params["dry_run"])
        return dag_support.publish_report(
            get_current_context(), DAG_ID, "Schemas: healthcare event catalog", results, summary
        )

    validate_catalog() >> reconcile() >> export_audit_trail() >> report()


event_broker_schemas()
