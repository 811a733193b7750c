"""Faults injected into the real, rolled-out lab: each scenario asserts the fault is detected, the lab
recovers, and (where records flow) the canary lost none; each undoes its fault whatever happens.

Run with ``EBR_KEEP_LAB=1`` to leave the lab up afterwards. Results: ``bench/results/faults-<ts>.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from event_broker_devtools import airflow_server
from event_broker_devtools.lab_connections import connections_file
from event_broker_devtools.rollout_driver import CONTROLLER, api_for
from tests.conftest import LAB_STATE, lab_ssh, needs_root, run_stage, secure_client_config
from tests.faults.conftest import (
    SERVICE,
    RunningCanary,
    StageRun,
    changed_results,
    cluster_health,
    ensure_kafka_running,
    failed_results,
    lab_sh,
    recorded_phases,
    wait_until_healthy,
)

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

LAB1, LAB2, LAB3 = "10.77.0.11", "10.77.0.12", "10.77.0.13"
DATA_DIR = "/var/lib/kafka/data"
DRIFT_TOPIC = "healthcare.consent.changed.v1"


def stage_with_report(
    stage: str, conf: dict[str, Any] | None = None
) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    """`make stage` as an operator runs it; every run, passed or failed, must leave its report."""
    proc, report = run_stage(stage, conf)
    assert report is not None, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc, report


def names(result: dict[str, Any], host: str, address: str) -> bool:
    text = json.dumps(result)
    return result.get("host") == host or host in text or address in text


def finish_canary(fault: dict[str, Any], canary: RunningCanary) -> None:
    fault["messages"] = canary.finish()
    assert fault["messages"]["produced"] > 0, fault["messages"]
    assert fault["messages"]["lost"] == 0, fault["messages"]


# ---------------------------------------------------------------- the security migration
# First in the file: on a fresh lab it finds the cluster before any security phase, so it needs no rebuild.


def test_broker_killed_during_the_security_migration(plaintext_cluster, fault):
    fault["fault"] = (
        "lab3's broker killed (SIGKILL) as the security stage prepares the interbroker phase (TLS between "
        "brokers, authorizer on), the listeners phase rolled and recorded"
    )
    fault["expected"] = (
        "the migration stops before restarting any other broker (its metadata still lists lab3 for "
        "seconds; the stage must not trust that); no phase is recorded past what every node runs; the "
        "stage's canary (SASL_SSL, acks=all) loses nothing; a re-run after the broker is back finishes"
    )
    stage = StageRun("security", {"gate_timeout_seconds": 60, "gate_settle_seconds": 5})
    stage.wait_for("starting task_id=configure_interbroker", 900)
    lab_ssh(LAB3, f"kill -9 $({SERVICE} pid kafka)")
    killed_at, killed_wall = time.monotonic(), time.time()
    code = stage.finish(900)
    fault["detection_seconds"] = round(time.monotonic() - killed_at, 1)  # until the stage had stopped
    report = stage.report()
    phases = recorded_phases()
    fault["phases_after_failure"] = phases
    blamed = [r for r in failed_results(report) if names(r, "lab3", LAB3)]
    fault["detected_by"] = [f"{r['id']}: {r['message']}"[:300] for r in blamed][:3]
    restarted = [address for address in (LAB1, LAB2) if kafka_started_epoch(address) > killed_wall]
    fault["restarted_while_lab3_was_down"] = restarted
    canary = next(r for r in report["results"] if r["id"] == "canary.zero_loss")
    fault["messages"] = canary["observed"]
    assert code != 0, stage.output[-3000:]
    assert blamed, failed_results(report)
    assert not restarted, restarted
    assert set(phases.values()) == {"listeners"}, phases  # nothing recorded past what every node runs
    assert canary["status"] == "pass", canary
    fault["detected"] = True

    ensure_kafka_running(LAB3)
    started = time.monotonic()
    wait_until_healthy()
    proc, report = stage_with_report("security", {"gate_settle_seconds": 5})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert set(recorded_phases().values()) == {"secured"}
    rerun_canary = next(r for r in report["results"] if r["id"] == "canary.zero_loss")
    fault["rerun_messages"] = rerun_canary["observed"]
    assert rerun_canary["status"] == "pass", rerun_canary
    fault["recovered"] = True
    fault["recovery_seconds"] = round(time.monotonic() - started, 1)
    fault["recovery"] = "broker started, cluster healthy, the security stage re-run finished the migration"


# ---------------------------------------------------------------- credentials and host keys


def topic_retention(admin: AdminClient) -> str:
    resource = ConfigResource(ConfigResource.Type.TOPIC, DRIFT_TOPIC)
    configs = admin.describe_configs([resource], request_timeout=15)[resource].result()
    return str(configs["retention.ms"].value)


def set_retention(admin: AdminClient, value: str) -> None:
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        DRIFT_TOPIC,
        incremental_configs=[ConfigEntry("retention.ms", value, incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([resource], request_timeout=15)[resource].result()


def test_wrong_kafka_credentials_fail_clearly_and_change_nothing(schemas_ready, fault, tmp_path):
    fault["fault"] = "the Kafka admin connection (kafka_lab) carries a wrong SCRAM password"
    fault["expected"] = (
        "the schemas stage fails, its log and report naming the refused login; a pending topic drift "
        "stays as it was"
    )
    admin = AdminClient(secure_client_config("admin"))
    declared = topic_retention(admin)
    drifted = str(int(declared) + 60_000)
    connections = json.loads(connections_file().read_text())
    connections["kafka_lab"]["password"] = f"wrong-{secrets.token_hex(8)}"
    wrong = tmp_path / "connections.json"
    wrong.touch(mode=0o600)
    wrong.write_text(json.dumps(connections))
    set_retention(admin, drifted)  # a change the stage would make, so a partial change would show
    try:
        stage = StageRun("schemas", connections=wrong)
        code = stage.finish(600)
        fault["detection_seconds"] = round(time.monotonic() - stage.started, 1)
        # the Kafka client's own words; paramiko's "Authentication (publickey) successful" must not count
        refusal = [line.strip()[:300] for line in stage.lines if "invalid credentials" in line.lower()]
        fault["error_lines"] = refusal[:2]
        fault["detected"] = code != 0 and bool(refusal)
        assert code != 0, stage.output[-3000:]
        assert refusal, stage.output[-3000:]
        assert topic_retention(admin) == drifted, "the failed run changed the topic"
        report = stage.report()
        fault["report_says"] = [f"{r['id']}: {r['message']}"[:400] for r in failed_results(report)]
        assert any("invalid credentials" in line for line in fault["report_says"]), fault["report_says"]
        assert not changed_results(report), changed_results(report)

        started = time.monotonic()
        proc, report = stage_with_report("schemas")
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert topic_retention(admin) == declared
        fault["recovered"] = True
        fault["recovery_seconds"] = round(time.monotonic() - started, 1)
        fault["recovery"] = "schemas re-run with the right connection set the drift back"
    finally:
        if topic_retention(admin) != declared:
            set_retention(admin, declared)
    fault["messages"] = {"note": "no records flow in this scenario: nothing produced, nothing to lose"}


def test_changed_host_key_is_refused_never_accepted(security_ready, fault, tmp_path):
    fault["fault"] = "lab1's sshd presents a new host key (as a rebuilt or impersonated host would)"
    fault["expected"] = "every SSH client refuses lab1; preflight fails on lab1; known_hosts is not rewritten"
    host_dir = LAB_STATE / "hosts" / "lab1"
    key = host_dir / "ssh_host_ed25519_key"
    pub = key.with_name(key.name + ".pub")
    known_hosts = LAB_STATE / "ssh" / "known_hosts"
    known_before = known_hosts.read_text()
    original_pub = pub.read_text().split()[1]
    for path in (key, pub):
        shutil.copy2(path, tmp_path / path.name)
    try:
        key.unlink()
        pub.unlink()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab1", "-f", str(key)], check=True
        )
        reload_sshd(host_dir)
        wait_for_host_key(LAB1, pub.read_text().split()[1])
        changed_at = time.monotonic()

        refused = lab_ssh(LAB1, "true")
        assert refused.returncode == 255, refused
        assert "host key verification failed" in refused.stderr.lower(), refused.stderr

        proc, report = stage_with_report("preflight")
        fault["detection_seconds"] = round(time.monotonic() - changed_at, 1)
        assert proc.returncode != 0, proc.stdout[-3000:]
        failures = failed_results(report)
        lab1 = [r for r in failures if r.get("host") == "lab1"]
        fault["detected_by"] = [f"{r['id']}: {r['message']}"[:300] for r in lab1][:3]
        assert lab1, failures
        assert any("key" in (r["message"] or "").lower() for r in lab1), lab1
        assert known_hosts.read_text() == known_before, "known_hosts was rewritten"
        fault["detected"] = True
    finally:
        for path in (key, pub):
            shutil.copy2(tmp_path / path.name, path)
        key.chmod(0o600)
        reload_sshd(host_dir)
        wait_for_host_key(LAB1, original_pub)
    started = time.monotonic()
    assert lab_ssh(LAB1, "true").returncode == 0
    proc, report = stage_with_report("preflight")
    assert proc.returncode == 0, proc.stdout[-3000:]
    fault["recovered"] = True
    fault["recovery_seconds"] = round(time.monotonic() - started, 1)
    fault["messages"] = {"note": "no records flow in this scenario: nothing produced, nothing to lose"}


def reload_sshd(host_dir: Path) -> None:
    """SIGHUP: sshd re-executes itself and loads its host key again (it daemonizes anew: the pid changes)."""
    os.kill(int((host_dir / "sshd.pid").read_text()), signal.SIGHUP)
    time.sleep(1)  # until the new daemon has written its pid file


def wait_for_host_key(address: str, key_base64: str, seconds: float = 30) -> None:
    """Until the host's sshd offers this key (ssh-keyscan reads it without trusting it)."""
    deadline = time.monotonic() + seconds
    offered = ""
    while time.monotonic() < deadline:
        offered = subprocess.run(
            ["ssh-keyscan", "-T", "3", "-t", "ed25519", address], capture_output=True, text=True, check=False
        ).stdout
        if key_base64 in offered:
            return
        time.sleep(0.5)
    raise AssertionError(f"{address} does not offer the expected host key: {offered!r}")


