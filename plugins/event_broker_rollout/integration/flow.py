"""End to end through the real cluster: produce the samples as each topic's producer, consume them as
every consuming component, validate them, dead-letter what fails, count it all per event type.

Every function takes confluent-kafka client settings per component (``client_configs``: component name
-> config dict, e.g. each component's own SASL credentials), so what succeeds here succeeds under the
component's own grants. Schemas are never registered here (stage 4 does that): producers serialize
with the subject's latest registered version (``auto.register.schemas=False``, ``use.latest.version``).

A run is tagged: every record carries the run id in the ``ebr-rollout-run`` header, and each consuming
component reads with a consumer group of its own for the run (``rollout_group``), positioned at the
end of every partition before anything is produced, so re-runs are independent and records of other
runs or other producers are skipped. Consumers run in threads while the producers write, which makes
the latency (the producer's record timestamp to the moment the consumer had the record) real.

Dead letters keep the record's key and value bytes exactly as read, with the reason in headers: rule
ids and categories, never a value.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from event_broker_rollout.config.catalog import Catalog
from event_broker_rollout.config.components import Component, Components, is_prefix, matches
from event_broker_rollout.evidence.results import Result, Severity, Status, utcnow
from event_broker_rollout.integration import latency, quality
from event_broker_rollout.integration.events import SampleEvent, epoch_ms

RUN_HEADER = "ebr-rollout-run"
DLQ_STAGE_HEADER = "ebr-dlq-stage"  # deserialize | validate
DLQ_REASON_HEADER = "ebr-dlq-reason"  # a sentence without values
DLQ_RULES_HEADER = "ebr-dlq-rules"  # the failed rules' ids, comma-separated
DLQ_SOURCE_HEADERS = ("ebr-source-topic", "ebr-source-partition", "ebr-source-offset")
VALIDATOR = "data-quality"  # reads every event topic, may write the dead-letter topics
ROLLOUT_GROUP_INFIX = ".rollout."
# Serdes use the subject of the topic (<topic>-key / -value): confluent-kafka 2.16 would otherwise
# default to ASSOCIATED, which asks the registry for topic associations Apicurio does not have.
_SERDE_STRATEGY = {"subject.name.strategy.type": "TOPIC"}
SERIALIZER_CONFIG = {**_SERDE_STRATEGY, "auto.register.schemas": False, "use.latest.version": True}
_UNSAFE_GROUP_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_AUTHORIZATION_ERRORS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
    }
)


class RegistryUnavailable(Exception):
    """The registry failed for a reason that is not the record's fault (not a dead letter)."""


# --- who does what ---------------------------------------------------------------------------


def run_token(run_id: str) -> str:
    """The run id as a group-name part: Airflow run ids hold ':' and '+'."""
    return _UNSAFE_GROUP_CHARS.sub("_", run_id)[:120]


def rollout_group(component: Component, run_id: str) -> str:
    """``<group>.rollout.<run>``: a fresh group per run, inside the component's group grant.

    The security stage grants READ on the PREFIXED group resource ``<group>``; the narrowest grant that
    still covers these is PREFIXED ``<group>.rollout.`` (next to LITERAL ``<group>`` for the service).
    """
    if not component.group:
        raise ValueError(f"{component.name} has no consumer group")
    return f"{component.group}{ROLLOUT_GROUP_INFIX}{run_token(run_id)}"


def group_grants_needed(components: Components) -> list[tuple[str, str, str]]:
    """(principal, pattern type, group prefix) with READ that the integration stage's consumers need."""
    return [
        (f"User:{c.principal}", "PREFIXED", f"{c.group}{ROLLOUT_GROUP_INFIX}")
        for c in components.components
        if c.group and c.consumes
    ]


def producer_of(topic: str, components: Components) -> Component | None:
    """The component that produces ``topic`` by name; a prefix grant (the validator's) only as a fallback."""
    exact = [c for c in components.components if topic in c.produces]
    if exact:
        return exact[0]
    prefixed = [
        c for c in components.components if any(is_prefix(p) and matches(p, topic) for p in c.produces)
    ]
    return prefixed[0] if prefixed else None


