"""Client-side checks for lab/artifacts/verify.sh, with confluent-kafka.

  verify_clients.py kafka BOOTSTRAP TOPIC
      produce N messages and consume them back (plain bytes)
  verify_clients.py sr-register REGISTRY_URL SUBJECT
      register an Avro schema; print its id
  verify_clients.py sr-check REGISTRY_URL SUBJECT ID
      the subject's latest version has schema id ID and the expected schema
  verify_clients.py avro-roundtrip BOOTSTRAP REGISTRY_URL TOPIC
      produce and consume Avro records through the registry's ccompat API

Exits non-zero (with a message) on any failure.
"""

import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

AVRO_SCHEMA = {
    "type": "record",
    "name": "LabReading",
    "namespace": "lab.verify",
    "fields": [
        {"name": "host", "type": "string"},
        {"name": "value", "type": "long"},
    ],
}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def produce_consume(bootstrap, topic, n, value_of, serialize=None, deserialize=None):
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    sent = []
    for i in range(n):
        value = value_of(i)
        sent.append(value)
        payload = serialize(value) if serialize else value
        producer.produce(topic, key=str(i).encode(), value=payload, on_delivery=on_delivery)
    if producer.flush(30) != 0:
        fail("producer did not flush within 30 s")
    if errors:
        fail(f"delivery errors: {errors}")

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"lab-verify-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                fail(f"consumer error: {msg.error()}")
            got.append(deserialize(msg.value()) if deserialize else msg.value())
    finally:
        consumer.close()
    if sorted(map(repr, got)) != sorted(map(repr, sent)):
        fail(f"consumed {len(got)} of {n} messages, or different ones")
    return n


def cmd_kafka(bootstrap, topic):
    n = produce_consume(bootstrap, topic, 100, lambda i: f"lab-verify message {i}".encode())
    print(f"OK: produced and consumed {n} messages on {topic}")


def registry(url):
    return SchemaRegistryClient({"url": url})


def cmd_sr_register(url, subject):
    schema_id = registry(url).register_schema(subject, Schema(json.dumps(AVRO_SCHEMA), "AVRO"))
    print(schema_id)


def cmd_sr_check(url, subject, expected_id):
    client = registry(url)
    subjects = client.get_subjects()
    if subject not in subjects:
        fail(f"subject {subject} not listed: {subjects}")
    latest = client.get_latest_version(subject)
    if latest.schema_id != int(expected_id):
        fail(f"latest version of {subject} has id {latest.schema_id}, expected {expected_id}")
    by_id = client.get_schema(int(expected_id))
    if json.loads(by_id.schema_str) != AVRO_SCHEMA:
        fail(f"schema {expected_id} differs: {by_id.schema_str}")
    print(
        f"OK: {subject} version {latest.version} -> schema id {latest.schema_id} "
        f"({by_id.schema_type or 'AVRO'})"
    )


def cmd_avro_roundtrip(bootstrap, url, topic):
    client = registry(url)
    schema_str = json.dumps(AVRO_SCHEMA)
    ser = AvroSerializer(client, schema_str)
    de = AvroDeserializer(client, schema_str)
    ctx = SerializationContext(topic, MessageField.VALUE)
    n = produce_consume(
        bootstrap,
        topic,
        20,
        lambda i: {"host": f"lab-{i % 3}", "value": i},
        serialize=lambda v: ser(v, ctx),
        deserialize=lambda b: de(b, ctx),
    )
    print(f"OK: {n} Avro records through {topic} with subject {topic}-value")


def main(argv):
    commands = {
        "kafka": (cmd_kafka, 2),
        "sr-register": (cmd_sr_register, 2),
        "sr-check": (cmd_sr_check, 3),
        "avro-roundtrip": (cmd_avro_roundtrip, 3),
    }
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    commands[argv[1]][0](*argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
