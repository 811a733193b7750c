"""How one Avro schema differs from another, field by field, to explain a registry's refusal.

The registry judges compatibility; this only names what changed (Apicurio's compatibility endpoint
answers a bare true/false, and confluent-kafka 2.16's ``test_compatibility`` drops the verbose messages
a Confluent registry would add).
"""

from __future__ import annotations

import json
from typing import Any


def _signature(schema: Any) -> str:
    if isinstance(schema, list):
        return " | ".join(_signature(member) for member in schema)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            return str(schema["name"]).rsplit(".", 1)[-1]
        if kind == "array":
            return f"array<{_signature(schema['items'])}>"
        if kind == "map":
            return f"map<{_signature(schema['values'])}>"
        logical = schema.get("logicalType")
        return f"{kind}({logical})" if logical else _signature(kind)
    return str(schema).rsplit(".", 1)[-1]


def _fields(schema: Any, prefix: str, out: dict[str, tuple[str, bool]]) -> None:
    """Every record field under ``schema`` as ``path -> (type signature, has default)``."""
    if isinstance(schema, list):
        for member in schema:
            _fields(member, prefix, out)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            for item in schema["fields"]:
                path = f"{prefix}.{item['name']}" if prefix else item["name"]
                out[path] = (_signature(item["type"]), "default" in item)
                _fields(item["type"], path, out)
        elif kind == "array":
            _fields(schema["items"], f"{prefix}[]", out)
        elif kind == "map":
            _fields(schema["values"], f"{prefix}{{}}", out)


def describe_changes(old_schema: str, new_schema: str) -> list[str]:
    """Field-level differences from ``old_schema`` to ``new_schema`` (both Avro JSON text)."""
    old: dict[str, tuple[str, bool]] = {}
    new: dict[str, tuple[str, bool]] = {}
    _fields(json.loads(old_schema), "", old)
    _fields(json.loads(new_schema), "", new)
    changes = []
    for path in old.keys() - new.keys():
        kind, has_default = old[path]
        changes.append(f"removed field {path} ({kind}{', had a default' if has_default else ', no default'})")
    for path in new.keys() - old.keys():
        kind, has_default = new[path]
        changes.append(f"added field {path} ({kind}{', with a default' if has_default else ', no default'})")
    for path in old.keys() & new.keys():
        if old[path][0] != new[path][0]:
            changes.append(f"changed type of {path}: {old[path][0]} -> {new[path][0]}")
        elif old[path][1] != new[path][1]:
            changes.append(f"{'dropped' if old[path][1] else 'added'} the default of {path}")
    return sorted(changes)