def consumed_topics(component: Component, topics: Iterable[str]) -> list[str]:
    return sorted({t for t in topics if any(matches(pattern, t) for pattern in component.consumes)})


# --- producing -------------------------------------------------------------------------------


def producer_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The component's settings with the delivery guarantees every rollout producer uses."""
    return {**config, "acks": "all", "enable.idempotence": True, "linger.ms": 5}


def _serde_failure(error: Exception) -> str:
    if isinstance(error, SchemaRegistryError):
        return f"registry error {error.http_status_code}/{error.error_code}"
    # Serializer errors quote the offending datum: the type names the problem without it.
    return f"serialization failed ({type(error).__name__})"


@dataclass
class ProduceOutcome:
    delivered: Counter[str] = field(default_factory=Counter)  # event name -> records acknowledged
    failed: dict[str, Counter[str]] = field(default_factory=dict)  # event name -> reason -> count
    by_topic: Counter[str] = field(default_factory=Counter)  # topic -> records acknowledged
    producers: dict[str, str] = field(default_factory=dict)  # topic -> producing component

    def fail(self, event_name: str, reason: str, count: int = 1) -> None:
        self.failed.setdefault(event_name, Counter())[reason] += count

    @property
    def total(self) -> int:
        return sum(self.delivered.values())


Headers = list[tuple[str, str | bytes | None]]


class _Deliveries:
    """Delivery reports of one producer, per event type."""

    def __init__(self, outcome: ProduceOutcome) -> None:
        self.outcome = outcome
        self.inflight: Counter[str] = Counter()

    def sent(self, event_name: str) -> None:
        self.inflight[event_name] += 1

    def report(self, event_name: str, error: KafkaError | None, message: Message) -> None:
        self.inflight[event_name] -= 1
        if error is None:
            self.outcome.delivered[event_name] += 1
            self.outcome.by_topic[message.topic() or ""] += 1
        else:
            self.outcome.fail(event_name, error.name())


def _produce(
    producer: Producer, topic: str, key: bytes | None, value: bytes | None, headers: Headers, on_delivery: Any
) -> None:
    while True:
        try:
            producer.produce(
                topic,
                key=key,
                value=value,
                headers=headers,
                timestamp=epoch_ms(utcnow()),  # the produce time, carried to consumers (latency)
                on_delivery=on_delivery,
            )
            return
        except BufferError:  # the local queue is full: let deliveries drain it
            producer.poll(0.5)


def produce_samples(
    samples: Sequence[SampleEvent],
    *,
    components: Components,
    client_configs: Mapping[str, Mapping[str, Any]],
    registry_config: Mapping[str, Any],
    run_id: str,
    timeout: float = 60.0,
) -> ProduceOutcome:
    """Produce every sample as its topic's producing component (Avro, the registered latest schema).

    Each record carries the run header and, as its Kafka timestamp, the time of the produce call.
    """
    outcome = ProduceOutcome()
    by_component: dict[str, list[SampleEvent]] = {}
    for sample in samples:
        component = producer_of(sample.topic, components)
        if component is None:
            outcome.fail(sample.event_name, "no component produces the topic")
        elif component.name not in client_configs:
            outcome.fail(sample.event_name, f"no client settings for {component.name}")
        else:
            outcome.producers[sample.topic] = component.name
            by_component.setdefault(component.name, []).append(sample)
    headers: Headers = [(RUN_HEADER, run_id.encode())]
    for name, batch in by_component.items():
        registry = SchemaRegistryClient(dict(registry_config))
        keys = AvroSerializer(registry, None, None, SERIALIZER_CONFIG)
        values = AvroSerializer(registry, None, None, SERIALIZER_CONFIG)
        producer = Producer(producer_config(client_configs[name]))
        deliveries = _Deliveries(outcome)
        for sample in batch:
            try:
                key = keys(sample.key, SerializationContext(sample.topic, MessageField.KEY))
                value = values(sample.value, SerializationContext(sample.topic, MessageField.VALUE))
            except Exception as error:  # a sample the registered schema does not take, or the registry
                outcome.fail(sample.event_name, _serde_failure(error))
                continue
            _produce(
                producer, sample.topic, key, value, headers, partial(deliveries.report, sample.event_name)
            )
            deliveries.sent(sample.event_name)
            producer.poll(0)
        producer.flush(timeout)
        for event_name, left in deliveries.inflight.items():
            if left:
                outcome.fail(event_name, f"not acknowledged within {timeout:.0f}s", left)
    return outcome