# ---------------------------------------------------------------- network and processes


def test_host_cut_during_preflight(security_ready, fault, canary):
    fault["fault"] = "lab2's link cut (connections time out) while preflight inspects the hosts"
    fault["expected"] = "preflight fails naming lab2 only; after heal it passes; no canary record lost"
    stage = StageRun("preflight")
    try:
        stage.wait_for("starting task_id=inspect_hosts", 180)
        lab_sh("cut", "lab2")
        cut_at = time.monotonic()
        code = stage.finish(300)
        fault["detection_seconds"] = round(time.monotonic() - cut_at, 1)
    finally:
        lab_sh("heal", "lab2")
    healed_at = time.monotonic()
    report = stage.report()
    failures = failed_results(report)
    blamed = [r for r in failures if names(r, "lab2", LAB2)]
    fault["detected_by"] = [f"{r['id']}: {r['message']}"[:300] for r in blamed][:5]
    fault["detected"] = code != 0 and bool(blamed)
    assert code != 0, stage.output[-3000:]
    assert blamed and blamed == failures, failures

    wait_until_healthy()
    proc, _ = stage_with_report("preflight")
    assert proc.returncode == 0, proc.stdout[-3000:]
    fault["recovered"] = True
    fault["recovery_seconds"] = round(time.monotonic() - healed_at, 1)
    finish_canary(fault, canary)


