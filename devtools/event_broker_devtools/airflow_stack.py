"""The project's distributed Airflow on one machine: PostgreSQL (a cluster of its own), Redis, api-server,
scheduler, dag-processor, triggerer and two Celery workers — the setup a platform team runs as a service
(``make airflow-up EXECUTOR=celery``), brought up from nothing and taken down without a trace.

Every process runs in its own process group, is recorded by pid under ``<home>/pids`` and stopped by that
pid. PostgreSQL and Redis listen on loopback only, on ports of their own (PostgreSQL's socket in a folder
of its own), with generated passwords; Redis keeps nothing on disk. The api-server, the scheduler's health
server and each worker's and the triggerer's log server have ports apart from the standalone Airflow's
(8080, 8974, 8793, 8794), so both can run at once.

State every worker must reach is shared, not per worker: all components write task logs into one base log
folder (on several machines: a shared filesystem mounted at the same path), so a task that resumes on the
other worker appends to the same attempt file and the audit exporter — itself a task on any worker — reads
every part. Reports (``EBR_REPORTS_DIR``) and the lab's state (``LAB_STATE``: CA key and certificate,
generated credentials, known_hosts) are the same paths for every component.

``distributed_settings`` is the one source of the settings every component shares; docker-compose.airflow.yml
uses the same ones (tests/unit/test_docker_compose.py compares them).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from event_broker_devtools import airflow_server
from event_broker_rollout import paths
from event_broker_rollout.hosts.secret_files import write_secret

HOST = airflow_server.HOST
DEFAULT_API_PORT = 8090
POSTGRES_PORT = 55432
REDIS_PORT = 56379
SCHEDULER_HEALTH_PORT = 8975
TRIGGER_LOG_SERVER_PORT = 8797
WORKERS = {"w1": 8795, "w2": 8796}  # Celery worker name -> its log server's port
WORKER_CONCURRENCY = 2
DATABASE = "airflow"
MARKER = ".ebr-airflow-stack"  # what `stop` looks for before it removes the home
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGRES_CLUSTERS = Path("/var/lib/event-broker-airflow")
# Start order; stopped in reverse.
SERVICES = ("postgres", "redis", "api-server", "scheduler", "dag-processor", "triggerer", *WORKERS)
AIRFLOW_COMMANDS: dict[str, list[str]] = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer"],
    **{
        name: [
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            str(WORKER_CONCURRENCY),
        ]
        for name in WORKERS
    },
}


def distributed_settings(
    *,
    database_url: str,
    broker_url: str,
    result_backend: str,
    execution_api_url: str,
    fernet_key: str,
    jwt_secret: str,
    api_secret_key: str,
) -> dict[str, str]:
    """The settings every component of a distributed deployment shares, whatever runs it (this module's
    processes, docker-compose.airflow.yml). Tokens signed by one component are checked by another, task
    logs are fetched across components: these must be identical everywhere."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        # Task processes on the workers report through the Execution API (its default is localhost:8080).
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": execution_api_url,
        "AIRFLOW__CORE__FERNET_KEY": fernet_key,
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        "AIRFLOW__API__SECRET_KEY": api_secret_key,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
    }


@dataclass(frozen=True)
class StackSettings:
    home: Path
    port: int

    @property
    def server(self) -> airflow_server.ServerSettings:
        """The api-server's address and the logins (the standalone server's users, this home)."""
        return airflow_server.ServerSettings(home=self.home, port=self.port)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid_dir(self) -> Path:
        return self.home / "pids"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def postgres_cluster(self) -> Path:
        """The PostgreSQL cluster's own folder. Run by root, the cluster belongs to the postgres user, who
        must be let through every folder on the way; a checkout in a private folder (``mktemp -d``, as CI
        clones) does not let it, so the cluster lives under ``/var/lib``, named after this stack's home."""
        if os.geteuid() != 0:
            return self.home
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:16]
        return POSTGRES_CLUSTERS / digest

    @property
    def postgres_data(self) -> Path:
        return self.postgres_cluster / "postgres"

    @property
    def postgres_socket_dir(self) -> Path:
        return self.postgres_cluster / "postgres-socket"

    @property
    def redis_dir(self) -> Path:
        return self.home / "redis"

    @property
    def task_logs(self) -> Path:
        return self.home / "logs"

    def log_file(self, service: str) -> Path:
        return self.home / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.pid_dir / f"{service}.pid"


