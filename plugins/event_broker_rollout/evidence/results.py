"""Evidence: what every check and change produces, and the stage report built from it.

A result is plain data (JSON-safe) so it can travel through XCom, land in a report and in an audit
record alike. Nothing secret or patient-identifying belongs in one: callers put counts, ids and
settings in ``observed``/``expected``, never payload values or credentials.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from event_broker_rollout import paths
from event_broker_rollout.evidence import report_html


class Status(StrEnum):
    PASS = "pass"  # a check met its expectation
    WARN = "warn"  # an advisory check missed, or something an operator should look at
    FAIL = "fail"  # a blocking check missed, or a change failed
    CHANGED = "changed"  # the stage changed something
    OK = "ok"  # a change that was not needed: already in the desired state
    SKIPPED = "skipped"  # does not apply here (the message says why)


class Severity(StrEnum):
    BLOCKING = "blocking"
    ADVISORY = "advisory"


@dataclass(frozen=True)
class Result:
    id: str
    status: Status
    message: str
    host: str | None = None
    observed: Any = None
    expected: Any = None
    severity: Severity = Severity.BLOCKING
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        data["severity"] = str(self.severity)
        data["details"] = dict(self.details)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        return cls(
            id=data["id"],
            status=Status(data["status"]),
            message=data.get("message", ""),
            host=data.get("host"),
            observed=data.get("observed"),
            expected=data.get("expected"),
            severity=Severity(data.get("severity", Severity.BLOCKING)),
            details=data.get("details") or {},
        )


def check(
    check_id: str,
    passed: bool,
    *,
    message: str,
    observed: Any,
    expected: Any,
    host: str | None = None,
    severity: Severity = Severity.BLOCKING,
    details: Mapping[str, Any] | None = None,
) -> Result:
    """A check's result: pass, or fail/warn by its severity."""
    if passed:
        status = Status.PASS
    else:
        status = Status.FAIL if severity is Severity.BLOCKING else Status.WARN
    return Result(
        id=check_id,
        status=status,
        message=message,
        host=host,
        observed=observed,
        expected=expected,
        severity=severity,
        details=details or {},
    )


def stage_failed(results: Iterable[Result]) -> bool:
    return any(result.status is Status.FAIL for result in results)


def counts(results: Iterable[Result]) -> dict[str, int]:
    tally = {str(status): 0 for status in Status}
    for result in results:
        tally[str(result.status)] += 1
    return tally


_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._:+-]")


def report_dir(dag_id: str, run_id: str) -> Path:
    return paths.reports_dir() / dag_id / _UNSAFE_PATH_CHARS.sub("_", run_id)


@dataclass
class StageReport:
    dag_id: str
    run_id: str
    environment: str
    started_at: datetime
    finished_at: datetime
    results: Sequence[Result]
    summary: Mapping[str, Any] = field(default_factory=dict)
    title: str = ""
    # Charts drawn by the stage (inline SVG built from escaped values), shown between summary and tables.
    figures: Sequence[str] = ()
    triggered_by: str | None = None  # the Airflow user who triggered the run, when known

    @property
    def write_path(self) -> Path:
        return report_dir(self.dag_id, self.run_id) / "report.json"

    @property
    def status(self) -> str:
        return "failed" if stage_failed(self.results) else "passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "environment": self.environment,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "counts": counts(self.results),
            "summary": dict(self.summary),
            "results": [_with_remediation(result) for result in self.results],
            "title": self.title or self.dag_id,
            "triggered_by": self.triggered_by,
        }

    def write(self) -> Path:
        """Write report.json and report.html, point ``latest`` at this run; returns the JSON path."""
        target = report_dir(self.dag_id, self.run_id)
        target.mkdir(parents=True, exist_ok=True)
        json_path = target / "report.json"
        _atomic_write(json_path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        _atomic_write(target / "report.html", render_html(self))
        latest = target.parent / "latest"
        tmp_link = target.parent / f".latest.{os.getpid()}"
        if tmp_link.is_symlink():
            tmp_link.unlink()
        tmp_link.symlink_to(target.name)
        tmp_link.replace(latest)
        return json_path


def _with_remediation(result: Result) -> dict[str, Any]:
    """A result as report.json holds it: a failure or warning also says what to do about it."""
    data = result.to_dict()
    if result.status in (Status.FAIL, Status.WARN):
        data["remediation"] = report_html.remediation(data)
    return data


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def render_html(report: StageReport) -> str:
    """The report's page, from the same data as its report.json (one renderer for every report kind)."""
    return report_html.render(report.to_dict(), title=report.title or None, figures=report.figures)


def utcnow() -> datetime:
    return datetime.now(UTC)
