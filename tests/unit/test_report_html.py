"""Every report kind rendered by the one renderer, from recorded runs' report.json files.

The fixtures under fixtures/reports are real runs copied from reports/ (preflight, infrastructure,
security, schemas, integration, rollout, compliance); compliance-built.json, a failed compliance run, was
built by the compliance check functions (the recorded compliance run passed).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin

import pytest

from event_broker_rollout.compliance import report as compliance_report
from event_broker_rollout.config.catalog import load_catalog, load_policies
from event_broker_rollout.config.policy import load_policy
from event_broker_rollout.evidence import report_html, rollouts_page
from event_broker_rollout.evidence.results import Result, Status
from event_broker_rollout.security.canary import Canary
from event_broker_rollout.security.stage import migration_chart_data

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
KINDS = sorted(path.stem for path in FIXTURES.glob("*.json"))
JSON_LITERAL = re.compile(r'\{"|\[\{|": |\{\'|\': ')


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


class Cells(HTMLParser):
    """The text of every table cell (nested markup flattened)."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "td":
            self.depth += 1
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.cells[-1] += data


def cells(page: str) -> list[str]:
    parser = Cells()
    parser.feed(page)
    return parser.cells


def test_every_stage_kind_has_a_recorded_run():
    dags = {load(name)["dag_id"] for name in KINDS}
    assert {
        f"event_broker_{kind}"
        for kind in (
            "preflight",
            "infrastructure",
            "security",
            "schemas",
            "integration",
            "rollout",
            "compliance",
        )
    } <= dags


@pytest.mark.parametrize("name", KINDS)
def test_no_cell_holds_a_json_literal(name):
    data = load(name)
    page = report_html.render(data)
    found = cells(page)
    assert len(found) >= len(data["results"])  # every result has its row
    offending = [cell[:120] for cell in found if JSON_LITERAL.search(cell)]
    assert offending == []


def test_a_json_literal_would_be_caught():
    """The pattern the test above relies on does see the old renderer's output."""
    assert JSON_LITERAL.search(json.dumps({"produced": 1}))
    assert JSON_LITERAL.search(json.dumps([{"a": 1}]))


@pytest.mark.parametrize("name", ["security-failed", "preflight-failed", "rollout-failed"])
def test_failures_come_before_every_pass(name):
    page = report_html.render(load(name))
    assert 'class="verdict">FAILED' in page
    first_fail = page.index('data-status="fail"')
    assert first_fail < page.index('data-status="pass"')
    assert first_fail < page.index("What changed") < page.index("All results, by phase and host")


def test_security_migration_figure_is_readable_not_json():
    data = load("security-passed")
    page = report_html.render(data)
    assert '"produced"' not in page
    summary = page[page.index('<section id="summary">') :]
    assert re.search(r"produced</span> 12,241.*lost</span> 0", summary, re.S)


def canary_with_intervals(start: float) -> Canary:
    """The canary's own bookkeeping, fed as its threads would: 12 intervals of 5 s."""
    canary = Canary({}, "ops.rollout.canary.v1", "canary.1", Path("/nonexistent"))
    for interval in range(12):
        canary.acked.update(range(interval * 250, (interval + 1) * 250))
        # the consumer trails the producer by 10 records
        canary.seen.update(dict.fromkeys(range(max(0, interval * 250 - 10), (interval + 1) * 250 - 10), 1))
        canary.record_interval(start + 5 * (interval + 1))
    return canary


def test_canary_records_what_each_interval_produced_and_consumed():
    canary = canary_with_intervals(1_796_284_000.0)
    assert len(canary.intervals) == 12
    assert canary.intervals[0] == {"at": 1_796_284_005.0, "produced": 250, "consumed": 240}
    assert [i["produced"] for i in canary.intervals] == [250] * 12
    assert canary.intervals[1]["consumed"] == 250  # the 10 trailing records of the first, 240 of its own
    assert canary.stats(final=True)["intervals"] == canary.intervals


