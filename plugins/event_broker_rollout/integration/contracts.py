"""Contracts proven with each component's own credentials: it may do what config/components.yaml grants
it, and it is refused outside that.

For each component (``plan_checks``):

* ``contract.produce[<component>:<topic>]``: on an event topic a real record, a synthetic HTEST-labelled
  event of the topic's type (Avro, the registered schema) with the ``ebr-contract-probe`` header, from
  an idempotent ``acks=all`` producer. Topics whose records others depend on (dead-letter, audit and
  results topics) get no record: the broker's authorized operations for the principal must hold WRITE.
* ``contract.consume[<component>:<topic>]``: the component's first topic joins the run's contract group
  (its group grant) and fetches the assigned partitions from their ends; its other topics are fetched
  from their ends without a group. No history is read, nothing committed: no authorization error.
* ``contract.refused[<component>:consume:<topic>]``: the same on a topic outside the contract (a PHI topic
  where there is one): the broker must answer TOPIC_ or GROUP_AUTHORIZATION_FAILED.
* ``contract.refused[<component>:produce:<topic>]``: a record to an event topic outside the contract
  must fail with TOPIC_AUTHORIZATION_FAILED. The record is a valid synthetic event, so even a wrongly
  granted write leaves the topic readable.

Only an authorization error counts as a refusal: a timeout or a transport error proves nothing and fails
the check as inconclusive. These need a secured cluster (SASL + ACLs) to mean anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AclOperation, AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from event_broker_rollout.config.catalog import Catalog, Policies
from event_broker_rollout.config.components import Component, matches
from event_broker_rollout.evidence.results import Result, Status
from event_broker_rollout.integration.flow import (
    ROLLOUT_GROUP_INFIX,
    SERIALIZER_CONFIG,
    producer_config,
    run_token,
)
from event_broker_rollout.integration.synthetic import SyntheticEvent, generate

PROBE_HEADER = "ebr-contract-probe"
REFUSALS = frozenset(
    {"TOPIC_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED"}
)
UNAUTHENTICATED = frozenset({"SASL_AUTHENTICATION_FAILED", "_AUTHENTICATION"})
_PROBE_NOW = datetime.fromisoformat("2026-01-01T00:00:00+00:00")  # probe events: fixed, in the past


@dataclass(frozen=True)
class ContractCheck:
    component: str
    action: Literal["produce", "consume"]
    topic: str
    granted: bool  # the contract grants it: expect success; else expect a refusal
    probe: Literal["record", "authorized-operations", "subscribe", "fetch"]

    @property
    def id(self) -> str:
        if self.granted:
            return f"contract.{self.action}[{self.component}:{self.topic}]"
        return f"contract.refused[{self.component}:{self.action}:{self.topic}]"


def plan_checks(component: Component, catalog: Catalog, policies: Policies) -> list[ContractCheck]:
    """Every grant of the component, resolved to catalog topics, and the refusals to try."""
    classes = dict(catalog.topics())
    events = [event.topic for event in catalog.events]
    produces = [t for t in classes if any(matches(p, t) for p in component.produces)]
    consumes = [t for t in classes if any(matches(p, t) for p in component.consumes)]
    checks = [
        ContractCheck(
            component.name, "produce", t, True, "record" if t in events else "authorized-operations"
        )
        for t in produces
    ]
    # One join per component proves its group grant (a join waits out the broker's initial rebalance
    # delay); its other topics are fetched without a group.
    checks += [
        ContractCheck(component.name, "consume", t, True, "fetch" if i else "subscribe")
        for i, t in enumerate(consumes)
    ]

    def restricted_first(topics: list[str]) -> list[str]:
        # PHI first: a refusal there is the one that matters; then any other topic outside the contract.
        def readers(topic: str) -> Any:
            known = policies.classifications.get(classes[topic])
            return known.allowed_readers if known else None

        return sorted(topics, key=lambda t: (readers(t) is None, t not in events))

    unread = restricted_first([t for t in classes if t not in consumes])
    if unread:
        checks.append(ContractCheck(component.name, "consume", unread[0], False, "fetch"))
    unwritten = restricted_first([t for t in events if t not in produces])
    if unwritten:
        checks.append(ContractCheck(component.name, "produce", unwritten[0], False, "record"))
    return checks


def judge(check: ContractCheck, error: str | None, note: str = "") -> Result:
    """The verdict on one check from the Kafka error name it met (None: it succeeded)."""
    verb = "produce to" if check.action == "produce" else "consume from"
    how = f" ({note})" if note else ""
    if error in UNAUTHENTICATED:
        passed, message = False, f"{check.component} cannot authenticate: {error}"
    elif check.granted and error is None:
        passed, message = True, f"{check.component} may {verb} {check.topic}{how}"
    elif check.granted and error in REFUSALS:
        passed = False
        message = (
            f"{check.component} was refused to {verb} {check.topic} ({error}) although its contract grants it"
        )
    elif check.granted:
        passed, message = False, f"could not verify that {check.component} may {verb} {check.topic}: {error}"
    elif error in REFUSALS:
        passed, message = (
            True,
            f"{check.component} is refused to {verb} {check.topic} ({error}), outside its contract",
        )
    elif error is None:
        passed, message = False, f"{check.component} may {verb} {check.topic}, outside its contract{how}"
    else:
        passed = False
        message = f"inconclusive: {check.component} to {verb} {check.topic} met {error}, not an authorization refusal"
    return Result(
        id=check.id,
        status=Status.PASS if passed else Status.FAIL,
        message=message,
        observed=error or "allowed",
        expected="allowed" if check.granted else "TOPIC_/GROUP_AUTHORIZATION_FAILED",
        details={"probe": check.probe},
    )


# --- probes: each returns the Kafka error name it met, or None -------------------------------


def _error_name(error: Exception) -> str:
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0].name()
    return type(error).__name__


def probe_events(catalog: Catalog) -> dict[str, SyntheticEvent]:
    """One synthetic event per event topic (deterministic: the same probes every run)."""
    found: dict[str, SyntheticEvent] = {}
    for event in generate(600, seed=20261127, now=_PROBE_NOW, catalog=catalog):
        found.setdefault(event.topic, event)
    return found


def probe_record(
    config: Mapping[str, Any],
    registry_config: Mapping[str, Any],
    topic: str,
    event: SyntheticEvent | None,
    *,
    granted: bool,
    timeout: float,
) -> tuple[str | None, str]:
    if event is None:
        return "_NO_PROBE_EVENT", "no synthetic event for the topic"
    registry = SchemaRegistryClient(dict(registry_config))
    try:
        key = AvroSerializer(registry, None, None, SERIALIZER_CONFIG)(
            event.key, SerializationContext(topic, MessageField.KEY)
        )
        value = AvroSerializer(registry, None, None, SERIALIZER_CONFIG)(
            event.value, SerializationContext(topic, MessageField.VALUE)
        )
    except Exception as error:  # the registry is not the broker's verdict: inconclusive
        return f"_SERIALIZATION ({type(error).__name__})", ""
    # A refusal is probed without idempotence: its producer-id request would be refused first, for the
    # principal rather than the topic.
    settings = producer_config(config) if granted else {**config, "acks": "all", "enable.idempotence": False}
    producer = Producer({**settings, "message.timeout.ms": int(timeout * 1000)})
    outcome: list[str | None] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        outcome.append(error.name() if error else None)

    producer.produce(topic, key=key, value=value, headers=[(PROBE_HEADER, b"1")], on_delivery=delivered)
    producer.flush(timeout + 5)
    if not outcome:
        return "_MSG_TIMED_OUT", ""
    return outcome[0], "one synthetic HTEST event written" if outcome[0] is None else ""


def probe_write_authorized(
    config: Mapping[str, Any], topic: str, *, timeout: float
) -> tuple[str | None, str]:
    admin = AdminClient(dict(config))
    try:
        description = admin.describe_topics(
            TopicCollection([topic]), include_authorized_operations=True, request_timeout=timeout
        )[topic].result()
    except KafkaException as error:
        return _error_name(error), ""
    operations = description.authorized_operations or []
    if AclOperation.WRITE in operations or AclOperation.ALL in operations:
        return None, "WRITE among the broker's authorized operations; no record written"
    return "TOPIC_AUTHORIZATION_FAILED", "WRITE not among the broker's authorized operations"


def _read_consumer(config: Mapping[str, Any], group: str) -> Consumer:
    return Consumer(
        {
            **config,
            "group.id": group,
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )


def _fetched_to_end(
    consumer: Consumer, partitions: Callable[[], int], deadline: float
) -> tuple[str | None, int]:
    """Poll until the broker has reported the end of ``partitions()`` partitions (a fetch it authorized),
    or an error. Records written meanwhile are dropped unread."""
    at_end: set[int] = set()
    while time.monotonic() < deadline and (not partitions() or len(at_end) < partitions()):
        message = consumer.poll(0.5)
        error = message.error() if message is not None else None
        if message is None or error is None:
            continue
        if error.code() != KafkaError._PARTITION_EOF:
            return error.name(), len(at_end)
        partition = message.partition()
        if partition is not None:
            at_end.add(partition)
    return (None if partitions() and len(at_end) >= partitions() else "_TIMED_OUT"), len(at_end)


def probe_fetch(
    config: Mapping[str, Any], topic: str, group: str, *, timeout: float
) -> tuple[str | None, str]:
    """Topic read access without joining a group (a join waits out the broker's initial rebalance delay):
    every partition assigned at its end and fetched until the broker reports the end."""
    consumer = _read_consumer(config, group)
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return (metadata.error.name() if metadata and metadata.error else "_UNKNOWN_TOPIC"), ""
        consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in sorted(metadata.partitions)])
        count = len(metadata.partitions)
        error, fetched = _fetched_to_end(consumer, lambda: count, time.monotonic() + timeout)
        if error is not None:
            return error, f"{fetched} of {count} partitions fetched"
        return None, f"{count} partitions fetched to their end, no group joined"
    except KafkaException as error:
        return _error_name(error), ""
    finally:
        consumer.close()


def probe_subscribe(
    config: Mapping[str, Any], topic: str, group: str, *, timeout: float
) -> tuple[str | None, str]:
    """Group and topic read access as the component's consumers have them: join ``group`` subscribed to
    the topic, get partitions assigned and fetch each to its end."""
    consumer = _read_consumer(config, group)
    assigned: list[int] = []
    consumer.subscribe([topic], on_assign=lambda _c, partitions: assigned.append(len(partitions)))
    try:
        error, fetched = _fetched_to_end(
            consumer, lambda: assigned[-1] if assigned else 0, time.monotonic() + timeout
        )
        if error is not None:
            return error, f"{fetched} partitions fetched" if assigned else "no assignment"
        return None, f"joined group {group}, {fetched} assigned partitions fetched to their end"
    finally:
        consumer.close()


def contract_group(component: Component, run_id: str) -> str:
    """The run's contract group: inside the component's group grant (a component without one is refused)."""
    return f"{component.group or component.principal}{ROLLOUT_GROUP_INFIX}{run_token(run_id)}.contract"


def verify_contract(
    component: Component,
    client_config: Mapping[str, Any],
    *,
    catalog: Catalog,
    policies: Policies,
    registry_config: Mapping[str, Any],
    run_id: str,
    timeout: float = 30.0,
) -> list[Result]:
    """Run every planned check as the component (``client_config`` holds its own credentials).

    The checks run side by side; only one of them joins the run's contract group.
    """
    group = contract_group(component, run_id)
    probes = probe_events(catalog)
    checks = plan_checks(component, catalog, policies)

    def run(check: ContractCheck) -> Result:
        if check.probe == "subscribe":
            error, note = probe_subscribe(client_config, check.topic, group, timeout=timeout)
        elif check.probe == "fetch":
            error, note = probe_fetch(client_config, check.topic, group, timeout=timeout)
        elif check.probe == "authorized-operations":
            error, note = probe_write_authorized(client_config, check.topic, timeout=timeout)
        else:
            error, note = probe_record(
                client_config,
                registry_config,
                check.topic,
                probes.get(check.topic),
                granted=check.granted,
                timeout=timeout,
            )
        return judge(check, error, note)

    if not checks:
        return []
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        return list(pool.map(run, checks))
