"""Triggers for the health gates: they poll in the triggerer, so no worker slot is held while waiting.

The blocking confluent-kafka and HTTP calls run in a thread (``asyncio.to_thread``). A gate passes only
when the cluster stays healthy for ``settle_seconds`` (longer than a broker's session timeout), so a
broker that died just before the gate is not counted as registered. On its own deadline the trigger
reports the last state it observed, so the failed gate can say what was wrong.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from event_broker_rollout.infrastructure import health

CHECKS = ("brokers", "partitions", "registry")


class ClusterHealthTrigger(BaseTrigger):
    def __init__(
        self,
        check: str,
        timeout_seconds: float,
        poll_interval: float = 2.0,
        settle_seconds: float = 0.0,
        kafka_conn_id: str | None = None,
        expected_brokers: list[int] | None = None,
        min_insync_replicas: int = 1,
        registry_url: str | None = None,
        registry_health_url: str | None = None,
        carry: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if check not in CHECKS:
            raise ValueError(f"unknown health check {check!r}")
        self.check = check
        self.timeout_seconds = timeout_seconds
        self.poll_interval = poll_interval
        self.settle_seconds = settle_seconds
        self.kafka_conn_id = kafka_conn_id
        self.expected_brokers = expected_brokers or []
        self.min_insync_replicas = min_insync_replicas
        self.registry_url = registry_url
        self.registry_health_url = registry_health_url
        # State the deferring operator needs back when it resumes. It rides in the event itself because
        # dag.test() resumes with the event alone, dropping the defer() kwargs.
        self.carry = carry or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "check": self.check,
                "timeout_seconds": self.timeout_seconds,
                "poll_interval": self.poll_interval,
                "settle_seconds": self.settle_seconds,
                "kafka_conn_id": self.kafka_conn_id,
                "expected_brokers": self.expected_brokers,
                "min_insync_replicas": self.min_insync_replicas,
                "registry_url": self.registry_url,
                "registry_health_url": self.registry_health_url,
                "carry": self.carry,
            },
        )

    async def _client_config(self) -> dict[str, Any]:
        if self.kafka_conn_id is None:
            return {}
        from airflow.sdk import BaseHook

        connection = await BaseHook.aget_connection(self.kafka_conn_id)
        return dict(connection.extra_dejson)

    def _probe(self, config: dict[str, Any]) -> dict[str, Any]:
        if self.check == "registry":
            return health.registry_status(self.registry_url or "", self.registry_health_url or "")
        admin = health.admin_client(config)
        if self.check == "brokers":
            return health.brokers_status(admin, self.expected_brokers)
        return health.partitions_status(admin, self.min_insync_replicas)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        config = await self._client_config()
        started = time.monotonic()
        healthy_since: float | None = None
        while True:
            observed = await asyncio.to_thread(self._probe, config)
            now = time.monotonic()
            if observed.get("healthy"):
                healthy_since = healthy_since if healthy_since is not None else now
                if now - healthy_since >= self.settle_seconds:
                    yield TriggerEvent({"status": "healthy", "check": self.check, "observed": observed, "waited_seconds": round(now - started, 1), "carry": self.carry})
                    return
            else:
                healthy_since = None
            if now - started >= self.timeout_seconds:
                yield TriggerEvent({"status": "timeout", "check": self.check, "observed": observed, "waited_seconds": round(now - started, 1), "carry": self.carry})
                return
            await asyncio.sleep(self.poll_interval)