# --- consuming -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    produced_at_ms: int  # the record's timestamp: set by the producer
    consumed_at_ms: int

    @property
    def latency_ms(self) -> int:
        return self.consumed_at_ms - self.produced_at_ms


def _from_run(message: Message, run_id: bytes) -> bool:
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return any(name == RUN_HEADER and value == run_id for name, value in pairs)


class ConsumerSession:
    """One consuming component reading its topics for a run, in a thread of its own.

    ``start`` subscribes with the run's group; on assignment every partition is positioned at its end
    explicitly (nothing produced after ``ready`` can be skipped), and the run's records are kept. After
    ``drain`` the session reads up to the partitions' ends as they were then, and stops.
    """

    IDLE_AFTER_DRAIN_S = 3.0  # ends unreachable by record offsets (e.g. transaction markers): stop anyway

    def __init__(
        self, component: Component, config: Mapping[str, Any], topics: Sequence[str], group: str, run_id: str
    ) -> None:
        self.component = component
        self.topics = list(topics)
        self.group = group
        self.run_id = run_id.encode()
        self.consumer = Consumer(
            {
                **config,
                "group.id": group,
                "enable.auto.commit": False,  # the group is the run's: nothing to resume from
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": 100,
            }
        )
        self.received: list[Received] = []
        self.skipped = 0  # records of other runs or producers in the same range
        self.errors: Counter[str] = Counter()
        self.ready = threading.Event()  # positioned (or failed: see errors)
        self.draining = threading.Event()
        self.done = threading.Event()
        self.positions: dict[tuple[str, int], int] = {}  # next offset to read, per partition
        self._thread = threading.Thread(target=self._run, name=f"consume-{component.name}", daemon=True)

    def start(self) -> None:
        self.consumer.subscribe(self.topics, on_assign=self._on_assign)
        self._thread.start()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for partition in partitions:
            _, high = consumer.get_watermark_offsets(partition, timeout=10, cached=False)
            partition.offset = high
            self.positions[(partition.topic, partition.partition)] = high
        consumer.assign(partitions)
        self.ready.set()

    def _ends(self) -> dict[tuple[str, int], int]:
        ends = {}
        for topic, partition in self.positions:
            tp = TopicPartition(topic, partition)
            ends[(topic, partition)] = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
        return ends

    def _run(self) -> None:
        ends: dict[tuple[str, int], int] | None = None
        idle_since = time.monotonic()
        try:
            while not (self.draining.is_set() and not self.ready.is_set()):
                if self.draining.is_set() and ends is None:
                    ends = self._ends()
                    idle_since = time.monotonic()
                if ends is not None and (
                    all(self.positions[p] >= end for p, end in ends.items())
                    or time.monotonic() - idle_since > self.IDLE_AFTER_DRAIN_S
                ):
                    return
                messages = self.consumer.consume(num_messages=500, timeout=0.2)
                if messages:
                    idle_since = time.monotonic()
                for message in messages:
                    self._take(message)
        except Exception as error:  # reported with the session; the thread must not end silently
            self.errors[f"session failed ({type(error).__name__})"] += 1
        finally:
            self.ready.set()
            self.done.set()

    def _take(self, message: Message) -> None:
        now = epoch_ms(utcnow())
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                self.errors[error.name()] += 1
                if error.code() in _AUTHORIZATION_ERRORS:
                    self.draining.set()  # refused: nothing will come
            return
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
        self.positions[(topic, partition)] = offset + 1
        if not _from_run(message, self.run_id):
            self.skipped += 1
            return
        self.received.append(
            Received(
                topic=topic,
                partition=partition,
                offset=offset,
                key=message.key(),
                value=message.value(),
                produced_at_ms=message.timestamp()[1],
                consumed_at_ms=now,
            )
        )

    def drain(self) -> None:
        self.draining.set()

    def close(self, timeout: float) -> None:
        self.draining.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.consumer.close()