def settings() -> StackSettings:
    home = Path(os.environ.get("EBR_AIRFLOW_CELERY_HOME", paths.PROJECT_ROOT / ".airflow-celery"))
    return StackSettings(home=home, port=int(os.environ.get("EBR_AIRFLOW_CELERY_PORT", DEFAULT_API_PORT)))


def _secret(stack: StackSettings, name: str) -> str:
    path = stack.secrets_dir / name
    if not path.is_file():
        stack.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if name == "fernet_key":
            from cryptography.fernet import Fernet

            value = Fernet.generate_key().decode()
        else:
            value = secrets.token_urlsafe(64)  # ≥ 64 bytes: HS512 and the session secret
        write_secret(path, value)
    return path.read_text().strip()


def broker_url(stack: StackSettings) -> str:
    return f"redis://:{_secret(stack, 'redis_password')}@{HOST}:{REDIS_PORT}/0"


def stack_environment(stack: StackSettings) -> dict[str, str]:
    """The standalone server's environment (project folders, logins, connections) with the distributed
    settings, this home's shared log folder and ports apart from the standalone Airflow's."""
    environment = airflow_server.server_environment(stack.server)
    database = f"{DATABASE}:{_secret(stack, 'postgres_password')}@{HOST}:{POSTGRES_PORT}/{DATABASE}"
    environment.update(
        distributed_settings(
            database_url=f"postgresql+psycopg2://{database}",
            broker_url=broker_url(stack),
            result_backend=f"db+postgresql://{database}",
            execution_api_url=f"{stack.url}/execution/",
            fernet_key=_secret(stack, "fernet_key"),
            jwt_secret=_secret(stack, "jwt_secret"),
            api_secret_key=_secret(stack, "api_secret_key"),
        )
    )
    environment.update(
        {
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(stack.task_logs),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(SCHEDULER_HEALTH_PORT),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(TRIGGER_LOG_SERVER_PORT),
            "EBR_REPORTS_DIR": str(paths.reports_dir()),
        }
    )
    return environment


# --- processes -----------------------------------------------------------------------------------------


def running_pid(stack: StackSettings, service: str) -> int | None:
    path = stack.pid_file(service)
    text = path.read_text().strip() if path.is_file() else ""
    pid = int(text) if text.isdigit() else 0
    if pid <= 0:  # kill(0, ...) would address our own process group
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def running_services(stack: StackSettings) -> dict[str, int]:
    return {name: pid for name in SERVICES if (pid := running_pid(stack, name)) is not None}


def _postgres_user() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: as root, its files and process belong to the postgres user."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres"}


def _spawn(
    stack: StackSettings, service: str, argv: list[str], env: Mapping[str, str], **kwargs: Any
) -> None:
    stack.pid_dir.mkdir(parents=True, exist_ok=True)
    with stack.log_file(service).open("ab") as log:
        process = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=paths.PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole, by this pid
            **kwargs,
        )
    stack.pid_file(service).write_text(str(process.pid))


