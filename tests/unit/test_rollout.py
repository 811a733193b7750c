"""The rollout's decisions and its report, over plain data (no Airflow, no lab)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from event_broker_rollout.config.environment import load_environment
from event_broker_rollout.evidence.results import Status
from event_broker_rollout.evidence.runs import child_run_id, is_child_run_id
from event_broker_rollout.rollout import controller as rollout
from event_broker_rollout.rollout import report as rollout_report
from event_broker_rollout.rollout.controller import (
    RolloutRequest,
    RolloutRequestError,
    build_request,
    decide_stage,
)

APPROVE = {
    "chosen_options": ["Approve"],
    "responded_by_user": {"id": "ana", "name": "Ana"},
    "responded_at": "t1",
}
REJECT = {"chosen_options": ["Reject"], "responded_by_user": {"id": "bo", "name": "Bo"}, "responded_at": "t2"}


@pytest.fixture(scope="module")
def lab():
    return load_environment("lab")


@pytest.fixture(scope="module")
def gated():
    return load_environment("lab-change-controlled")


def test_stages_run_in_the_guides_order_whatever_the_form_says(lab):
    request = build_request(lab, {"stages": ["schemas", "preflight", "security"]})
    assert request.stages == ("preflight", "security", "schemas")
    assert not request.approval_required


def test_every_form_problem_is_reported_at_once(gated):
    with pytest.raises(RolloutRequestError) as refused:
        build_request(gated, {"stages": ["preflight", "deploy"], "change_ticket": "no spaces allowed"})
    message = str(refused.value)
    assert "unknown stage(s) ['deploy']" in message
    assert "is not a ticket number" in message


def test_change_control_needs_a_ticket_unless_nothing_changes(gated):
    with pytest.raises(RolloutRequestError, match="change_ticket: environment 'lab-change-controlled'"):
        build_request(gated, {})
    assert build_request(gated, {"dry_run": True}).approval_required is False
    assert build_request(gated, {"stages": ["preflight"]}).approval_required is False
    assert build_request(gated, {"change_ticket": "CHG-1"}).approval_required is True


def test_each_stage_gets_only_the_params_its_form_has(lab):
    request = build_request(lab, {"dry_run": True, "knowledge_acknowledged": ["linux_administration"]})
    assert request.stage_conf["preflight"] == {
        "environment": "lab",
        "knowledge_acknowledged": ["linux_administration"],
    }
    assert request.stage_conf["infrastructure"] == {"environment": "lab", "dry_run": True}
    assert request.stage_conf["security"] == {"environment": "lab"}


def test_a_request_survives_xcom(gated):
    request = build_request(gated, {"change_ticket": "CHG-7", "stages": ["infrastructure"]})
    assert RolloutRequest.from_dict(request.to_dict()) == request


def test_stage_decisions(gated, lab):
    request = build_request(gated, {"change_ticket": "CHG-7", "stages": ["preflight", "infrastructure"]})
    assert decide_stage(request, "preflight", None).run  # preflight changes nothing: no approval needed
    assert not decide_stage(request, "security", APPROVE).run  # not chosen
    waiting = decide_stage(request, "infrastructure", None)
    assert not waiting.run and "none was given" in waiting.reason
    rejected = decide_stage(request, "infrastructure", REJECT)
    assert not rejected.run and "rejected by Bo at t2" in rejected.reason
    approved = decide_stage(request, "infrastructure", APPROVE)
    assert approved.run and approved.conf == {"environment": "lab-change-controlled", "dry_run": False}

    dry = build_request(lab, {"dry_run": True})
    assert decide_stage(dry, "schemas", None).run
    assert "no dry-run mode" in decide_stage(dry, "security", None).reason


def test_the_plan_runs_only_for_an_approver(gated, lab):
    assert not rollout.plan_decision(build_request(lab, {})).run
    assert not rollout.plan_decision(
        build_request(gated, {"change_ticket": "C-1", "stages": ["schemas"]})
    ).run
    plan = rollout.plan_decision(build_request(gated, {"change_ticket": "C-1"}))
    assert plan.run and plan.conf["dry_run"] is True


def test_the_approval_body_shows_ticket_preflight_and_host_plan(gated):
    request = build_request(gated, {"change_ticket": "CHG-42"})
    preflight = {"status": "passed", "counts": {"pass": 80, "warn": 3, "fail": 0}}
    plan = {
        "results": [
            {"id": "plan.file[/etc/kafka/server.properties]", "host": "lab1", "message": "would write it"},
            {"id": "plan.restart[kafka]", "host": "lab1", "message": "would restart kafka (rolling, gated)"},
            {"id": "infra.file[/x]", "host": "lab1", "message": "already as desired"},
        ]
    }
    body = rollout.approval_body(request, preflight, plan)
    assert "`CHG-42`" in body and "80 passed, 3 warnings, 0 failed" in body
    assert "**Plan (2 change(s) on hosts):**" in body
    assert "`lab1` — would restart kafka (rolling, gated)" in body and "already as desired" not in body
    assert "security, schemas, integration" in body


def _report(stage: str, start: datetime, seconds: float, status: str = "passed", changes: int = 0) -> dict:
    return {
        "status": status,
        "started_at": start.isoformat(),
        "finished_at": (start + timedelta(seconds=seconds)).isoformat(),
        "counts": {"pass": 5, "fail": 0 if status == "passed" else 1, "changed": changes},
        "summary": {"changes": changes},
    }


def test_the_rollout_report_has_a_row_per_stage_the_approval_and_a_timeline(gated, tmp_path, monkeypatch):
    monkeypatch.setenv("EBR_REPORTS_DIR", str(tmp_path))
    t0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    request = build_request(
        gated, {"change_ticket": "CHG-9", "stages": ["preflight", "infrastructure", "security"]}
    )
    outcomes = [
        rollout_report.StageOutcome(
            "preflight", "stage_preflight", "success", "rollout__r", _report("preflight", t0, 12)
        ),
        rollout_report.StageOutcome(
            "infrastructure",
            "dry_run_plan",
            "success",
            "plan__r",
            _report("infrastructure", t0, 20),
            plan_only=True,
        ),
        rollout_report.StageOutcome(
            "infrastructure",
            "stage_infrastructure",
            "success",
            "rollout__r",
            _report("infrastructure", t0, 40, changes=7),
        ),
        rollout_report.StageOutcome(
            "security", "stage_security", "failed", "rollout__r", _report("security", t0, 30, status="failed")
        ),
        rollout_report.StageOutcome("schemas", "stage_schemas", "upstream_failed"),
    ]
    report = rollout_report.build_report(
        dag_id="event_broker_rollout",
        run_id="r",
        request=request,
        triggered_by="ana",
        started_at=t0,
        finished_at=t0 + timedelta(minutes=5),
        outcomes=outcomes,
        approval=APPROVE,
        approval_task_state="success",
        approval_asked=t0 + timedelta(seconds=25),
    )
    results = {result.id: result for result in report.results}
    assert results["rollout.stage[infrastructure]"].status is Status.PASS
    assert results["rollout.stage[infrastructure]"].observed["changes"] == 7
    assert results["rollout.stage[security]"].status is Status.FAIL
    assert results["rollout.stage[schemas]"].status is Status.SKIPPED
    assert results["rollout.approval"].status is Status.PASS
    assert results["rollout.approval"].observed == {"by": "Ana", "at": "t1"}
    assert report.summary["changes"] == 7 and report.summary["change_ticket"] == "CHG-9"
    assert report.status == "failed"
    link = results["rollout.stage[security]"].details["report"]
    assert link == "../../event_broker_security/rollout__r/report.html"
    stages, timeline = report.figures
    assert timeline.count('class="bar ') == 4  # preflight, the plan, infrastructure, security
    assert 'class="bar fail"' in timeline and 'class="bar plan"' in timeline
    # The stages at a glance: one row per controller task, verdict, time, changes, the report's link.
    assert stages.count("<tr><td>") == 5
    assert "<tr><td>infrastructure</td><td>passed</td>" in stages
    assert '<td class="num">7</td><td><a href="../../event_broker_infrastructure/' in stages
    assert "<tr><td>schemas</td><td>upstream_failed</td>" in stages


def test_a_skipped_stage_says_why_and_the_page_links_each_stage_report(gated, tmp_path, monkeypatch):
    monkeypatch.setenv("EBR_REPORTS_DIR", str(tmp_path))
    t0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    request = build_request(gated, {"change_ticket": "CHG-9", "stages": ["preflight", "infrastructure"]})
    outcomes = [
        rollout_report.StageOutcome(
            "preflight", "stage_preflight", "success", "rollout__r:1", _report("preflight", t0, 12)
        ),
        rollout_report.StageOutcome("security", "stage_security", "skipped"),
    ]
    report = rollout_report.build_report(
        dag_id="event_broker_rollout",
        run_id="r:1",
        request=request,
        triggered_by="ana",
        started_at=t0,
        finished_at=t0 + timedelta(minutes=5),
        outcomes=outcomes,
        approval=APPROVE,
        approval_task_state="success",
        approval_asked=None,
    )
    skipped = next(r for r in report.results if r.id == "rollout.stage[security]")
    assert skipped.message == "did not run: security was not chosen for this rollout"
    page = (report.write().parent / "report.html").read_text()
    assert "<dt>triggered by</dt><dd>ana</dd>" in page and "CHG-9" in page
    assert 'class="report-link" href="../../event_broker_preflight/rollout__r%3A1/report.html"' in page
    assert 'class="timeline"' in page


def test_a_rejection_is_a_failed_approval_with_who_and_when(gated):
    request = build_request(gated, {"change_ticket": "CHG-9"})
    result = rollout_report.approval_result(request, REJECT, "success")
    assert result.status is Status.FAIL and result.observed == {"by": "Bo", "at": "t2"}
    assert "rejected by Bo at t2" in result.message
    assert rollout_report.approval_result(request, None, "failed").status is Status.FAIL


def test_the_timeline_scales_bars_to_their_duration():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    bars = [
        rollout_report.TimelineBar("a", t0, t0 + timedelta(seconds=10), "pass"),
        rollout_report.TimelineBar("b", t0 + timedelta(seconds=10), t0 + timedelta(seconds=40), "pass"),
    ]
    svg = rollout_report.timeline_svg(bars, width=530)  # 300 px of bars for 40 s
    widths = [float(part.split('"')[0]) for part in svg.split('width="')[2:4]]
    assert widths == [75.0, 225.0]


# --- separation of duties: who may answer the approval ----------------------------------------------

ROLES = rollout.user_roles_from_config(["admin:admin", "approver1:user", "cara:ADMIN", "dan:viewer"])


def answer(user: str, option: str = "Approve") -> dict:
    return {"chosen_options": [option], "responded_by_user": {"id": user, "name": user}, "responded_at": "t"}


@pytest.fixture(scope="module")
def gated_request(gated):
    return build_request(gated, {"change_ticket": "CHG-5"})


def test_the_change_controlled_lab_lists_its_approvers(gated_request):
    assert gated_request.approver_users == ("approver1",) and gated_request.approver_roles == ("admin",)
    assert RolloutRequest.from_dict(gated_request.to_dict()) == gated_request
    assert "**May approve:** approver1, role admin, except whoever triggered" in rollout.approval_body(
        gated_request, None, None
    )


def test_users_roles_come_from_the_simple_auth_managers_user_list():
    assert ROLES == {"admin": "admin", "approver1": "user", "cara": "ADMIN", "dan": "viewer"}
    assert rollout.user_roles_from_config(["team-user:op:team1", "", "no-role"]) == {"team-user": "op"}


def test_whoever_triggered_the_rollout_may_not_approve_it_even_as_an_approver(gated_request):
    refusal = rollout.answer_refusal(gated_request, answer("admin"), "admin", ROLES)
    assert refusal == "admin triggered this rollout and may not approve it (separation of duties)"
    listed = rollout.answer_refusal(gated_request, answer("approver1"), "approver1", ROLES)
    assert listed is not None and "separation of duties" in listed


def test_an_approver_by_name_or_by_role_may_approve_someone_elses_rollout(gated_request):
    assert rollout.answer_refusal(gated_request, answer("approver1"), "admin", ROLES) is None
    assert rollout.answer_refusal(gated_request, answer("cara"), "admin", ROLES) is None  # role ADMIN
    assert rollout.answer_refusal(gated_request, answer("admin"), "approver1", ROLES) is None


def test_anyone_else_is_refused_and_told_who_may_approve(gated_request):
    refusal = rollout.answer_refusal(gated_request, answer("dan"), "admin", ROLES)
    assert refusal == "dan is not an approver (approver1, role admin)"
    unknown_roles = rollout.answer_refusal(gated_request, answer("cara"), "admin", None)
    assert unknown_roles is not None and "the auth manager does not tell roles" in unknown_roles
    assert rollout.answer_refusal(gated_request, answer("approver1"), "admin", None) is None  # by name


def test_an_approval_needs_to_know_who_triggered_and_who_answered(gated_request):
    unknown = rollout.answer_refusal(gated_request, answer("approver1"), None, ROLES)
    assert unknown is not None and "who triggered this rollout is unknown" in unknown
    nameless = {"chosen_options": ["Approve"], "responded_by_user": {}, "responded_at": "t"}
    assert rollout.answer_refusal(gated_request, nameless, "admin", ROLES) == "the answer names no user"


def test_a_rejection_counts_from_an_approver_or_the_requester_withdrawing(gated_request):
    assert rollout.answer_refusal(gated_request, answer("admin", "Reject"), "admin", ROLES) is None
    assert rollout.answer_refusal(gated_request, answer("approver1", "Reject"), "admin", ROLES) is None
    refusal = rollout.answer_refusal(gated_request, answer("dan", "Reject"), "admin", ROLES)
    assert refusal == "dan is neither an approver (approver1, role admin) nor who triggered this rollout"


def test_without_listed_approvers_anyone_but_the_requester_may_approve(lab):
    open_request = build_request(lab, {})
    assert rollout.answer_refusal(open_request, answer("dan"), "admin", ROLES) is None
    assert rollout.answer_refusal(open_request, answer("admin"), "admin", ROLES) is not None


def test_the_request_is_assigned_to_the_approvers_and_the_requester(gated_request, lab):
    # role admin expanded to admin and cara; the requester (not an approver) may still reject.
    assert rollout.approval_assignees(gated_request, "dan", ROLES) == ["admin", "approver1", "cara", "dan"]
    # Not for another auth manager (user ids unknown) nor without listed approvers: the task checks.
    assert rollout.approval_assignees(gated_request, "admin", None) == []
    assert rollout.approval_assignees(build_request(lab, {}), "admin", ROLES) == []


def test_answers_that_did_not_count_are_warnings_in_the_report(gated_request):
    refused = [{**answer("admin"), "reason": "admin triggered this rollout and may not approve it"}]
    [result] = rollout_report.refused_answer_results(refused)
    assert result.id == "rollout.approval.refused[1]" and result.status is Status.WARN
    assert result.observed == {"by": "admin", "at": "t", "chosen": "Approve"}
    assert "Approve by admin at t did not count: admin triggered this rollout" in result.message


def test_a_rollouts_stage_runs_are_named_after_it_and_recognised_as_such():
    controller = "manual__2026-12-03T17:09:09.052094+00:00"
    assert child_run_id(controller, plan_only=False) == f"rollout__{controller}"
    assert child_run_id(controller, plan_only=True) == f"plan__{controller}"
    assert is_child_run_id(child_run_id(controller, plan_only=True))
    assert not is_child_run_id(controller)
