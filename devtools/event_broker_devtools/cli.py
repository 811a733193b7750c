"""The project's commands (``make stage``, ``make rollout``, ``make airflow-up`` call these).

``stage``: runs one stage DAG in-process (``dag.test()``) against a private Airflow home (SQLite), exits 0
only if the run succeeded, and prints the report path. ``rollout``: the controller DAG triggers other DAG
runs, which only a scheduler executes, so it runs on the project's Airflow (standalone) through the REST
API, with progress in the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

from event_broker_devtools import airflow_server, airflow_stack
from event_broker_devtools.lab_connections import connections_file
from event_broker_devtools.rollout_driver import run_rollout
from event_broker_rollout import paths
from event_broker_rollout.airflow.rest import AirflowApiError
from event_broker_rollout.config.environment import available_environments, environment_file
from event_broker_rollout.config.types import printable
from event_broker_rollout.config.validation import validate_environment
from event_broker_rollout.evidence.results import report_dir
from event_broker_rollout.rollout.controller import STAGES

# DAGs that `stage` runs besides the rollout stages: the scheduled compliance re-verification.
RUNNABLE = (*STAGES, "compliance")
# standalone: `airflow standalone` on SQLite; celery: PostgreSQL, Redis and two Celery workers.
EXECUTORS = ("standalone", "celery")


def configure_airflow_environment() -> Path:
    """Point Airflow at the project's folders and a private SQLite home; must run before airflow imports."""
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(paths.PROJECT_ROOT / ".airflow")))
    defaults = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(paths.PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(paths.PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    home.mkdir(parents=True, exist_ok=True)
    return home


def ensure_database(home: Path) -> None:
    """Migrate the metadata DB once per Airflow version (the marker records which)."""
    from airflow import __version__ as airflow_version

    marker = home / f".migrated-{airflow_version}"
    if marker.exists():
        return
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    marker.touch()


class CommandLineError(Exception):
    """An expected mistake on the command line: reported in one line with what is allowed, no traceback."""


def parse_conf(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CommandLineError(
            f"CONF is not JSON ({error.msg}, column {error.colno}); write it like CONF='{{\"dry_run\": true}}'"
        ) from None
    if not isinstance(value, dict):
        raise CommandLineError(f"CONF must be a JSON object of params, not {type(value).__name__}")
    return value


def run_conf(args: argparse.Namespace) -> dict[str, Any]:
    """``--conf`` with ``--env`` as its default environment, the environment checked to exist."""
    conf = parse_conf(args.conf)
    conf.setdefault("environment", args.env)
    environment = str(conf["environment"])
    if not environment_file(environment).is_file():
        known = ", ".join(available_environments())
        raise CommandLineError(f"unknown environment {environment!r} (known: {known})")
    return conf


def check_params(dag_id: str, conf: dict[str, Any], params: Iterable[str]) -> None:
    allowed = sorted(params)
    unknown = sorted(set(conf) - set(allowed))
    if unknown:
        raise CommandLineError(
            f"unknown param{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for {dag_id} "
            f"(allowed: {', '.join(allowed)})"
        )


def default_connections_file() -> Path | None:

    candidate = Path(os.environ.get("EBR_CONNECTIONS_FILE", connections_file()))
    return candidate if candidate.is_file() else None


def run_dag(dag_id: str, conf: dict[str, Any], connections: Path | None) -> tuple[str, str]:
    """Run one DAG in-process; returns (state, run_id)."""
    home = configure_airflow_environment()
    ensure_database(home)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        for path, error in bag.import_errors.items():
            print(f"import error in {path}:\n{error}", file=sys.stderr)
        raise SystemExit(2)
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise SystemExit(f"no DAG {dag_id} in {bag.dag_folder}")
    check_params(dag_id, conf, dag.params.keys())
    from airflow.sdk.exceptions import ParamValidationError

    try:
        dag_run = dag.test(run_conf=conf, conn_file_path=str(connections) if connections else None)
    except ParamValidationError as error:
        # Airflow's message quotes the whole JSON schema over many lines; its first line names the problem.
        raise CommandLineError(f"invalid params for {dag_id}: {str(error).strip().splitlines()[0]}") from None
    return str(dag_run.state), str(dag_run.run_id)


def report_path(dag_id: str, run_id: str) -> Path:

    return report_dir(dag_id, run_id) / "report.json"


def stage_command(args: argparse.Namespace) -> int:
    conf = run_conf(args)
    dag_id = f"event_broker_{args.stage}"
    connections = Path(args.connections) if args.connections else default_connections_file()
    state, run_id = run_dag(dag_id, conf, connections)
    report = report_path(dag_id, run_id)
    print(f"\n{dag_id} run {run_id}: {state}")
    print(f"report: {report if report.exists() else '(no report written)'}")
    return 0 if state == "success" else 1


def rollout_command(args: argparse.Namespace) -> int:

    conf = run_conf(args)
    try:
        state, _run_id = run_rollout(
            conf, keep_airflow=args.keep_airflow, timeout=args.timeout, executor=args.executor
        )
    except AirflowApiError as error:
        raise CommandLineError(f"the rollout was refused by Airflow: {error}") from None
    except requests.ConnectionError:
        url = airflow_server.settings().url
        raise CommandLineError(
            f"Airflow is not reachable at {url} (see .airflow-server/standalone.log; make airflow-up)"
        ) from None
    return 0 if state == "success" else 1


def validate_command(args: argparse.Namespace) -> int:
    """One line per problem (``<file>:<yaml path>: <rule>``); exit 0 only when there is none."""

    validation = validate_environment(args.env)
    for problem in validation.problems:
        print(printable(str(problem)))
    for note in validation.notes:
        print(printable(f"note: {note}"))
    if validation.problems:
        noun = "problem" if len(validation.problems) == 1 else "problems"
        print(printable(f"{args.env}: {len(validation.problems)} {noun}"), file=sys.stderr)
        return 1
    print(printable(f"{args.env}: valid ({', '.join(validation.files)})"))
    return 0


def celery_stack_command(action: str) -> int:

    stack = airflow_stack.settings()
    if action == "up":
        started = airflow_stack.start(stack)
        print(
            f"Airflow (CeleryExecutor, PostgreSQL) {'started' if started else 'already running'}: {stack.url}"
        )
        print(f"login: {airflow_server.USER} / {airflow_server.password(stack.server)}")
        print(
            f"approver login: {airflow_server.APPROVER} / {airflow_server.password(stack.server, airflow_server.APPROVER)}"
        )
        print("stop it: make airflow-down EXECUTOR=celery")
    elif action == "down":
        print(
            "Celery stack stopped and removed"
            if airflow_stack.stop(stack)
            else "Celery stack was not running"
        )
    else:
        running = airflow_stack.running_services(stack)
        for name in airflow_stack.SERVICES:
            print(f"  {name:<14} {'pid ' + str(running[name]) if name in running else 'not running'}")
    return 0


def airflow_command(args: argparse.Namespace) -> int:
    if args.executor == "celery":
        return celery_stack_command(args.action)
    server = airflow_server.settings()
    if args.action == "up":
        started = airflow_server.start(server)
        print(f"Airflow {'started' if started else 'already running'}: {server.url}")
        print(
            f"login: {airflow_server.USER} / {airflow_server.password(server)}   (stop it: make airflow-down)"
        )
        approver = airflow_server.APPROVER
        print(
            f"approver login: {approver} / {airflow_server.password(server, approver)}"
            "   (approves rollouts under change control that admin triggered)"
        )
    elif args.action == "down":
        print("Airflow stopped" if airflow_server.stop(server) else "Airflow was not running")
    else:
        pid = airflow_server.running_pid(server)
        print(f"Airflow {'running (pid ' + str(pid) + ')' if pid else 'not running'}: {server.url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="event_broker_devtools.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    stage = commands.add_parser("stage", help="run one stage DAG in-process")
    stage.add_argument("--stage", required=True, choices=RUNNABLE)
    stage.add_argument("--env", default="lab")
    stage.add_argument("--conf", default="", help="JSON run conf (overrides the trigger-form defaults)")
    stage.add_argument("--connections", default="", help="Airflow connections file (default: the lab's)")
    stage.set_defaults(handler=stage_command)
    run = commands.add_parser(
        "rollout", help="trigger event_broker_rollout on the project's Airflow and follow it"
    )
    run.add_argument("--env", default="lab")
    run.add_argument("--conf", default="", help="JSON run conf (stages, dry_run, change_ticket, ...)")
    run.add_argument("--keep-airflow", action="store_true", help="leave Airflow running afterwards")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the rollout")
    run.add_argument("--executor", choices=EXECUTORS, default="standalone", help="which Airflow runs it")
    run.set_defaults(handler=rollout_command)
    check = commands.add_parser(
        "validate", help="check an environment file and everything it references, touching no host"
    )
    check.add_argument("--env", default="lab", help="an environment name or a .yaml path")
    check.set_defaults(handler=validate_command)
    server = commands.add_parser("airflow", help="the project's Airflow (standalone): up, down, status")
    server.add_argument("action", choices=("up", "down", "status"))
    server.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="standalone",
        help="standalone (SQLite) or celery (PostgreSQL)",
    )
    server.set_defaults(handler=airflow_command)
    args = parser.parse_args(argv)
    handler = args.handler
    try:
        result: int = handler(args)
    except CommandLineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
