from __future__ import annotations

import json
from datetime import UTC, datetime

from event_broker_rollout.evidence.results import Result, Severity, StageReport, Status, check, counts


def test_check_severity_decides_fail_or_warn():
    assert check("x", False, message="m", observed=1, expected=2).status is Status.FAIL
    assert (
        check("x", False, message="m", observed=1, expected=2, severity=Severity.ADVISORY).status
        is Status.WARN
    )
    assert check("x", True, message="m", observed=1, expected=2).status is Status.PASS


def test_result_round_trip():
    result = Result(
        "a.b", Status.CHANGED, "changed it", host="lab1", observed={"x": 1}, expected=[1], details={"k": "v"}
    )
    assert Result.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_report_written_as_json_and_html_with_latest_link(tmp_path, monkeypatch):
    monkeypatch.setenv("EBR_REPORTS_DIR", str(tmp_path))
    started = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    results = [
        Result("hw.vcpus.minimum", Status.FAIL, "vCPUs", host="lab1", observed="2", expected=">= 4"),
        Result("hw.servers.minimum", Status.PASS, "servers", observed="3 servers", expected=">= 3 servers"),
        Result(
            "sw.docker",
            Status.SKIPPED,
            "deployment mode is bare_metal",
            host="lab1",
            severity=Severity.ADVISORY,
        ),
    ]
    report = StageReport(
        "event_broker_preflight",
        "manual__2026-11-27T12:00:00+00:00",
        "lab",
        started,
        started,
        results,
        {"hosts": 3},
        "Preflight",
    )
    path = report.write()
    data = json.loads(path.read_text())
    assert data["status"] == "failed"
    assert {"dag_id", "run_id", "environment", "status", "started_at", "finished_at", "results"} <= set(data)
    assert data["results"][0] == {
        "id": "hw.vcpus.minimum",
        "status": "fail",
        "message": "vCPUs",
        "host": "lab1",
        "observed": "2",
        "expected": ">= 4",
        "severity": "blocking",
        "details": {},
        "remediation": "Give the host the sizing profile's CPU, memory or disk, or choose a smaller sizing profile.",
    }
    assert data["title"] == "Preflight" and "remediation" not in data["results"][1]
    assert counts(results)["fail"] == 1
    html = (path.parent / "report.html").read_text()
    assert "<h4>lab1 " in html and "<h4>cluster-wide " in html and 'class="verdict">FAILED' in html
    latest = tmp_path / "event_broker_preflight" / "latest"
    assert latest.resolve() == path.parent.resolve()


def test_html_escapes_values(tmp_path, monkeypatch):
    monkeypatch.setenv("EBR_REPORTS_DIR", str(tmp_path))
    now = datetime.now(UTC)
    report = StageReport("d", "r", "lab", now, now, [Result("x", Status.PASS, "<script>alert(1)</script>")])
    html = (report.write().parent / "report.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html
