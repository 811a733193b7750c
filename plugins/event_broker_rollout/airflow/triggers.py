"""Triggers for the health gates: they poll in the triggerer, so no worker slot is held while waiting.

The blocking confluent-kafka and HTTP calls run in a thread (``asyncio.to_thread``). A gate passes only
when the cluster stays healthy for ``settle_seconds``, so a node that dies right after it started is
not counted. On its own deadline the trigger reports the last state it observed, so the failed gate
can say what was wrong.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from event_broker_rollout.airflow import runtime  # noqa: F401  (installs Airflow as the orchestrator)
from event_broker_rollout.cluster import clients, health
from event_broker_rollout.config.environment import Environment, load_environment

CHECKS = ("brokers", "partitions", "registry")


# An event fired within a second of deferring can reach the scheduler before it has processed the
# deferring attempt's own exit, which it then takes for a task finished twice and fails (seen under
# LocalExecutor). Gates that are healthy at once are answered without deferring (sensors.py,
# operators.py); a trigger never answers sooner than this.
MIN_DEFERRAL_SECONDS = 5.0


def gate_event(
    status: str, check: str, observed: dict[str, Any], waited: float, carry: dict[str, Any]
) -> dict[str, Any]:
    """What a gate resumes with, from the trigger or from a look in the task itself."""
    return {
        "status": status,
        "check": check,
        "observed": observed,
        "waited_seconds": round(waited, 1),
        "carry": carry,
    }


class ClusterHealthTrigger(BaseTrigger):
    def __init__(
        self,
        check: str,
        environment_name: str,
        phase: str,
        timeout_seconds: float,
        poll_interval: float = 2.0,
        settle_seconds: float = 0.0,
        carry: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if check not in CHECKS:
            raise ValueError(f"unknown health check {check!r}")
        self.check = check
        self.environment_name = environment_name
        self.phase = phase
        self.timeout_seconds = timeout_seconds
        self.poll_interval = poll_interval
        self.settle_seconds = settle_seconds
        # State the deferring operator needs back when it resumes. It rides in the event itself because
        # dag.test() resumes with the event alone, dropping the defer() kwargs.
        self.carry = carry or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "check": self.check,
                "environment_name": self.environment_name,
                "phase": self.phase,
                "timeout_seconds": self.timeout_seconds,
                "poll_interval": self.poll_interval,
                "settle_seconds": self.settle_seconds,
                "carry": self.carry,
            },
        )

    async def _probe_function(self) -> Callable[[], dict[str, Any]]:
        environment = load_environment(self.environment_name)
        if self.check == "registry":
            return health_probe(environment, self.check, self.phase, None)
        if not clients.admin_login_in_connection(environment):
            return health_probe(
                environment, self.check, self.phase, clients.admin_config(environment, self.phase)
            )
        from airflow.sdk import BaseHook

        connection = await BaseHook.aget_connection(environment.connections.kafka_admin)
        config = clients.kafka_config(environment, self.phase, connection.login, connection.password)
        return health_probe(environment, self.check, self.phase, config)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        probe = await self._probe_function()
        started = time.monotonic()
        healthy_since: float | None = None
        while True:
            observed = await asyncio.to_thread(probe)
            now = time.monotonic()
            if observed.get("healthy"):
                healthy_since = healthy_since if healthy_since is not None else now
                settled = now - healthy_since >= self.settle_seconds
                if settled and now - started >= MIN_DEFERRAL_SECONDS:
                    yield TriggerEvent(gate_event("healthy", self.check, observed, now - started, self.carry))
                    return
            else:
                healthy_since = None
            if now - started >= self.timeout_seconds:
                yield TriggerEvent(gate_event("timeout", self.check, observed, now - started, self.carry))
                return
            await asyncio.sleep(self.poll_interval)


def health_probe(
    environment: Environment, check: str, phase: str, kafka_config: Mapping[str, Any] | None
) -> Callable[[], dict[str, Any]]:
    """One look at the cluster for a gate: ``registry``, ``brokers`` or ``partitions``."""
    if check == "registry":
        base = clients.registry_base_url(environment, phase)
        ca = clients.ca_file(environment) if base.startswith("https") else None
        api = clients.registry_api_url(environment, base)
        headers = clients.registry_headers(environment, phase)
        return lambda: health.registry_status(api, f"{base}/health/ready", ca, headers)
    assert kafka_config is not None
    config = dict(kafka_config)
    if check == "brokers":
        expected = [environment.node_id(h) for h in environment.brokers]
        return lambda: health.brokers_status(health.admin_client(config), expected)
    return lambda: health.partitions_status(
        health.admin_client(config), environment.kafka.min_insync_replicas
    )


def healthy_now(
    environment: Environment, check: str, phase: str, settle_seconds: float = 0.0, poll_interval: float = 1.0
) -> dict[str, Any] | None:
    """A gate's event when the cluster is healthy right now and stays healthy through ``settle_seconds``,
    watched in the calling task; None as soon as a look finds it unhealthy (the gate then defers). A
    window no longer than MIN_DEFERRAL_SECONDS ends sooner here than a deferral could."""
    config = None if check == "registry" else clients.admin_config(environment, phase)
    probe = health_probe(environment, check, phase, config)
    started = time.monotonic()
    while True:
        observed = probe()
        if not observed.get("healthy"):
            return None
        waited = time.monotonic() - started
        if waited >= settle_seconds:
            return gate_event("healthy", check, observed, waited, {})
        time.sleep(min(poll_interval, settle_seconds - waited))
