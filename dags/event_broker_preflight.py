"""Stage 1 — Prerequisites: every prerequisite of the guide checked on every host, in parallel.

Hardware against the sizing profile, software, network (ports free and reachable between hosts, subnet,
name resolution, clock, broker throughput), OS tuning, security prerequisites, data classification and
the operator's acknowledgement of the knowledge prerequisites. All checks run before the stage decides,
so one run shows every problem; the stage fails if any blocking check failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from event_broker_rollout.airflow import tasks as dag_support
from event_broker_rollout.evidence.results import Result
from event_broker_rollout.preflight import stage

DAG_ID = "event_broker_preflight"


@dag(
    dag_id=DAG_ID,
    schedule=None,
    catchup=False,
    default_args=dag_support.DEFAULT_ARGS,
    dagrun_timeout=timedelta(minutes=15),
    doc_md=__doc__,
    tags=["event-broker", "stage-1"],
    params={
        "environment": dag_support.environment_param(),
        "sizing_profile": dag_support.sizing_profile_param(),
        "deployment_mode": dag_support.deployment_mode_param(),
        "knowledge_acknowledged": dag_support.knowledge_param(),
    },
)
def event_broker_preflight() -> None:
    @task
    def validate_environment(params: dict[str, Any]) -> list[list[str]]:
        """Fails here, before any host is touched, if the environment file has mistakes. The host names,
        dealt into a few lists, are what inspect_hosts maps over (a plain list: Airflow maps over return
        values only)."""
        return stage.host_batches(dag_support.environment_from(params))

    @task(execution_timeout=timedelta(minutes=3))
    def inspect_hosts(host_names: list[str], params: dict[str, Any]) -> dict[str, Any]:
        environment = dag_support.environment_from(params)
        return dag_support.recorded(
            stage.inspect_hosts(environment, host_names, params["sizing_profile"], params["deployment_mode"])
        )

    @task(trigger_rule="all_done", execution_timeout=timedelta(minutes=5))
    def inspect_network(inspections: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        environment = dag_support.environment_from(params)
        return dag_support.recorded(
            stage.inspect_network(environment, [i for i in inspections if i], params["sizing_profile"])
        )

    @task
    def check_security(params: dict[str, Any]) -> dict[str, Any]:
        """Provided TLS material is read here, on the Airflow side: checked even if a host is unreachable."""
        environment = dag_support.environment_from(params)
        return dag_support.recorded(stage.check_security(environment))

    @task
    def check_governance(params: dict[str, Any]) -> dict[str, Any]:
        environment = dag_support.environment_from(params)
        return dag_support.recorded(
            stage.check_governance(environment, params["knowledge_acknowledged"] or [])
        )

    hosts = validate_environment()
    inspections = inspect_hosts.expand(host_names=hosts)
    inspect_network(inspections)
    security = check_security()
    governance = check_governance()
    hosts >> [security, governance]
    dag_support.closing_tasks(DAG_ID, "Preflight: prerequisites", conclude)


def conclude(context: Mapping[str, Any], results: list[Result]) -> tuple[list[Result], dict[str, Any]]:
    params = context["params"]
    environment = dag_support.environment_from(params)
    summary = {
        "sizing_profile": params["sizing_profile"] or environment.sizing_profile,
        "deployment_mode": params["deployment_mode"] or str(environment.deployment_mode),
        "hosts": len(environment.hosts),
        "knowledge_acknowledged": params["knowledge_acknowledged"] or [],
    }
    return results, summary


event_broker_preflight()
