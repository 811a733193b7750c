"""Stage 5 — Integration: component contracts and healthcare events validated end to end.

Each component proves its contract with its own credentials (it can produce and consume what it should
and is refused what it should not). Meanwhile synthetic healthcare events — or the site's own sample file —
are produced as the producing components, consumed as the consuming ones, and validated with Great
Expectations (results never echo event values). Events that fail go to their topic's dead-letter topic
with the reason, and are counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from event_broker_rollout.airflow import tasks as dag_support
from event_broker_rollout.evidence.results import Result, report_dir
from event_broker_rollout.integration import stage

DAG_ID = "event_broker_integration"


@dag(
    dag_id=DAG_ID,
    schedule=None,
    catchup=False,
    default_args=dag_support.DEFAULT_ARGS,
    dagrun_timeout=timedelta(minutes=30),
    doc_md=__doc__,
    tags=["event-broker", "stage-5"],
    params={
        "environment": dag_support.environment_param(),
        "sample_events": Param(
            None,
            type=["null", "string"],
            title="Sample events file",
            description="A JSON-lines file of events in the catalog's envelope (a site's own feed). Empty: synthetic events.",
        ),
        "event_count": Param(
            1200,
            type="integer",
            minimum=1,
            maximum=200000,
            title="Synthetic events",
            description="How many synthetic events to generate across all event types.",
        ),
        "seed": Param(
            42,
            type="integer",
            title="Seed",
            description="The synthetic generator's seed (same seed, same events).",
        ),
    },
)
def event_broker_integration() -> None:
    @task
    def verify_contracts(params: dict[str, Any]) -> dict[str, Any]:
        environment = dag_support.environment_from(params)
        return dag_support.recorded(stage.verify_contracts(environment, get_current_context()["run_id"]))

    @task
    def end_to_end(params: dict[str, Any]) -> dict[str, Any]:
        context = get_current_context()
        docs = report_dir(DAG_ID, context["run_id"]) / "data-docs"
        flow = stage.end_to_end(
            dag_support.environment_from(params),
            context["run_id"],
            params["sample_events"],
            params["event_count"],
            params["seed"],
            docs,
        )
        return dag_support.recorded(flow)

    # Side by side: the contract probes and the run's events use their own groups and records (the
    # flow reads only records carrying its run header), so neither waits for the other.
    verify_contracts()
    end_to_end()
    dag_support.closing_tasks(DAG_ID, "Integration: contracts and healthcare events end to end", conclude)


def conclude(context: Mapping[str, Any], results: list[Result]) -> tuple[list[Result], dict[str, Any]]:
    """The end-to-end step's figures (events, latency, quality) are the report's summary."""
    flow = context["ti"].xcom_pull(task_ids="end_to_end") or {}
    return results, flow.get("summary", {})


event_broker_integration()