def watch_for_unhealthy(
    event: threading.Event, found: dict[str, Any], since: float, seconds: float = 300
) -> None:
    """The gates' own probes, every second: when do they first see the cluster unhealthy?"""
    while not event.is_set() and time.monotonic() - since < seconds:
        observed = cluster_health()
        if not (observed["brokers"]["healthy"] and observed["partitions"]["healthy"]):
            found["seconds"] = round(time.monotonic() - since, 1)
            found["observed"] = {
                "missing_brokers": observed["brokers"].get("missing"),
                "under_replicated": len(observed["partitions"].get("under_replicated", [])),
            }
            return
        time.sleep(1)


def test_broker_killed_before_an_infrastructure_gate(security_ready, fault, canary):
    fault["fault"] = "lab3's broker killed (SIGKILL) after the infrastructure stage planned, before its gates"
    fault["expected"] = "the brokers gate fails naming lab3 (node 3); a re-run starts only lab3's broker"
    stage = StageRun("infrastructure", {"gate_timeout_seconds": 40, "gate_settle_seconds": 12})
    probe: dict[str, Any] = {}
    stop_probe = threading.Event()
    try:
        stage.wait_for("starting task_id=proceed", 180)
        lab_ssh(LAB3, f"kill -9 $({SERVICE} pid kafka)")
        killed_at = time.monotonic()
        watcher = threading.Thread(
            target=watch_for_unhealthy, args=(stop_probe, probe, killed_at), daemon=True
        )
        watcher.start()
        code = stage.finish(300)
        fault["stage_failed_after_seconds"] = round(time.monotonic() - killed_at, 1)
    finally:
        stop_probe.set()
    report = stage.report()
    fault["detection_seconds"] = probe.get("seconds")
    fault["detected_by"] = [f"{r['id']}: {r['message']}"[:300] for r in failed_results(report)][:3]
    fault["probe_observed"] = probe.get("observed")
    assert code != 0, stage.output[-3000:]
    assert "lab3 (node 3)" in json.dumps(report), failed_results(report)
    fault["detected"] = True

    started = time.monotonic()
    proc, report = stage_with_report("infrastructure", {"gate_settle_seconds": 5})
    assert proc.returncode == 0, proc.stdout[-3000:]
    restarted = [r["host"] for r in changed_results(report) if r["id"].startswith("infra.start")]
    assert restarted == ["lab3"], changed_results(report)
    wait_until_healthy()
    fault["recovered"] = True
    fault["recovery_seconds"] = round(time.monotonic() - started, 1)
    finish_canary(fault, canary)


