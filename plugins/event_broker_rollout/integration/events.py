"""Sample events for the integration stage: the synthetic generator's, or an operator's JSON-lines file.

File format: UTF-8, one event per line (blank lines and lines starting with ``#`` are skipped)::

    {"topic": "healthcare.observation.recorded.v1", "key": "<opaque patient id>", "value": {...}}

* ``topic`` or ``event_name`` names the catalog event type (either; when both are given they must agree);
* ``key``: the Kafka key, the opaque patient id (a string);
* ``value``: the event in the catalog's envelope, i.e. the event type's Avro value schema: ``id``,
  ``source``, ``type``, ``specversion``, ``time``, ``subject``, ``dataschema``, ``datacontenttype``,
  optional ``hl7trigger``, and ``data``, the FHIR R4 resource in the schema's shape (fields that have a
  default may be left out). ``time`` is ISO-8601 with a UTC offset (``2026-05-01T08:30:00.000+00:00``,
  ``...Z``) or epoch milliseconds (an integer).

A line that cannot be used becomes a finding that names its line number and the field at fault, never
a value (sample files may hold real-looking identifiers); the other lines still load. What loads is
exactly what the value schema accepts, so it can be produced; whether it is *right* is the quality
suite's business.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
from fastavro.validation import ValidationError, validate

from event_broker_rollout.config.catalog import Catalog, EventType, load_avro_schema
from event_broker_rollout.evidence.results import Result, Status
from event_broker_rollout.integration.synthetic import generate

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LINE_FIELDS = {"topic", "event_name", "key", "value"}


@dataclass(frozen=True, slots=True)
class SampleEvent:
    event_name: str  # the catalog's event name
    topic: str
    key: str  # the opaque patient id
    value: dict[str, Any]  # the envelope as the value schema's record; ``time`` an aware datetime

    @property
    def event_id(self) -> str:
        return str(self.value["id"])


@dataclass
class LoadedSamples:
    events: list[SampleEvent]
    source: str  # "synthetic" or the file's name
    findings: list[Result] = field(default_factory=list)  # one per unusable line

    def results(self) -> list[Result]:
        loaded = Result(
            id="samples.loaded",
            status=Status.FAIL if self.findings else Status.PASS,
            message=f"{len(self.events)} sample events from {self.source}"
            + (f"; {len(self.findings)} lines unusable" if self.findings else ""),
            observed={"events": len(self.events), "unusable_lines": len(self.findings)},
            expected={"unusable_lines": 0},
        )
        return [loaded, *self.findings]


def synthetic_samples(count: int, seed: int, now: datetime, catalog: Catalog) -> LoadedSamples:
    events = [
        SampleEvent(item.event_name, item.topic, item.key, item.value)
        for item in generate(count, seed, now, catalog)
    ]
    return LoadedSamples(events=events, source="synthetic")


def epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _parse_time(raw: Any) -> datetime | str:
    """An aware datetime, or why ``raw`` is not a usable event time."""
    if isinstance(raw, bool):  # a bool is an int to Python, not to a reader of the file
        return "time must be ISO-8601 or epoch milliseconds"
    if isinstance(raw, int):
        return _EPOCH + timedelta(milliseconds=raw)
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            return "time is not ISO-8601"
        if moment.tzinfo is None:
            return "time has no UTC offset"
        return moment.astimezone(UTC)
    return "time must be ISO-8601 or epoch milliseconds"


class _Loader:
    def __init__(self, catalog: Catalog) -> None:
        self.by_name = {event.name: event for event in catalog.events}
        self.by_topic = {event.topic: event for event in catalog.events}
        self.schemas: dict[str, Any] = {}

    def schema(self, event: EventType) -> Any:
        if event.name not in self.schemas:
            self.schemas[event.name] = fastavro.parse_schema(load_avro_schema(event.schema_file))
        return self.schemas[event.name]

    def event(self, line: dict[str, Any]) -> SampleEvent | str:
        """The line as a sample event, or the reason it is unusable (field names only, no values)."""
        unexpected = sorted(set(line) - _LINE_FIELDS)
        if unexpected:
            return f"unexpected fields {', '.join(unexpected)} (allowed: {', '.join(sorted(_LINE_FIELDS))})"
        topic, name = line.get("topic"), line.get("event_name")
        if topic is None and name is None:
            return "names no event type (topic or event_name)"
        by_topic = self.by_topic.get(topic) if isinstance(topic, str) else None
        by_name = self.by_name.get(name) if isinstance(name, str) else None
        if topic is not None and by_topic is None:
            return "topic is not an event topic of the catalog"
        if name is not None and by_name is None:
            return "event_name is not an event of the catalog"
        if by_topic is not None and by_name is not None and by_topic is not by_name:
            return "topic and event_name name different event types"
        event = by_topic or by_name
        assert event is not None
        key = line.get("key")
        if not isinstance(key, str) or not key:
            return "key must be a non-empty string (the opaque patient id)"
        value = line.get("value")
        if not isinstance(value, dict):
            return "value must be a JSON object (the event envelope)"
        if "time" not in value:
            return "value.time is missing"
        moment = _parse_time(value["time"])
        if isinstance(moment, str):
            return f"value.{moment}"
        record = {**value, "time": moment}
        schema = self.schema(event)
        try:
            validate(record, schema, raise_errors=True)
        except ValidationError as error:
            # ValidationError's text carries the offending datum: only the field paths are kept.
            # The paths without the namespace: "Quantity.value", not "org.cmm.healthcare.v1.fhir.Quantity.value".
            fields = sorted(
                {
                    ".".join((item.field or "record").split(".")[-2:])
                    for item in error.errors
                    if hasattr(item, "field")
                }
            )
            return (
                f"value does not match the {event.name} value schema at {', '.join(fields) or 'the record'}"
            )
        # Through the writer and back: defaults filled in, exactly what a consumer will decode.
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, record)
        buffer.seek(0)
        normalized = fastavro.schemaless_reader(buffer, schema, schema)
        assert isinstance(normalized, dict)
        return SampleEvent(event.name, event.topic, key, normalized)


def load_samples(path: str | Path, catalog: Catalog) -> LoadedSamples:
    """The events of a JSON-lines sample file; unusable lines become findings (``samples.line[<n>]``).

    A file that cannot be read at all is one finding (``samples.file``) and no events.
    """
    source = Path(path)
    loaded = LoadedSamples(events=[], source=source.name)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8"
        loaded.findings.append(
            Result(id="samples.file", status=Status.FAIL, message=f"cannot read {source}: {reason}")
        )
        return loaded
    loader = _Loader(catalog)
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            line = json.loads(stripped)
        except json.JSONDecodeError as error:
            outcome: SampleEvent | str = f"not JSON ({error.msg} at column {error.colno})"
        else:
            outcome = loader.event(line) if isinstance(line, dict) else "not a JSON object"
        if isinstance(outcome, SampleEvent):
            loaded.events.append(outcome)
        else:
            loaded.findings.append(
                Result(
                    id=f"samples.line[{number}]",
                    status=Status.FAIL,
                    message=f"{source.name} line {number}: {outcome}",
                    details={"line": number},
                )
            )
    return loaded


def resolve_samples(
    sample_events: str | Path | None, *, count: int, seed: int, now: datetime, catalog: Catalog
) -> LoadedSamples:
    """The operator's file when one is given, else ``count`` synthetic events."""
    if sample_events:
        return load_samples(sample_events, catalog)
    return synthetic_samples(count, seed, now, catalog)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dump_samples(events: Iterable[SampleEvent], path: str | Path, header: Iterable[str] = ()) -> None:
    """Write events in the sample file format (``time`` as ISO-8601), after ``header`` comment lines."""
    lines = [f"# {line}" for line in header]
    lines += [
        json.dumps({"topic": e.topic, "key": e.key, "value": e.value}, default=_json_value) for e in events
    ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