def start_consumers(
    topics: Collection[str],
    *,
    components: Components,
    client_configs: Mapping[str, Mapping[str, Any]],
    run_id: str,
    timeout: float = 60.0,
) -> list[ConsumerSession]:
    """A running session for every component that consumes any of ``topics``, each positioned at the
    partitions' ends (or failed: see its ``errors``) when this returns."""
    sessions = []
    for component in components.components:
        mine = consumed_topics(component, topics)
        if not mine or component.name not in client_configs or not component.group:
            continue
        session = ConsumerSession(
            component, client_configs[component.name], mine, rollout_group(component, run_id), run_id
        )
        session.start()
        sessions.append(session)
    deadline = time.monotonic() + timeout
    for session in sessions:
        if not session.ready.wait(max(0.0, deadline - time.monotonic())):
            session.errors["not assigned its partitions in time"] += 1
    return sessions


def finish_consumers(sessions: Sequence[ConsumerSession], timeout: float = 60.0) -> None:
    """Read up to the current ends, then stop every session (what was late stays unread and is counted)."""
    for session in sessions:
        session.drain()
    deadline = time.monotonic() + timeout
    for session in sessions:
        if not session.done.wait(max(0.0, deadline - time.monotonic())):
            session.errors[f"did not reach the partitions' ends within {timeout:.0f}s"] += 1
        session.close(timeout=5)


# --- decoding --------------------------------------------------------------------------------


def wire_schema_id(payload: bytes | None) -> int | None:
    """The schema id of a registry-framed payload: magic byte 0, then a 4-byte big-endian id."""
    if payload is None or len(payload) < 6 or payload[0] != 0:
        return None
    return int.from_bytes(payload[1:5], "big")


@dataclass(frozen=True, slots=True)
class Decoded:
    received: Received
    key: str | None
    value: dict[str, Any]
    schema_id: int


class Decoder:
    """Keys and values through ``AvroDeserializer`` with their writer schemas from the registry."""

    def __init__(self, registry: SchemaRegistryClient) -> None:
        self.deserialize = AvroDeserializer(registry, None, None, False, _SERDE_STRATEGY)

    def _field(self, received: Received, role: MessageField, payload: bytes | None) -> Any:
        if wire_schema_id(payload) is None:
            raise _Undecodable(f"{role} is not in the registry's wire format")
        try:
            return self.deserialize(payload, SerializationContext(received.topic, role))
        except SchemaRegistryError as error:
            if error.http_status_code == 404:
                raise _Undecodable(f"{role} schema id is not registered") from None
            raise RegistryUnavailable(_serde_failure(error)) from None
        except Exception:  # fastavro's errors quote the bytes: the category is enough
            raise _Undecodable(f"{role} is not valid Avro for its schema") from None

    def decode(self, received: Received) -> Decoded | str:
        """The record decoded, or the reason (no values) it cannot be."""
        try:
            key = self._field(received, MessageField.KEY, received.key)
            value = self._field(received, MessageField.VALUE, received.value)
        except _Undecodable as reason:
            return str(reason)
        if not isinstance(value, dict):
            return "value is not a record"
        schema_id = wire_schema_id(received.value)
        assert schema_id is not None
        return Decoded(received, key if isinstance(key, str) else None, value, schema_id)


