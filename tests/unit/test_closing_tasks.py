"""The closing tasks every stage DAG ends with: the report gathers the evidence of every other task of
the run (no hand-kept task lists), after the audit trail's export, which runs after every leaf."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag

from event_broker_rollout.airflow.tasks import EXPORT_TASK_ID, REPORT_TASK_ID, evidence_in, run_evidence
from event_broker_rollout.evidence.results import Result, Status

from .test_dag_integrity import DAGS_DIR

PASS = Result("a.check", Status.PASS, "fine").to_dict()
CHANGED = Result("b.change", Status.CHANGED, "made", host="lab1").to_dict()


def test_results_are_recognised_in_every_shape_a_step_returns():
    assert [r.id for r in evidence_in([PASS, CHANGED])] == ["a.check", "b.change"]
    assert [r.id for r in evidence_in({"results": [CHANGED], "summary": {"n": 1}})] == ["b.change"]
    assert [r.id for r in evidence_in(PASS)] == ["a.check"]


@pytest.mark.parametrize("data", [None, True, [], ["lab1", "lab2"], {"lab1": {"changes": []}}, "listeners"])
def test_data_for_other_tasks_is_not_evidence(data):
    assert evidence_in(data) == []


class FakeTaskInstance:
    """XCom as the task SDK answers a list of task ids without map indexes: every map index's value."""

    def __init__(self, xcoms: dict[tuple[str, str], list[Any]]) -> None:
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: list[str], key: str = "return_value") -> list[Any]:
        (task_id,) = task_ids
        return self.xcoms.get((task_id, key), [])


class FakeDag:
    task_ids = ("plan", "configure", "install", "gate", EXPORT_TASK_ID, REPORT_TASK_ID)


def test_the_report_gathers_every_task_of_the_run_including_mapped_ones_and_pushed_results():
    lab2 = Result("b.change", Status.CHANGED, "made", host="lab2").to_dict()
    gate = Result("gate.brokers", Status.PASS, "3 of 3").to_dict()
    ti = FakeTaskInstance(
        {
            ("plan", "return_value"): [{"lab1": {"changes": []}}],
            # a step whose return value feeds the next task pushes its evidence under "results"
            ("configure", "return_value"): [{"lab1": {"changes": []}}],
            ("configure", "results"): [[PASS]],
            ("install", "return_value"): [[CHANGED], [lab2]],  # two map indexes
            ("gate", "return_value"): [[gate]],
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
