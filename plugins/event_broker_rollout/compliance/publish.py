"""The run's findings on the compliance results topic, one JSON record per finding, delivery confirmed.

The producer waits for every in-sync replica (``acks=all``, idempotent) and every record's delivery
report is checked: a record the cluster did not confirm is a finding of its own, not a log line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from event_broker_rollout.evidence.results import Result

DELIVERY_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Delivery:
    delivered: int
    errors: tuple[str, ...]

    @property
    def confirmed(self) -> bool:
        return not self.errors


def records(results: Sequence[Result], run: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(key, value) per finding: keyed by check id, so one check's history stays in one partition."""
    return [(result.id, {**run, **result.to_dict()}) for result in results]


def produce(
    config: Mapping[str, Any], topic: str, items: Sequence[tuple[str, Mapping[str, Any]]]
) -> Delivery:
    producer = Producer(
        {
            **config,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": DELIVERY_TIMEOUT_SECONDS * 1000,
        }
    )
    delivered: list[str] = []
    errors: list[str] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is None:
            delivered.append(message.topic() or topic)
        else:
            errors.append(f"{error.name()}: {error.str()}")

    try:
        for key, value in items:
            producer.produce(
                topic,
                key=key.encode(),
                value=json.dumps(value, default=str, sort_keys=True).encode(),
                on_delivery=on_delivery,
            )
            producer.poll(0)
    except (KafkaException, BufferError) as error:
        errors.append(f"produce refused: {error}")
    unconfirmed = producer.flush(DELIVERY_TIMEOUT_SECONDS + 5)
    if unconfirmed:
        errors.append(
            f"{unconfirmed} records without a delivery report after {DELIVERY_TIMEOUT_SECONDS + 5}s"
        )
    return Delivery(len(delivered), tuple(dict.fromkeys(errors)))
