"""Stage 4 — Schemas: the healthcare event catalog as topics and registered schemas, compatibility enforced.

Topics are created with their catalog settings (partitions grow, never shrink; replication differences
are reported, not applied). Every new schema version is tested against the live registry before
anything is registered: if one subject is incompatible, nothing from the run is registered. The same
schema twice registers no new version. `dry_run` shows the plan and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from event_broker_rollout.airflow import tasks as dag_support
from event_broker_rollout.evidence.results import Result
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
    def validate_catalog(params: dict[str, Any]) -> dict[str, Any]:
        """Fails here, before the cluster is touched, if the catalog breaks a policy (YAML paths named)."""
        return dag_support.recorded(stage.validate(dag_support.environment_from(params)))

    @task
    def reconcile(params: dict[str, Any]) -> dict[str, Any]:
        environment = dag_support.environment_from(params)
        return dag_support.recorded(stage.reconcile_environment(environment, dry_run=params["dry_run"]))

    validate_catalog() >> reconcile()
    dag_support.closing_tasks(DAG_ID, "Schemas: healthcare event catalog", conclude)


def conclude(context: Mapping[str, Any], results: list[Result]) -> tuple[list[Result], dict[str, Any]]:
    return results, stage.summary(results, context["params"]["dry_run"])


event_broker_schemas()
