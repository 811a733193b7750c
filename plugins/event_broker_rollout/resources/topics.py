"""Reconcile Kafka topics with the catalog through confluent-kafka's AdminClient.

Missing topics are created with their configs in the same request. An existing topic is compared
with its ``TopicSpec``: configs that drifted are set back with ``incremental_alter_configs`` where that
is safe, partitions grow to the declared count (never shrink: Kafka cannot), and a replication factor
that differs is reported only (changing it is a partition reassignment, an operator's decision).
With ``dry_run`` every request is sent with ``validate_only``: the broker checks it, nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from event_broker_rollout.config.catalog import TopicSpec
from event_broker_rollout.evidence.results import Result, Severity, Status


@dataclass(frozen=True)
class ObservedTopic:
    partitions: int
    replication_factor: int  # the smallest replica count over the topic's partitions
    configs: Mapping[str, str]


@dataclass
class TopicPlan:
    """What one topic needs: pure data, from the spec and what the cluster holds."""

    spec: TopicSpec
    observed: ObservedTopic | None
    set_configs: dict[str, str] = field(default_factory=dict)  # drifted and safe to set back
    held_configs: dict[str, str] = field(default_factory=dict)  # drifted, left alone: key -> why

    @property
    def create(self) -> bool:
        return self.observed is None

    @property
    def grow(self) -> bool:
        return self.observed is not None and self.observed.partitions < self.spec.partitions

    def to_dict(self) -> dict[str, Any]:
        observed = self.observed
        return {
            "topic": self.spec.topic,
            "create": self.create,
            "partitions": {
                "observed": observed.partitions if observed else None,
                "desired": self.spec.partitions,
            },
            "replication_factor": {
                "observed": observed.replication_factor if observed else None,
                "desired": self.spec.replication_factor,
            },
            "set_configs": self.set_configs,
            "held_configs": self.held_configs,
        }


def _same(key: str, observed: str | None, desired: str) -> bool:
    if observed is None:
        return False
    if key == "cleanup.policy":  # a list: "compact,delete" == "delete,compact"
        return {part.strip() for part in observed.split(",")} == set(desired.split(","))
    return observed == desired


def plan_topic(spec: TopicSpec, observed: ObservedTopic | None) -> TopicPlan:
    plan = TopicPlan(spec=spec, observed=observed)
    if observed is None:
        return plan
    for key, desired in spec.configs.items():
        current = observed.configs.get(key)
        if _same(key, current, desired):
            continue
        if key == "cleanup.policy":
            plan.held_configs[key] = (
                f"is {current}, catalog says {desired}: not changed on a live topic (delete->compact drops "
                "all but the latest record per key, compact->delete starts deleting by age)"
            )
        elif key == "min.insync.replicas" and int(desired) > observed.replication_factor:
            plan.held_configs[key] = (
                f"is {current}, catalog says {desired}: above the topic's {observed.replication_factor} "
                "replicas it would stop every acks=all producer"
            )
        else:
            plan.set_configs[key] = desired
    return plan


def _error_text(error: Exception) -> str:
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return f"{error.args[0].name()}: {error.args[0].str()}"
    return f"{type(error).__name__}: {error}"


def _outcome(future: Future[Any]) -> str | None:
    """None when the request succeeded, else the broker's error."""
    try:
        future.result()
    except Exception as error:  # the futures raise KafkaException, or anything the client hit
        return _error_text(error)
    return None


def observe_topics(admin: AdminClient, topics: Sequence[str], timeout: float) -> dict[str, ObservedTopic]:
    """The named topics that exist, with partitions, replication and configs."""
    metadata = admin.list_topics(timeout=timeout)
    present = [name for name in topics if name in metadata.topics and metadata.topics[name].error is None]
    if not present:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in present]
    described = admin.describe_configs(resources, request_timeout=timeout)
    observed = {}
    for resource, future in described.items():
        entries = future.result()
        partitions = metadata.topics[resource.name].partitions
        observed[resource.name] = ObservedTopic(
            partitions=len(partitions),
            replication_factor=min(len(p.replicas) for p in partitions.values()),
            configs={name: entry.value for name, entry in entries.items() if entry.value is not None},
        )
    return observed


