"""Stage 2 — Infrastructure: install, configure and start a KRaft Kafka cluster and the Schema Registry.

Controllers first, then brokers, every step behind health gates that nothing downstream can pass while
they fail. The registry starts beside them behind its own gate: Apicurio keeps its schemas in its own
database, and the confluent registry waits at start for its Kafka store as long as a gate would. A re-run
with nothing to do changes nothing and restarts nothing; a config change restarts only the nodes it
affects, one at a time, gated between each. `dry_run` shows the plan (files with diffs, services to start
or restart) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from event_broker_rollout.airflow import tasks as dag_support
from event_broker_rollout.airflow.operators import RollingRestartOperator
from event_broker_rollout.airflow.sensors import ClusterHealthSensor, ControllerQuorumSensor
from event_broker_rollout.evidence.results import Result
from event_broker_rollout.evidence.steps import step_data
from event_broker_rollout.hosts import fleet
from event_broker_rollout.hosts.desired import KAFKA_SERVICE
from event_broker_rollout.infrastructure import stage

DAG_ID = "event_broker_infrastructure"
ENV = "{{ params.environment }}"
GATE_TIMEOUT = "{{ params.gate_timeout_seconds }}"
SETTLE = "{{ params.gate_settle_seconds }}"


@dag(
    dag_id=DAG_ID,
    schedule=None,
    catchup=False,
    default_args=dag_support.DEFAULT_ARGS,
    dagrun_timeout=timedelta(minutes=45),
    doc_md=__doc__,
    tags=["event-broker", "stage-2"],
    params={
        "environment": dag_support.environment_param(),
        "dry_run": dag_support.dry_run_param(),
        "gate_timeout_seconds": Param(
            300,
            type="integer",
            minimum=10,
            title="Gate timeout (s)",
            description="How long a health gate waits before it fails the stage.",
        ),
        "gate_settle_seconds": dag_support.gate_settle_param(
            "How long the cluster must stay healthy before a gate passes, after a node started."
        ),
    },
)
def event_broker_infrastructure() -> None:
    @task
    def plan(params: dict[str, Any]) -> dict[str, Any]:
        """Read-only: observe every host and compute what would change."""
        return dag_support.recorded(stage.plan(dag_support.environment_from(params)))

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def proceed(planned: dict[str, Any], params: dict[str, Any]) -> list[str]:
        """Stop here on a dry run (the report shows the plan), or before any change when a host could not
        be planned or a change step would refuse (another cluster's data, a foreign port, file or install).
        Otherwise the hosts, the list install maps over (a plain list: Airflow maps over return values
        only; an empty one is what stops the run)."""
        fleet.planned_hosts(step_data(planned))
        return [] if params["dry_run"] else list(step_data(planned))

    @task(max_active_tis_per_dagrun=4)
    def install(host_name: str, planned: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        environment = dag_support.environment_from(params)
        return dag_support.recorded(stage.install_host(environment, step_data(planned), host_name))

    @task
    def configure(planned: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        return dag_support.recorded(stage.configure(dag_support.environment_from(params), step_data(planned)))

    @task
    def start_controllers(planned: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        environment = dag_support.environment_from(params)
        return dag_support.recorded(
            stage.start_services(environment, step_data(planned), "controller", KAFKA_SERVICE)
        )

    @task
    def start_brokers(planned: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        environment = dag_support.environment_from(params)
        return dag_support.recorded(
            stage.start_services(environment, step_data(planned), "broker", KAFKA_SERVICE)
        )

    @task
    def start_registry(planned: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        environment = dag_support.environment_from(params)
        return dag_support.recorded(stage.start_registry(environment, step_data(planned)))

    plans = plan()
    host_names = proceed(plans)
    installed = install.partial(planned=plans).expand(host_name=host_names)
    configured = configure(plans)
    controllers = start_controllers(plans)
    quorum = ControllerQuorumSensor(
        task_id="gate_controller_quorum", environment_name=ENV, gate_timeout=GATE_TIMEOUT, timeout=3600
    )
    brokers = start_brokers(plans)
    registered = ClusterHealthSensor(
        task_id="gate_brokers_registered",
        check="brokers",
        environment_name=ENV,
        gate_timeout=GATE_TIMEOUT,
        settle_seconds=SETTLE,
        settle_after=("start_controllers", "start_brokers"),  # only a started broker can crash-loop
    )
    partitions = ClusterHealthSensor(
        task_id="gate_partitions_healthy",
        check="partitions",
        environment_name=ENV,
        gate_timeout=GATE_TIMEOUT,
        settle_seconds=0,
    )
    rolling = RollingRestartOperator(
        task_id="rolling_restart",
        environment_name=ENV,
        plan_task_id="plan",
        gate_timeout=GATE_TIMEOUT,
        settle_seconds=SETTLE,
    )
    registry = start_registry(plans)
    registry_gate = ClusterHealthSensor(
        task_id="gate_registry_healthy",
        check="registry",
        environment_name=ENV,
        gate_timeout=GATE_TIMEOUT,
        settle_seconds=0,
    )

    installed >> configured >> controllers >> quorum >> brokers >> registered >> partitions >> rolling
    configured >> registry >> registry_gate
    dag_support.closing_tasks(DAG_ID, "Infrastructure: KRaft cluster and Schema Registry", conclude)


def conclude(context: Mapping[str, Any], results: list[Result]) -> tuple[list[Result], dict[str, Any]]:
    """A dry run shows the plan; a run that stopped at its plan shows why (an unreachable host, a refusal)."""
    plans = step_data(context["ti"].xcom_pull(task_ids="plan")) or {}
    dry_run = context["params"]["dry_run"]
    planned = stage.plan_results(plans, dry_run=True) if dry_run else stage.blocking_results(plans)
    results = [*planned, *results]
    return results, stage.summary(plans, results, dry_run)


event_broker_infrastructure()