def test_broker_data_disk_full(security_ready, fault, canary, monkeypatch):
    fault["fault"] = f"lab3's {DATA_DIR} replaced by a full 1 MiB disk (tmpfs) under its running broker"
    fault["expected"] = "the running broker's failure is seen by the gates; preflight blocks on lab3's disk"
    filled = lab_ssh(
        LAB3,
        f"mount -t tmpfs -o size=1m ebr-fault-full {DATA_DIR} && "
        f"(dd if=/dev/zero of={DATA_DIR}/fill bs=64k 2>/dev/null; true) && df -Pk {DATA_DIR}",
    )
    assert filled.returncode == 0, filled.stderr
    filled_at = time.monotonic()
    try:
        probe: dict[str, Any] = {}
        watch_for_unhealthy(
            threading.Event(), probe, filled_at, seconds=180
        )  # returns when the broker failed
        assert probe, "the broker kept running on a full data disk for 180 s"
        fault["detection_seconds"] = probe["seconds"]
        fault["probe_observed"] = probe["observed"]
        gate = run_brokers_gate(monkeypatch, timeout_seconds=20)
        fault["gate_event"] = {"status": gate["status"], "missing": gate["observed"].get("missing")}
        assert gate["status"] == "timeout" and gate["observed"].get("missing") == [3], gate

        proc, report = stage_with_report("preflight")
        assert proc.returncode != 0, proc.stdout[-3000:]
        disk = [r for r in failed_results(report) if r["id"].startswith("hw.disk") and r["host"] == "lab3"]
        fault["detected_by"] = [f"{r['id']}: {r['observed']}" for r in disk] + ["gate_brokers_registered"]
        assert disk, failed_results(report)
        fault["detected"] = True
    finally:
        lab_ssh(LAB3, f"umount -l {DATA_DIR}")  # lazy: a broker that survived may still hold a file there
        ensure_kafka_running(LAB3)
    started = time.monotonic()
    wait_until_healthy()
    proc, _ = stage_with_report("preflight")
    assert proc.returncode == 0, proc.stdout[-3000:]
    fault["recovered"] = True
    fault["recovery_seconds"] = round(time.monotonic() - started, 1)
    fault["recovery"] = "disk freed (unmounted), broker started, cluster healthy, preflight passes"
    finish_canary(fault, canary)


def run_brokers_gate(monkeypatch: pytest.MonkeyPatch, timeout_seconds: float) -> dict[str, Any]:
    """The infrastructure gate's trigger, as the triggerer runs it, with the lab's admin connection."""
    from event_broker_rollout.airflow.triggers import ClusterHealthTrigger

    connection = json.loads(connections_file().read_text())["kafka_lab"]
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_LAB", json.dumps(connection))
    trigger = ClusterHealthTrigger(
        check="brokers", environment_name="lab", phase="secured", timeout_seconds=timeout_seconds
    )

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first_event())


# ---------------------------------------------------------------- Airflow itself


def kafka_started_epoch(address: str) -> float:
    """When the host's broker JVM started (wall clock), from its elapsed time."""
    elapsed = lab_ssh(address, f"ps -o etimes= -p $({SERVICE} pid kafka)").stdout.strip()
    return time.time() - float(elapsed)


