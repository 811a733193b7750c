"""FHIR R4 knowledge the data-quality rules use: validation of a resource, its required bindings, and
which fields of the catalog's Avro schemas hold free text or names.

``fhir.resources.R4B`` (R4-shaped models: R4B changed no element of these resources) checks structure,
types, formats and cardinality, not code values: the required bindings of the catalog's resources
are value sets here. What a check finds is named by field path only (``data.code``): pydantic's errors
quote the input, so their messages never leave this module.

The text fields come from the schemas (``include/schemas/*.avsc``), each Avro field matched to its FHIR
element: a FHIR ``string`` or ``markdown`` is text; inside a HumanName, or the display of a reference
that may point at a person, it is a name. A reference's literal ``reference`` is a FHIR string too,
but a pointer, not text.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from event_broker_rollout import paths

SCHEMAS_DIR = paths.INCLUDE_DIR / "schemas"
DATA_FIELD = "data"  # the envelope field holding the FHIR resource

_STATUS = ("status",)
# FHIR R4 required bindings of the coded elements the catalog's resources carry (path below ``data``).
REQUIRED_BINDINGS: Mapping[str, Mapping[tuple[str, ...], tuple[str, ...]]] = {
    "Patient": {
        ("gender",): ("male", "female", "other", "unknown"),
        ("name", "use"): ("usual", "official", "temp", "nickname", "anonymous", "old", "maiden"),
    },
    "Encounter": {
        _STATUS: (
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        ),
        ("location", "status"): ("planned", "active", "reserved", "completed"),
    },
    "Observation": {
        _STATUS: (
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        ),
    },
    "DiagnosticReport": {
        _STATUS: (
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        ),
    },
    "MedicationRequest": {
        _STATUS: (
            "active",
            "on-hold",
            "cancelled",
            "completed",
            "entered-in-error",
            "stopped",
            "draft",
            "unknown",
        ),
        ("intent",): (
            "proposal",
            "plan",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        ),
    },
    "Consent": {
        _STATUS: ("draft", "proposed", "active", "rejected", "inactive", "entered-in-error"),
        ("provision", "type"): ("deny", "permit"),
    },
}
STATUS_RESOURCES = tuple(resource for resource, bindings in REQUIRED_BINDINGS.items() if _STATUS in bindings)

_TEXT_TYPES = frozenset({"String", "Markdown"})  # FHIR primitives that hold prose
_LITERAL_REFERENCE = ("Reference", "reference")
_PERSONS = frozenset({"Patient", "Practitioner", "PractitionerRole", "RelatedPerson", "Person"})
TextKind = Literal["name", "free_text"]


# --- the FHIR models -----------------------------------------------------------------------------


@cache
def model_class(type_name: str) -> Any:
    """The R4B model of a resource or datatype (``Observation``, ``CodeableConcept``), or None."""
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(type_name)
    except (KeyError, ValueError):
        return None


@cache
def _elements(model: Any) -> Mapping[str, Any]:
    """A model's elements by their JSON name (``class``, not ``class_fhir``)."""
    return {(field.alias or name): field.annotation for name, field in model.model_fields.items()}


def _element_type(annotation: Any) -> tuple[str, Any]:
    """(``"primitive"``, its FHIR type name) or (``"complex"``, its model) of an element annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        for argument in typing.get_args(annotation):
            if argument is not type(None):
                return _element_type(argument)
    if origin is typing.Annotated:
        return "primitive", type(typing.get_args(annotation)[1]).__name__
    name = getattr(annotation, "__name__", "")
    return "complex", model_class(name.removesuffix("Type")) if name.endswith("Type") else None


@cache
def _reference_targets(model: Any, element: str) -> frozenset[str]:
    """The resource types a Reference element may point at."""
    field = next((f for name, f in model.model_fields.items() if (f.alias or name) == element), None)
    extra = field.json_schema_extra if field is not None else None
    return frozenset(extra.get("enum_reference_types", ())) if isinstance(extra, dict) else frozenset()


def _child(model: Any, element: str) -> tuple[str, Any] | None:
    annotation = _elements(model).get(element) if model is not None else None
    return None if annotation is None else _element_type(annotation)


# --- text fields from the Avro schemas -----------------------------------------------------------


@dataclass(frozen=True)
class TextField:
    path: tuple[str, ...]  # element names below ``data``; arrays are walked through
    kind: TextKind

    @property
    def name(self) -> str:
        return ".".join((DATA_FIELD, *self.path))


def _avro_types(schema: Any, named: dict[str, Any], namespace: str) -> Iterator[Any]:
    """The concrete types a field's Avro type may hold (unions opened, arrays' items, named types)."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _avro_types(branch, named, namespace)
    elif isinstance(schema, str):
        resolved = named.get(schema) or named.get(f"{namespace}.{schema}")
        yield resolved if resolved is not None else schema
    elif isinstance(schema, dict):
        if schema.get("type") == "array":
            yield from _avro_types(schema["items"], named, namespace)
        elif schema.get("type") in ("record", "enum", "fixed"):
            space = schema.get("namespace", namespace)
            named[f"{space}.{schema['name']}"] = schema
            yield schema
        else:
            yield schema.get("type")


