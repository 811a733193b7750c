"""The registry subjects the catalog declares: a value and a key subject per event type."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from confluent_kafka.schema_registry import Metadata, Schema
from confluent_kafka.schema_registry.common.schema_registry_client import MetadataProperties

from event_broker_rollout.config.catalog import Catalog, load_avro_schema

# The Kafka key is the opaque patient id: a plain Avro string.
KEY_SCHEMA = '"string"'


def canonical(schema: object) -> str:
    """Compact JSON: the registered text. Apicurio matches schemas by text, so one reformatted .avsc
    would otherwise become a new version."""
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class SubjectSchema:
    subject: str  # TopicNameStrategy: <topic>-key / <topic>-value
    topic: str
    event_name: str
    role: Literal["key", "value"]
    schema_str: str
    compatibility: str
    classification: str
    source: str  # where the schema comes from, for messages

    @property
    def metadata_properties(self) -> dict[str, str]:
        return {"classification": self.classification, "event": self.event_name}

    def schema(self, *, with_metadata: bool = True) -> Schema:
        # MetadataProperties, not a plain dict: the client hashes the schema and a dict is unhashable.
        metadata = (
            Metadata(tags=None, properties=MetadataProperties(self.metadata_properties), sensitive=None)
            if with_metadata
            else None
        )
        return Schema(self.schema_str, "AVRO", metadata=metadata)


def load_subject_schemas(catalog: Catalog) -> list[SubjectSchema]:
    """Every subject of the catalog's event types, value subjects first; raises ``ValueError`` for an
    unreadable or invalid .avsc."""
    values: list[SubjectSchema] = []
    keys: list[SubjectSchema] = []
    for event in catalog.events:
        compatibility = catalog.compatibility(event)
        for role, target, schema_str, source in (
            ("value", values, canonical(load_avro_schema(event.schema_file)), event.schema_file),
            ("key", keys, KEY_SCHEMA, f"key {event.key} (opaque patient id)"),
        ):
            target.append(
                SubjectSchema(
                    subject=f"{event.topic}-{role}",
                    topic=event.topic,
                    event_name=event.name,
                    role="value" if role == "value" else "key",
                    schema_str=schema_str,
                    compatibility=compatibility,
                    classification=event.classification,
                    source=source,
                )
            )
    return values + keys