def test_airflow_killed_mid_rollout_and_restarted(security_ready, fault, canary):
    fault["fault"] = (
        "the project's Airflow (standalone, whole process group) killed while a rollout changes a host"
    )
    fault["expected"] = "after a restart the run resumes or a re-run succeeds; no change is made twice"
    server = airflow_server.settings()
    was_running = airflow_server.running_pid(server) is not None
    airflow_server.start(server)
    api = api_for(server)
    conf = {"environment": "lab", "stages": ["preflight", "infrastructure"]}
    lab_ssh(LAB3, f"{SERVICE} stop kafka")  # the change in flight: the stage starts lab3's broker again
    try:
        run_id = api.trigger(CONTROLLER, conf)
        child = ("event_broker_infrastructure", f"rollout__{run_id}")
        wait_until(lambda: any_task_running(api, *child), 300, "the infrastructure stage to run")
        time.sleep(5)  # into the stage's changes
        pid = airflow_server.running_pid(server)
        assert pid is not None
        killed_wall = time.time()
        os.killpg(pid, signal.SIGKILL)  # a crash: scheduler, triggerer, api-server and running tasks at once
        airflow_server.stop(server)  # reaps what is left and clears the pid file
        restart_started = time.monotonic()
        airflow_server.start(server)
        fault["airflow_restart_seconds"] = round(time.monotonic() - restart_started, 1)
        api = api_for(server)  # a token from before the restart is refused

        # the restarted scheduler resets the dead scheduler's tasks within its 60 s orphan check
        interrupted = wait_for_terminal(api, run_id, 300)
        fault["interrupted_run_state"] = interrupted
        fault["detection_seconds"] = (
            round(time.monotonic() - restart_started, 1) if interrupted in ("success", "failed") else None
        )
        fault["detected"] = interrupted in ("success", "failed")
        runs = [run_id]
        if interrupted != "success":
            rerun = api.trigger(CONTROLLER, conf)
            runs.append(rerun)
            final = api.wait_for_run(CONTROLLER, rerun, timeout=900)["state"]
        else:
            final = interrupted
        fault["runs"] = runs
        assert final == "success", runs

        ensure_kafka_running(LAB3)  # a no-op when the rollout started it, as it should have
        jvms = broker_jvms("ebr-lab3")
        assert jvms == 1, f"{jvms} broker JVMs on lab3"
        started_before_kill = kafka_started_epoch(LAB3) < killed_wall
        starts = []
        for run in runs:
            path = infrastructure_report(run)
            if path.is_file():
                report = json.loads(path.read_text())
                starts += [(run, r["id"]) for r in changed_results(report) if r.get("host") == "lab3"]
        fault["lab3_changes_reported"] = starts
        fault["lab3_broker_started_before_kill"] = started_before_kill
        # lab3's broker started once in all. Started before the kill: by the interrupted run, which may
        # have reported it or not (killed before its report); no later run starts it again. Started after
        # the kill: by the resumed run or the re-run, which report it exactly once.
        assert len(starts) <= 1, starts
        if started_before_kill:
            assert all(run == run_id for run, _ in starts), starts
        else:
            assert len(starts) == 1, starts
        wait_until_healthy()
        fault["recovered"] = True
        fault["recovery_seconds"] = round(time.monotonic() - restart_started, 1)
    finally:
        ensure_kafka_running(LAB3)
        if not was_running:
            airflow_server.stop(server)
    finish_canary(fault, canary)


def broker_jvms(netns: str) -> int:
    """Kafka JVMs in one lab host's network namespace (hosts share the machine's pid namespace, so a
    process list on the host would show every host's brokers)."""
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=True).stdout
    count = 0
    for pid in pids.split():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            count += b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return count


def infrastructure_report(run_id: str) -> Path:
    from event_broker_rollout.evidence.results import report_dir

    return report_dir("event_broker_infrastructure", f"rollout__{run_id}") / "report.json"


def any_task_running(api: Any, dag_id: str, run_id: str) -> bool:
    try:
        instances = api.task_instances(dag_id, run_id)
    except Exception:  # the child run is not there yet
        return False
    return any(
        ti.get("state") == "running" and ti["task_id"] not in ("plan", "configure") for ti in instances
    )


def wait_until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_terminal(api: Any, run_id: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    state = "unknown"
    while time.monotonic() < deadline:
        state = api.dag_run(CONTROLLER, run_id)["state"]
        if state in ("success", "failed"):
            return str(state)
        time.sleep(3)
    return str(state)