def _postgres_environment() -> dict[str, str]:
    """What PostgreSQL's server and tools get: a path and the C locale, nothing of Airflow's settings."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


def _run_postgres_tool(stack: StackSettings, argv: list[str], sql: str | None = None) -> str:
    result = subprocess.run(
        argv,
        input=sql,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=_postgres_environment(),
        **_postgres_user(),
    )
    if result.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def _start_postgres(stack: StackSettings) -> None:
    user = _postgres_user()
    for folder in (stack.postgres_data, stack.postgres_socket_dir):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if user:
            account = pwd.getpwnam(user["user"])
            os.chown(folder, account.pw_uid, account.pw_gid)
    if not (stack.postgres_data / "PG_VERSION").is_file():
        _run_postgres_tool(
            stack,
            [str(POSTGRES_BIN / "initdb"), "-D", str(stack.postgres_data), "-U", "postgres",
             "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8"],
        )  # fmt: skip
    # The socket folder is the cluster's own (mode 700): only its owner reaches the trusted local socket.
    _spawn(
        stack,
        "postgres",
        [str(POSTGRES_BIN / "postgres"), "-D", str(stack.postgres_data), "-p", str(POSTGRES_PORT),
         "-k", str(stack.postgres_socket_dir), "-c", f"listen_addresses={HOST}"],
        _postgres_environment(),
        **user,
    )  # fmt: skip
    psql = [str(POSTGRES_BIN / "psql"), "-h", str(stack.postgres_socket_dir), "-p", str(POSTGRES_PORT),
            "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt"]  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            _run_postgres_tool(stack, [*psql, "-c", "SELECT 1"])
            break
        except RuntimeError:
            if time.monotonic() > deadline or running_pid(stack, "postgres") is None:
                raise RuntimeError(f"PostgreSQL did not start: see {stack.log_file('postgres')}") from None
            time.sleep(0.5)
    password = _secret(stack, "postgres_password")
    if not _run_postgres_tool(stack, [*psql, "-c", f"SELECT 1 FROM pg_roles WHERE rolname = '{DATABASE}'"]):
        # The password goes in on stdin, never on a command line (ps would show it); it is URL-safe text.
        _run_postgres_tool(stack, psql, f"CREATE ROLE {DATABASE} LOGIN PASSWORD '{password}';\n")
        _run_postgres_tool(stack, psql, f"CREATE DATABASE {DATABASE} OWNER {DATABASE};\n")


def _start_redis(stack: StackSettings) -> None:
    stack.redis_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = stack.redis_dir / "redis.conf"
    write_secret(
        config,
        "\n".join(
            [
                f"bind {HOST}",
                f"port {REDIS_PORT}",
                "protected-mode yes",
                f"requirepass {_secret(stack, 'redis_password')}",
                "daemonize no",
                'save ""',  # no persistence: the queue is rebuilt by the scheduler after a restart
                "appendonly no",
                f"dir {stack.redis_dir}",
                "",
            ]
        ),
    )
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    _spawn(stack, "redis", [redis_server, str(config)], {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def worker_names_answering(stack: StackSettings, timeout: float = 5.0) -> set[str]:
    """The Celery workers that answer a ping (``w1``, ``w2``)."""
    from celery import Celery

    app = Celery(broker=broker_url(stack))
    try:
        replies = app.control.ping(timeout=timeout) or []
    finally:
        app.close()
    return {name.split("@", 1)[0] for reply in replies for name in reply}


def unhealthy_components(health: Mapping[str, Any]) -> list[str]:
    """The components ``/api/v2/monitor/health`` does not report healthy (all four, or what is missing)."""
    wanted = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return [name for name in wanted if (health.get(name) or {}).get("status") != "healthy"]


def wait_until_ready(stack: StackSettings, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    problem = "nothing answered yet"
    while time.monotonic() < deadline:
        gone = [name for name in SERVICES if running_pid(stack, name) is None]
        if gone:
            logs = ", ".join(str(stack.log_file(name)) for name in gone)
            raise RuntimeError(f"{', '.join(gone)} exited while starting: see {logs}")
        try:
            health = requests.get(f"{stack.url}/api/v2/monitor/health", timeout=10).json()
        except (requests.RequestException, ValueError):
            problem = "the api-server does not answer"
        else:
            unhealthy = unhealthy_components(health)
            answering = worker_names_answering(stack) if not unhealthy else set()
            missing = sorted(set(WORKERS) - answering)
            if not unhealthy and not missing:
                return
            problem = f"not healthy: {', '.join(unhealthy)}" if unhealthy else f"no answer from {missing}"
        time.sleep(2)
    raise TimeoutError(f"the Celery stack was not ready after {timeout:.0f} s ({problem})")


def start(stack: StackSettings, timeout: float = 600.0) -> bool:
    """Bring the whole stack up unless it runs; True if this call started it. Returns when the health
    endpoint reports every component healthy and both workers answer."""
    if running_services(stack).keys() == set(SERVICES):
        wait_until_ready(stack, timeout)
        return False
    stop(stack)  # a partial stack (a crash, an interrupted start) is cleared first
    stack.home.mkdir(parents=True, exist_ok=True)
    (stack.home / MARKER).touch()
    stack.task_logs.mkdir(parents=True, exist_ok=True)
    airflow_server.password(stack.server)
    try:
        _start_postgres(stack)
        _start_redis(stack)
        env = stack_environment(stack)
        migrate = subprocess.run(
            [_airflow(), "db", "migrate"],
            env=env,
            cwd=paths.PROJECT_ROOT,
            stdout=stack.log_file("migrate").open("ab"),
            stderr=subprocess.STDOUT,
            check=False,
            timeout=600,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed: see {stack.log_file('migrate')}")
        for service, command in AIRFLOW_COMMANDS.items():
            service_env = dict(env)
            if service in WORKERS:
                service_env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(WORKERS[service])
            _spawn(stack, service, [_airflow(), *command], service_env)
        wait_until_ready(stack, timeout)
    except BaseException:
        stop(stack)
        raise
    return True


def _stop_group(pid: int, first_signal: int, timeout: float) -> None:
    for sig, wait in ((first_signal, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # started by this process: no zombie keeps the group alive
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.3)


def stop(stack: StackSettings, timeout: float = 60.0) -> bool:
    """Stop every recorded process (by its pid, its group with it), in reverse start order, then remove the
    stack's home: database, queue, logs and generated secrets. True if something was running."""
    was_running = False
    for service in reversed(SERVICES):
        pid = running_pid(stack, service)
        if pid is not None:
            was_running = True
            # PostgreSQL: SIGINT is its fast shutdown (SIGTERM would wait for clients to leave).
            _stop_group(pid, signal.SIGINT if service == "postgres" else signal.SIGTERM, timeout)
        stack.pid_file(service).unlink(missing_ok=True)
    if _owned_stack_home(stack.home):
        if stack.postgres_cluster != stack.home:
            shutil.rmtree(stack.postgres_cluster, ignore_errors=True)
            with contextlib.suppress(OSError):  # another stack's cluster may still be there
                stack.postgres_cluster.parent.rmdir()
        shutil.rmtree(stack.home)
    return was_running


