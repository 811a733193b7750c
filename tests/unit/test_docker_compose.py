"""docker-compose.airflow.yml and docker/airflow/Dockerfile, checked without a Docker engine.

The YAML is read as Compose reads it (anchors and merge keys resolved); where Debian's docker-compose
(1.29) is installed, `docker-compose config` also validates the file against its schema and resolves
the variables.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from event_broker_devtools.airflow_stack import distributed_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.airflow.yml"
DOCKERFILE = REPO / "docker" / "airflow" / "Dockerfile"
DOCKERIGNORE = REPO / "docker" / "airflow" / "Dockerfile.dockerignore"

AIRFLOW_SERVICES = ("airflow-init", "api-server", "scheduler", "dag-processor", "triggerer", "airflow-worker")
LONG_RUNNING = ("api-server", "scheduler", "dag-processor", "triggerer", "airflow-worker")
REQUIRED_SECRETS = {
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_ADMIN_PASSWORD",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$|PRIVATE")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME?err}; "$$" is a literal dollar.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
REQUIRED_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]+\}")
EXECUTION_API_URL = "http://api-server:8080/execution/"
DATABASE = "airflow:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}@postgres:5432/airflow"
# What distributed_settings gives for the compose network: the same settings as the Celery stack.
COMPOSE_ENDPOINTS = {
    "database_url": f"postgresql+psycopg2://{DATABASE}",
    "broker_url": "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@redis:6379/0",
    "result_backend": f"db+postgresql://{DATABASE}",
    "execution_api_url": EXECUTION_API_URL,
    "fernet_key": "${AIRFLOW_FERNET_KEY:?set AIRFLOW_FERNET_KEY}",
    "jwt_secret": "${AIRFLOW_JWT_SECRET:?set AIRFLOW_JWT_SECRET}",
    "api_secret_key": "${AIRFLOW_API_SECRET_KEY:?set AIRFLOW_API_SECRET_KEY}",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def split_outside_braces(spec: str) -> list[str]:
    """Split on the colons of `a:b[:c]` that are not inside `${VAR:-default}`."""
    parts, depth, current = [], 0, ""
    for char in spec:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def split_volume(spec: str) -> tuple[str, str, str]:
    """Short volume syntax `source:target[:mode]`."""
    parts = split_outside_braces(spec)
    assert len(parts) in (2, 3), f"unexpected volume spec {spec!r}"
    return parts[0], parts[1], parts[2] if len(parts) == 3 else "rw"


def mounts(service: dict) -> dict[str, tuple[str, str]]:
    """target -> (source, mode)."""
    return {target: (source, mode) for source, target, mode in map(split_volume, service.get("volumes", []))}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, rest = pending.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def requirement_pin(path: Path, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)\s*$", path.read_text(), re.M)
    assert match, f"{path.name} does not pin {name}"
    return match.group(1)


# --- services ------------------------------------------------------------------------------------


def test_the_services_and_the_init_exist(services):
    assert set(services) >= {
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
        "airflow-worker",
        "postgres",
        "redis",
        "airflow-init",
    }


def test_the_common_environment_is_the_celery_stacks(compose, services):
    """One source of truth: the settings every component shares are the ones `make airflow-up
    EXECUTOR=celery` sets (airflow_stack.distributed_settings), spelled for the compose network."""
    expected = distributed_settings(**COMPOSE_ENDPOINTS)
    common = compose["x-airflow-common"]["environment"]
    assert {key: str(common.get(key)) for key in expected} == expected
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert {key: str(env.get(key)) for key in expected} == expected, name


def test_redis_requires_its_password_keeps_nothing_and_is_not_published(services):
    redis = services["redis"]
    assert REQUIRED_REFERENCE.fullmatch(redis["environment"]["REDIS_PASSWORD"])
    command = " ".join(redis["command"])
    assert "--requirepass" in command and '--save ""' in command and "--appendonly no" in command
    assert "ports" not in redis and "volumes" not in redis
    assert "healthcheck" in redis


def test_workers_wait_for_the_queue_and_the_execution_api(services):
    worker = services["airflow-worker"]
    assert worker["command"] == "celery worker"
    assert worker["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert worker["depends_on"]["api-server"] == {"condition": "service_healthy"}
    assert "ports" not in worker


def test_every_airflow_service_runs_the_same_image_and_build(services):
    images = {services[name]["image"] for name in AIRFLOW_SERVICES}
    builds = {tuple(sorted(services[name]["build"].items())) for name in AIRFLOW_SERVICES}
    assert len(images) == 1
    assert builds == {(("context", "."), ("dockerfile", "docker/airflow/Dockerfile"))}
    assert (REPO / "docker" / "airflow" / "Dockerfile").is_file()


@pytest.mark.parametrize(
    "key",
    [
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__CORE__AUTH_MANAGER",
    ],
)
def test_every_airflow_service_shares_the_setting(services, key):
    values = {services[name]["environment"].get(key) for name in AIRFLOW_SERVICES}
    assert len(values) == 1 and None not in values, f"{key} differs between Airflow services: {values}"


def test_airflow_settings(services):
    env = services["scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == EXECUTION_API_URL
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "${AIRFLOW_JWT_SECRET:?set AIRFLOW_JWT_SECRET}"
    assert env["AIRFLOW__CORE__FERNET_KEY"] == "${AIRFLOW_FERNET_KEY:?set AIRFLOW_FERNET_KEY}"
    assert re.fullmatch(
        r"postgresql\+psycopg2://airflow:\$\{POSTGRES_PASSWORD:\?[^}]+\}@postgres:5432/airflow",
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
    )


def test_api_server_serves_8080_checks_its_health_url_and_is_the_execution_api(services):
    api = services["api-server"]
    container_ports = [split_outside_braces(str(port))[-1] for port in api["ports"]]
    assert container_ports == ["8080"]
    assert "http://localhost:8080/api/v2/monitor/health" in api["healthcheck"]["test"]
    assert api["command"] == "api-server"
    assert EXECUTION_API_URL.startswith("http://api-server:8080/")


def test_postgres_has_a_healthcheck_a_named_volume_and_a_required_password(compose, services):
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    source, _mode = mounts(postgres)["/var/lib/postgresql/data"]
    assert source in compose["volumes"]
    assert REQUIRED_REFERENCE.fullmatch(postgres["environment"]["POSTGRES_PASSWORD"])
    assert "ports" not in postgres, "the database is reached only on the compose network"


def test_services_start_in_order(services):
    for name in LONG_RUNNING:
        depends = services[name]["depends_on"]
        assert depends["postgres"] == {"condition": "service_healthy"}, name
        assert depends["airflow-init"] == {"condition": "service_completed_successfully"}, name
    for name in ("scheduler", "triggerer"):  # their task/trigger processes call the Execution API
        assert services[name]["depends_on"]["api-server"] == {"condition": "service_healthy"}
    assert services["airflow-init"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["airflow-init"]["restart"] == "no"
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}'s healthcheck"
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], name


def test_airflow_init_migrates_and_writes_the_admin_login(services):
    init = services["airflow-init"]
    script = init["command"][-1]
    assert "airflow db migrate" in script
    assert "AIRFLOW_ADMIN_PASSWORD" in script
    assert REQUIRED_REFERENCE.fullmatch(init["environment"]["AIRFLOW_ADMIN_PASSWORD"])
    passwords_dir = str(Path(init["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).parent)
    # the one place init writes it and the api-server (SimpleAuthManager) reads it: the same volume
    assert mounts(init)[passwords_dir] == mounts(services["api-server"])[passwords_dir]
    assert "AIRFLOW_ADMIN_PASSWORD" not in services["api-server"]["environment"]


# --- mounts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_project_folders_are_mounted(services, name):
    found = mounts(services[name])
    for folder in ("dags", "plugins", "include", "config"):
        assert found[f"/opt/airflow/{folder}"] == (f"./{folder}", "ro"), folder
    assert found["/opt/airflow/reports"] == ("./reports", "rw")
    source, mode = found["/opt/airflow/logs"]
    assert mode == "rw" and not source.startswith(".")  # a named volume, shared by all components


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_ssh_keys_are_mounted_read_only(services, name):
    source, mode = mounts(services[name])["/opt/airflow/ssh"]
    assert source == "${EBR_SSH_DIR:-./secrets/ssh}"
    assert mode == "ro"


def test_the_image_finds_known_hosts_in_the_ssh_mount():
    assert "/opt/airflow/ssh/known_hosts /home/airflow/.ssh/known_hosts" in DOCKERFILE.read_text()


def test_the_package_is_imported_from_the_mount_not_scanned_as_airflow_plugins(services):
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["PYTHONPATH"].split(":")[0] == "/opt/airflow/plugins"
        assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] != "/opt/airflow/plugins"
        assert env["EBR_PROJECT_ROOT"] == "/opt/airflow"


# --- secrets -------------------------------------------------------------------------------------


def test_no_secret_has_a_default_value():
    text = COMPOSE_FILE.read_text()
    required = set()
    for name, operator, _rest in VARIABLE.findall(text):
        if SECRET_NAME.search(name):
            assert operator in (":?", "?"), f"${{{name}}} must be required (:?), not defaulted"
            required.add(name)
    assert required == REQUIRED_SECRETS
    assert not re.search(r"(?<!\$)\$(PASSWORD|[A-Z_]*(SECRET|FERNET|_KEY))\b", text), (
        "unbraced secret reference"
    )


def test_secret_settings_hold_only_a_required_reference(services):
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert REQUIRED_REFERENCE.fullmatch(str(value)), f"{name}: {key} = {value!r}"


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_base_image_matches_the_pins():
    bases = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(bases) == 1
    match = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+)\.(\d+)", bases[0])
    assert match, bases[0]
    airflow_version, python = match.group(1), (int(match.group(2)), int(match.group(3)))
    assert airflow_version == requirement_pin(REPO / "requirements.txt", "apache-airflow")
    assert airflow_version == requirement_pin(REPO / "requirements.lock", "apache-airflow")
    assert python == (3, 11)
    assert '">=3.11,<3.12"' in (REPO / "pyproject.toml").read_text()
    assert "--python-version 3.11" in (REPO / "requirements.lock").read_text()


def test_dockerfile_installs_the_lock_without_resolving():
    instructions = dockerfile_instructions()
    copies = [args for keyword, args in instructions if keyword == "COPY"]
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any(re.search(r"(^|\s)requirements\.lock\s", args) for args in copies)
    lock_install = [run for run in runs if "requirements.lock" in run and "pip install" in run]
    assert len(lock_install) == 1
    assert re.search(r"pip install --no-cache-dir --no-deps -r ", lock_install[0])
    assert any(re.search(r"(^|\s)pyproject\.toml\s", args) for args in copies)
    assert any(
        re.search(r"pip install --no-cache-dir --no-deps /opt/event-broker-rollout/src\b", run)
        for run in runs
    )


def lock_dependents(lock: str) -> dict[str, set[str]]:
    """package -> what requires it, from the `# via` comments uv writes into requirements.lock."""
    dependents: dict[str, set[str]] = {}
    current = None
    for line in lock.splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==", line):
            current = match.group(1).lower()
            dependents[current] = set()
        elif current and (
            via := re.match(r"^\s+#\s+(?:via\s+)?(?!via\s*$)(-r \S+|[A-Za-z0-9_.-]+)\s*$", line)
        ):
            dependents[current].add(via.group(1).lower())
    return dependents


def test_the_runtime_image_leaves_out_only_tools_the_code_never_imports():
    left_out = re.search(r"grep -vE '\^\(([^)]*)\)=='", DOCKERFILE.read_text()).group(1).split("|")
    dependents = lock_dependents((REPO / "requirements.lock").read_text())
    code = "\n".join(p.read_text() for folder in ("plugins", "dags") for p in (REPO / folder).rglob("*.py"))
    for name in left_out:
        # wanted by requirements.txt (a developer tool) or another left-out tool, by no runtime package
        assert dependents[name] and dependents[name] <= {"-r requirements.txt", *left_out}, (
            name,
            dependents[name],
        )
        module = name.replace("-", "_")
        assert not re.search(rf"^\s*(import|from) {module}\b", code, re.M), f"{name} is imported at run time"


def test_the_build_context_allowlist_lets_every_copy_source_through():
    allowed = {line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY":
            sources = [part for part in args.split() if not part.startswith("--")][:-1]
            for source in sources:
                assert source in allowed, f"COPY {source} is excluded by {DOCKERIGNORE.name}"
                assert (REPO / source).exists(), source


# --- docker-compose config (schema validation, variable resolution) ------------------------------

DUMMY_SECRETS = {name: f"dummy-{name.lower()}" for name in REQUIRED_SECRETS}


def docker_compose_config(tmp_path: Path, values: dict[str, str]) -> subprocess.CompletedProcess:
    connections = tmp_path / "connections.env"
    connections.write_text('AIRFLOW_CONN_SSH_EXAMPLE={"conn_type": "ssh", "host": "192.0.2.10"}\n')
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "EBR_CONNECTIONS_ENV": str(connections),
        **values,
    }
    return subprocess.run(
        [shutil.which("docker-compose") or "docker-compose", "-f", str(COMPOSE_FILE), "config"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


needs_docker_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose (Debian package) is not installed"
)


@needs_docker_compose
def test_docker_compose_validates_and_resolves_the_file(tmp_path):
    result = docker_compose_config(tmp_path, DUMMY_SECRETS)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    for name in AIRFLOW_SERVICES:
        env = resolved[name]["environment"]
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == DUMMY_SECRETS["AIRFLOW_JWT_SECRET"]
        assert env["AIRFLOW__CORE__FERNET_KEY"] == DUMMY_SECRETS["AIRFLOW_FERNET_KEY"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == EXECUTION_API_URL
        assert (
            f":{DUMMY_SECRETS['POSTGRES_PASSWORD']}@postgres:" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        )
    assert resolved["postgres"]["environment"]["POSTGRES_PASSWORD"] == DUMMY_SECRETS["POSTGRES_PASSWORD"]
    for name in LONG_RUNNING:
        assert f"{REPO}/secrets/ssh:/opt/airflow/ssh:ro" in resolved[name]["volumes"]


@needs_docker_compose
@pytest.mark.parametrize("missing", sorted(REQUIRED_SECRETS))
def test_docker_compose_refuses_to_start_without_each_secret(tmp_path, missing):
    values = {name: value for name, value in DUMMY_SECRETS.items() if name != missing}
    result = docker_compose_config(tmp_path, values)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr
