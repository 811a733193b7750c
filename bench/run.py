"""The project's benchmarks on the lab: `make bench`.

Writes ``bench/results/<timestamp>.json`` (every figure with its samples, median and repeats) and
``bench/results/<timestamp>.md`` (a summary with a chart; the chart is an SVG file beside it, since the
pinned environment has no matplotlib). Each figure is measured on its own, so one that fails is recorded
with its error and the others still are.

    .venv/bin/python bench/run.py                       # every figure but the first run (needs root)
    .venv/bin/python bench/run.py --first-run           # also purge the lab and time a first rollout
    .venv/bin/python bench/run.py --only parse,validation --repeats 5
    .venv/bin/python bench/run.py --carry bench/results/<earlier>.json   # keep figures not re-measured

Figures (keys for ``--only``): rollout, infra_overhead, preflight_scaling, gate_detection, gate_slots,
validation, latency, compliance, parse. ``latency`` and ``gate_slots`` read the rollout this run timed
(or, without one, the newest on disk).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from event_broker_devtools import airflow_server
from event_broker_devtools.lab_shell import discard_cluster, lab_ssh, service_command, stop_quickly_command
from event_broker_rollout.airflow.rest import AirflowApi
from event_broker_rollout.evidence.runs import child_run_id
from event_broker_rollout.rollout.controller import STAGES

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
LAB_STATE = Path(os.environ.get("LAB_STATE", "/var/lib/event-broker-lab"))
LAB_SH = REPO / "lab" / "lab.sh"
PYTHON = sys.executable
KAFKA_HOSTS = ("10.77.0.11", "10.77.0.12", "10.77.0.13")
REGISTRY_HOST = "10.77.0.11"
FIGURES = (
    "rollout",
    "task_breakdown",
    "infra_overhead",
    "preflight_scaling",
    "gate_detection",
    "gate_slots",
    "validation",
    "latency",
    "compliance",
    "parse",
)


@dataclass
class Figure:
    key: str
    title: str
    unit: str
    value: float | None = None
    samples: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def repeats(self) -> int:
        return len(self.samples)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "repeats": self.repeats}


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} bench: {message}", flush=True)


def run(
    command: list[str], timeout: float, env: dict[str, str] | None = None, check: bool = True
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a command from the repository root; returns (wall seconds, process)."""
    started = time.perf_counter()
    process = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        check=False,
    )
    seconds = time.perf_counter() - started
    if check and process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:6])} exited {process.returncode}: {(process.stdout + process.stderr)[-1500:]}"
        )
    return seconds, process


def stage_report(process: subprocess.CompletedProcess[str]) -> dict[str, Any] | None:
    for line in process.stdout.splitlines():
        if line.startswith("report: ") and line.endswith(".json"):
            return dict(json.loads(Path(line.removeprefix("report: ")).read_text()))
    return None


def report_seconds(report: dict[str, Any] | None) -> float | None:
    if not report or not report.get("started_at") or not report.get("finished_at"):
        return None
    started = datetime.fromisoformat(report["started_at"])
    finished = datetime.fromisoformat(report["finished_at"])
    return round((finished - started).total_seconds(), 2)


def run_stage(
    stage: str,
    environment: str = "lab",
    conf: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One stage DAG in-process, as `make stage` runs it; returns wall seconds, verdict and report."""
    arguments = ["--conf", json.dumps({"environment": environment, **conf})] if conf else []
    command = [PYTHON, "-m", "event_broker_devtools.cli", "stage", "--stage", stage, "--env", environment]
    seconds, process = run(command + arguments, timeout=1800, env=env, check=False)
    report = stage_report(process)
    return {
        "wall_seconds": round(seconds, 2),
        "report_seconds": report_seconds(report),
        "succeeded": process.returncode == 0,
        "status": (report or {}).get("status"),
        "run_id": (report or {}).get("run_id"),
        "tail": "" if process.returncode == 0 else (process.stdout + process.stderr)[-800:],
    }


# ---------------------------------------------------------------- the rollout


def rollout_once() -> dict[str, Any]:
    """`python -m event_broker_devtools.cli rollout --env lab` (starts Airflow if needed); the report's figures."""
    seconds, process = run(
        [PYTHON, "-m", "event_broker_devtools.cli", "rollout", "--env", "lab"], timeout=3600, check=False
    )
    match = re.search(r"Triggered event_broker_rollout run (\S+) with", process.stdout)
    if match is None:
        raise RuntimeError(f"the rollout was not triggered: {(process.stdout + process.stderr)[-1500:]}")
    run_id = match.group(1)
    report_file = REPO / "reports" / "event_broker_rollout" / run_id / "report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    summary = report.get("summary") or {}
    return {
        "run_id": run_id,
        "succeeded": process.returncode == 0,
        "status": report.get("status"),
        "wall_seconds": round(seconds, 1),
        "report_seconds": report_seconds(report),
        "stage_seconds": summary.get("stage_seconds", {}),
        "changes": summary.get("changes"),
        "tail": "" if process.returncode == 0 else process.stdout[-1500:],
    }


def rollout_from_report(run_id: str) -> dict[str, Any]:
    """A rollout already on disk, in the shape `rollout_once` returns (for runs timed before)."""
    report = json.loads((REPO / "reports" / "event_broker_rollout" / run_id / "report.json").read_text())
    summary = report.get("summary") or {}
    return {
        "run_id": run_id,
        "succeeded": report.get("status") == "passed",
        "status": report.get("status"),
        "wall_seconds": report_seconds(report),
        "report_seconds": report_seconds(report),
        "stage_seconds": summary.get("stage_seconds", {}),
        "changes": summary.get("changes"),
        "tail": "" if report.get("status") == "passed" else "see the rollout report",
        "from_report": True,
    }


def bench_rollout_from_reports(first: str | None, reruns: list[str]) -> Figure:
    """The rollout figure from rollout reports on disk, not timed now."""
    figure = Figure("rollout", "Full rollout wall time per stage (from rollout reports)", "s")
    if first:
        figure.details["first_run"] = rollout_from_report(first)
    runs = [rollout_from_report(run_id) for run_id in reruns]
    figure.details["reruns"] = runs
    figure.details["rerun_stage_median_seconds"] = {
        stage: median([r["stage_seconds"][stage] for r in runs if stage in r["stage_seconds"]])
        for stage in STAGES
    }
    figure.details["rerun_changes"] = [r["changes"] for r in runs]
    figure.samples = [float(r["report_seconds"]) for r in runs if r["report_seconds"]]
    figure.value = median(figure.samples)
    return figure


def purge_lab() -> None:
    """What a new machine starts from: no installed software, no CA, no generated secrets, no connections.

    ``down --purge`` stops every lab host (lab4.. too) and deletes the per-host folders; the CA, the
    generated passwords and the Airflow connections file live beside them in LAB_STATE and go too.
    """
    run(["bash", str(LAB_SH), "down", "--purge"], timeout=300)
    for leftover in ("ca", "secrets"):
        shutil.rmtree(LAB_STATE / leftover, ignore_errors=True)
    (LAB_STATE / "airflow-connections.json").unlink(missing_ok=True)


def fresh_lab() -> None:
    purge_lab()
    lab_up(3)


def lab_up(hosts: int) -> None:
    """`make lab-up LAB_HOSTS=<hosts>`: the hosts, then the Airflow connections for them."""
    run(["bash", str(LAB_SH), "up", str(hosts)], timeout=300)
    run([PYTHON, "-m", "event_broker_devtools.lab_connections", "lab"], timeout=120)


def bench_rollout(first_run: bool, repeats: int, context: dict[str, Any]) -> Figure:
    figure = Figure("rollout", "No-change make rollout, the whole command (Airflow running)", "s")
    if first_run:
        say("first run: purging the lab (software, CA, secrets, connections) and bringing it up fresh")
        fresh_lab()
        say("first run: rolling out")
        with PeakMemory() as memory:
            first = rollout_once()
        first["peak_memory"] = memory.summary()
        figure.details["first_run"] = first
        context["first_run_infrastructure_seconds"] = first["stage_seconds"].get("infrastructure")
        context.setdefault("rollout_run_ids", []).append(first["run_id"])
        if not first["succeeded"]:  # keep what it measured (the stages that ran) with the failure
            figure.error = f"the first rollout failed: {first['tail'][-600:]}"
            return figure
    # The project's Airflow runs as a service does (`make rollout` leaves it running): a re-run's command
    # is timed whole, from the command line to its verdict, without an Airflow start in it.
    airflow_server.start(airflow_server.settings())
    reruns: list[dict[str, Any]] = []
    attempts = 0
    while len(reruns) < repeats:
        attempts += 1
        say(f"no-change re-run {len(reruns) + 1}/{repeats}")
        with PeakMemory() as memory:
            rerun = rollout_once()
        rerun["peak_memory"] = memory.summary()
        context.setdefault("rollout_run_ids", []).append(rerun["run_id"])
        if not rerun["succeeded"]:
            raise RuntimeError(f"the re-run failed: {rerun['tail']}")
        if rerun["changes"] and attempts == 1 and not first_run:
            # the lab was not rolled out yet (a fresh machine): that run was a first run, not a re-run
            figure.details["warm_up"] = rerun
            continue
        reruns.append(rerun)
    figure.details["reruns"] = reruns
    figure.details["rerun_stage_median_seconds"] = {
        stage: median([r["stage_seconds"][stage] for r in reruns if stage in r["stage_seconds"]])
        for stage in STAGES
    }
    figure.details["rerun_changes"] = [r["changes"] for r in reruns]
    figure.details["rerun_controller_seconds"] = [r["report_seconds"] for r in reruns]
    figure.samples = [float(r["wall_seconds"]) for r in reruns]
    figure.value = median(figure.samples)
    return figure


# ---------------------------------------------------------------- where a rollout's time goes


def log_phases(log: Path) -> dict[str, float]:
    """One attempt's log in seconds. Each run of the task process starts at ``::group::Pre Execute``;
    until that group ends the process starts, loads the DAG bundle and parses the DAG file (``startup``),
    then the task does its work (``work``); between two runs the task waited deferred (``deferred``)."""
    runs: list[dict[str, datetime | None]] = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
            stamp = datetime.fromisoformat(record["timestamp"])
        except (ValueError, KeyError, TypeError):
            continue
        if record.get("event") == "::group::Pre Execute" or not runs:
            runs.append({"start": stamp, "ready": None, "end": stamp})
            continue
        if runs[-1]["ready"] is None and record.get("event") == "::endgroup::":
            runs[-1]["ready"] = stamp
        runs[-1]["end"] = stamp
    phases = {"startup": 0.0, "work": 0.0, "deferred": 0.0}
    for index, one in enumerate(runs):
        start, end = one["start"], one["end"]
        assert start is not None and end is not None
        ready = one["ready"] or end
        phases["startup"] += (ready - start).total_seconds()
        phases["work"] += (end - ready).total_seconds()
        if index:
            previous_end = runs[index - 1]["end"]
            assert previous_end is not None
            phases["deferred"] += (start - previous_end).total_seconds()
    return phases


def busy_seconds(spans: list[tuple[datetime, datetime]]) -> float:
    """Seconds in which at least one of the spans was running (their union)."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(spans):
        if current_end is None or start > current_end:
            if current_end is not None and current_start is not None:
                total += (current_end - current_start).total_seconds()
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_start is not None:
        total += (current_end - current_start).total_seconds()
    return total


def stage_breakdown(folder: Path, wall_seconds: float | None) -> dict[str, Any]:
    """One stage run: task-process startup (Airflow's overhead inside each task), the work, the deferred
    waits (gates in the triggerer), and the time no task of the run was running or waiting at all (the
    scheduler, the executor and the triggerer's hand-back between tasks)."""
    totals = {"startup": 0.0, "work": 0.0, "deferred": 0.0}
    spans: list[tuple[datetime, datetime]] = []
    tasks: list[dict[str, Any]] = []
    for log in sorted(folder.glob("task_id=*/**/attempt=*.log")):
        if ".trigger." in log.name:
            continue
        phases = log_phases(log)
        for key in totals:
            totals[key] += phases[key]
        segments = _log_segments(log)
        # a task waiting deferred is a gate at work, not Airflow idling: its waits count as busy too
        spans += segments + [(end, start) for (_, end), (start, _) in itertools.pairwise(segments)]
        tasks.append({"task": log.relative_to(folder).parts[0].removeprefix("task_id="), **phases})
    busy = busy_seconds(spans)
    first = min((start for start, _ in spans), default=None)
    last = max((end for _, end in spans), default=None)
    wall = (
        wall_seconds
        if wall_seconds is not None
        else (last - first).total_seconds()
        if first and last
        else 0.0
    )
    slowest = sorted(tasks, key=lambda t: t["startup"] + t["work"], reverse=True)[:5]
    return {
        "wall_seconds": round(wall, 1),
        "tasks": len(tasks),
        "task_startup_seconds": round(totals["startup"], 1),
        "task_work_seconds": round(totals["work"], 1),
        "deferred_wait_seconds": round(totals["deferred"], 1),
        "no_task_running_seconds": round(max(0.0, wall - busy), 1),
        "slowest_tasks": [
            {k: round(v, 1) if isinstance(v, float) else v for k, v in task.items()} for task in slowest
        ],
    }


def bench_task_breakdown(context: dict[str, Any]) -> Figure:
    """Where the newest rollout's time went, per stage: Airflow's share (task-process startup and DAG
    parse in every task, time with no task running between tasks) against the work and the gate waits."""
    figure = Figure("task_breakdown", "Airflow overhead share of a rollout's stage time", "%")
    run_id = (context.get("rollout_run_ids") or [None])[-1] or newest_rollout_run_id()

    logs = airflow_server.settings().task_logs
    report = json.loads((REPO / "reports" / "event_broker_rollout" / run_id / "report.json").read_text())
    stage_seconds = (report.get("summary") or {}).get("stage_seconds", {})
    stages = {
        stage: stage_breakdown(
            logs / f"dag_id=event_broker_{stage}" / f"run_id={child_run_id(run_id, False)}",
            stage_seconds.get(stage),
        )
        for stage in STAGES
    }
    wall = sum(s["wall_seconds"] for s in stages.values())
    overhead = sum(s["task_startup_seconds"] + s["no_task_running_seconds"] for s in stages.values())
    figure.samples = [round(100 * overhead / wall, 1)] if wall else []
    figure.value = figure.samples[0] if figure.samples else None
    figure.details = {"rollout_run_id": run_id, "stages": stages, "overhead_seconds": round(overhead, 1)}
    return figure


class PeakMemory:
    """Peak resident memory during a command: Airflow's processes together (sampled: its task processes
    come and go) and each JVM (its kernel high-water mark, VmHWM, read while it runs)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.airflow_peak_kib = 0
        self.jvm_peak_kib: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        # Each process's command line first (short), its status only for Airflow's and the JVMs': parsing
        # every process's status twice a second took CPU from the rollout being measured.
        while not self._stop.is_set():
            airflow_kib = 0
            for process in Path("/proc").glob("[0-9]*"):
                try:
                    cmdline = (process / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    jvm = "kafka.Kafka" in cmdline or ("quarkus" in cmdline and "keycloak" not in cmdline)
                    if not jvm and "airflow" not in cmdline:
                        continue
                    fields = dict(
                        line.split(":", 1)
                        for line in (process / "status").read_text().splitlines()
                        if ":" in line
                    )
                except OSError:  # the process ended while it was read
                    continue
                if jvm and "java" in fields.get("Name", ""):
                    role = "kafka" if "kafka.Kafka" in cmdline else "registry"
                    key = f"{role}[pid {process.name}]"
                    hwm = int(fields.get("VmHWM", "0 kB").split()[0])
                    self.jvm_peak_kib[key] = max(self.jvm_peak_kib.get(key, 0), hwm)
                elif "airflow" in cmdline:
                    airflow_kib += int(fields.get("VmRSS", "0 kB").split()[0])
            self.airflow_peak_kib = max(self.airflow_peak_kib, airflow_kib)
            self._stop.wait(self.interval)

    def summary(self) -> dict[str, Any]:
        return {
            "airflow_processes_peak_mib": round(self.airflow_peak_kib / 1024),
            "jvm_peak_mib": {key: round(kib / 1024) for key, kib in sorted(self.jvm_peak_kib.items())},
        }


# ---------------------------------------------------------------- infrastructure overhead


def recorded_phase() -> str:
    text = lab_ssh(KAFKA_HOSTS[0], "cat /etc/event-broker/security-phase 2>/dev/null").stdout.strip()
    return text or "plaintext"


def lab_probes() -> dict[str, Callable[[], dict[str, Any]]]:
    """The gates' own health functions, with the client settings the lab needs in its current phase."""
    from event_broker_rollout.cluster import clients, health
    from event_broker_rollout.config.environment import load_environment

    environment = load_environment("lab")
    phase = recorded_phase()
    admin = environment.security.admin_user if environment.security else "admin"
    credentials_file = LAB_STATE / "secrets" / "credentials.json"
    password = json.loads(credentials_file.read_text()).get(admin) if credentials_file.is_file() else None
    config = clients.kafka_config(environment, phase, admin, password)
    expected = [environment.node_id(h) for h in environment.brokers]
    base = clients.registry_base_url(environment, phase)
    ca = clients.ca_file(environment) if base.startswith("https") else None
    return {
        "brokers": lambda: health.brokers_status(health.admin_client(config), expected),
        "partitions": lambda: health.partitions_status(
            health.admin_client(config), environment.kafka.min_insync_replicas
        ),
        "registry": lambda: health.registry_status(f"{base}/apis/ccompat/v7", f"{base}/health/ready", ca),
    }


def wait_healthy(timeout: float = 300) -> dict[str, float]:
    """Seconds until each of brokers, partitions and registry is first healthy (polled every 0.5 s)."""
    probes = lab_probes()
    started = time.perf_counter()
    reached: dict[str, float] = {}
    while len(reached) < len(probes):
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"not healthy after {timeout}s: {sorted(set(probes) - set(reached))}")
        for name, probe in probes.items():
            if name not in reached and probe().get("healthy"):
                reached[name] = round(time.perf_counter() - started, 2)
        time.sleep(0.5)
    return reached


def services(action: str) -> None:
    """Start or stop the services on every host at once: kafka everywhere, the registry on its host."""
    if action == "stop":
        discard_cluster(KAFKA_HOSTS, REGISTRY_HOST)
        return
    commands = {address: service_command(action, "kafka") for address in KAFKA_HOSTS}
    commands[REGISTRY_HOST] += " && " + service_command(action, "schema-registry")
    with ThreadPoolExecutor(len(commands)) as pool:
        outcomes = list(pool.map(lambda item: (item[0], lab_ssh(item[0], item[1], 300)), commands.items()))
    failed = [f"{address}: {p.stderr.strip()[-300:]}" for address, p in outcomes if p.returncode != 0]
    if failed:
        raise RuntimeError(f"ebr-service {action} failed on {failed}")


def bench_infra_overhead(repeats: int, context: dict[str, Any]) -> Figure:
    """The infrastructure stage (on the project's own Airflow, its scheduler running independent tasks side by
    side) starting stopped services vs the same services started directly.

    Both start from the same state (the installed, configured cluster with every Kafka and registry
    process stopped) and end at the same one (brokers registered, partitions healthy, registry up).
    """
    figure = Figure("infra_overhead", "Infrastructure stage time / the same processes started directly", "x")
    direct, staged, staged_runs = [], [], []
    server = airflow_server.settings()
    airflow_server.start(server)  # the project's own Airflow, as `make rollout` uses it
    api = AirflowApi(server.url, airflow_server.USER, airflow_server.password(server))
    for attempt in range(repeats):
        say(f"infrastructure overhead {attempt + 1}/{repeats}: stop, start directly, wait healthy")
        services("stop")
        started = time.perf_counter()
        services("start")
        reached = wait_healthy()
        direct.append(round(time.perf_counter() - started, 2))
        figure.details.setdefault("direct_milestones", []).append(reached)
        say(f"infrastructure overhead {attempt + 1}/{repeats}: stop, run the infrastructure stage")
        services("stop")
        outcome = stage_on_scheduler(api, "event_broker_infrastructure", "lab")
        staged_runs.append(outcome)
        if outcome["state"] != "success" or outcome["report_seconds"] is None:
            raise RuntimeError(f"the infrastructure stage failed: {outcome}")
        staged.append(float(outcome["report_seconds"]))
    figure.samples = [round(s / d, 2) for s, d in zip(staged, direct, strict=True)]
    figure.value = median(figure.samples)
    figure.details.update(
        {
            "direct_start_seconds": direct,
            "direct_start_median_seconds": median(direct),
            "stage_seconds": staged,
            "stage_median_seconds": median(staged),
            "stage_runs": staged_runs,
        }
    )
    first_infrastructure = context.get("first_run_infrastructure_seconds")
    if first_infrastructure and median(direct):
        # the first run also installs, renders and formats: an upper bound on the overhead
        figure.details["first_run_stage_seconds"] = first_infrastructure
        figure.details["first_run_ratio"] = round(first_infrastructure / float(median(direct) or 1), 2)
    return figure


# ---------------------------------------------------------------- preflight 3, 9, 27 hosts on the scheduler


def scaled_config(folder: Path) -> Path:
    """A config folder for ``EBR_CONFIG_DIR``: the project's files, its environments and room for more.

    The DAGs offer the environments of the config folder as a closed list, so a generated environment
    has to live in one; the project's own config/ is not written to.
    """
    config = folder / "config"
    (config / "environments").mkdir(parents=True)
    project_config = REPO / "config"
    for item in project_config.iterdir():
        if item.name != "environments":
            (config / item.name).symlink_to(item)
    for item in (project_config / "environments").iterdir():
        (config / "environments" / item.name).symlink_to(item)
    return config


def scaled_environment(config: Path, hosts: int) -> str:
    """The lab environment over lab1..lab<hosts> (``extends: lab``, 3 or more); lab4.. are brokers only."""
    entries = []
    for index in range(1, hosts + 1):
        roles = ["controller", "broker"] if index <= 3 else ["broker"]
        if index == 1:
            roles.append("schema_registry")
        entries.append(
            {
                "name": f"lab{index}",
                "address": f"10.77.0.{10 + index}",
                "ssh_conn_id": f"ssh_lab{index}",
                "roles": roles,
            }
        )
    document: dict[str, Any] = {"extends": "lab", "name": f"lab-{hosts}-hosts", "hosts": entries}
    name = f"lab-{hosts}-hosts"
    (config / "environments" / f"{name}.yaml").write_text(json.dumps(document, indent=2))  # JSON is YAML
    return name


SCALING_HOSTS = (3, 9, 27)
SCALING_PORT = 8091  # the bench's own Airflow, beside any server `make demo` left running


def stage_on_scheduler(api: AirflowApi, dag_id: str, environment: str) -> dict[str, Any]:
    """One stage run triggered through the REST API and run by the scheduler (independent tasks side by
    side, as operators run it); its report's own start-to-finish time."""
    started = time.perf_counter()
    run_id = api.trigger(dag_id, {"environment": environment})
    state = api.wait_for_run(dag_id, run_id, timeout=1800)["state"]
    wall = time.perf_counter() - started
    report_file = REPO / "reports" / dag_id / run_id / "report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else None
    return {
        "run_id": run_id,
        "state": state,
        "status": (report or {}).get("status"),
        "wall_seconds": round(wall, 2),
        "report_seconds": report_seconds(report),
    }


def bench_preflight_scaling(repeats: int, purge_follows: bool) -> Figure:
    """Preflight over 3, 9 and 27 lab hosts on the project's own Airflow (standalone: scheduler, local
    executor, mapped tasks in parallel), every point measured; then back to the 3-host lab.

    The bench's Airflow gets its own home and port and a config folder holding the scaled environments
    (the DAGs offer the config folder's environments as a closed list).
    """
    figure = Figure("preflight_scaling", "Preflight of 27 hosts / 3 hosts, on the scheduler", "x")
    runs: dict[int, list[dict[str, Any]]] = {hosts: [] for hosts in SCALING_HOSTS}
    with tempfile.TemporaryDirectory(prefix="ebr-bench-") as folder:
        config = scaled_config(Path(folder))
        environments = {hosts: scaled_environment(config, hosts) for hosts in SCALING_HOSTS}
        server = airflow_server.ServerSettings(home=Path(folder) / "airflow", port=SCALING_PORT)
        if purge_follows:
            # Hosts as a first preflight finds them. A stopped lab whose hosts still record a secured
            # cluster made every 3-host run wait 10 s for its audit trail's publication to give up.
            say("preflight scaling: purging the lab first (the first run purges it next anyway)")
            purge_lab()
        say(f"preflight scaling: bringing up lab1..lab{max(SCALING_HOSTS)} and the bench's Airflow")
        lab_up(max(SCALING_HOSTS))
        previous = os.environ.get("EBR_CONFIG_DIR")
        os.environ["EBR_CONFIG_DIR"] = str(config)  # the server's components inherit it
        try:
            airflow_server.start(server)
            api = AirflowApi(server.url, airflow_server.USER, airflow_server.password(server))
            for attempt in range(repeats):
                for hosts in SCALING_HOSTS:
                    say(f"preflight scaling {attempt + 1}/{repeats}: {hosts} hosts")
                    outcome = stage_on_scheduler(api, "event_broker_preflight", environments[hosts])
                    if outcome["report_seconds"] is None:
                        raise RuntimeError(f"preflight of {hosts} hosts wrote no report: {outcome}")
                    runs[hosts].append(outcome)
        finally:
            airflow_server.stop(server)
            if previous is None:
                os.environ.pop("EBR_CONFIG_DIR", None)
            else:
                os.environ["EBR_CONFIG_DIR"] = previous
            if purge_follows:
                say("preflight scaling: the scaled lab stays until the first run's purge")
            else:
                say(
                    "preflight scaling: back to the 3-host lab (down, up 3, infrastructure starts the services)"
                )
                run(["bash", str(LAB_SH), "down"], timeout=300)
                lab_up(3)
                restore = run_stage("infrastructure")
                figure.details["restore_infrastructure"] = restore
                if not restore["succeeded"]:
                    raise RuntimeError(f"restoring the 3-host lab failed: {restore['tail']}")
    seconds = {hosts: [float(r["report_seconds"]) for r in outcomes] for hosts, outcomes in runs.items()}
    base = seconds[SCALING_HOSTS[0]]
    ratios = {
        hosts: [round(n / t, 2) for n, t in zip(seconds[hosts], base, strict=True)]
        for hosts in SCALING_HOSTS[1:]
    }
    figure.samples = ratios[SCALING_HOSTS[-1]]
    figure.value = median(figure.samples)
    figure.details.update(
        {
            "seconds": {str(hosts): values for hosts, values in seconds.items()},
            "median_seconds": {str(hosts): median(values) for hosts, values in seconds.items()},
            "over_three_hosts": {str(hosts): values for hosts, values in ratios.items()},
            "median_over_three_hosts": {str(hosts): median(values) for hosts, values in ratios.items()},
            "verdicts": {str(hosts): [r["status"] for r in outcomes] for hosts, outcomes in runs.items()},
            "runs": {str(hosts): outcomes for hosts, outcomes in runs.items()},
            "executor": "airflow standalone (LocalExecutor, core.parallelism 8)",
        }
    )
    return figure


# ---------------------------------------------------------------- gates


@contextlib.contextmanager
def kafka_connection_in_environment() -> Iterator[None]:
    """The trigger reads the admin connection through Airflow; give it the lab's as an env connection."""
    connections = json.loads((LAB_STATE / "airflow-connections.json").read_text())
    name = "AIRFLOW_CONN_KAFKA_LAB"
    previous = os.environ.get(name)
    os.environ[name] = json.dumps(connections["kafka_lab"])
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def gate_reaction(check: str, address: str, service: str, phase: str) -> dict[str, float]:
    """Stop ``service`` on ``address``, defer the gate's trigger on it as the triggerer would, start the
    service again. Returns the seconds from the gate's own probe first seeing it healthy (polled every
    0.1 s here) to the trigger's healthy event, and from the start command to that event."""
    from event_broker_rollout.airflow.triggers import ClusterHealthTrigger

    probe = lab_probes()[check]
    lab_ssh(address, stop_quickly_command(service))
    deadline = time.monotonic() + 60
    while probe().get("healthy"):  # a stopped broker can stay registered for a few seconds
        if time.monotonic() > deadline:
            raise RuntimeError(f"{check} still healthy 60 s after {service} stopped on {address}")
        time.sleep(0.2)

    trigger = ClusterHealthTrigger(
        check=check, environment_name="lab", phase=phase, timeout_seconds=300, settle_seconds=0
    )
    fired: dict[str, Any] = {}

    async def first_event() -> None:
        async for event in trigger.run():
            fired["at"] = time.perf_counter()
            fired["event"] = dict(event.payload)
            return

    watcher = threading.Thread(target=lambda: asyncio.run(first_event()), daemon=True)
    watcher.start()
    start_command_at = time.perf_counter()
    started = lab_ssh(address, service_command("start", service), 300)
    if started.returncode != 0:
        raise RuntimeError(f"{service} did not start on {address}: {started.stderr[-300:]}")
    healthy_at: float | None = None
    while watcher.is_alive():
        probing_at = time.perf_counter()
        if healthy_at is None and probe().get("healthy"):
            healthy_at = probing_at
        time.sleep(0.1)
    watcher.join()
    event = fired.get("event") or {}
    if event.get("status") != "healthy" or healthy_at is None:
        raise RuntimeError(f"gate {check} did not pass after {service} restarted: {event.get('observed')}")
    return {
        "after_healthy": round(max(fired["at"] - healthy_at, 0.0), 3),
        "after_start_command": round(fired["at"] - start_command_at, 3),
    }


def bench_gate_detection(repeats: int) -> Figure:
    """How soon a gate passes once the cluster is healthy, on both of a gate's paths (settle 0).

    A gate that finds the cluster healthy answers at once without deferring (``healthy_now``, the three
    checks in turn). A gate that found it unhealthy waits in its trigger; the figure is how long after the
    cluster turns healthy the trigger fires, with a broker (lab3) and the registry stopped and started.
    """
    from event_broker_rollout.airflow.triggers import CHECKS, healthy_now
    from event_broker_rollout.config.environment import load_environment

    figure = Figure("gate_detection", "Gate: from the cluster turning healthy to the gate passing", "s")
    environment = load_environment("lab")
    phase = recorded_phase()
    at_once: list[float] = []
    reactions: dict[str, list[dict[str, float]]] = {"brokers": [], "registry": []}
    with kafka_connection_in_environment():
        for _ in range(repeats):
            started = time.perf_counter()
            for check in CHECKS:
                if healthy_now(environment, check, phase) is None:
                    raise RuntimeError(f"gate {check} did not find the lab healthy")
            at_once.append(round(time.perf_counter() - started, 3))
        for _ in range(repeats):
            wait_healthy()  # the previous restart's partitions back in sync before a broker stops again
            reactions["brokers"].append(gate_reaction("brokers", KAFKA_HOSTS[-1], "kafka", phase))
            reactions["registry"].append(gate_reaction("registry", REGISTRY_HOST, "schema-registry", phase))
    wait_healthy()
    figure.samples = [r["after_healthy"] for values in reactions.values() for r in values]
    figure.value = median(figure.samples)
    figure.details = {
        "phase": phase,
        "healthy_at_once_median_seconds": median(at_once),
        "healthy_at_once_seconds": at_once,
        "deferred_median_seconds": {
            check: median([r["after_healthy"] for r in values]) for check, values in reactions.items()
        },
        "deferred": reactions,
        "note": (
            "deferred: from the first 0.1 s probe that saw the restarted service healthy to the trigger's "
            "event (the trigger polls every 2 s); a stage's gate adds its settle window (gate_settle_seconds)"
        ),
    }
    return figure


def _log_segments(log: Path) -> list[tuple[datetime, datetime]]:
    """Spans a task process ran (held a worker slot) in one attempt's log: each starts at a Pre Execute."""
    segments: list[list[datetime]] = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
            stamp = datetime.fromisoformat(record["timestamp"])
        except (ValueError, KeyError, TypeError):
            continue
        if record.get("event") == "::group::Pre Execute" or not segments:
            segments.append([stamp, stamp])
        else:
            segments[-1][1] = stamp
    return [(start, end) for start, end in segments]


def bench_gate_slots(context: dict[str, Any]) -> Figure:
    """Worker-slot seconds of a rollout's deferring tasks vs the same waits in poke mode, from the task logs.

    A deferred task's log holds one span per time its process ran (before deferring, after resuming);
    between them it waited in the triggerer, holding no slot. A poke-mode sensor holds its slot from its
    first line to its last, so that span is what the same wait costs in poke mode.
    """
    figure = Figure("gate_slots", "Worker-slot seconds held by waiting tasks: poke / deferrable", "x")
    run_id = (context.get("rollout_run_ids") or [None])[-1] or newest_rollout_run_id()

    logs = airflow_server.settings().task_logs
    folders = [logs / "dag_id=event_broker_rollout" / f"run_id={run_id}"] + [
        logs / f"dag_id=event_broker_{stage}" / f"run_id={child_run_id(run_id, False)}" for stage in STAGES
    ]
    tasks: list[dict[str, Any]] = []
    for folder in folders:
        for log in sorted(folder.glob("task_id=*/**/attempt=*.log")):
            if ".trigger." in log.name:  # the triggerer's own log of the deferred wait
                continue
            text = log.read_text()
            if "Pausing task as DEFERRED" not in text:
                continue
            segments = _log_segments(log)
            held = sum((end - start).total_seconds() for start, end in segments)
            span = (segments[-1][1] - segments[0][0]).total_seconds()
            tasks.append(
                {
                    "dag": folder.parent.name.removeprefix("dag_id="),
                    "task": log.relative_to(folder).parts[0].removeprefix("task_id="),
                    "deferrable_slot_seconds": round(held, 2),
                    "poke_slot_seconds": round(span, 2),
                }
            )
    if not tasks:
        raise RuntimeError(f"no deferred task logs for rollout {run_id} under {logs}")
    deferrable = sum(t["deferrable_slot_seconds"] for t in tasks)
    poke = sum(t["poke_slot_seconds"] for t in tasks)
    gates = [t for t in tasks if t["task"].startswith("gate_")]
    figure.samples = [round(poke / deferrable, 2)]
    figure.value = figure.samples[0]
    figure.details = {
        "rollout_run_id": run_id,
        "deferrable_slot_seconds": round(deferrable, 1),
        "poke_slot_seconds": round(poke, 1),
        "gate_tasks_deferrable_slot_seconds": round(sum(t["deferrable_slot_seconds"] for t in gates), 1),
        "gate_tasks_poke_slot_seconds": round(sum(t["poke_slot_seconds"] for t in gates), 1),
        "tasks": tasks,
    }
    return figure


def newest_rollout_run_id() -> str:
    """The newest rollout on disk that passed over every stage (a partial or failed one waits less)."""
    reports = [
        json.loads(path.read_text())
        for path in (REPO / "reports" / "event_broker_rollout").glob("*/report.json")
        if not path.parent.is_symlink()
    ]
    complete = [
        r
        for r in reports
        if r.get("status") == "passed"
        and set((r.get("summary") or {}).get("stage_seconds", {})) >= set(STAGES)
    ]
    if not complete:
        raise RuntimeError("no passed rollout of every stage on disk: run the rollout figure first")
    return str(max(complete, key=lambda r: r["started_at"])["run_id"])


# ---------------------------------------------------------------- the rest


def bench_validation(repeats: int) -> Figure:
    figure = Figure("validation", "Great Expectations validation throughput, 100,000 events", "events/s")
    for attempt in range(repeats):
        say(f"validation throughput {attempt + 1}/{repeats}")
        _, process = run([PYTHON, str(REPO / "bench" / "validation_throughput.py")], timeout=1200)
        measured = json.loads(process.stdout.strip().splitlines()[-1])
        figure.samples.append(float(measured["events_per_second"]))
        figure.details.setdefault("seconds", []).append(measured["seconds"])
    figure.value = median(figure.samples)
    figure.details["events"] = 100_000
    return figure


def bench_latency(context: dict[str, Any]) -> Figure:
    """End-to-end latency of the integration stage's synthetic events, from each timed rollout's report."""
    figure = Figure("latency", "End-to-end event latency p50 (p99 in details)", "ms")
    reports = REPO / "reports" / "event_broker_integration"
    run_ids = context.get("rollout_run_ids") or []
    candidates = [reports / child_run_id(run_id, False) / "report.json" for run_id in run_ids]
    candidates = [path for path in candidates if path.is_file()] or [reports / "latest" / "report.json"]
    p50, p99, sources = [], [], []
    for path in candidates:
        report = json.loads(path.read_text())
        latency = report["summary"]["latency_ms"]
        p50.append(float(latency["p50_ms"]))
        p99.append(float(latency["p99_ms"]))
        sources.append({"run_id": report["run_id"], **latency})
    figure.samples = p50
    figure.value = median(p50)
    figure.details = {"p99_ms": p99, "p99_median_ms": median(p99), "runs": sources}
    return figure


def bench_compliance(repeats: int) -> Figure:
    figure = Figure("compliance", "Compliance run time", "s")
    for attempt in range(repeats):
        say(f"compliance {attempt + 1}/{repeats}")
        outcome = run_stage("compliance")
        figure.details.setdefault("runs", []).append(outcome)
        figure.samples.append(float(outcome["report_seconds"] or outcome["wall_seconds"]))
    figure.value = median(figure.samples)
    figure.details["wall_seconds"] = [r["wall_seconds"] for r in figure.details["runs"]]
    figure.details["verdicts"] = [r["status"] for r in figure.details["runs"]]
    return figure


PARSE_PROGRAM = """
import json, os, sys, time
started = time.perf_counter()
import airflow
imported = time.perf_counter()
if sys.argv[1] == "parse":
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    dags = len(bag.dags)
else:
    dags = 0
print(json.dumps({"import": imported - started, "after_import": time.perf_counter() - imported, "dags": dags}))
"""


def bench_parse(repeats: int) -> Figure:
    """Parsing dags/ in a fresh process, compared with what a bare ``import airflow`` costs."""
    figure = Figure("parse", "DAG parse time / bare `import airflow`", "x")
    imports, parses, dags = [], [], 0
    with tempfile.TemporaryDirectory(prefix="ebr-bench-airflow-") as home:
        env = {
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        }
        run([PYTHON, "-c", "import airflow"], timeout=300, env=env)  # warm the page cache once
        for _ in range(repeats):
            _, bare = run([PYTHON, "-c", PARSE_PROGRAM, "import"], timeout=300, env=env)
            imports.append(json.loads(bare.stdout.strip().splitlines()[-1])["import"])
            _, parsed = run([PYTHON, "-c", PARSE_PROGRAM, "parse"], timeout=600, env=env)
            measured = json.loads(parsed.stdout.strip().splitlines()[-1])
            parses.append(measured["after_import"])
            dags = measured["dags"]
    figure.samples = [round(p / i, 2) for p, i in zip(parses, imports, strict=True)]
    figure.value = median(figure.samples)
    figure.details = {
        "import_airflow_seconds": [round(s, 3) for s in imports],
        "parse_seconds": [round(s, 3) for s in parses],
        "import_airflow_median_seconds": median(imports),
        "parse_median_seconds": median(parses),
        "dags": dags,
    }
    return figure


# ---------------------------------------------------------------- output


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line
    )
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def stage_chart(figures: dict[str, dict[str, Any]]) -> str | None:
    """Grouped bars: seconds per stage, first run vs no-change re-run (an SVG, no plotting library)."""
    rollout = figures.get("rollout")
    if not rollout or rollout.get("error"):
        return None
    details = rollout["details"]
    series = [("no-change re-run (median)", "#4c78a8", details.get("rerun_stage_median_seconds") or {})]
    if details.get("first_run"):
        series.insert(0, ("first run", "#f58518", details["first_run"].get("stage_seconds") or {}))
    top = max([v for _, _, values in series for v in values.values() if v] or [1.0])
    width, height, left, bottom, band = 640, 300, 60, 40, 110
    bar = (band - 20) / len(series)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="14" font-size="13">Rollout seconds per stage on the lab</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#333"/>',
    ]
    for index, stage in enumerate(STAGES):
        x0 = left + index * band + 10
        for number, (_, colour, values) in enumerate(series):
            value = values.get(stage)
            if value is None:
                continue
            bar_height = (height - bottom - 30) * float(value) / top
            x = x0 + number * bar
            y = height - bottom - bar_height
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 4:.1f}" height="{bar_height:.1f}" fill="{colour}"/>'
            )
            parts.append(f'<text x="{x:.1f}" y="{y - 3:.1f}">{float(value):.0f}</text>')
        parts.append(f'<text x="{x0}" y="{height - bottom + 15}">{stage}</text>')
    for number, (label, colour, _) in enumerate(series):
        y = height + 5 + number * 15
        parts.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{left + 15}" y="{y}">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def markdown(result: dict[str, Any], chart_name: str | None) -> str:
    host = result["machine"]
    lines = [
        f"# Benchmarks {result['timestamp']}",
        "",
        f"Machine: {host['nproc']} CPUs ({host['cpu']}), {host['memory_gib']} GiB memory, "
        f"kernel {host['kernel']}, Python {host['python']}. Command: `{result['command']}`",
        "",
        "| figure | median | unit | repeats | details |",
        "|---|---|---|---|---|",
    ]
    for key in FIGURES:
        figure = result["figures"].get(key)
        if figure is None:
            continue
        if figure.get("error"):
            lines.append(f"| {figure['title']} | error | | | {figure['error'][:200]} |")
            continue
        carried = f" (carried from {figure['carried_from']})" if figure.get("carried_from") else ""
        lines.append(
            f"| {figure['title']} | {figure['value']} | {figure['unit']} | {figure['repeats']} | "
            f"{summary_of(figure)}{carried} |"
        )
    if chart_name:
        lines += ["", f"![Rollout seconds per stage]({chart_name})"]
    return "\n".join(lines) + "\n"


def summary_of(figure: dict[str, Any]) -> str:
    details = figure["details"]
    key = figure["key"]
    if key == "rollout":
        first = details.get("first_run") or {}
        text = f"re-run per stage {details.get('rerun_stage_median_seconds')}, changes {details.get('rerun_changes')}"
        if first:
            text += f"; first run {first.get('report_seconds')} s: {first.get('stage_seconds')}"
        return text
    if key == "infra_overhead":
        text = f"stage {details['stage_median_seconds']} s vs direct start {details['direct_start_median_seconds']} s"
        if details.get("first_run_ratio"):
            text += (
                f"; first-run stage {details['first_run_stage_seconds']} s = {details['first_run_ratio']}x"
            )
        return text
    if key == "preflight_scaling":
        return (
            f"on the scheduler: median seconds by hosts {details['median_seconds']}, "
            f"over 3 hosts {details['median_over_three_hosts']}"
        )
    if key == "gate_detection":
        return (
            f"deferred gate per check {details['deferred_median_seconds']} s after healthy; a gate healthy "
            f"at once passes in {details['healthy_at_once_median_seconds']} s (phase {details['phase']})"
        )
    if key == "gate_slots":
        return (
            f"deferrable {details['deferrable_slot_seconds']} slot-s vs poke {details['poke_slot_seconds']} slot-s "
            f"(gates alone {details['gate_tasks_deferrable_slot_seconds']} vs "
            f"{details['gate_tasks_poke_slot_seconds']})"
        )
    if key == "validation":
        return f"{details['events']} events in {details['seconds']} s"
    if key == "task_breakdown":
        return "; ".join(
            f"{stage} {s['wall_seconds']} s: startup {s['task_startup_seconds']}, work {s['task_work_seconds']}, "
            f"gates {s['deferred_wait_seconds']}, no task {s['no_task_running_seconds']}"
            for stage, s in details["stages"].items()
        )
    if key == "latency":
        return f"p99 median {details['p99_median_ms']} ms over {len(details['runs'])} run(s)"
    if key == "compliance":
        return f"verdicts {details['verdicts']}, process wall {details['wall_seconds']} s"
    if key == "parse":
        return (
            f"parse {details['parse_median_seconds']} s ({details['dags']} DAGs) over import "
            f"{details['import_airflow_median_seconds']} s"
        )
    return ""


