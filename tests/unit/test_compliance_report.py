"""The compliance report: history of earlier runs, the per-check table, the trend chart, the records."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from event_broker_rollout.compliance import publish, report
from event_broker_rollout.compliance.stage import summary
from event_broker_rollout.config.catalog import load_catalog, load_policies
from event_broker_rollout.config.policy import load_policy
from event_broker_rollout.evidence.results import Result, Severity, StageReport, Status

DAG_ID = "event_broker_compliance"
START = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def policy():
    return load_policy(load_catalog(), load_policies())


def results(failing: int) -> list[Result]:
    """Three listener findings; the first ``failing`` of them failed."""
    found = [
        Result(
            "compliance.tls.only-tls-listeners",
            Status.FAIL if index < failing else Status.PASS,
            "listeners",
            host=f"lab{index + 1}",
        )
        for index in range(3)
    ]
    found.append(
        Result("compliance.registry.authentication", Status.WARN, "no auth", severity=Severity.ADVISORY)
    )
    return found


def write_run(day: int, failing: int) -> StageReport:
    started = START + timedelta(days=day)
    run = StageReport(
        DAG_ID,
        f"scheduled__{started.isoformat()}",
        "lab",
        started,
        started,
        results(failing),
        {},
        "Compliance",
    )
    run.write()
    return run


def test_history_reads_the_last_runs_oldest_first(tmp_path, monkeypatch):
    monkeypatch.setenv("EBR_REPORTS_DIR", str(tmp_path))
    for day, failing in ((2, 0), (0, 3), (1, 1)):  # written out of order
        write_run(day, failing)
    broken = tmp_path / DAG_ID / "half-written"
    broken.mkdir()
    (broken / "report.json").write_text("{")
    points = report.history(tmp_path / DAG_ID, limit=2)
    assert [p.started_at.day for p in points] == [21, 22]  # the oldest dropped, `latest` not counted twice
    assert [p.checks["compliance.tls.only-tls-listeners"] for p in points] == ["fail", "pass"]
    assert [p.checks_with("fail") for p in points] == [1, 0]
    assert [p.status for p in points] == ["failed", "passed"]


def test_trend_chart_is_inline_svg_with_a_bar_per_run(tmp_path, monkeypatch):
    monkeypatch.setenv("EBR_REPORTS_DIR", str(tmp_path))
    for day, failing in ((0, 3), (1, 1), (2, 0)):
        write_run(day, failing)
    svg = report.trend_svg(report.history(tmp_path / DAG_ID, limit=10))
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "<script" not in svg
    assert svg.count('<g class="run') == 3
    bars = [group.split("</g>")[0] for group in svg.split('<g class="run')[1:]]
    red = [[float(h) for h in re.findall(r'height="([\d.]+)" fill="#cf222e"', bar)] for bar in bars]
    assert [len(heights) for heights in red] == [1, 1, 0]  # the last run failed no check
    assert red[0] == red[1]  # one failed check each: the same height
    assert "scheduled__2026-11-20T02:00:00+00:00: failed; fail 1 checks, warn 1 checks, pass 0 checks" in svg


def test_run_ids_are_escaped_in_the_chart():
    point = report.RunPoint("<b>run</b>", START, "passed", {"x": "pass"})
    svg = report.trend_svg([point])
    assert "<b>" not in svg and "&lt;b&gt;run&lt;/b&gt;" in svg


def test_check_rows_follow_the_policy_with_each_checks_history(policy):
    points = [report.RunPoint("r1", START, "failed", {"compliance.tls.only-tls-listeners": "fail"})]
    rows = report.check_rows(
        [*results(1), Result("task.probe_listeners", Status.FAIL, "died")], policy, points
    )
    assert [row.check_id for row in rows][: len(policy.checks)] == list(policy.checks)
    listeners = next(row for row in rows if row.check_id == "compliance.tls.only-tls-listeners")
    assert listeners.status == "fail" and dict(listeners.counts) == {"fail": 1, "pass": 2}
    assert listeners.clause == "45 CFR 164.312(e)(1) Transmission security"
    assert listeners.trend == ("fail",)
    quorum = next(row for row in rows if row.check_id == "compliance.health.quorum")
    assert quorum.status == "absent" and quorum.trend == ("absent",)
    assert rows[-1].check_id == "task.probe_listeners" and rows[-1].status == "fail"


def test_sections_are_added_to_the_stage_report_page(tmp_path, monkeypatch, policy):
    monkeypatch.setenv("EBR_REPORTS_DIR", str(tmp_path))
    write_run(0, 3)
    latest = write_run(1, 0)
    page = report.add_sections(latest.write_path, policy, runs=30)
    text = page.read_text()
    assert text.index("Trend of the last runs") < text.index("All results, by phase and host")
    assert text.index("<h2>Checks</h2>") < text.index("<h4>lab1 ")
    assert text.count("<h1>") == 1 and text.count("<h2>Checks</h2>") == 1
    assert "failed checks now 0, most 1" in text
    assert text.count('<tr class="') >= len(policy.checks)


def test_records_carry_the_run_and_the_finding(policy):
    found = results(1)
    records = publish.records(found, {"run_id": "r1", "environment": "lab"})
    assert [key for key, _ in records] == [r.id for r in found]
    value = records[0][1]
    assert json.loads(json.dumps(value)) == {"run_id": "r1", "environment": "lab", **found[0].to_dict()}


def test_summary_counts_failed_checks_per_hipaa_clause(policy):
    counted = summary(results(2), policy)
    assert counted["failed_checks"] == ["compliance.tls.only-tls-listeners"]
    assert counted["warned_checks"] == ["compliance.registry.authentication"]
    assert counted["by_hipaa_clause"]["45 CFR 164.312(e)(1) Transmission security"]["failed"] == 1
    assert sum(c["checks"] for c in counted["by_hipaa_clause"].values()) == len(policy.checks)
