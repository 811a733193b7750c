"""Why a task failed, as its stage report tells it: the rollout's and the transports' words, never a
payload another library quoted in its exception."""

from __future__ import annotations

import json
from types import SimpleNamespace

from confluent_kafka import KafkaError, KafkaException
from paramiko import SSHException

from event_broker_rollout.airflow import tasks as dag_support
from event_broker_rollout.cluster.health import KafkaLoginError
from event_broker_rollout.evidence.results import Status

DAG_ID, RUN_ID = "event_broker_schemas", "manual__2026-11-27T10:00:00+00:00"


class FakeTaskInstance(SimpleNamespace):
    def get_task_states(self, dag_id: str, run_ids: list[str]) -> dict[str, dict[str, str]]:
        return {run_ids[0]: self.states}


def test_the_rollouts_own_and_transport_errors_are_quoted():
    login = KafkaLoginError(
        "the cluster at 10.77.0.11:9094 did not accept the admin login as admin: _AUTHENTICATION"
    )
    assert dag_support.failure_text(login).startswith("KafkaLoginError: the cluster at 10.77.0.11:9094")
    kafka = KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure"))
    assert "Broker transport failure" in dag_support.failure_text(kafka)
    assert (
        dag_support.failure_text(SSHException("No existing session")) == "SSHException: No existing session"
    )
    assert (
        dag_support.failure_text(TimeoutError("timed out\n  after 10 s"))
        == "TimeoutError: timed out after 10 s"
    )


def test_other_exceptions_are_named_by_type_only():
    # fastavro's own words for a record that does not fit its schema: the value is quoted
    quoted = ValueError("'Jane Doe' (type <class 'str'>) do not match ['null', 'int']")
    assert dag_support.failure_text(quoted) == "ValueError (its text stays in the task log)"
    assert "Jane" not in dag_support.failure_text(KeyError("Jane Doe"))


def test_key_material_never_reaches_the_report():
    leaked = KafkaLoginError("bad key -----BEGIN PRIVATE KEY----- MIIE...")
    assert "MIIE" not in dag_support.failure_text(leaked)


def test_a_recorded_failure_becomes_the_reports_finding(tmp_path, monkeypatch):
    monkeypatch.setenv("EBR_REPORTS_DIR", str(tmp_path))
    monkeypatch.setattr(dag_support, "audit", lambda *args, **kwargs: None)
    failed = SimpleNamespace(dag_id=DAG_ID, task_id="reconcile", map_index=-1)
    dag_support.record_task_failure(
        {"ti": failed, "run_id": RUN_ID, "exception": KafkaLoginError("did not accept the admin login")}
    )
    written = next((tmp_path / DAG_ID).rglob("reconcile.json"))
    assert json.loads(written.read_text())["error"] == "KafkaLoginError: did not accept the admin login"

    report_ti = FakeTaskInstance(
        dag_id=DAG_ID, task_id="report", states={"reconcile": "failed", "lint": "failed", "report": "running"}
    )
    outcomes = {r.id: r for r in dag_support.task_outcomes({"ti": report_ti, "run_id": RUN_ID})}
    assert outcomes["task.reconcile"].status is Status.FAIL
    assert outcomes["task.reconcile"].message == (
        "task reconcile failed: KafkaLoginError: did not accept the admin login"
    )
    assert outcomes["task.lint"].message == "task lint failed: see its log"  # died without a callback
    assert "task.report" not in outcomes


def test_a_gate_settles_only_after_a_step_started_something():
    from event_broker_rollout.airflow.sensors import started_anything
    from event_broker_rollout.evidence.results import Result
    from event_broker_rollout.evidence.steps import Step

    started = Step.of([Result("infra.start[kafka]", Status.CHANGED, "started kafka", host="lab1")]).to_dict()
    running = Step.of([Result("infra.start[kafka]", Status.OK, "running", host="lab2")]).to_dict()
    assert started_anything([running, started])
    assert not started_anything([running, None])
    assert not started_anything([])
