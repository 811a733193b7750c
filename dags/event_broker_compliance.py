"""Compliance re-verification: the rolled-out cluster checked daily from outside, changing nothing.

Policy as data (`config/compliance.yaml`): TLS-only listeners and TLS 1.2+, certificates and their
expiry, authentication required and only approved SCRAM users, authorizer and deny-by-default, exact
super users and ACLs, a principal without grants refused on PHI, durability, health, retention per
classification, topics and schemas as the catalog declares, the audit trail, and the permissions of
keys and secret-bearing files on every host. Each finding names the HIPAA Security Rule clause
(45 CFR 164.312) it supports. A failed blocking check fails the run, so Airflow's alerting fires;
advisory findings warn. The report (JSON + HTML with a per-check table and the trend over the last
runs) lands in `reports/event_broker_compliance/<run>/`; the findings also go to the compliance topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from event_broker_rollout.airflow import compliance_report
from event_broker_rollout.airflow import tasks as dag_support
from event_broker_rollout.compliance import stage
from event_broker_rollout.evidence.results import Result

DAG_ID = "event_broker_compliance"
TITLE = "Compliance: HIPAA Security Rule re-verification"


@dag(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=dag_support.DEFAULT_ARGS,
    dagrun_timeout=timedelta(minutes=15),
    doc_md=__doc__,
    tags=["event-broker", "compliance"],
    params={
        "environment": dag_support.environment_param(),
        "trend_runs": Param(
            30,
            type="integer",
            minimum=2,
            maximum=365,
            title="Runs in the trend",
            description="How many recent runs the report's trend chart and per-check history show.",
        ),
    },
)
def event_broker_compliance() -> None:
    @task
    def validate_policy(params: dict[str, Any]) -> list[str]:
        """Fails here, before anything is probed, if the environment, catalog or policy has mistakes. The
        host names are the list inspect_host maps over."""
        return stage.validate(dag_support.environment_from(params))

    @task(execution_timeout=timedelta(minutes=3))
    def probe_listeners(params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.transmission(dag_support.environment_from(params)))

    @task(execution_timeout=timedelta(minutes=3))
    def check_access(params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.access_control(dag_support.environment_from(params)))

    @task(execution_timeout=timedelta(minutes=3))
    def check_cluster(params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.cluster(dag_support.environment_from(params)))

    @task(execution_timeout=timedelta(minutes=3))
    def check_registry(params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.registry(dag_support.environment_from(params)))

    @task(execution_timeout=timedelta(minutes=2))
    def inspect_host(host_name: str, params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.host(dag_support.environment_from(params), host_name))

    hosts = validate_policy()
    checked = [probe_listeners(), check_access(), check_cluster(), check_registry()]
    inspect_host.expand(host_name=hosts)
    hosts >> checked
    dag_support.closing_tasks(DAG_ID, TITLE, write_report=write_report)


def write_report(context: Mapping[str, Any], results: list[Result]) -> str:
    """Findings published, the report with its per-check table and trend; a failed blocking check fails the run."""
    params = context["params"]
    environment = dag_support.environment_from(params)
    return compliance_report.finish(context, DAG_ID, TITLE, environment, results, params["trend_runs"])


event_broker_compliance()