def write_results(timestamp: str, measured: dict[str, dict[str, Any]], carried_from: Path | None) -> None:
    figures = dict(measured)
    if carried_from:
        earlier = json.loads(carried_from.read_text())
        for key, figure in earlier["figures"].items():
            if key not in figures:
                figures[key] = {**figure, "carried_from": figure.get("carried_from") or earlier["timestamp"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "timestamp": timestamp,
        "machine": machine(),
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "figures": figures,
    }
    chart = stage_chart(figures)
    chart_name = f"{timestamp}-stages.svg" if chart else None
    if chart and chart_name:
        (RESULTS / chart_name).write_text(chart)
    (RESULTS / f"{timestamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{timestamp}.md").write_text(markdown(result, chart_name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(FIGURES), help=f"comma-separated subset of {FIGURES}")
    parser.add_argument("--first-run", action="store_true", help="purge the lab and time a first rollout")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the cheap figures")
    parser.add_argument("--lab-repeats", type=int, default=3, help="repeats of preflight/compliance/overhead")
    parser.add_argument("--rollout-repeats", type=int, default=1, help="no-change rollout re-runs")
    parser.add_argument("--rerun-reports", default="", help="rollout run ids on disk: no new rollout")
    parser.add_argument("--first-run-report", default=None, help="with --rerun-reports: the first run's id")
    parser.add_argument(
        "--leave-scaled-lab",
        action="store_true",
        help="leave the scaled lab up after preflight scaling (a later --first-run purge restores the lab)",
    )
    parser.add_argument(
        "--carry", type=Path, help="an earlier results JSON: keep its figures not re-measured"
    )
    args = parser.parse_args()
    selected = [key.strip() for key in args.only.split(",") if key.strip()]
    unknown = sorted(set(selected) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figures {unknown}; known: {FIGURES}")
    needs_root = {"rollout", "infra_overhead", "preflight_scaling"} & set(selected)
    if needs_root and os.geteuid() != 0:
        parser.error(f"{sorted(needs_root)} need root (the lab)")

    context: dict[str, Any] = {}
    measures: dict[str, Callable[[], Figure]] = {
        "rollout": lambda: (
            bench_rollout_from_reports(args.first_run_report, args.rerun_reports.split(","))
            if args.rerun_reports
            else bench_rollout(args.first_run, args.rollout_repeats, context)
        ),
        "infra_overhead": lambda: bench_infra_overhead(args.lab_repeats, context),
        "preflight_scaling": lambda: bench_preflight_scaling(
            args.lab_repeats,
            purge_follows=args.leave_scaled_lab or (args.first_run and "rollout" in selected),
        ),
        "gate_detection": lambda: bench_gate_detection(args.repeats),
        "gate_slots": lambda: bench_gate_slots(context),
        "validation": lambda: bench_validation(min(args.repeats, 3)),
        "latency": lambda: bench_latency(context),
        "compliance": lambda: bench_compliance(args.lab_repeats),
        "parse": lambda: bench_parse(args.repeats),
        "task_breakdown": lambda: bench_task_breakdown(context),
    }
    timestamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    figures: dict[str, dict[str, Any]] = {}
    # The rollout before the figures that read its runs; with a first run, preflight scaling before it,
    # since the first run's purge takes the scaled hosts away again.
    order = list(FIGURES)
    if args.first_run:
        order.remove("preflight_scaling")
        order.insert(0, "preflight_scaling")
    for key in order:
        if key not in selected:
            continue
        say(f"measuring {key}")
        started = time.perf_counter()
        try:
            figure = measures[key]()
        except Exception as error:  # one figure's failure is recorded; the rest are still measured
            figure = Figure(key, key, "", error=f"{type(error).__name__}: {error}")
        figures[key] = {**figure.to_dict(), "measured_in_seconds": round(time.perf_counter() - started, 1)}
        say(f"{key}: {figures[key]['value']} {figures[key]['unit']} {figures[key]['error'] or ''}")
        write_results(timestamp, figures, carried_from=args.carry)  # kept even if a later figure hangs

    write_results(timestamp, figures, carried_from=args.carry)
    print(f"results: {RESULTS / f'{timestamp}.json'}\nsummary: {RESULTS / f'{timestamp}.md'}")
    return 1 if any(f.get("error") for f in figures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
