"""Rolling restart: one Kafka node at a time, each followed by the health gates, deferring in between.

Before each restart the operator asks the safety policy (``cluster.restarts``: every other broker answers,
no partition would drop below min.insync.replicas) and refuses to go on otherwise; after each restart it defers to
the brokers and partitions triggers, so no worker slot is held while the node rejoins. A failed gate
stops the roll: the next node is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NoReturn

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from event_broker_rollout.airflow import runtime  # noqa: F401  (installs Airflow as the orchestrator)
from event_broker_rollout.airflow.sensors import fail_gate, gate_result, resolve_phase
from event_broker_rollout.airflow.tasks import DEFAULT_SETTLE_SECONDS, recorded
from event_broker_rollout.airflow.triggers import ClusterHealthTrigger, healthy_now
from event_broker_rollout.cluster.restarts import restart_refusal
from event_broker_rollout.config.environment import Environment
from event_broker_rollout.config.validation import validated_environment
from event_broker_rollout.evidence.results import Result, Status
from event_broker_rollout.evidence.steps import Step, step_data
from event_broker_rollout.hosts.desired import KAFKA_SERVICE
from event_broker_rollout.hosts.fleet import restart_service, rolling_restart_queue


class RollingRestartOperator(BaseOperator):
    template_fields: Sequence[str] = ("environment_name", "gate_timeout", "settle_seconds", "phase")

    def __init__(
        self,
        *,
        environment_name: str,
        plan_task_id: str,
        gate_timeout: Any = 300,
        settle_seconds: Any = DEFAULT_SETTLE_SECONDS,
        phase: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.environment_name = environment_name
        self.plan_task_id = plan_task_id
        self.phase = phase
        self.gate_timeout = gate_timeout
        self.settle_seconds = settle_seconds

    def _plans(self, context: Context) -> dict[str, Any]:
        plans: dict[str, Any] = step_data(context["ti"].xcom_pull(task_ids=self.plan_task_id))
        return plans

    def execute(self, context: Context) -> dict[str, Any]:

        environment = validated_environment(self.environment_name)
        queue = rolling_restart_queue(environment, self._plans(context))
        if not queue:
            nothing = Result(
                id="infra.rolling_restart", status=Status.OK, message="no running node needs a restart"
            )
            return recorded(Step.of([nothing]), context)
        self.phase = resolve_phase(environment, self.phase)
        return self._restart_next(context, queue, [])

    def _restart_next(self, context: Context, queue: list[str], done: list[dict[str, Any]]) -> dict[str, Any]:

        environment = validated_environment(self.environment_name)
        host_name, rest = queue[0], queue[1:]
        refusal = restart_refusal(environment, self._phase(environment), host_name)
        if refusal is not None:
            self._refuse(context, done, host_name, refusal)
        done = [*done, restart_service(environment, self._plans(context), host_name, KAFKA_SERVICE)]
        self.defer(
            trigger=ClusterHealthTrigger(
                check="brokers",
                environment_name=self.environment_name,
                phase=self._phase(environment),
                timeout_seconds=float(self.gate_timeout),
                settle_seconds=float(self.settle_seconds),
                carry={"queue": rest, "done": done, "host_name": host_name},
            ),
            method_name="after_brokers_gate",
            timeout=timedelta(seconds=float(self.gate_timeout) + 120),
        )

    def _refuse(self, context: Context, done: list[dict[str, Any]], host_name: str, why: str) -> NoReturn:
        refusal = Result(
            id=f"infra.rolling_restart[{host_name}]",
            status=Status.FAIL,
            host=host_name,
            message=f"refused to restart {host_name}: {why}",
        )
        context["ti"].xcom_push(
            key="return_value", value=recorded(self._step([*done, refusal.to_dict()]), context)
        )
        raise AirflowFailException(refusal.message)

    @staticmethod
    def _step(done: list[dict[str, Any]]) -> Step:
        """The roll's results so far (carried through each deferral as dicts)."""
        return Step.of(Result.from_dict(item) for item in done)

    def after_brokers_gate(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        queue, done, host_name = event["carry"]["queue"], event["carry"]["done"], event["carry"]["host_name"]
        environment = validated_environment(self.environment_name)
        result = gate_result(
            environment, "brokers", event["status"] == "healthy", event["observed"], event["waited_seconds"]
        )
        if result.status is Status.FAIL:
            fail_gate(context, result, earlier=self._step(done).results)
        carry = {
            "queue": queue,
            "done": [*done, {**result.to_dict(), "host": host_name}],
            "host_name": host_name,
        }
        in_sync = healthy_now(environment, "partitions", self._phase(environment))
        if in_sync is not None:  # answered at once: no deferral (see MIN_DEFERRAL_SECONDS)
            return self.after_partitions_gate(context, {**in_sync, "carry": carry})
        self.defer(
            trigger=ClusterHealthTrigger(
                check="partitions",
                environment_name=self.environment_name,
                phase=self._phase(environment),
                timeout_seconds=float(self.gate_timeout),
                settle_seconds=0,
                carry=carry,
            ),
            method_name="after_partitions_gate",
            timeout=timedelta(seconds=float(self.gate_timeout) + 120),
        )

    def after_partitions_gate(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        queue, done, host_name = event["carry"]["queue"], event["carry"]["done"], event["carry"]["host_name"]
        environment = validated_environment(self.environment_name)
        result = gate_result(
            environment,
            "partitions",
            event["status"] == "healthy",
            event["observed"],
            event["waited_seconds"],
        )
        done = [*done, {**result.to_dict(), "host": host_name}]
        if result.status is Status.FAIL:
            context["ti"].xcom_push(key="return_value", value=recorded(self._step(done), context))
            raise AirflowFailException(
                f"{result.id} failed after restarting {host_name}: {result.message}; the roll stops here"
            )
        if queue:
            return self._restart_next(context, queue, done)
        return recorded(self._step(done), context)

    def _phase(self, environment: Environment) -> str:
        # Resolved once in execute(); a resumed instance is a fresh object, so resolve again if needed.
        self.phase = resolve_phase(environment, self.phase)
        return self.phase
