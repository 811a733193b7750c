"""The project's Airflow settings: its own home, loopback only, secrets generated once and kept private."""

from __future__ import annotations

import stat

from event_broker_devtools import airflow_server
from event_broker_devtools.airflow_server import ServerSettings


def test_the_server_is_configured_apart_from_the_callers_airflow(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", "/somewhere/else")
    monkeypatch.setenv("AIRFLOW_HOME", "/somewhere/else")
    server = ServerSettings(home=tmp_path, port=18080)
    environment = airflow_server.server_environment(server)
    assert environment["AIRFLOW_HOME"] == str(tmp_path)
    assert environment["AIRFLOW__CORE__DAGS_FOLDER"].endswith("/dags")
    assert environment["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path}/airflow.db"
    assert environment["AIRFLOW__SECRETS__BACKEND"].endswith("LocalFilesystemBackend")
    assert len(environment["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64


def test_password_and_jwt_secret_are_generated_once_and_private(tmp_path):
    server = ServerSettings(home=tmp_path, port=18080)
    first = airflow_server.password(server)
    assert airflow_server.password(server) == first
    secret = airflow_server.server_environment(server)["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert airflow_server.server_environment(server)["AIRFLOW__API_AUTH__JWT_SECRET"] == secret
    for path in (server.passwords_file, tmp_path / "jwt_secret"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_nothing_running_is_reported_as_such(tmp_path):
    server = ServerSettings(home=tmp_path, port=18080)
    assert airflow_server.running_pid(server) is None
    for garbage in ("999999999", "", "0", "not-a-pid"):
        server.pid_file.write_text(garbage)
        assert airflow_server.running_pid(server) is None
    assert airflow_server.stop(server) is False and not server.pid_file.exists()


def test_every_login_is_generated_before_airflow_starts_and_kept_private(tmp_path):
    server = ServerSettings(home=tmp_path, port=18080)
    server.passwords_file.write_text('{"admin": "kept"}')  # a file from before the approver existed
    server.passwords_file.chmod(0o644)
    approver = airflow_server.password(server, airflow_server.APPROVER)
    assert airflow_server.password(server) == "kept" and approver not in ("", "kept")
    assert stat.S_IMODE(server.passwords_file.stat().st_mode) == 0o600
    users = airflow_server.server_environment(server)["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    assert users == "admin:admin,approver1:user"
