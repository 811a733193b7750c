"""The rollout report a change board reads: one row per stage, the approval, and a timeline chart.

Built from what the stage runs left behind (their own reports) and what the controller saw (task
states, the approval's answer). Plain Python: the controller DAG's last task only gathers the inputs.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from event_broker_rollout.evidence.results import Result, Severity, StageReport, Status, report_dir
from event_broker_rollout.rollout.controller import (
    RolloutRequest,
    approval_user,
    approved,
    decide_stage,
    plan_decision,
    stage_dag_id,
)


@dataclass(frozen=True)
class StageOutcome:
    """What happened to one controller task: a stage run (or the approver's plan), or why it did not run."""

    stage: str
    task_id: str
    task_state: str | None  # the controller task's state: success, failed, skipped, upstream_failed, ...
    run_id: str | None = None  # the stage DAG's run, when one was triggered
    report: Mapping[str, Any] | None = None  # that run's report.json, when it wrote one
    plan_only: bool = False  # the dry run shown to the approver

    @property
    def label(self) -> str:
        return f"{self.stage} (plan)" if self.plan_only else self.stage


def load_stage_report(stage: str, run_id: str | None) -> Mapping[str, Any] | None:
    if not run_id:
        return None
    path = report_dir(stage_dag_id(stage), run_id) / "report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _changes(report: Mapping[str, Any] | None) -> int | None:
    if report is None:
        return None
    summary = report.get("summary") or {}
    if isinstance(summary.get("changes"), int):
        return int(summary["changes"])
    return int((report.get("counts") or {}).get("changed", 0))


def stage_result(outcome: StageOutcome, rollout_dir: Path, skip_reason: str | None = None) -> Result:
    """The stage's row; ``skip_reason`` is why the controller chose not to run it (when it did not)."""
    report = outcome.report
    link = None
    if outcome.run_id:
        target = report_dir(stage_dag_id(outcome.stage), outcome.run_id) / "report.html"
        link = os.path.relpath(target, rollout_dir)
    details = {"task": outcome.task_id, "run_id": outcome.run_id, "report": link}
    observed = {
        "run": outcome.task_state,
        "report": report.get("status") if report else None,
        "counts": report.get("counts") if report else None,
        "changes": _changes(report),
    }
    check_id = f"rollout.{'plan' if outcome.plan_only else 'stage'}[{outcome.stage}]"
    if outcome.task_state == "success":
        message = "dry run shown to the approver" if outcome.plan_only else "stage passed"
        return Result(check_id, Status.PASS, message, observed=observed, expected="success", details=details)
    if outcome.task_state == "skipped":
        return Result(
            check_id,
            Status.SKIPPED,
            f"did not run: {skip_reason}"
            if skip_reason
            else "did not run (see the controller task's log for why)",
            observed=observed,
            expected="success or not chosen",
            severity=Severity.ADVISORY,
            details=details,
        )
    if outcome.task_state == "upstream_failed":
        return Result(
            check_id,
            Status.SKIPPED,
            "did not run: an earlier stage failed",
            observed=observed,
            expected="success",
            severity=Severity.ADVISORY,
            details=details,
        )
    failed_checks = (report or {}).get("counts", {}).get("fail")
    message = f"stage failed ({failed_checks} blocking finding(s))" if failed_checks else "stage failed"
    return Result(check_id, Status.FAIL, message, observed=observed, expected="success", details=details)


def approval_result(
    request: RolloutRequest, approval: Mapping[str, Any] | None, task_state: str | None
) -> Result:
    if not request.approval_required:
        return Result(
            "rollout.approval",
            Status.SKIPPED,
            "no approval needed (dry run, or the environment is not under change control)",
            severity=Severity.ADVISORY,
        )
    if approval is None:
        return Result(
            "rollout.approval",
            Status.FAIL,
            f"no answer recorded (approval task {task_state or 'did not run'})",
            observed=task_state,
            expected="Approve",
        )
    who = {"by": approval_user(approval), "at": str(approval.get("responded_at"))}
    if approved(approval):
        return Result(
            "rollout.approval",
            Status.PASS,
            f"approved by {who['by']} at {who['at']}",
            observed=who,
            expected="Approve",
        )
    return Result(
        "rollout.approval",
        Status.FAIL,
        f"rejected by {who['by']} at {who['at']}: the rollout stopped before changing anything",
        observed=who,
        expected="Approve",
    )


def refused_answer_results(refused: Sequence[Mapping[str, Any]]) -> list[Result]:
    """One warning per answer the approval did not count (separation of duties): who, when, why."""
    results = []
    for number, answer in enumerate(refused, start=1):
        chosen = ", ".join(answer.get("chosen_options") or []) or "no option"
        who = {"by": approval_user(answer), "at": str(answer.get("responded_at")), "chosen": chosen}
        results.append(
            Result(
                f"rollout.approval.refused[{number}]",
                Status.WARN,
                f"{chosen} by {who['by']} at {who['at']} did not count: {answer.get('reason')}; asked again",
                observed=who,
                expected="an answer from an approver who did not trigger the rollout",
                severity=Severity.ADVISORY,
            )
        )
    return results


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class TimelineBar:
    label: str
    start: datetime
    end: datetime
    status: str


_BAR_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "wait": "#8250df", "plan": "#6e7781"}