class _Undecodable(Exception):
    pass


def registered_schema_ids(registry: SchemaRegistryClient, topics: Iterable[str]) -> dict[str, int | None]:
    """The schema id of each topic's latest registered value schema (None: no such subject)."""
    ids: dict[str, int | None] = {}
    for topic in topics:
        try:
            ids[topic] = registry.get_latest_version(f"{topic}-value").schema_id
        except SchemaRegistryError as error:
            if error.http_status_code != 404:
                raise RegistryUnavailable(_serde_failure(error)) from None
            ids[topic] = None
    return ids


# --- dead letters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    received: Received
    stage: Literal["deserialize", "validate"]
    reason: str  # no values
    rules: tuple[str, ...] = ()

    def headers(self, run_id: str) -> Headers:
        source = self.received
        return [
            (RUN_HEADER, run_id.encode()),
            (DLQ_STAGE_HEADER, self.stage.encode()),
            (DLQ_REASON_HEADER, self.reason.encode()),
            (DLQ_RULES_HEADER, ",".join(self.rules).encode()),
            *zip(
                DLQ_SOURCE_HEADERS,
                (source.topic.encode(), str(source.partition).encode(), str(source.offset).encode()),
                strict=True,
            ),
        ]


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


@dataclass
class DeadLetterOutcome:
    sent: Counter[str] = field(default_factory=Counter)  # source topic -> dead letters acknowledged
    failed: Counter[str] = field(default_factory=Counter)  # "<topic>: <error>" -> count
    reasons: Counter[str] = field(default_factory=Counter)  # rule id or deserialize reason -> count


