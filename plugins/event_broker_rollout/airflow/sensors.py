"""Health gates as sensors. Nothing downstream starts until a gate passes; a gate that times out fails the
stage with the last state it observed (which broker is missing, which partitions lag)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NoReturn

from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from event_broker_rollout.airflow import runtime  # noqa: F401  (installs Airflow as the orchestrator)
from event_broker_rollout.airflow.tasks import DEFAULT_SETTLE_SECONDS, recorded
from event_broker_rollout.airflow.triggers import MIN_DEFERRAL_SECONDS, ClusterHealthTrigger, healthy_now
from event_broker_rollout.cluster import health
from event_broker_rollout.config.environment import Environment
from event_broker_rollout.config.validation import validated_environment
from event_broker_rollout.evidence.results import Result, Status
from event_broker_rollout.evidence.steps import Step, is_step
from event_broker_rollout.hosts.fleet import describe_quorum, recorded_phase
from event_broker_rollout.hosts.remote import RemoteError

GATE_IDS = {
    "brokers": "gate.brokers_registered",
    "partitions": "gate.partitions_healthy",
    "registry": "gate.registry_healthy",
    "quorum": "gate.controller_quorum",
}


def describe_failure(environment: Environment, check: str, observed: dict[str, Any]) -> str:
    names = {environment.node_id(h): h.name for h in environment.hosts}
    if check == "brokers":
        missing = ", ".join(f"{names.get(i, '?')} (node {i})" for i in observed.get("missing", []))
        silent = ", ".join(f"{names.get(i, '?')} (node {i})" for i in observed.get("unreachable", []))
        found = [
            *([f"brokers not registered: {missing}"] if missing else []),
            *([f"brokers registered but not answering: {silent}"] if silent else []),
        ]
        return "; ".join(found or ["brokers not registered: unknown"]) + (
            f"; error: {observed['error']}" if observed.get("error") else ""
        )
    if check == "partitions":
        parts = [
            f"{key.replace('_', ' ')}: {', '.join(observed[key][:20])}"
            for key in ("offline", "under_min_isr", "under_replicated")
            if observed.get(key)
        ]
        return "; ".join(parts) or observed.get("error", "partitions unhealthy")
    if check == "quorum":
        missing = ", ".join(
            f"{names.get(i, '?')} (node {i})"
            for i in observed.get("missing", []) + observed.get("lagging", [])
        )
        return f"controller quorum not caught up: {missing or observed.get('error', 'no leader')}"
    return f"registry unhealthy: {observed.get('error') or observed.get('health')}"


def gate_result(
    environment: Environment, check: str, healthy: bool, observed: dict[str, Any], waited: float
) -> Result:
    return Result(
        id=GATE_IDS[check],
        status=Status.PASS if healthy else Status.FAIL,
        message=f"healthy after {waited:.1f}s"
        if healthy
        else f"timed out after {waited:.1f}s: {describe_failure(environment, check, observed)}",
        observed=observed,
        expected="healthy for the settle window",
        details={"waited_seconds": round(waited, 1)},  # the report's gate-wait chart
    )


def fail_gate(context: Context, result: Result, earlier: Sequence[Result] = ()) -> NoReturn:
    """Keep the gate's evidence (and the task's earlier results) for the report, then fail the task (and
    so the stage)."""
    context["ti"].xcom_push(key="return_value", value=recorded(Step.of([*earlier, result]), context))
    raise AirflowFailException(f"{result.id} failed: {result.message}")


def resolve_phase(environment: Environment, phase: str | None) -> str:
    """The security phase to use for client settings: given, or the one the hosts record."""
    if phase:
        return phase

    return recorded_phase(environment)


def started_anything(steps: Sequence[Any]) -> bool:
    """Whether any of these serialized steps reports a change (a service started or restarted)."""
    return any(
        result.status is Status.CHANGED
        for value in steps
        if is_step(value)
        for result in Step.from_dict(value).results
    )


class ClusterHealthSensor(BaseSensorOperator):
    """Deferrable gate: brokers registered, partitions healthy, or the registry up.

    ``settle_seconds`` is how long the cluster must stay healthy before the gate passes: a broker that just
    started must stay up for it (a crash-looping one registers, then drops out).
    With ``settle_after`` the window applies only when one of those tasks started something. When they
    started nothing the gate answers at once: a broker killed meanwhile stays registered until its session
    times out, but the brokers check also connects to every registered broker, which knows at once.
    A cluster already healthy sits out a short window in the task itself; one that is not, or a window
    longer than a deferral's minimum, is watched by the trigger.
    """

    template_fields: Sequence[str] = ("environment_name", "gate_timeout", "settle_seconds", "phase")

    def __init__(
        self,
        *,
        check: str,
        environment_name: str,
        gate_timeout: Any = 300,
        settle_seconds: Any = DEFAULT_SETTLE_SECONDS,
        poll_interval: float = 2.0,
        phase: str | None = None,
        settle_after: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.settle_after = tuple(settle_after)
        self.environment_name = environment_name
        self.gate_timeout = gate_timeout
        self.settle_seconds = settle_seconds
        self.poll_interval = poll_interval
        self.phase = phase

    def execute(self, context: Context) -> dict[str, Any] | None:
        environment = validated_environment(self.environment_name)
        gate_timeout = float(self.gate_timeout)
        settle = float(self.settle_seconds)
        if self.settle_after and not started_anything(
            context["ti"].xcom_pull(task_ids=list(self.settle_after))
        ):
            settle = 0.0
        phase = resolve_phase(environment, self.phase)  # read from the hosts (SSH) when not given: once
        if settle <= MIN_DEFERRAL_SECONDS:  # a deferral would take longer than the window itself
            answered = healthy_now(environment, self.check, phase, settle, self.poll_interval)
            if answered is not None:
                return self.execute_complete(context, answered)
        trigger = ClusterHealthTrigger(
            check=self.check,
            environment_name=self.environment_name,
            phase=phase,
            timeout_seconds=gate_timeout,
            poll_interval=self.poll_interval,
            settle_seconds=settle,
        )
        # The trigger enforces the gate's deadline itself (to report what it saw); this is the backstop.
        self.defer(
            trigger=trigger, method_name="execute_complete", timeout=timedelta(seconds=gate_timeout + 120)
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        environment = validated_environment(self.environment_name)
        result = gate_result(
            environment, self.check, event["status"] == "healthy", event["observed"], event["waited_seconds"]
        )
        if result.status is Status.FAIL:
            fail_gate(context, result)
        return recorded(Step.of([result]), context)


class ControllerQuorumSensor(BaseSensorOperator):
    """Every controller voter caught up, read with the installed distribution's ``kafka-metadata-quorum.sh``.

    The Python client has no quorum call, so this gate asks Kafka's own tool over SSH. It pokes in one
    task process, holding its worker slot for the seconds a quorum takes to form: in reschedule mode a
    poke due a second after the last one was re-queued before the scheduler had handled the last one's
    exit, and the scheduler failed the task (apache/airflow#71172, open in 3.3).
    """

    template_fields: Sequence[str] = ("environment_name", "gate_timeout")

    def __init__(self, *, environment_name: str, gate_timeout: Any = 300, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "poke")
        kwargs.setdefault("poke_interval", 1)  # a controller quorum forms within seconds of its start
        super().__init__(**kwargs)
        self.environment_name = environment_name
        self.gate_timeout = gate_timeout
        self._first_poke: float | None = None

    def poke(self, context: Context) -> bool:

        environment = validated_environment(self.environment_name)
        voters = [environment.node_id(h) for h in environment.controllers]
        port = environment.kafka.listeners.controller_port
        # Kafka's tool is a JVM on a controller host: not started while a controller's listener is still
        # closed, where it could only fail and would take CPU from the starting nodes.
        closed = health.closed_listeners(
            {environment.node_id(h): (str(h.address), port) for h in environment.controllers}
        )
        if closed:
            observed = {
                "healthy": False,
                "missing": closed,
                "lagging": [],
                "error": "controller listener closed",
            }
        else:
            try:
                observed = health.quorum_status(describe_quorum(environment), voters)
            except RemoteError as error:
                observed = {"healthy": False, "missing": [], "lagging": [], "error": str(error)}
        now = time.monotonic()
        self._first_poke = self._first_poke if self._first_poke is not None else now
        waited = now - self._first_poke
        if observed["healthy"]:
            passed = gate_result(environment, "quorum", True, observed, waited)
            context["ti"].xcom_push(key="return_value", value=recorded(Step.of([passed]), context))
            return True
        if waited >= float(self.gate_timeout):
            fail_gate(context, gate_result(environment, "quorum", False, observed, waited))
        self.log.info("quorum not yet healthy: %s", observed)
        return False
