"""Stage 4, schemas: the catalog's topics in Kafka and its schemas in the registry, as evidence.

Plain Python over confluent-kafka's ``AdminClient`` and ``SchemaRegistryClient``: the DAG builds the
two clients and calls ``reconcile`` (or the two halves); tests call the same functions against real
services on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from event_broker_rollout.config.catalog import Catalog, Policies, desired_topics
from event_broker_rollout.evidence.results import Result
from event_broker_rollout.resources.registry import SchemaOutcome, SubjectPlan, reconcile_schemas
from event_broker_rollout.resources.subjects import KEY_SCHEMA, SubjectSchema, canonical, load_subject_schemas
from event_broker_rollout.resources.topics import TopicOutcome, TopicPlan, plan_topic, reconcile_topics

__all__ = [
    "KEY_SCHEMA",
    "ReconcileOutcome",
    "SchemaOutcome",
    "SubjectPlan",
    "SubjectSchema",
    "TopicOutcome",
    "TopicPlan",
    "canonical",
    "load_subject_schemas",
    "plan_topic",
    "reconcile",
    "reconcile_schemas",
    "reconcile_topics",
]


@dataclass
class ReconcileOutcome:
    topics: TopicOutcome
    schemas: SchemaOutcome
    dry_run: bool

    @property
    def results(self) -> list[Result]:
        return [*self.topics.results, *self.schemas.results]

    def summary(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, **self.topics.summary(), **self.schemas.summary()}

    def plan(self) -> dict[str, Any]:
        """What a run would do or did, per topic and per subject (JSON-safe)."""
        return {
            "topics": [plan.to_dict() for plan in self.topics.plans],
            "subjects": [plan.to_dict() for plan in self.schemas.plans],
        }


def reconcile(
    catalog: Catalog,
    policies: Policies,
    *,
    admin: AdminClient,
    registry: SchemaRegistryClient,
    dry_run: bool = False,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
    timeout: float = 30.0,
) -> ReconcileOutcome:
    """Topics, then schemas. ``replication_factor``/``min_insync_replicas`` override the catalog for a
    cluster smaller than it (the DAG passes the environment's settings)."""
    specs = desired_topics(
        catalog, policies, replication_factor=replication_factor, min_insync_replicas=min_insync_replicas
    )
    topics = reconcile_topics(admin, specs, dry_run=dry_run, timeout=timeout)
    schemas = reconcile_schemas(registry, load_subject_schemas(catalog), dry_run=dry_run)
    return ReconcileOutcome(topics=topics, schemas=schemas, dry_run=dry_run)
