"""Every DAG file imports cleanly and reads no connection or variable while it is parsed."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import BaseHook, Variable

    def forbidden(*args, **kwargs):
        raise AssertionError(f"looked up at parse time: {args}")

    with (
        mock.patch.object(BaseHook, "get_connection", side_effect=forbidden),
        mock.patch.object(Variable, "get", side_effect=forbidden),
    ):
        return DagBag(dag_folder=str(DAGS_DIR))


def test_dag_files_exist():
    assert DAG_FILES


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


# The controller's file is not named like its DAG: a file named event_broker_rollout.py would share the
# package's name (tools and readers took one for the other).
CONTROLLER_FILE, CONTROLLER_DAG_ID = "event_broker_controller", "event_broker_rollout"


def test_one_dag_per_file_named_like_the_file(dagbag):
    for path in DAG_FILES:
        dag_id = CONTROLLER_DAG_ID if path.stem == CONTROLLER_FILE else path.stem
        assert dag_id in dagbag.dag_ids, f"{path.name} defines no DAG {dag_id}"
        assert path.stem != "event_broker_rollout", "a DAG file named like the package"
    assert len(dagbag.dag_ids) == len(DAG_FILES)


def test_stage_dags_have_an_environment_param_with_a_default(dagbag):
    for dag_id in dagbag.dag_ids:
        dag = dagbag.dags[dag_id]
        assert "environment" in dag.params, dag_id
        assert dag.params["environment"] in {
            p.stem for p in (DAGS_DIR.parent / "config" / "environments").glob("*.yaml")
        }


def test_no_connection_env_vars_needed_to_parse():
    assert not [key for key in os.environ if key.startswith("AIRFLOW_CONN_")]


def test_the_registry_starts_beside_the_kafka_nodes_behind_its_own_gate(dagbag):
    """Its storage does not need the brokers (Apicurio: its own database; confluent: waits for its Kafka
    store at start), so it does not queue behind the Kafka gates."""
    dag = dagbag.dags["event_broker_infrastructure"]
    assert dag.get_task("start_registry").upstream_task_ids == {"plan", "configure"}  # plan: its data
    assert dag.get_task("gate_registry_healthy").upstream_task_ids == {"start_registry"}
    assert dag.get_task("export_audit_trail").upstream_task_ids == {
        "gate_registry_healthy",
        "rolling_restart",
    }
