"""The closing tasks every stage DAG ends with: the report gathers the evidence of every other task of
the run (no hand-kept task lists), after the audit trail's export, which runs after every leaf."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag

from event_broker_rollout.airflow import tasks
from event_broker_rollout.airflow.tasks import EXPORT_TASK_ID, REPORT_TASK_ID, evidence_in, run_evidence
from event_broker_rollout.evidence.results import Result, Status
from event_broker_rollout.evidence.steps import Step, step_data

from .test_dag_integrity import DAGS_DIR

PASS = Result("a.check", Status.PASS, "fine").to_dict()
CHANGED = Result("b.change", Status.CHANGED, "made", host="lab1").to_dict()


def test_a_step_is_evidence_and_its_data_and_summary_are_not():
    step = Step.of([Result.from_dict(CHANGED)], summary={"n": 1}, data={"lab1": {"changes": []}}).to_dict()
    assert [r.id for r in evidence_in(step)] == ["b.change"]
    assert Step.from_dict(step).summary == {"n": 1} and step_data(step) == {"lab1": {"changes": []}}


@pytest.mark.parametrize(
    "data", [None, True, [], ["lab1", "lab2"], {"lab1": {"changes": []}}, "listeners", [PASS], PASS]
)
def test_anything_but_a_step_is_not_evidence(data):
    """Host names a mapped task fans out over, an approval, a path; and no loose result shapes either."""
    assert evidence_in(data) == [] and step_data(data) is None


def test_recorded_audits_each_result_as_the_stage_and_task_then_serializes(monkeypatch):
    logged: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        tasks, "audit_result", lambda action, result: logged.append((action, result.to_dict()))
    )
    context = {"ti": SimpleNamespace(dag_id="event_broker_security", task_id="commit_listeners")}
    step = Step.of([Result.from_dict(PASS), Result.from_dict(CHANGED)], summary={"n": 2})
    assert tasks.recorded(step, context) == step.to_dict()
    assert [(action, result["id"]) for action, result in logged] == [
        ("security.commit_listeners", "a.check"),
        ("security.commit_listeners", "b.change"),
    ]


class FakeTaskInstance:
    """XCom as the task SDK answers a list of task ids without map indexes: every map index's value."""

    def __init__(self, xcoms: dict[tuple[str, str], list[Any]]) -> None:
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: list[str], key: str = "return_value") -> list[Any]:
        (task_id,) = task_ids
        return self.xcoms.get((task_id, key), [])


class FakeDag:
    task_ids = ("plan", "configure", "install", "gate", EXPORT_TASK_ID, REPORT_TASK_ID)


def test_the_report_gathers_every_task_of_the_run_including_mapped_ones():
    lab2 = Result("b.change", Status.CHANGED, "made", host="lab2")
    gate = Result("gate.brokers", Status.PASS, "3 of 3")
    ti = FakeTaskInstance(
        {
            ("plan", "return_value"): [Step(data={"lab1": {"changes": []}}).to_dict()],
            ("configure", "return_value"): [Step.of([Result.from_dict(PASS)], data={"lab1": {}}).to_dict()],
            ("install", "return_value"): [
                Step.of([Result.from_dict(CHANGED)]).to_dict(),
                Step.of([lab2]).to_dict(),
            ],
            ("gate", "return_value"): [Step.of([gate]).to_dict()],
            (EXPORT_TASK_ID, "return_value"): [{"trail": "x", "records": 3}],
        }
    )
    results = run_evidence({"ti": ti, "dag": FakeDag()}, excluded=(EXPORT_TASK_ID, REPORT_TASK_ID))
    assert [(r.id, r.host) for r in results] == [
        ("a.check", None),
        ("b.change", "lab1"),
        ("b.change", "lab2"),
        ("gate.brokers", None),
    ]


def test_every_stage_dag_ends_with_export_then_report_after_all_its_leaves():
    bag = DagBag(str(DAGS_DIR))
    assert not bag.import_errors
    for dag_id, dag in bag.dags.items():
        if dag_id == "event_broker_rollout":  # the controller's report reads its stage runs instead
            continue
        export, report = dag.get_task(EXPORT_TASK_ID), dag.get_task(REPORT_TASK_ID)
        assert [t.task_id for t in report.upstream_list] == [EXPORT_TASK_ID], dag_id
        assert not report.downstream_list, dag_id
        assert [t.task_id for t in dag.tasks if not t.downstream_list] == [REPORT_TASK_ID], dag_id
        before_export = {t.task_id for t in export.get_flat_relatives(upstream=True)}
        assert before_export == set(dag.task_ids) - {EXPORT_TASK_ID, REPORT_TASK_ID}, dag_id
        assert {export.trigger_rule, report.trigger_rule} == {"all_done"}, dag_id
