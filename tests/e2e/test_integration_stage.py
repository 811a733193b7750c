"""The integration stage on the secured lab: contracts, 1,000+ synthetic events end to end, a bad feed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, needs_root, run_stage

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

BAD_FILE = REPO / "include" / "sample_events" / "bad_events.jsonl"
PLANTED = (
    "219-09-9999",
    "MRN 4402119",
    "8867-3",
    "[degF]",
    "5e1f0c3a-9d2b-4c7e-8f10-000000000bad",
    "j.roe@example.net",
    "617-555-0148",
    "12 Birch Lane",
)


def test_synthetic_events_flow_end_to_end_and_pass_every_expectation(integration_ready):
    report = integration_ready
    assert report["status"] == "passed"
    event_types = report["summary"]["event_types"]
    assert len(event_types) == 6
    produced = sum(t["produced"] for t in event_types)
    assert produced >= 1000
    assert all(t["produced"] == t["consumed"] == t["valid"] for t in event_types)
    assert sum(t["dead_lettered"] for t in event_types) == 0
    quality = [r for r in report["results"] if r["id"].startswith("quality[")]
    assert len(quality) >= 12 and all(r["status"] == "pass" for r in quality)
    assert {"p50_ms", "p95_ms", "p99_ms"} <= set(report["summary"]["latency_ms"])


def test_a_component_outside_its_contract_is_refused_and_reported(integration_ready):
    refused = [r for r in integration_ready["results"] if r["id"].startswith("contract.refused[")]
    assert refused and all(r["status"] == "pass" for r in refused)
    assert any(r["id"].startswith("contract.refused[analytics:") for r in refused)
    assert any(r["id"].startswith("contract.refused[ebr-probe:") for r in refused)


def test_a_bad_feed_fails_names_the_expectations_dead_letters_and_leaks_nothing(integration_ready):
    proc, report = run_stage("integration", {"sample_events": str(BAD_FILE)})
    assert proc.returncode != 0
    failed = {r["id"] for r in report["results"] if r["status"] == "fail"}
    for rule in (
        "time.not-in-future",
        "code.loinc-check-digit",
        "phi.ssn",
        "phi.email",
        "fhir.r4-valid",
        "reference.known-patient",
    ):
        assert any(rule in check_id for check_id in failed), (rule, failed)
    assert sum(t["dead_lettered"] for t in report["summary"]["event_types"]) >= 4
    run_folder = Path(REPO / "reports" / "event_broker_integration" / "latest").resolve()
    outputs = [
        proc.stdout,
        proc.stderr,
        *(p.read_text(errors="replace") for p in run_folder.rglob("*") if p.is_file()),
    ]
    for value in PLANTED:
        assert not any(value in text for text in outputs), value