def test_security_report_charts_the_canary_with_one_point_per_interval_and_the_phases():
    data = load("security-passed")
    start = datetime.fromisoformat(data["started_at"]).timestamp() + 120
    canary = canary_with_intervals(start)
    phase_times = {"interbroker": start + 20, "secured": start + 45}
    results = [
        Result("canary.zero_loss", Status.PASS, "ok", details={"intervals": canary.intervals}),
        *[
            Result(
                f"security.phase[{phase}]",
                Status.CHANGED,
                "committed",
                host=host,
                details={"at": datetime.fromtimestamp(at + offset, UTC).isoformat()},
            )
            for phase, at in phase_times.items()
            for offset, host in enumerate(("lab1", "lab2", "lab3"))
        ],
    ]
    data["summary"] = {**data["summary"], **migration_chart_data(results)}
    assert [b["phase"] for b in data["summary"]["phase_boundaries"]] == ["interbroker", "secured"]
    # the phase counts as committed when its last host recorded it
    assert data["summary"]["phase_boundaries"][1]["at"] == datetime.fromtimestamp(start + 47, UTC).isoformat()
    page = report_html.render(data)
    chart = page[
        page.index('<figure id="canary-chart">') : page.index("</figure>", page.index("canary-chart"))
    ]
    assert chart.count('class="point produced"') == 12 and chart.count('class="point consumed"') == 12
    assert re.findall(r'class="phase-boundary" data-phase="(\w+)"', chart) == ["interbroker", "secured"]
    assert "12 intervals" in chart and "12241 produced" in chart and "0 lost" in chart
    assert page.index("canary-chart") < page.index("All results, by phase and host")


def test_a_recorded_migration_is_charted_point_by_point_with_its_phase_commits():
    data = load("security-canary")
    intervals = data["summary"]["migration_intervals"]
    page = report_html.render(data)
    chart = page[page.index('<figure id="canary-chart">') :]
    chart = chart[: chart.index("</figure>")]
    assert chart.count('class="point produced"') == len(intervals) == 27
    assert chart.count('class="point consumed"') == len(intervals)
    assert re.findall(r'class="phase-boundary" data-phase="(\w+)"', chart) == [
        "listeners",
        "interbroker",
        "secured",
    ]
    assert "6161 produced, 6161 consumed, 0 lost" in chart


def test_gate_waits_are_charted_per_host():
    page = report_html.render(load("security-passed"))
    chart = page[page.index('<figure id="gates-chart">') :]
    chart = chart[: chart.index("</figure>")]
    assert chart.count('class="gate-wait"') == 21
    assert "lab1: brokers gate #1, 22.4 s (pass)" in chart


def test_results_are_grouped_by_phase_and_host_with_passes_collapsed():
    page = report_html.render(load("security-passed"))
    results = page[page.index('<section id="results">') :]
    for title in ("Health gates", "TLS, probed from outside", "Migration canary", "ACLs"):
        assert f'<span class="phase-name">{title}</span>' in results
    tls = results[results.index("TLS, probed from outside") :]
    tls = tls[: tls.index('<details class="phase"')]
    assert "<h4>lab1 " in tls and "<h4>lab3 " in tls
    assert '<details class="quiet"><summary>19 passed, unchanged or skipped</summary>' in tls
    # only phases with a failure or warning start open
    assert results.count('<details class="phase" open>') == 1


def test_failures_and_warnings_carry_a_remediation_hint():
    page = report_html.render(load("security-failed"))
    attention = page[page.index('<section id="attention">') : page.index('<section id="changed">')]
    assert attention.count('<td class="hint">') == 2 and "clear the task to re-run it" in attention
    assert report_html.remediation({"id": "gate.brokers_registered"}).startswith("A broker did not rejoin")
    assert report_html.remediation({"id": "x", "details": {"remediation": "do this"}}) == "do this"
    assert report_html.remediation({"id": "unknown.check"}) == report_html.GENERIC_HINT


def test_what_changed_lists_changes_by_host_and_kind():
    page = report_html.render(load("infrastructure-changed"))
    changed = page[
        page.index('<section id="changed">') : page.index("</section>", page.index('id="changed"'))
    ]
    rows = re.findall(r"<tr><td>(\w[\w-]*)</td><td><code>([\w.]+)</code></td>", changed)
    assert ("lab1", "infra.file") in rows and ("lab2", "infra.start") in rows
    assert len(rows) == len(set(rows))


