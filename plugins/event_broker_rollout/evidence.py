"""Evidence: what every check and change produces, and the stage report built from it.

A result is plain data (JSON-safe) so it can travel through XCom, land in a report and in an audit
record alike. Nothing secret or patient-identifying belongs in one: callers put counts, ids and
settings in ``observed``/``expected``, never payload values or credentials.
"""

from __future__ import annotations

import html
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
            "results": [result.to_dict() for result in self.results],
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


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


_STATUS_COLOURS = {
    "pass": "#1a7f37",
    "ok": "#1a7f37",
    "changed": "#0969da",
    "warn": "#9a6700",
    "fail": "#cf222e",
    "skipped": "#6e7781",
}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return html.escape(text)


def render_html(report: StageReport) -> str:
    """A self-contained page: a summary, then a table per host (cluster-wide results first)."""
    by_host: dict[str, list[Result]] = {}
    for result in report.results:
        by_host.setdefault(result.host or "cluster", []).append(result)
    order = sorted(by_host, key=lambda name: (name != "cluster", name))
    tally = counts(report.results)
    badges = " ".join(
        f'<span class="badge" style="background:{_STATUS_COLOURS[name]}">{name}: {count}</span>'
        for name, count in tally.items()
        if count
    )
    sections = []
    for name in order:
        rows = "\n".join(
            f'<tr class="{r.status}"><td><code>{_cell(r.id)}</code></td>'
            f'<td><span class="status" style="color:{_STATUS_COLOURS[str(r.status)]}">{r.status}</span></td>'
            f"<td>{_cell(str(r.severity))}</td><td>{_cell(r.message)}</td>"
            f"<td>{_cell(r.observed)}</td><td>{_cell(r.expected)}</td></tr>"
            for r in by_host[name]
        )
        sections.append(
            f"<h2>{html.escape(name)}</h2><table><thead><tr><th>check</th><th>status</th><th>severity</th>"
            f"<th>message</th><th>observed</th><th>expected</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    summary_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in report.summary.items()
    )
    colour = _STATUS_COLOURS["fail" if report.status == "failed" else "pass"]
    title = html.escape(report.title or report.dag_id)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} — {html.escape(report.run_id)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }}
table {{ border-collapse: collapse; width: 100%; margin-bottom: 1.5rem; }}
th, td {{ border: 1px solid #d0d7de; padding: .35rem .5rem; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; }}
tr.fail {{ background: #ffebe9; }} tr.warn {{ background: #fff8c5; }}
tr.pass, tr.ok {{ background: #f0fff4; }} tr.changed {{ background: #ddf4ff; }}
.badge {{ color: #fff; border-radius: 1rem; padding: .15rem .6rem; margin-right: .3rem; }}
.status {{ font-weight: 600; }}
.verdict {{ color: {colour}; }}
</style></head><body>
<h1>{title} <span class="verdict">{report.status}</span></h1>
<table>
<tr><th>DAG</th><td>{html.escape(report.dag_id)}</td></tr>
<tr><th>run</th><td>{html.escape(report.run_id)}</td></tr>
<tr><th>environment</th><td>{html.escape(report.environment)}</td></tr>
<tr><th>started</th><td>{report.started_at.isoformat()}</td></tr>
<tr><th>finished</th><td>{report.finished_at.isoformat()}</td></tr>
{summary_rows}
</table>
<p>{badges}</p>
{"".join(report.figures)}
{"".join(sections)}
</body></html>
"""


def utcnow() -> datetime:
    return datetime.now(UTC)
