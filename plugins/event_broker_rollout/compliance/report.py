"""The compliance report's own sections: a table per check and the trend over the last runs.

``evidence.StageReport`` writes report.json and report.html as for every stage; this module reads the
previous runs' report.json files beside it and renders the page again (``report_html``) with, before
the per-phase results, one row per check
(HIPAA clause, severity, today's outcome, its outcome in each recent run) and an inline SVG chart of
the checks failed, warned and passed in each run. Plain HTML and SVG: no script, no network.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from event_broker_rollout.config.policy import CompliancePolicy
from event_broker_rollout.evidence import report_html
from event_broker_rollout.evidence.results import Result

# Worst first: a check's outcome in a run is the worst of its findings.
SEVERITY_ORDER = ("fail", "warn", "changed", "pass", "ok", "skipped")
COLOURS = {
    "pass": "#1a7f37",
    "ok": "#1a7f37",
    "changed": "#0969da",
    "warn": "#9a6700",
    "fail": "#cf222e",
    "skipped": "#6e7781",
    "absent": "#d0d7de",
}
CHART_STATUSES = ("fail", "warn", "pass")


def worst(statuses: Iterable[str]) -> str:
    present = set(statuses)
    return next((status for status in SEVERITY_ORDER if status in present), "absent")


@dataclass(frozen=True)
class RunPoint:
    """One run as the trend sees it."""

    run_id: str
    started_at: datetime
    status: str  # passed | failed
    checks: Mapping[str, str]  # check id -> worst status of its findings

    def checks_with(self, status: str) -> int:
        return sum(1 for outcome in self.checks.values() if outcome == status)

    @classmethod
    def from_report(cls, data: Mapping[str, Any]) -> RunPoint:
        by_check: dict[str, list[str]] = {}
        for result in data.get("results", []):
            by_check.setdefault(result["id"], []).append(result["status"])
        return cls(
            run_id=data["run_id"],
            started_at=datetime.fromisoformat(data["started_at"]),
            status=data.get("status", "failed"),
            checks={check_id: worst(statuses) for check_id, statuses in by_check.items()},
        )


def history(dag_dir: Path, limit: int) -> list[RunPoint]:
    """The last ``limit`` runs with a readable report.json, oldest first (``latest`` is a link, skipped)."""
    points = []
    for path in dag_dir.glob("*/report.json"):
        if path.parent.is_symlink():
            continue
        try:
            points.append(RunPoint.from_report(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError):
            continue  # a report being written or from an older format: not part of the trend
    points.sort(key=lambda point: point.started_at)
    return points[-limit:]


@dataclass(frozen=True)
class CheckRow:
    check_id: str
    clause: str
    severity: str
    description: str
    status: str
    counts: Mapping[str, int]
    trend: tuple[str, ...]  # this check's outcome per run of the history, oldest first


def check_rows(
    results: Sequence[Result], policy: CompliancePolicy, points: Sequence[RunPoint]
) -> list[CheckRow]:
    """Every check of the policy in its order, then anything else the run reported (failed tasks)."""
    by_check: dict[str, list[str]] = {}
    for result in results:
        by_check.setdefault(result.id, []).append(str(result.status))
    ids = [*policy.checks, *(check_id for check_id in by_check if check_id not in policy.checks)]
    rows = []
    for check_id in ids:
        statuses = by_check.get(check_id, [])
        entry = policy.checks.get(check_id)
        rows.append(
            CheckRow(
                check_id=check_id,
                clause=policy.clause(check_id) if entry else "",
                severity=str(entry.severity) if entry else "blocking",
                description=entry.description if entry else "",
                status=worst(statuses),
                counts={status: statuses.count(status) for status in CHART_STATUSES if status in statuses},
                trend=tuple(point.checks.get(check_id, "absent") for point in points),
            )
        )
    return rows


def _label(moment: datetime) -> str:
    return moment.strftime("%m-%d %H:%M")


def trend_svg(points: Sequence[RunPoint], width: int = 760, height: int = 220) -> str:
    """Stacked bars per run, oldest on the left: how many checks failed, warned and passed (a check's
    outcome is the worst of its findings); each bar's tooltip names its run."""
    if not points:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="0" height="0" role="img"></svg>'
    left, bottom, top, right = 40, 40, 10, 10
    plot_w, plot_h = width - left - right, height - top - bottom
    highest = max(1, *(sum(p.checks_with(s) for s in CHART_STATUSES) for p in points))
    slot = plot_w / len(points)
    bar = max(2.0, min(40.0, slot * 0.7))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="checks failed, warned and passed per run">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#8c959f"/>',
        f'<text x="{left - 6}" y="{top + 10}" font-size="11" text-anchor="end">{highest}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" font-size="11" text-anchor="end">0</text>',
    ]
    every = max(1, len(points) // 8)  # at most ~8 date labels
    for index, point in enumerate(points):
        x = left + index * slot + (slot - bar) / 2
        y = float(top + plot_h)
        tooltip = html.escape(
            f"{point.run_id}: {point.status}; "
            + ", ".join(f"{s} {point.checks_with(s)} checks" for s in CHART_STATUSES)
        )
        parts.append(f'<g class="run {point.status}"><title>{tooltip}</title>')
        for status in CHART_STATUSES:
            count = point.checks_with(status)
            if not count:
                continue
            h = plot_h * count / highest
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{COLOURS[status]}"/>'
            )
        parts.append("</g>")
        if index % every == 0 or index == len(points) - 1:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 16}" font-size="10" text-anchor="middle">'
                f"{html.escape(_label(point.started_at))}</text>"
            )
    legend_x = left
    for status in CHART_STATUSES:
        parts.append(
            f'<rect x="{legend_x}" y="{height - 12}" width="10" height="10" fill="{COLOURS[status]}"/>'
            f'<text x="{legend_x + 14}" y="{height - 3}" font-size="11">{status}</text>'
        )
        legend_x += 60
    parts.append("</svg>")
    return "".join(parts)