def _owned_stack_home(home: Path) -> bool:
    """Only a folder this module made (it holds the marker) is removed."""
    return (home / MARKER).is_file()


# A worker's log names each workload it runs: "... Executing workload in Celery: ... ti=TaskInstanceDTO(...
# task_id='t', dag_id='d', run_id='r', try_number=1, ... map_index=0, ...". A task instance's own hostname
# is the machine's for both workers, so this is where the worker's name is recorded.
_WORKLOAD = re.compile(
    r"Executing workload in Celery: .*?ti=TaskInstanceDTO\(.*?task_id='(?P<task_id>[^']*)', "
    r"dag_id='(?P<dag_id>[^']*)', run_id='(?P<run_id>[^']*)', try_number=(?P<try_number>\d+), "
    r".*?map_index=(?P<map_index>-?\d+)"
)


@dataclass(frozen=True)
class WorkloadKey:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int


def workers_by_task(stack: StackSettings) -> dict[WorkloadKey, list[str]]:
    """Which worker ran each part of each task attempt, in the order each worker's log lists them (a
    task that deferred and resumed has one entry per part)."""
    found: dict[WorkloadKey, list[str]] = {}
    for worker in WORKERS:
        path = stack.log_file(worker)
        lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
        for match in filter(None, map(_WORKLOAD.search, lines)):
            key = WorkloadKey(
                dag_id=match["dag_id"],
                run_id=match["run_id"],
                task_id=match["task_id"],
                map_index=int(match["map_index"]),
                try_number=int(match["try_number"]),
            )
            found.setdefault(key, []).append(worker)
    return found