def _text_fields(
    record: dict[str, Any],
    model: Any,
    path: tuple[str, ...],
    named: dict[str, Any],
    targets: frozenset[str] = frozenset(),  # what the record may point at, when it is a Reference
) -> Iterator[TextField]:
    namespace = record.get("namespace", "")
    model_name = getattr(model, "__name__", "")
    for field in record.get("fields", []):
        element = field["name"]
        child = _child(model, element)
        for avro in _avro_types(field["type"], named, namespace):
            if isinstance(avro, dict) and avro.get("type") == "record":
                if child is not None and child[0] == "complex":
                    pointed_at = _reference_targets(model, element)
                    yield from _text_fields(avro, child[1], (*path, element), named, pointed_at)
            elif avro == "string" and child is not None and child[0] == "primitive":
                if child[1] not in _TEXT_TYPES or (model_name, element) == _LITERAL_REFERENCE:
                    continue
                named_person = model_name == "HumanName" or (
                    (model_name, element) == ("Reference", "display") and bool(targets & _PERSONS)
                )
                yield TextField((*path, element), "name" if named_person else "free_text")


def schema_text_fields(schema: Mapping[str, Any]) -> tuple[str | None, tuple[TextField, ...]]:
    """(resource type, its text fields) of one event schema: the record in its ``data`` field."""
    named: dict[str, Any] = {}
    namespace = schema.get("namespace", "")
    for field in schema.get("fields", []):
        if field["name"] != DATA_FIELD:
            continue
        for avro in _avro_types(field["type"], named, namespace):
            if isinstance(avro, dict) and avro.get("type") == "record":
                resource = avro["name"]
                model = model_class(resource)
                found = _text_fields(avro, model, (), named) if model is not None else iter(())
                return resource, tuple(dict.fromkeys(found))
    return None, ()


@cache
def text_fields(schemas_dir: Path = SCHEMAS_DIR) -> Mapping[str, tuple[TextField, ...]]:
    """Every event schema's text fields, by FHIR resource type."""
    found: dict[str, tuple[TextField, ...]] = {}
    for schema_file in sorted(schemas_dir.glob("*.avsc")):
        resource, fields = schema_text_fields(json.loads(schema_file.read_text()))
        if resource is not None:
            found[resource] = tuple(dict.fromkeys((*found.get(resource, ()), *fields)))
    return found


def values_at(node: Any, path: tuple[str, ...]) -> Iterator[str]:
    """The strings at ``path`` below ``node``, through arrays at any step."""
    if isinstance(node, list):
        for item in node:
            yield from values_at(item, path)
    elif not path:
        if isinstance(node, str) and node:
            yield node
    elif isinstance(node, Mapping):
        yield from values_at(node.get(path[0]), path[1:])


# --- validation ----------------------------------------------------------------------------------


def fhir_json(value: Any) -> Any:
    """FHIR JSON of a decoded ``data`` record: Avro's nulls, empty arrays and emptied objects left
    out (FHIR has no empty elements: an Observation whose code holds nothing has no code)."""
    if isinstance(value, Mapping):
        kept = {key: fhir_json(item) for key, item in value.items()}
        return {key: item for key, item in kept.items() if item not in (None, [], {})}
    if isinstance(value, list):
        kept_items = [fhir_json(item) for item in value]
        return [item for item in kept_items if item not in (None, [], {})]
    return value


def _field_path(model: Any, location: tuple[int | str, ...]) -> str:
    """The error location as element names (indexes dropped), cut where it leaves the model: a
    location may name an unknown key, which is data, not a FHIR element."""
    parts = [DATA_FIELD]
    for item in location:
        if isinstance(item, int):
            continue
        child = _child(model, item)
        if child is None:
            break
        parts.append(item)
        model = child[1] if child[0] == "complex" else None
    return ".".join(parts)


def unbound_codes(resource: str, data: Mapping[str, Any]) -> Iterator[str]:
    """Field paths where a code is outside its element's required value set."""
    for path, allowed in REQUIRED_BINDINGS.get(resource, {}).items():
        if any(code not in allowed for code in values_at(data, path)):
            yield ".".join((DATA_FIELD, *path))


def validate(data: Any) -> tuple[str, ...]:
    """Field paths (sorted, no values) where ``data`` is not a valid FHIR R4 resource (structure,
    types, formats, cardinality, required bindings); () if valid."""
    from fhir.resources.R4B.domainresource import DomainResource
    from pydantic import ValidationError

    resource = data.get("resourceType") if isinstance(data, Mapping) else None
    model = model_class(resource) if isinstance(resource, str) else None
    if not isinstance(resource, str) or model is None or not issubclass(model, DomainResource):
        return (f"{DATA_FIELD}.resourceType",)
    found = set(unbound_codes(resource, data))
    try:
        model.model_validate(fhir_json(data))
    except ValidationError as error:
        found.update(_field_path(model, tuple(item["loc"])) for item in error.errors())
    except (TypeError, ValueError):  # a model's own check failed outside pydantic's error list
        found.add(DATA_FIELD)
    return tuple(sorted(found))
