"""The "Rollouts" page inside the Airflow UI, and safe access to the reports it links to.

Plain Python: the plugin (``web.py``) asks Airflow which runs the user may see and hands them here as
``RunInfo``; each row adds what the run's own report says (verdict, changes, approval). Reports are
read from the reports folder (``EBR_REPORTS_DIR``), which on a distributed deployment is a folder every
worker writes to and the api-server reads (see the README).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from event_broker_rollout import paths
from event_broker_rollout.evidence.results import report_dir

PROJECT_DAG_PREFIX = "event_broker_"
URL_PREFIX = "/event-broker"
_DAG_ID = re.compile(r"^event_broker_[a-z0-9_]{1,64}$")
# What a run's report folder holds that the page may serve; nothing else leaves the folder.
SERVABLE_SUFFIXES = {".html": "text/html", ".json": "application/json", ".jsonl": "application/x-ndjson"}


@dataclass(frozen=True)
class RunInfo:
    """A DAG run as Airflow knows it (the plugin fills this from Airflow's database)."""

    dag_id: str
    run_id: str
    state: str
    started_at: str | None
    triggered_by: str | None
    environment: str | None


@dataclass(frozen=True)
class RolloutRow:
    run: RunInfo
    verdict: str
    changes: int | None
    approval: str | None
    report_url: str | None


def is_project_dag(dag_id: str) -> bool:
    return bool(_DAG_ID.match(dag_id))


def report_url(dag_id: str, run_id: str, name: str = "report.html") -> str:
    return f"{URL_PREFIX}/reports/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/{quote(name)}"


def report_file(dag_id: str, run_id: str, name: str) -> Path | None:
    """The file ``name`` of the run's report folder, or None when it is not one the page serves."""
    if not is_project_dag(dag_id) or "\x00" in run_id:
        return None
    folder = report_dir(dag_id, run_id).resolve()
    target = (folder / name).resolve()
    root = paths.reports_dir().resolve()
    # The run's own folder (a run id such as ".." must not reach another DAG's reports) and inside it.
    if folder.parent != root / dag_id or not target.is_relative_to(folder):
        return None
    if target.suffix not in SERVABLE_SUFFIXES or not target.is_file():
        return None
    return target


def _read_report(dag_id: str, run_id: str) -> Mapping[str, Any] | None:
    path = report_file(dag_id, run_id, "report.json")
    if path is None:
        return None
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, Mapping) else None


def _approval(report: Mapping[str, Any]) -> str | None:
    for result in report.get("results") or []:
        if isinstance(result, Mapping) and result.get("id") == "rollout.approval":
            return str(result.get("message") or "")
    return None


def row_for(run: RunInfo) -> RolloutRow:
    report = _read_report(run.dag_id, run.run_id)
    if report is None:
        return RolloutRow(run, run.state, None, None, None)
    summary = report.get("summary") if isinstance(report.get("summary"), Mapping) else {}
    changes = summary.get("changes") if isinstance(summary, Mapping) else None
    if not isinstance(changes, int):
        counts = report.get("counts") if isinstance(report.get("counts"), Mapping) else {}
        changes = counts.get("changed") if isinstance(counts, Mapping) else None
    return RolloutRow(
        run=run,
        verdict=str(report.get("status") or run.state),
        changes=changes if isinstance(changes, int) else None,
        approval=_approval(report),
        report_url=report_url(run.dag_id, run.run_id),
    )


_VERDICT_CLASS = {"passed": "ok", "success": "ok", "failed": "bad", "running": "run", "queued": "run"}

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem;color:#1d2733}
h1{font-size:1.35rem;margin:0 0 .25rem}p.lead{color:#556;margin:0 0 1rem}
table{border-collapse:collapse;width:100%}th,td{padding:.35rem .55rem;border-bottom:1px solid #e2e6ea;
text-align:left;vertical-align:top}th{background:#f4f6f8;font-weight:600}
.verdict{font-weight:600;padding:.1rem .45rem;border-radius:.3rem}.ok{background:#e3f5e8;color:#17612e}
.bad{background:#fde6e6;color:#8a1c1c}.run{background:#e7effc;color:#1d4f91}.other{background:#eee}
td.num{text-align:right}a{color:#1d4f91}
@media print{a{color:inherit;text-decoration:none}}
"""


def render_page(rows: Iterable[RolloutRow], user: str) -> str:
    """The Rollouts page: every run the user may read, newest first, each linked to its report."""
    body = []
    for row in rows:
        run = row.run
        verdict = html.escape(row.verdict)
        link = (
            f'<a href="{html.escape(row.report_url)}">report</a>'
            if row.report_url
            else '<span title="no report yet">—</span>'
        )
        body.append(
            "<tr>"
            f"<td>{html.escape(run.dag_id.removeprefix(PROJECT_DAG_PREFIX))}</td>"
            f"<td>{html.escape(run.run_id)}</td>"
            f"<td>{html.escape(run.environment or '—')}</td>"
            f'<td><span class="verdict {_VERDICT_CLASS.get(row.verdict, "other")}">{verdict}</span></td>'
            f'<td class="num">{"—" if row.changes is None else row.changes}</td>'
            f"<td>{html.escape(run.triggered_by or '—')}</td>"
            f"<td>{html.escape(row.approval or '—')}</td>"
            f"<td>{html.escape(run.started_at or '—')}</td>"
            f"<td>{link}</td>"
            "</tr>"
        )
    rows_html = "\n".join(body) or '<tr><td colspan="9">No runs of the project\'s DAGs yet.</td></tr>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Rollouts</title>'
        f"<style>{_STYLE}</style></head><body>"
        "<h1>Rollouts</h1>"
        f'<p class="lead">Every run of the event broker\'s DAGs you may read ({html.escape(user)}), '
        "newest first, with its verdict and the evidence it produced.</p>"
        "<table><thead><tr><th>DAG</th><th>Run</th><th>Environment</th><th>Verdict</th><th>Changes</th>"
        "<th>Triggered by</th><th>Approval</th><th>Started</th><th>Report</th></tr></thead>"
        f"<tbody>{rows_html}</tbody></table></body></html>"
    )