def timeline_bars(
    outcomes: Sequence[StageOutcome], approval: Mapping[str, Any] | None, approval_asked: datetime | None
) -> list[TimelineBar]:
    bars = []
    for outcome in outcomes:
        report = outcome.report or {}
        start, end = parse_time(report.get("started_at")), parse_time(report.get("finished_at"))
        if start is None or end is None:
            continue
        status = "plan" if outcome.plan_only else ("pass" if report.get("status") == "passed" else "fail")
        bars.append(TimelineBar(outcome.label, start, end, status))
    answered = parse_time((approval or {}).get("responded_at"))
    if approval_asked is not None and answered is not None:
        bars.append(TimelineBar("approval", approval_asked, answered, "wait"))
    return sorted(bars, key=lambda bar: bar.start)


def timeline_svg(bars: Sequence[TimelineBar], width: int = 900) -> str:
    """A Gantt chart of the rollout: one bar per stage run (and the wait for the approver)."""
    if not bars:
        return "<p>No stage ran: no timeline.</p>"
    origin = min(bar.start for bar in bars)
    total = max((max(bar.end for bar in bars) - origin).total_seconds(), 1.0)
    label_width, row, top = 170, 26, 30
    scale = (width - label_width - 60) / total  # room on the right for the last bar's label
    height = top + row * len(bars) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="rollout timeline" '
        f'class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="system-ui, sans-serif" font-size="12">',
        f'<text x="0" y="16" font-weight="600">Timeline (seconds from the first stage, total {total:.0f} s)</text>',
    ]
    for tick in range(5):
        seconds = total * tick / 4
        x = label_width + seconds * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 24}" stroke="#d0d7de"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle">{seconds:.0f}</text>')
    for index, bar in enumerate(bars):
        y = top + index * row
        x = label_width + (bar.start - origin).total_seconds() * scale
        length = max((bar.end - bar.start).total_seconds() * scale, 2.0)
        seconds = (bar.end - bar.start).total_seconds()
        parts.append(f'<text x="0" y="{y + 15}">{html.escape(bar.label)}</text>')
        parts.append(
            f'<rect class="bar {bar.status}" x="{x:.1f}" y="{y + 3}" width="{length:.1f}" height="{row - 8}" '
            f'rx="3" fill="{_BAR_COLOURS[bar.status]}"><title>{html.escape(bar.label)}: {seconds:.1f} s</title></rect>'
        )
        parts.append(f'<text x="{x + length + 4:.1f}" y="{y + 15}">{seconds:.0f} s</text>')
    parts.append("</svg>")
    return "".join(parts)


def _seconds(report: Mapping[str, Any] | None) -> str:
    try:
        assert report is not None
        started = datetime.fromisoformat(str(report["started_at"]))
        finished = datetime.fromisoformat(str(report["finished_at"]))
    except (AssertionError, KeyError, ValueError):
        return "—"
    return f"{(finished - started).total_seconds():.0f} s"


def stage_table_html(outcomes: Sequence[StageOutcome], rollout_dir: Path) -> str:
    """The stages at a glance: verdict, time and changes of each, with a link to its own report."""
    rows = []
    for outcome in outcomes:
        report = outcome.report
        verdict = str(report.get("status")) if report else (outcome.task_state or "did not run")
        link = "—"
        if outcome.run_id and report is not None:
            target = report_dir(stage_dag_id(outcome.stage), outcome.run_id) / "report.html"
            link = f'<a href="{html.escape(os.path.relpath(target, rollout_dir))}">report</a>'
        changes = _changes(report)
        rows.append(
            f"<tr><td>{html.escape(outcome.label)}</td><td>{html.escape(verdict)}</td>"
            f'<td class="num">{_seconds(report)}</td>'
            f'<td class="num">{"—" if changes is None else changes}</td><td>{link}</td></tr>'
        )
    if not rows:
        return ""
    return (
        '<h2>Stages</h2><table class="stages"><thead><tr><th>stage</th><th>verdict</th><th>time</th>'
        f"<th>changes</th><th>report</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def skip_reason(
    request: RolloutRequest, outcome: StageOutcome, approval: Mapping[str, Any] | None
) -> str | None:
    """Why the controller skipped a stage: the same decision its task took (None when it was not skipped)."""
    if outcome.task_state != "skipped":
        return None
    decision = plan_decision(request) if outcome.plan_only else decide_stage(request, outcome.stage, approval)
    return None if decision.run else decision.reason


def build_report(
    *,
    dag_id: str,
    run_id: str,
    request: RolloutRequest,
    triggered_by: str | None,
    started_at: datetime,
    finished_at: datetime,
    outcomes: Sequence[StageOutcome],
    approval: Mapping[str, Any] | None,
    approval_task_state: str | None,
    approval_asked: datetime | None,
    refused_answers: Sequence[Mapping[str, Any]] = (),
) -> StageReport:
    rollout_dir = report_dir(dag_id, run_id)
    results = [
        stage_result(outcome, rollout_dir, skip_reason(request, outcome, approval)) for outcome in outcomes
    ]
    results.append(approval_result(request, approval, approval_task_state))
    results += refused_answer_results(refused_answers)
    ran = [o for o in outcomes if o.report is not None and not o.plan_only]
    bars = timeline_bars(outcomes, approval, approval_asked)
    summary = {
        "change_ticket": request.change_ticket,
        "triggered_by": triggered_by,
        "stages": list(request.stages),
        "dry_run": request.dry_run,
        "changes": sum(_changes(o.report) or 0 for o in ran),
        "stage_seconds": {
            bar.label: round((bar.end - bar.start).total_seconds(), 1) for bar in bars if bar.status != "wait"
        },
    }
    return StageReport(
        dag_id=dag_id,
        run_id=run_id,
        environment=request.environment,
        started_at=started_at,
        finished_at=finished_at,
        results=results,
        summary=summary,
        title="Rollout",
        figures=(stage_table_html(outcomes, rollout_dir), timeline_svg(bars)),
        triggered_by=triggered_by,
    )
