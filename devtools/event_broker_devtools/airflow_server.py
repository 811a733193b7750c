"""The project's own Airflow: `airflow standalone` (scheduler, dag-processor, triggerer, api-server,
LocalExecutor, embedded SQLite) configured for this project's DAGs, plugins and the lab's connections.

It runs in its own process group (stopping the parent does not stop its children), listens on loopback
only, and keeps its state in ``.airflow-server/`` — apart from the in-process ``dag.test()`` home
(``.airflow/``) so the two never contend for one SQLite file. The login is generated once and kept
in a 0600 file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from event_broker_devtools.lab_connections import connections_file
from event_broker_rollout import paths
from event_broker_rollout.airflow.rest import AirflowApi
from event_broker_rollout.hosts.secret_files import write_secret

USER = "admin"
# A second login, for rollouts under change control: whoever triggers a rollout may not approve it
# (config/environments/lab-change-controlled.yaml lists approver1). Role `user`: it may trigger runs and
# answer approvals, not change connections, variables or configuration.
APPROVER = "approver1"
USER_ROLES = {USER: "admin", APPROVER: "user"}
HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class ServerSettings:
    home: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json"

    @property
    def pid_file(self) -> Path:
        return self.home / "standalone.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "standalone.log"

    @property
    def task_logs(self) -> Path:
        return self.home / "logs"


def settings() -> ServerSettings:
    home = Path(os.environ.get("EBR_AIRFLOW_SERVER_HOME", paths.PROJECT_ROOT / ".airflow-server"))
    return ServerSettings(home=home, port=int(os.environ.get("EBR_AIRFLOW_PORT", DEFAULT_PORT)))


def password(server: ServerSettings, user: str = USER) -> str:
    """A login's password. Every configured user's is generated on first use, before Airflow starts:
    SimpleAuthManager reads them from this file, and would print one it had to make up into its log."""
    path = server.passwords_file
    passwords = json.loads(path.read_text()) if path.is_file() else {}
    missing = [name for name in USER_ROLES if name not in passwords]
    if missing:
        passwords.update({name: secrets.token_urlsafe(12) for name in missing})
        write_secret(path, json.dumps(passwords))
    return str(passwords[user])


def _generated_secret(path: Path, nbytes: int) -> str:
    """A secret made once and kept 0600 beside the server's state (stable across restarts)."""
    if not path.is_file():
        write_secret(path, secrets.token_urlsafe(nbytes))
    return path.read_text().strip()


def server_environment(server: ServerSettings) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AIRFLOW__") and key != "AIRFLOW_HOME"  # nothing leaks in from dag.test homes
    }
    environment.update(
        {
            "AIRFLOW_HOME": str(server.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(paths.PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(paths.PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{server.home}/airflow.db",
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(server.port),
            "AIRFLOW__API__BASE_URL": server.url,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{name}:{role}" for name, role in USER_ROLES.items()
            ),
            # One JWT signing secret for every component, long enough for HS512.
            "AIRFLOW__API_AUTH__JWT_SECRET": _generated_secret(server.home / "jwt_secret", 64),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(server.passwords_file),
            # Connections come from the lab's file (written by `make lab-up`), read by every component.
            "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(
                {"connections_file_path": str(connections_file())}
            ),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            # After a crash, the restarted scheduler resets the tasks its dead predecessor was running
            # (they re-run: every task is idempotent) at its next orphan check; Airflow checks every
            # 300 s, which left an interrupted rollout `running` for minutes. A task process that dies
            # under a living scheduler is failed after 90 s without a heartbeat (default 300 s).
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "60",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "90",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # A rollout is a chain of short tasks: the scheduler's 1 s idle sleep between loops was paid
            # at nearly every hand-over from one task to the next.
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
            "PYTHONUNBUFFERED": "1",
            # standalone starts its components as `airflow ...` from PATH: this venv's.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "EBR_PROJECT_ROOT": str(paths.PROJECT_ROOT),
        }
    )
    return environment


def running_pid(server: ServerSettings) -> int | None:
    if not server.pid_file.is_file():
        return None
    text = server.pid_file.read_text().strip()
    pid = int(text) if text.isdigit() else 0
    if pid <= 0:  # kill(0, ...) would address our own process group
        return None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError):
        return None
    return pid


def start(server: ServerSettings, timeout: float = 300.0) -> bool:
    """Start Airflow unless it runs already; returns True if this call started it. Waits until healthy."""

    if running_pid(server) is not None:
        AirflowApi(server.url, USER, password(server)).wait_until_ready(timeout)
        return False
    server.home.mkdir(parents=True, exist_ok=True)
    password(server)
    airflow = Path(sys.executable).with_name("airflow")
    with server.log_file.open("ab") as log:
        process = subprocess.Popen(
            [str(airflow), "standalone"],
            env=server_environment(server),
            cwd=paths.PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )
    server.pid_file.write_text(str(process.pid))
    api = AirflowApi(server.url, USER, password(server))
    try:
        api.wait_until_ready(timeout, process=process)
    except Exception:
        stop(server)
        raise
    return True


def stop(server: ServerSettings, timeout: float = 60.0) -> bool:
    """Stop the whole process group; returns True if something was running."""
    pid = running_pid(server)
    if pid is None:
        server.pid_file.unlink(missing_ok=True)
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            continue
        break
    server.pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status when this process started the server, so no zombie keeps its group alive."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