def _squares(trend: Sequence[str]) -> str:
    return "".join(
        f'<span class="sq" style="background:{COLOURS.get(status, COLOURS["absent"])}" title="{status}"></span>'
        for status in trend
    )


def sections_html(rows: Sequence[CheckRow], points: Sequence[RunPoint]) -> str:
    body = "\n".join(
        f'<tr class="{row.status}"><td><code>{html.escape(row.check_id)}</code><br>'
        f"<small>{html.escape(row.description)}</small></td>"
        f"<td>{html.escape(row.clause)}</td><td>{html.escape(row.severity)}</td>"
        f'<td><span class="status" style="color:{COLOURS.get(row.status, COLOURS["absent"])}">'
        f"{html.escape(row.status)}</span></td>"
        f"<td>{html.escape(', '.join(f'{k} {v}' for k, v in row.counts.items()))}</td>"
        f'<td class="trend">{_squares(row.trend)}</td></tr>'
        for row in rows
    )
    failing = [p.checks_with("fail") for p in points]
    caption = (
        f"checks failed, warned and passed in {len(points)} runs from {_label(points[0].started_at)} to "
        f"{_label(points[-1].started_at)} (UTC); failed checks now {failing[-1]}, most {max(failing)}"
        if points
        else "no runs yet"
    )
    return f"""<style>
.sq {{ display: inline-block; width: 9px; height: 14px; margin-right: 1px; border-radius: 2px; }}
td.trend {{ white-space: nowrap; }}
</style>
<section id="compliance"><h2>Trend of the last runs</h2>
<p>{html.escape(caption)}</p>
{trend_svg(points)}
<h2>Checks</h2>
<table><colgroup><col style="width:34%"><col style="width:20%"><col style="width:9%"><col style="width:8%">
<col style="width:11%"><col></colgroup><thead><tr><th>check</th><th>HIPAA Security Rule</th><th>severity</th><th>outcome</th>
<th>findings</th><th>last runs (oldest first)</th></tr></thead><tbody>
{body}
</tbody></table></section>
"""


def add_sections(report_json: Path, policy: CompliancePolicy, runs: int) -> Path:
    """Render the run's report.html again from its report.json, now with the per-check table and the
    trend (this run included), through the renderer every report uses."""
    data = json.loads(report_json.read_text())
    results = [Result.from_dict(item) for item in data["results"]]
    points = history(report_json.parent.parent, runs)
    page_path = report_json.with_name("report.html")
    page = report_html.render(data, sections=[sections_html(check_rows(results, policy, points), points)])
    tmp = page_path.with_name(f".{page_path.name}.tmp")
    tmp.write_text(page)
    tmp.replace(page_path)
    return page_path
