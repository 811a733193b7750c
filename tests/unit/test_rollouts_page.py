"""The Rollouts page's plain half: rows from reports, and which files a report URL may reach."""

from __future__ import annotations

import json

import pytest

from event_broker_rollout.evidence import rollouts_page
from event_broker_rollout.evidence.results import report_dir
from event_broker_rollout.evidence.rollouts_page import RunInfo

RUN = "manual__2026-12-03T07:31:55.554000+00:00"


@pytest.fixture
def reports(tmp_path, monkeypatch):
    monkeypatch.setenv("EBR_REPORTS_DIR", str(tmp_path / "reports"))
    folder = report_dir("event_broker_rollout", RUN)
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(
        json.dumps(
            {
                "status": "passed",
                "summary": {"changes": 7},
                "results": [{"id": "rollout.approval", "message": "approved by approver1 at 07:40"}],
            }
        )
    )
    (folder / "report.html").write_text("<html>report</html>")
    (folder / "notes.txt").write_text("not served")
    other = report_dir("event_broker_security", "r2")
    other.mkdir(parents=True)
    (other / "report.html").write_text("<html>security</html>")
    return tmp_path / "reports"


def run(dag_id="event_broker_rollout", run_id=RUN, state="success") -> RunInfo:
    return RunInfo(dag_id, run_id, state, "2026-12-03T07:31:56+00:00", "admin", "lab")


def test_a_row_carries_what_the_report_says(reports):
    row = rollouts_page.row_for(run())
    assert (row.verdict, row.changes) == ("passed", 7)
    assert row.approval == "approved by approver1 at 07:40"
    assert row.report_url == (
        "/event-broker/reports/event_broker_rollout/manual__2026-12-03T07%3A31%3A55.554000%2B00%3A00/report.html"
    )


def test_a_run_without_a_report_shows_its_state(reports):
    row = rollouts_page.row_for(run(run_id="manual__later", state="running"))
    assert (row.verdict, row.changes, row.report_url) == ("running", None, None)


def test_the_page_escapes_what_it_shows(reports):
    page = rollouts_page.render_page([rollouts_page.row_for(run())], "admin<script>")
    assert "admin&lt;script&gt;" in page and "<script>" not in page
    assert '<span class="verdict ok">passed</span>' in page
    assert "No runs" in rollouts_page.render_page([], "admin")


@pytest.mark.parametrize(
    ("dag_id", "run_id", "name"),
    [
        ("event_broker_rollout", RUN, "notes.txt"),  # not a report file kind
        ("event_broker_rollout", RUN, "../../event_broker_security/r2/report.html"),
        ("event_broker_rollout", "..", "event_broker_security/r2/report.html"),
        ("event_broker_rollout", RUN, "/etc/passwd"),
        ("other_dag", RUN, "report.html"),
        ("event_broker_rollout", RUN, "missing.html"),
    ],
)
def test_only_the_runs_own_report_files_are_served(reports, dag_id, run_id, name):
    assert rollouts_page.report_file(dag_id, run_id, name) is None


def test_the_runs_report_is_served(reports):
    assert rollouts_page.report_file("event_broker_rollout", RUN, "report.html") is not None
    assert rollouts_page.report_file("event_broker_security", "r2", "report.html") is not None