def send_dead_letters(
    letters: Sequence[DeadLetter], *, config: Mapping[str, Any], run_id: str, timeout: float = 60.0
) -> DeadLetterOutcome:
    """Each letter's key and value bytes, unchanged, to ``<topic>.dlq`` with the reason in headers."""
    outcome = DeadLetterOutcome()
    if not letters:
        return outcome
    producer = Producer(producer_config(config))

    def delivered(topic: str, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            outcome.sent[topic] += 1
        else:
            outcome.failed[f"{dead_letter_topic(topic)}: {error.name()}"] += 1

    for letter in letters:
        source = letter.received
        for reason in letter.rules or (letter.reason,):
            outcome.reasons[reason] += 1
        _produce(
            producer,
            dead_letter_topic(source.topic),
            source.key,
            source.value,
            letter.headers(run_id),
            partial(delivered, source.topic),
        )
        producer.poll(0)
    left = producer.flush(timeout)
    if left:
        outcome.failed[f"not acknowledged within {timeout:.0f}s"] += left
    return outcome


# --- the whole run ---------------------------------------------------------------------------


@dataclass
class EventTypeCounts:
    event_name: str
    topic: str
    produced: int = 0
    consumed: int = 0  # by the validator
    valid: int = 0
    dead_lettered: int = 0
    undecodable: int = 0


@dataclass
class EndToEndOutcome:
    run_id: str
    produced: ProduceOutcome
    sessions: dict[str, ConsumerSession]
    expected_by_topic: dict[str, int]  # topic -> samples meant for it
    counts: list[EventTypeCounts]
    quality: quality.QualityReport | None
    dead_letters: DeadLetterOutcome
    latency: latency.LatencySummary | None
    problems: list[str] = field(default_factory=list)  # what stopped the validation (no values)

    def results(self) -> list[Result]:
        results: list[Result] = []
        for item in self.counts:
            failed = self.produced.failed.get(item.event_name, Counter())
            expected = self.expected_by_topic.get(item.topic, 0)
            if not expected and not failed:
                results.append(
                    Result(
                        id=f"e2e.produce[{item.event_name}]",
                        status=Status.SKIPPED,
                        message=f"no {item.event_name} events among the samples",
                    )
                )
                continue
            results.append(
                Result(
                    id=f"e2e.produce[{item.event_name}]",
                    status=Status.FAIL if failed or item.produced != expected else Status.PASS,
                    message=f"{item.produced} {item.event_name} events acknowledged on {item.topic} "
                    f"(acks=all, idempotent) by {self.produced.producers.get(item.topic, 'no producer')}"
                    + (f"; not produced: {dict(failed)}" if failed else ""),
                    observed=item.produced,
                    expected=expected,
                )
            )
        for name, session in self.sessions.items():
            per_topic = Counter(r.topic for r in session.received)
            for topic in session.topics:
                results.append(
                    Result(
                        id=f"e2e.delivered[{name}:{topic}]",
                        status=Status.PASS
                        if per_topic[topic] == self.produced.by_topic[topic] and not session.errors
                        else Status.FAIL,
                        message=f"{name} read {per_topic[topic]} of {self.produced.by_topic[topic]} records "
                        f"on {topic} as group {session.group}"
                        + (f"; errors: {dict(session.errors)}" if session.errors else ""),
                        observed=per_topic[topic],
                        expected=self.produced.by_topic[topic],
                    )
                )
        undecodable = sum(item.undecodable for item in self.counts)
        results.append(
            Result(
                id="e2e.deserialized",
                status=Status.FAIL if undecodable else Status.PASS,
                message=f"{undecodable} records could not be deserialized (dead-lettered)"
                if undecodable
                else "every record deserialized with its registered schema",
                observed=undecodable,
                expected=0,
            )
        )
        results += [
            Result(id="e2e.validation", status=Status.FAIL, message=f"not validated: {problem}")
            for problem in self.problems
        ]
        if self.quality is not None:
            results += self.quality.results()
        sent = sum(self.dead_letters.sent.values())
        results.append(
            Result(
                id="e2e.dead-letters",
                status=Status.FAIL if self.dead_letters.failed else (Status.CHANGED if sent else Status.OK),
                message=(f"{sent} events dead-lettered" if sent else "no events to dead-letter")
                + (f" ({dict(self.dead_letters.reasons)})" if sent else "")
                + (f"; not delivered: {dict(self.dead_letters.failed)}" if self.dead_letters.failed else ""),
                observed=dict(self.dead_letters.sent),
                details={"reasons": dict(self.dead_letters.reasons)},
            )
        )
        if self.latency is not None:
            results.append(
                Result(
                    id="e2e.latency",
                    status=Status.PASS,
                    severity=Severity.ADVISORY,
                    message=f"end-to-end latency p50 {self.latency.p50_ms:.0f} ms, p95 {self.latency.p95_ms:.0f} ms, "
                    f"p99 {self.latency.p99_ms:.0f} ms over {self.latency.count} deliveries",
                    observed=self.latency.to_dict(),
                )
            )
        return results

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "event_types": [vars(item) for item in self.counts],
            "consumers": {
                name: {"group": s.group, "topics": s.topics, "records": len(s.received), "skipped": s.skipped}
                for name, s in self.sessions.items()
            },
            "latency_ms": self.latency.to_dict() if self.latency else None,
            "dead_letters": dict(self.dead_letters.sent),
            "dead_letter_reasons": dict(self.dead_letters.reasons),
            "data_docs": str(self.quality.docs_index) if self.quality and self.quality.docs_index else None,
        }