def test_header_names_verdict_environment_who_ticket_and_approval():
    page = report_html.render(load("rollout-failed"))
    header = page[: page.index("</header>")]
    for expected in (
        "FAILED",
        "<dt>environment</dt><dd>lab</dd>",
        "<dt>triggered by</dt><dd>admin</dd>",
        "<dt>change ticket</dt>",
        "<dt>approval</dt>",
        "07:31:56",
    ):
        assert expected in header
    stage = report_html.render(load("security-failed"))
    assert (
        'part of <a href="../../event_broker_rollout/manual__2026-12-03T07%3A31%3A55.554000%2B00%3A00/report.html"'
        in stage
    )


def test_rollout_links_to_stage_reports_resolve_inside_the_airflow_ui(tmp_path, monkeypatch):
    """From /event-broker/reports/<dag>/<run>/report.html the relative links reach the stage reports the
    plugin serves (and the stage report's link back reaches the rollout's)."""
    monkeypatch.setenv("EBR_REPORTS_DIR", str(tmp_path))
    data = load("rollout-failed")
    page = report_html.render(data)
    links = re.findall(r'class="report-link" href="([^"]+)"', page)
    assert len(links) >= 3
    base = rollouts_page.report_url(data["dag_id"], data["run_id"])
    for link in links:
        path = urljoin(base, link.replace("&amp;", "&"))
        prefix, _, rest = path.partition("/reports/")
        assert prefix == rollouts_page.URL_PREFIX
        dag_id, run_id, name = (unquote(part) for part in rest.split("/", 2))
        target = tmp_path / dag_id / run_id / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("<html></html>")
        assert rollouts_page.report_file(dag_id, run_id, name) == target.resolve()


def test_compliance_page_is_the_same_page_with_its_check_table_and_trend(tmp_path, monkeypatch):
    monkeypatch.setenv("EBR_REPORTS_DIR", str(tmp_path))
    data = load("compliance-built")
    run_dir = tmp_path / data["dag_id"] / data["run_id"]
    run_dir.mkdir(parents=True)
    (run_dir / "report.json").write_text(json.dumps(data))
    policy = load_policy(load_catalog(), load_policies())
    page = compliance_report.add_sections(run_dir / "report.json", policy, runs=30).read_text()
    assert (
        page.index("Needs attention (3)")
        < page.index("Trend of the last runs")
        < page.index("<h2>Checks</h2>")
    )
    assert page.index("<h2>Checks</h2>") < page.index("All results, by phase and host")
    assert "Compliance: transmission security (TLS)" in page
    assert [cell for cell in cells(page) if JSON_LITERAL.search(cell)] == []


def test_print_stylesheet_and_no_script():
    page = report_html.render(load("preflight-failed"))
    assert "@media print" in page and "<script" not in page


def test_values_render_as_key_value_lists():
    nested = report_html.value_html({"counts": {"pass": 2}, "hosts": ["lab1", "lab2"], "rows": [{"a": 1}]})
    assert nested.startswith('<dl class="kv">') and "lab1, lab2" in nested and '<ol class="items">' in nested
    assert report_html.value_html('{"produced": 3}') == report_html.value_html({"produced": 3})
    assert report_html.value_html(None) == '<span class="none">—</span>'
    assert "&lt;b&gt;" in report_html.value_html({"<b>": "<b>"})


def test_the_recorded_timeline_window_is_consistent():
    """The fixtures are what real runs wrote: each started before it finished."""
    for name in KINDS:
        data = load(name)
        started, finished = (datetime.fromisoformat(data[k]) for k in ("started_at", "finished_at"))
        assert timedelta(0) <= finished - started < timedelta(hours=2)


def test_a_gate_records_its_wait_and_the_chart_prefers_it():
    from event_broker_rollout.airflow.sensors import gate_result

    result = gate_result(None, "brokers", True, {"healthy": True}, 22.43)  # healthy: no environment needed
    assert result.details == {"waited_seconds": 22.4}
    data = {**result.to_dict(), "host": "lab2", "message": "no seconds in this text"}
    page = report_html.render({"dag_id": "d", "run_id": "r", "status": "passed", "results": [data]})
    assert "lab2: brokers gate #1, 22.4 s (pass)" in page
