"""The Celery stack's settings, readiness rule, worker records and the trail's completeness check, without
starting anything (tests/e2e/test_celery_stack.py runs the stack itself)."""

from __future__ import annotations

import json
import stat

from event_broker_devtools import airflow_server, airflow_stack
from event_broker_devtools.airflow_stack import StackSettings, WorkloadKey
from event_broker_rollout.evidence.trail_entries import Entry, RunRef
from event_broker_rollout.evidence.trail_sources import attempt_parts, read_every_log_part, sequence_gaps

RUN = RunRef("event_broker_rollout", "manual__1")


def stack(tmp_path) -> StackSettings:
    return StackSettings(home=tmp_path / "stack", port=airflow_stack.DEFAULT_API_PORT)


def test_every_component_shares_the_distributed_settings_and_secrets_stay_private(tmp_path):
    settings = stack(tmp_path)
    env = airflow_stack.stack_environment(settings)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith(
        f"@127.0.0.1:{airflow_stack.POSTGRES_PORT}/airflow"
    )
    assert env["AIRFLOW__CELERY__BROKER_URL"].endswith(f"@127.0.0.1:{airflow_stack.REDIS_PORT}/0")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8090/execution/"
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64 and len(env["AIRFLOW__API__SECRET_KEY"]) >= 64
    assert env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] == str(settings.task_logs)
    assert airflow_stack.stack_environment(settings) == env  # generated once, the same for every process
    for secret in settings.secrets_dir.iterdir():
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret


def test_ports_are_apart_from_each_other_and_from_the_standalone_airflow():
    ports = [
        airflow_stack.DEFAULT_API_PORT,
        airflow_stack.POSTGRES_PORT,
        airflow_stack.REDIS_PORT,
        airflow_stack.SCHEDULER_HEALTH_PORT,
        airflow_stack.TRIGGER_LOG_SERVER_PORT,
        *airflow_stack.WORKERS.values(),
    ]
    assert len(set(ports)) == len(ports)
    assert not set(ports) & {airflow_server.DEFAULT_PORT, 8793, 8794, 8974, 5432, 6379}


def test_workers_have_distinct_names_on_the_command_line():
    names = [airflow_stack.AIRFLOW_COMMANDS[w][airflow_stack.AIRFLOW_COMMANDS[w].index("--celery-hostname") + 1]
             for w in airflow_stack.WORKERS]  # fmt: skip
    assert names == ["w1@%h", "w2@%h"]


def test_ready_only_when_every_component_is_healthy():
    healthy = {
        name: {"status": "healthy"} for name in ("metadatabase", "scheduler", "triggerer", "dag_processor")
    }
    assert airflow_stack.unhealthy_components(healthy) == []
    assert airflow_stack.unhealthy_components({**healthy, "triggerer": {"status": "unhealthy"}}) == [
        "triggerer"
    ]
    assert airflow_stack.unhealthy_components({"metadatabase": {"status": "healthy"}}) == [
        "scheduler",
        "triggerer",
        "dag_processor",
    ]


def test_nothing_running_and_a_foreign_folder_is_never_removed(tmp_path):
    settings = stack(tmp_path)
    settings.home.mkdir()
    (settings.home / "keep.txt").write_text("not the stack's")
    assert airflow_stack.running_services(settings) == {}
    assert airflow_stack.stop(settings) is False
    assert (settings.home / "keep.txt").is_file()  # no marker: not a folder the stack made


WORKLOAD = (
    "2026-12-03T08:01:44.965030Z [info     ] [3ccb] Executing workload in Celery: dag_rel_path=PurePosixPath("
    "'x.py') log_path='dag_id=d/run_id=r/task_id=t/attempt=1.log' ti=TaskInstanceDTO(id=UUID('01a2'), "
    "task_id='{task}', dag_id='d', run_id='r', try_number=1, dag_version_id=UUID('01a3'), map_index={index}, "
    "hostname='', queue='default') type='ExecuteTask'"
)


def test_the_worker_of_each_part_is_read_from_the_workers_logs(tmp_path):
    settings = stack(tmp_path)
    settings.home.mkdir()
    settings.log_file("w1").write_text(
        "\n".join([WORKLOAD.format(task="inspect_host", index=0), WORKLOAD.format(task="approval", index=-1)])
    )
    settings.log_file("w2").write_text(
        "\n".join([WORKLOAD.format(task="inspect_host", index=1), WORKLOAD.format(task="approval", index=-1)])
    )
    found = airflow_stack.workers_by_task(settings)
    assert found[WorkloadKey("d", "r", "inspect_host", 0, 1)] == ["w1"]
    assert found[WorkloadKey("d", "r", "inspect_host", 1, 1)] == ["w2"]
    assert found[WorkloadKey("d", "r", "approval", -1, 1)] == ["w1", "w2"]  # deferred, resumed elsewhere


# --- every part of an attempt, and its gaps ----------------------------------------------------------------


def audit_line(part: str, seq: int) -> str:
    record = {"at": "2026-12-03T08:00:00+00:00", "action": "x", "part": part, "seq": seq}
    return json.dumps({"event": "ebr.audit", "audit": record})


def entry(part: str, seq: int, task_id: str = "approval") -> Entry:
    return Entry("audit", "t", RUN, {"part": part, "seq": seq}, task_id, -1, 1, seq)


def test_numbers_running_one_to_n_in_each_part_are_complete():
    assert sequence_gaps([entry("p1", 1), entry("p1", 2), entry("p2", 1)]) == []


def test_a_gap_is_a_finding_naming_the_attempt_the_part_and_the_numbers():
    [finding] = sequence_gaps([entry("p1", 1), entry("p1", 4), entry("p1", 5), entry("p2", 1)])
    assert finding == "approval try 1: audit records 2-3 of part p1 are missing from its log (3 of 5 found)"


def test_records_without_numbers_are_not_judged():
    assert sequence_gaps([Entry("audit", "t", RUN, {"action": "old"}, "a", -1, 1, 1)]) == []


def test_every_part_of_an_attempt_is_read_and_a_lost_record_is_reported(tmp_path):
    task_dir = tmp_path / f"dag_id={RUN.dag_id}" / f"run_id={RUN.run_id}" / "task_id=approval"
    task_dir.mkdir(parents=True)
    main = task_dir / "attempt=1.log"
    # Part 1 on one worker, part 2 (resumed) on the other, appended to the same file in the shared folder.
    main.write_text("\n".join([audit_line("p1", 1), audit_line("p2", 1), audit_line("p2", 3)]) + "\n")
    trigger = task_dir / "attempt=1.log.trigger.7.log"
    trigger.write_text('{"event": "trigger fired"}\n')
    assert attempt_parts(main) == [main, trigger]
    entries, findings = read_every_log_part(tmp_path, RUN)
    assert [(e.data["part"], e.data["seq"]) for e in entries] == [("p1", 1), ("p2", 1), ("p2", 3)]
    assert findings == [
        f"{RUN}: approval try 1: audit records 2 of part p2 are missing from its log (2 of 3 found)"
    ]


def test_a_run_without_log_files_has_no_records_and_no_findings(tmp_path):
    assert read_every_log_part(tmp_path, RUN) == ([], [])


def test_audit_numbers_an_attempts_records_in_its_process_part():
    from event_broker_rollout.evidence.audit import audit_record

    first, second = audit_record("a", target="t", outcome="ok"), audit_record("a", target="t", outcome="ok")
    assert first["part"] == second["part"]
    assert second["seq"] == first["seq"] + 1