def conclude(
    samples: Sequence[SampleEvent],
    produced: ProduceOutcome,
    sessions: Sequence[ConsumerSession],
    *,
    catalog: Catalog,
    client_configs: Mapping[str, Mapping[str, Any]],
    registry_config: Mapping[str, Any],
    run_id: str,
    validator: str = VALIDATOR,
    known_patients: Collection[str] = (),
    docs_dir: Path | None = None,
    now: datetime | None = None,
    timeout: float = 60.0,
) -> EndToEndOutcome:
    """Decode the validator's records, validate them, dead-letter what fails, and count it all."""
    counts = {
        event.topic: EventTypeCounts(event.name, event.topic, produced=produced.delivered[event.name])
        for event in catalog.events
    }
    expected = Counter(sample.topic for sample in samples)
    by_name = {session.component.name: session for session in sessions}
    outcome = EndToEndOutcome(
        run_id=run_id,
        produced=produced,
        sessions=by_name,
        expected_by_topic=dict(expected),
        counts=list(counts.values()),
        quality=None,
        dead_letters=DeadLetterOutcome(),
        latency=latency.summarize(r.latency_ms for s in sessions for r in s.received),
    )
    session = by_name.get(validator)
    if session is None:
        outcome.problems.append(f"the validator {validator} did not consume (no contract, group or settings)")
        return outcome
    registry = SchemaRegistryClient(dict(registry_config))
    try:
        registered = registered_schema_ids(registry, sorted(counts))
        decoder = Decoder(registry)
        decoded: list[Decoded] = []
        letters: list[DeadLetter] = []
        for received in session.received:
            outcome_of = decoder.decode(received)
            if isinstance(outcome_of, str):
                letters.append(DeadLetter(received, "deserialize", outcome_of))
                counts[received.topic].undecodable += 1
            else:
                decoded.append(outcome_of)
    except RegistryUnavailable as error:
        outcome.problems.append(f"schema registry: {error}")
        return outcome
    for record in decoded:
        counts[record.received.topic].consumed += 1
    rows = [
        quality.flatten(
            record.value,
            record.key,
            record.schema_id,
            record.received.produced_at_ms,
            record.received.consumed_at_ms,
            topic=record.received.topic,
            partition=record.received.partition,
            offset=record.received.offset,
            registered_schema_id=registered.get(record.received.topic),
        )
        for record in decoded
    ]
    settings = quality.SuiteSettings.for_catalog(
        catalog, now_ms=epoch_ms(now or utcnow()), expected_rows=produced.total
    )
    report = quality.assess(rows, settings, known_patients=known_patients, run_name=run_id, docs_dir=docs_dir)
    outcome.quality = report
    for row, rules in report.dead_letter.items():
        received = decoded[row].received
        letters.append(DeadLetter(received, "validate", "failed data-quality rules", rules))
        counts[received.topic].dead_lettered += 1
    for item in counts.values():
        item.valid = item.consumed - item.dead_lettered
        item.dead_lettered += item.undecodable  # undecodable records are dead letters too
    outcome.dead_letters = send_dead_letters(
        letters, config=client_configs[validator], run_id=run_id, timeout=timeout
    )
    return outcome


def run_end_to_end(
    samples: Sequence[SampleEvent],
    *,
    catalog: Catalog,
    components: Components,
    client_configs: Mapping[str, Mapping[str, Any]],
    registry_config: Mapping[str, Any],
    run_id: str,
    known_patients: Collection[str] = (),
    docs_dir: Path | None = None,
    timeout: float = 120.0,
) -> EndToEndOutcome:
    """Start the consumers, produce the samples, read them back, validate, dead-letter, count."""
    topics = {sample.topic for sample in samples}
    # The validator loads while the consumers wait out their group's initial rebalance delay.
    loading = threading.Thread(target=quality.load_validator, name="load-validator", daemon=True)
    loading.start()
    sessions = start_consumers(
        topics, components=components, client_configs=client_configs, run_id=run_id, timeout=timeout
    )
    try:
        produced = produce_samples(
            samples,
            components=components,
            client_configs=client_configs,
            registry_config=registry_config,
            run_id=run_id,
            timeout=timeout,
        )
    finally:
        finish_consumers(sessions, timeout=timeout)
    loading.join()
    return conclude(
        samples,
        produced,
        sessions,
        catalog=catalog,
        client_configs=client_configs,
        registry_config=registry_config,
        run_id=run_id,
        known_patients=known_patients,
        docs_dir=docs_dir,
        timeout=timeout,
    )
