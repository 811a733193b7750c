"""The audit trail's copy on the cluster: each exported trail published to the catalog's audit topic (once
the cluster is secured) and read back for ``verify --cluster``."""

from __future__ import annotations

import time
from typing import Any

from event_broker_rollout.cluster import clients
from event_broker_rollout.config.catalog import load_catalog
from event_broker_rollout.config.components import components_of, matches
from event_broker_rollout.config.environment import Environment
from event_broker_rollout.evidence.trail import AUDIT_TOPIC_NAME, TopicMessage, Trail
from event_broker_rollout.hosts import fleet


class PublishError(RuntimeError):
    pass


class AuditTopicMissing(PublishError):
    pass


class ClusterUnreachable(PublishError):
    pass


def audit_topic(environment: Environment) -> str:

    for item in load_catalog(environment.catalog).operational_topics:
        if item.name == AUDIT_TOPIC_NAME:
            return item.topic
    raise PublishError(f"the catalog {environment.catalog} declares no {AUDIT_TOPIC_NAME} topic")


def publisher_principal(environment: Environment, topic: str) -> str:
    """The component whose contract produces the audit topic: the trail is published with least privilege."""

    for component in components_of(environment).components:
        if any(matches(pattern, topic) for pattern in component.produces):
            return component.principal
    raise PublishError(f"no component contract produces the audit topic {topic}")


def publish_trail(
    trail: Trail, environment: Environment, *, phase: str = "secured", timeout: float = 30.0
) -> tuple[str, int]:
    """Produce every line (header first) to the audit topic with acks=all, idempotently, and wait until
    each is acknowledged; returns (topic, messages delivered)."""
    from confluent_kafka import KafkaException, Producer

    topic = audit_topic(environment)
    principal = publisher_principal(environment, topic)
    producer = Producer(
        {
            **clients.principal_config(environment, phase, principal),
            "acks": "all",
            "enable.idempotence": True,
            "client.id": "ebr-audit-trail",
            "message.timeout.ms": int(timeout * 1000),
        }
    )
    try:
        metadata = producer.list_topics(topic, timeout=min(timeout, 10.0))
    except KafkaException as error:
        raise ClusterUnreachable(f"cannot reach the cluster as {principal}: {error}") from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        raise AuditTopicMissing(f"audit topic {topic} is not available: {described and described.error}")
    failures: list[str] = []
    delivered = 0

    def on_delivery(error: Any, _message: Any) -> None:
        nonlocal delivered
        if error is None:
            delivered += 1
        else:
            failures.append(str(error))

    lines = trail.lines()
    for line in lines:
        producer.produce(
            topic,
            key=trail.key.encode(),
            value=line.encode(),
            headers={"ebr-trail-head": trail.head.encode()},
            on_delivery=on_delivery,
        )
        producer.poll(0)
    unsent = producer.flush(timeout)
    if unsent or failures or delivered != len(lines):
        reason = failures[0] if failures else f"{unsent} not acknowledged within {timeout:.0f}s"
        raise PublishError(
            f"{len(lines) - delivered} of {len(lines)} trail messages not delivered to {topic}: {reason}"
        )
    return topic, delivered


def publication_blocker(environment: Environment) -> str | None:
    """Why the trail is not published to this environment now (None: it is published). Only a secured
    cluster receives it: the audit topic's producer authenticates."""
    if environment.security is None:
        return "not published: the environment has no security section"

    try:
        phase = fleet.recorded_phase(environment)
    except Exception as error:  # any reason the hosts cannot say their phase means: not known to be secured
        return f"not published: the cluster's security phase is unknown ({error})"
    if phase != "secured":
        return f"not published: the cluster is not secured yet (its hosts record {phase})"
    return None


def reader(environment: Environment, topic: str) -> tuple[str, str]:
    """The component whose contract consumes the audit topic, and a consumer group under its own prefix:
    the topic is read with least privilege (the compliance principal in the shipped contracts)."""

    for component in components_of(environment).components:
        if component.group and any(matches(pattern, topic) for pattern in component.consumes):
            return component.principal, f"{component.group}.audit-verify"
    raise PublishError(f"no component contract consumes the audit topic {topic} with a consumer group")


def read_audit_topic(environment: Environment, *, timeout: float = 30.0) -> tuple[str, list[TopicMessage]]:
    """Every message the audit topic holds now (each partition from its low to its high watermark), read
    without committing offsets; returns (topic, messages)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    topic = audit_topic(environment)
    principal, group = reader(environment, topic)
    consumer = Consumer(
        {
            **clients.principal_config(environment, "secured", principal),
            "group.id": group,
            "enable.auto.commit": False,
            "client.id": "ebr-audit-verify",
        }
    )
    messages: list[TopicMessage] = []
    try:
        metadata = consumer.list_topics(topic, timeout=min(timeout, 10.0))
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise AuditTopicMissing(f"audit topic {topic} is not available: {described and described.error}")
        ends: dict[int, int] = {}
        starts = []
        for partition in sorted(described.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(topic, partition, low))
        consumer.assign(starts)
        deadline = time.monotonic() + timeout
        pending = dict(ends)
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            offset, partition = int(message.offset() or 0), int(message.partition() or 0)
            if partition in pending and offset < pending[partition]:
                key, value = message.key() or b"", message.value() or b""
                messages.append(TopicMessage(key.decode(), value.decode(), partition, offset))
            if offset >= ends.get(partition, 0) - 1:
                pending.pop(partition, None)
        if pending:
            raise ClusterUnreachable(
                f"{topic}: partitions {sorted(pending)} not read to their end within {timeout:.0f}s"
            )
    except KafkaException as error:
        raise ClusterUnreachable(f"cannot read {topic} as {principal}: {error}") from None
    finally:
        consumer.close()
    return topic, messages
