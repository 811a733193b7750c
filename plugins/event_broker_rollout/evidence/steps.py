"""The one shape every stage step returns: its evidence, a summary for the report, data for later tasks.

A step's results become audit records and report lines; its summary is what the step adds to the
report's summary; its data (a plan, host names) is what downstream tasks consume and is never evidence.
Serialized as ``{"results": [...], "summary": {...}, "data": ...}`` so it travels through XCom.

The one exception is a list of host names a mapped task fans out over: Airflow maps over a task's
return value only, so such a task returns the plain list (it carries no evidence).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from event_broker_rollout.evidence.results import Result

RESULTS, SUMMARY, DATA = "results", "summary", "data"


@dataclass(frozen=True)
class Step:
    results: list[Result] = field(default_factory=list)
    summary: Mapping[str, Any] = field(default_factory=dict)
    data: Any = None

    @classmethod
    def of(
        cls, results: Iterable[Result], summary: Mapping[str, Any] | None = None, data: Any = None
    ) -> Step:
        return cls(results=list(results), summary=dict(summary or {}), data=data)

    def to_dict(self) -> dict[str, Any]:
        return {
            RESULTS: [result.to_dict() for result in self.results],
            SUMMARY: dict(self.summary),
            DATA: self.data,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Step:
        return cls(
            results=[Result.from_dict(item) for item in value.get(RESULTS) or []],
            summary=dict(value.get(SUMMARY) or {}),
            data=value.get(DATA),
        )


def is_step(value: Any) -> bool:
    """A serialized step (what a step's task returned), as opposed to any other XCom value."""
    return isinstance(value, Mapping) and isinstance(value.get(RESULTS), list) and SUMMARY in value


def step_data(value: Any) -> Any:
    """The data a serialized step carries for downstream tasks (None for anything else)."""
    return value.get(DATA) if is_step(value) else None
