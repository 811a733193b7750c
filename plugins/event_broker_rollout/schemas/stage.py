"""The schemas stage's steps: validate the catalog, then reconcile topics and subjects on the live cluster."""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient

from event_broker_rollout.cluster import clients, health
from event_broker_rollout.config.catalog import load_checked_catalog
from event_broker_rollout.config.environment import Environment
from event_broker_rollout.evidence.results import Result, Status
from event_broker_rollout.evidence.steps import Step
from event_broker_rollout.hosts.fleet import recorded_phase
from event_broker_rollout.schemas import reconcile


def validate(environment: Environment) -> Step:
    catalog, _ = load_checked_catalog(environment.catalog, environment.policies)
    subjects = len(catalog.events) * 2
    valid = Result(
        id="catalog.valid",
        status=Status.PASS,
        message=f"{len(catalog.events)} event types, {len(catalog.topics())} topics, {subjects} subjects; policies respected",
    )
    return Step.of([valid])


def reconcile_environment(environment: Environment, dry_run: bool) -> Step:
    catalog, policies = load_checked_catalog(environment.catalog, environment.policies)
    phase = recorded_phase(environment)
    outcome = reconcile(
        catalog,
        policies,
        admin=health.authenticated_admin(clients.admin_config(environment, phase)),
        registry=SchemaRegistryClient(clients.registry_config(environment, phase)),
        dry_run=dry_run,
        replication_factor=environment.kafka.default_replication_factor,
        min_insync_replicas=environment.kafka.min_insync_replicas,
    )
    return Step.of(outcome.results)


def summary(results: list[Result], dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "changes": sum(1 for r in results if r.status is Status.CHANGED),
        "topics": sum(1 for r in results if r.id.startswith("topic.create[")),
        "subjects": sum(1 for r in results if r.id.startswith("schema.register[")),
        "refused": [r.id for r in results if r.status is Status.FAIL],
    }