@dataclass
class TopicOutcome:
    results: list[Result]
    plans: list[TopicPlan]

    def summary(self) -> dict[str, Any]:
        return {
            "topics": len(self.plans),
            "to_create": [plan.spec.topic for plan in self.plans if plan.create],
            "to_alter": [plan.spec.topic for plan in self.plans if plan.set_configs],
            "to_grow": [plan.spec.topic for plan in self.plans if plan.grow],
        }


def reconcile_topics(
    admin: AdminClient, specs: Sequence[TopicSpec], *, dry_run: bool = False, timeout: float = 30.0
) -> TopicOutcome:
    """Create, correct and grow topics to match ``specs``; report what it cannot or should not change."""
    observed = observe_topics(admin, [spec.topic for spec in specs], timeout)
    plans = [plan_topic(spec, observed.get(spec.topic)) for spec in specs]
    would = "would " if dry_run else ""
    planned = Status.WARN if dry_run else Status.CHANGED
    planned_severity = Severity.ADVISORY if dry_run else Severity.BLOCKING

    creating = [plan for plan in plans if plan.create]
    created: dict[str, Future[Any]] = {}
    if creating:
        created = admin.create_topics(
            [
                NewTopic(
                    plan.spec.topic,
                    num_partitions=plan.spec.partitions,
                    replication_factor=plan.spec.replication_factor,
                    config=plan.spec.configs,
                )
                for plan in creating
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
            validate_only=dry_run,
        )
    altering = [plan for plan in plans if plan.set_configs]
    altered: dict[str, Future[Any]] = {}
    if altering:
        resources = [
            ConfigResource(
                ResourceType.TOPIC,
                plan.spec.topic,
                incremental_configs=[
                    ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                    for key, value in plan.set_configs.items()
                ],
            )
            for plan in altering
        ]
        answers = admin.incremental_alter_configs(resources, request_timeout=timeout, validate_only=dry_run)
        altered = {resource.name: future for resource, future in answers.items()}
    growing = [plan for plan in plans if plan.grow]
    grown: dict[str, Future[Any]] = {}
    if growing:
        grown = admin.create_partitions(
            [NewPartitions(plan.spec.topic, plan.spec.partitions) for plan in growing],
            operation_timeout=timeout,
            request_timeout=timeout,
            validate_only=dry_run,
        )

    results: list[Result] = []
    for plan in plans:
        spec = plan.spec
        topic = spec.topic
        desired = {
            "partitions": spec.partitions,
            "replication_factor": spec.replication_factor,
            **spec.configs,
        }
        if plan.create:
            error = _outcome(created[topic])
            results.append(
                Result(
                    id=f"topic.create[{topic}]",
                    status=Status.FAIL if error else planned,
                    severity=Severity.BLOCKING if error else planned_severity,
                    message=f"{topic}: creation {'would fail' if dry_run else 'failed'}: {error}"
                    if error
                    else f"{topic}: {would}create{'' if dry_run else 'd'} with {spec.partitions} partitions, "
                    f"replication factor {spec.replication_factor}"
                    + (" (validated by the broker)" if dry_run else ""),
                    observed=None,
                    expected=desired,
                )
            )
            continue
        current = plan.observed
        assert current is not None
        results.append(
            Result(
                id=f"topic.create[{topic}]",
                status=Status.OK,
                message=f"{topic}: exists",
                observed={"partitions": current.partitions, "replication_factor": current.replication_factor},
                expected=desired,
            )
        )
        results.append(_config_result(plan, altered.get(topic), dry_run))
        results.append(_partitions_result(plan, grown.get(topic), dry_run))
        results.append(_replication_result(plan))
    return TopicOutcome(results=results, plans=plans)


def _config_result(plan: TopicPlan, future: Future[Any] | None, dry_run: bool) -> Result:
    spec = plan.spec
    current = plan.observed
    assert current is not None
    observed = {key: current.configs.get(key) for key in spec.configs}
    check_id = f"topic.config[{spec.topic}]"
    if not plan.set_configs and not plan.held_configs:
        return Result(
            id=check_id,
            status=Status.OK,
            message=f"{spec.topic}: configs as declared",
            observed=observed,
            expected=spec.configs,
        )
    parts = []
    status, severity = Status.OK, Severity.BLOCKING
    if plan.set_configs:
        changes = ", ".join(
            f"{key} {current.configs.get(key)} -> {value}" for key, value in plan.set_configs.items()
        )
        error = _outcome(future) if future is not None else "no answer"
        if error:
            status = Status.FAIL
            parts.append(f"setting {changes} failed: {error}")
        elif dry_run:
            status, severity = Status.WARN, Severity.ADVISORY
            parts.append(f"would set {changes} (validated by the broker)")
        else:
            status = Status.CHANGED
            parts.append(f"drift corrected: {changes}")
    if plan.held_configs:
        status, severity = Status.FAIL, Severity.BLOCKING
        parts.append("; ".join(f"{key} {why}" for key, why in plan.held_configs.items()))
    return Result(
        id=check_id,
        status=status,
        severity=severity,
        message=f"{spec.topic}: " + "; ".join(parts),
        observed=observed,
        expected=spec.configs,
        details={"held": plan.held_configs},
    )


def _partitions_result(plan: TopicPlan, future: Future[Any] | None, dry_run: bool) -> Result:
    spec = plan.spec
    current = plan.observed
    assert current is not None
    check_id = f"topic.partitions[{spec.topic}]"
    if current.partitions == spec.partitions:
        return Result(
            id=check_id,
            status=Status.OK,
            message=f"{spec.topic}: {spec.partitions} partitions",
            observed=current.partitions,
            expected=spec.partitions,
        )
    if current.partitions > spec.partitions:
        return Result(
            id=check_id,
            status=Status.WARN,
            severity=Severity.ADVISORY,
            message=f"{spec.topic}: {current.partitions} partitions, more than the {spec.partitions} declared; "
            "left as is (Kafka cannot remove partitions)",
            observed=current.partitions,
            expected=spec.partitions,
        )
    error = _outcome(future) if future is not None else "no answer"
    if error:
        return Result(
            id=check_id,
            status=Status.FAIL,
            message=f"{spec.topic}: growing {current.partitions} -> {spec.partitions} partitions failed: {error}",
            observed=current.partitions,
            expected=spec.partitions,
        )
    # New partitions change which partition a key lands on: a patient's older and newer events may then
    # sit in different partitions (ordering holds again for everything produced after the change).
    note = "; keys now map to different partitions for new records"
    if dry_run:
        return Result(
            id=check_id,
            status=Status.WARN,
            severity=Severity.ADVISORY,
            message=f"{spec.topic}: would grow {current.partitions} -> {spec.partitions} partitions{note}",
            observed=current.partitions,
            expected=spec.partitions,
        )
    return Result(
        id=check_id,
        status=Status.CHANGED,
        message=f"{spec.topic}: grown {current.partitions} -> {spec.partitions} partitions{note}",
        observed=current.partitions,
        expected=spec.partitions,
    )


def _replication_result(plan: TopicPlan) -> Result:
    spec = plan.spec
    current = plan.observed
    assert current is not None
    check_id = f"topic.replication[{spec.topic}]"
    if current.replication_factor == spec.replication_factor:
        return Result(
            id=check_id,
            status=Status.OK,
            message=f"{spec.topic}: replication factor {spec.replication_factor}",
            observed=current.replication_factor,
            expected=spec.replication_factor,
        )
    fewer = current.replication_factor < spec.replication_factor
    return Result(
        id=check_id,
        status=Status.FAIL if fewer else Status.WARN,
        severity=Severity.BLOCKING if fewer else Severity.ADVISORY,
        message=f"{spec.topic}: replication factor {current.replication_factor}, declared "
        f"{spec.replication_factor}; not changed here (a partition reassignment, an operator's decision)",
        observed=current.replication_factor,
        expected=spec.replication_factor,
    )
