"""A producer and a consumer that run through the whole security migration, to prove nothing was lost.

Run as a detached process (``python -m event_broker_rollout.security.canary run ...``) so it outlives the
task that starts it. The producer sends numbered records (acks=all, idempotence on) at a steady rate;
the consumer reads them back. On SIGTERM the producer stops and flushes, the consumer drains until every
acknowledged record arrived (or a deadline), and the final counts are written: produced, consumed, lost
(acknowledged but never read) and duplicated (read more than once). Every ``INTERVAL_SECONDS`` it also
records how many records were acknowledged and read in that interval, for the report's chart.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer

from event_broker_rollout.cluster import clients
from event_broker_rollout.config.components import CANARY_PRINCIPAL, CANARY_TOPIC
from event_broker_rollout.config.environment import load_environment

RATE_PER_SECOND = 50
DRAIN_SECONDS = 90
INTERVAL_SECONDS = 5.0


class Canary:
    def __init__(self, config: dict[str, Any], topic: str, group: str, state_file: Path) -> None:
        # Records carry this run's token: earlier runs' records on the same topic are not counted.
        self.token = group
        self.config = config
        self.topic = topic
        self.group = group
        self.state_file = state_file
        self.stopping = threading.Event()
        self.acked: set[int] = set()
        self.failed: list[str] = []
        self.seen: dict[int, int] = {}
        self.sent = 0
        self.lock = threading.Lock()
        # One entry per interval: its end (epoch seconds) and the records acknowledged and read in it.
        self.intervals: list[dict[str, float | int]] = []
        self._counted = (0, 0)  # acknowledged and read when the last interval ended

    def _delivered(self, error: KafkaError | None, message: Any) -> None:
        with self.lock:
            if error is None:
                self.acked.add(int(message.value().decode().rsplit(":", 1)[1]))
            else:
                self.failed.append(error.name())

    def produce(self) -> None:
        producer = Producer(
            {
                **self.config,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "delivery.timeout.ms": 300000,
            }
        )
        while not self.stopping.is_set():
            producer.produce(
                self.topic,
                key=str(self.sent % 6).encode(),
                value=f"{self.token}:{self.sent}".encode(),
                on_delivery=self._delivered,
            )
            self.sent += 1
            producer.poll(0)
            time.sleep(1 / RATE_PER_SECOND)
        producer.flush(300)

    def consume(self, producer_done: threading.Event) -> None:
        consumer = Consumer(
            {
                **self.config,
                "group.id": self.group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
            }
        )
        consumer.subscribe([self.topic])
        deadline: float | None = None
        while True:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                token, _, number = (message.value() or b"").decode().rpartition(":")
                if token == self.token:
                    with self.lock:
                        self.seen[int(number)] = self.seen.get(int(number), 0) + 1
            if producer_done.is_set():
                deadline = deadline or time.monotonic() + DRAIN_SECONDS
                with self.lock:
                    complete = self.acked <= set(self.seen)
                if complete or time.monotonic() > deadline:
                    break
        consumer.close()

    def record_interval(self, now: float) -> None:
        """Close the current interval at ``now``: what was acknowledged and read since the last one."""
        with self.lock:
            produced, consumed = len(self.acked), sum(self.seen.values())
        self.intervals.append(
            {
                "at": round(now, 3),
                "produced": produced - self._counted[0],
                "consumed": consumed - self._counted[1],
            }
        )
        self._counted = (produced, consumed)

    def stats(self, final: bool) -> dict[str, Any]:
        with self.lock:
            consumed = sum(self.seen.values())
            return {
                "final": final,
                "sent": self.sent,
                "produced": len(self.acked),
                "consumed": consumed,
                "lost": len(self.acked - set(self.seen)),
                "duplicated": consumed - len(self.seen),
                "delivery_errors": len(self.failed),
                "updated_at": time.time(),
                "intervals": list(self.intervals),
            }

    def write(self, final: bool) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats(final)))
        tmp.replace(self.state_file)

    def run(self) -> None:
        producer_done = threading.Event()

        def produce_then_mark() -> None:
            self.produce()
            producer_done.set()

        producer = threading.Thread(target=produce_then_mark, daemon=True)
        consumer = threading.Thread(target=self.consume, args=(producer_done,), daemon=True)
        producer.start()
        consumer.start()
        interval_ends = time.time() + INTERVAL_SECONDS
        while consumer.is_alive():
            if time.time() >= interval_ends:
                self.record_interval(time.time())
                interval_ends += INTERVAL_SECONDS
            self.write(final=False)
            consumer.join(1)
        self.record_interval(time.time())
        self.write(final=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="event_broker_rollout.security.canary")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--environment", required=True)
    parser.add_argument("--state-file", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)

    environment = load_environment(args.environment)
    config = clients.principal_config(environment, "secured", CANARY_PRINCIPAL)
    canary = Canary(config, CANARY_TOPIC, args.group, Path(args.state_file))
    signal.signal(signal.SIGTERM, lambda *_: canary.stopping.set())
    canary.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
