"""Rendered files: a value cannot add a line to a properties file, nor run in a file a shell sources."""

from __future__ import annotations

import subprocess

import pytest

from event_broker_rollout.config.environment import load_environment, load_sizing_profiles
from event_broker_rollout.hosts import desired
from event_broker_rollout.hosts.desired import UnsafeValueError

HOSTILE = "/opt/x$(touch ebr-marker)`touch ebr-marker`;touch ebr-marker \"'\\$HOME"


@pytest.fixture
def lab(tmp_path):
    environment = load_environment("lab")
    assert environment.security is not None
    tls = environment.security.tls.model_copy(update={"material_dir": str(tmp_path / "ca")})
    return environment.model_copy(update={"security": environment.security.model_copy(update={"tls": tls})})


def state_of(environment, host="lab1", systemd=False):
    profiles = load_sizing_profiles()
    return desired.desired_state(environment, environment.host(host), "lab", profiles["lab"], systemd=systemd)


def with_kafka(environment, **changes):
    """Unvalidated values (model_copy skips validation): the renderer must hold on its own."""
    return environment.model_copy(update={"kafka": environment.kafka.model_copy(update=changes)})


def test_a_newline_in_a_data_dir_cannot_add_a_line_to_server_properties(lab):
    secret_looking = "/var/lib/kafka/data\nsuper.users=User:mallory"
    with pytest.raises(UnsafeValueError) as refused:
        state_of(with_kafka(lab, data_dirs=[secret_looking]))
    message = str(refused.value)
    assert "server.properties" in message and "log_dirs[0]" in message
    assert "mallory" not in message  # the value is never echoed (it could be a secret)


@pytest.mark.parametrize("character", ["\r", "\x00", "\x1b", "\u2028", "\x85"])
def test_any_control_character_is_refused_and_the_setting_named(character):
    with pytest.raises(UnsafeValueError, match=r"security_settings\[sasl\.jaas\.config\]") as refused:
        desired.render(
            "kafka/server.properties.j2",
            security_settings=(("sasl.jaas.config", f"password=hunter2{character}"),),
        )
    assert "hunter2" not in str(refused.value)


def source(tmp_path, name: str, content: str, script: str) -> str:
    (tmp_path / name).write_text(content)
    result = subprocess.run(
        ["sh", "-c", f"set -a; . ./{name}; set +a; {script}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert not (tmp_path / "ebr-marker").exists()
    return result.stdout


def test_env_files_quote_what_they_hold(lab, tmp_path):
    hostile = lab.model_copy(
        update={"distribution": lab.distribution.model_copy(update={"java_home": HOSTILE})}
    )
    files = {f.path: f.content for f in state_of(hostile).files}
    assert source(tmp_path, "kafka.env", files["/etc/kafka/kafka.env"], 'printf %s "$JAVA_HOME"') == HOSTILE
    registry_env = files["/etc/schema-registry/registry.env"]
    assert source(tmp_path, "registry.env", registry_env, 'printf %s "$JAVA_HOME"') == HOSTILE


def test_the_service_definition_runs_its_command_as_literal_words(lab, tmp_path):
    """ebr-service sources the definition, then runs ``sh -c "exec $EXEC_START"``: both parses are safe."""
    hostile = with_kafka(lab, service_user=HOSTILE).model_copy(
        update={"distribution": lab.distribution.model_copy(update={"install_dir": HOSTILE})}
    )
    files = {f.path: f.content for f in state_of(hostile).files}
    conf = files["/etc/event-broker/services/kafka.conf"]
    words = source(
        tmp_path,
        "kafka.conf",
        conf,
        '''printf '%s|' "$SERVICE_USER"; /bin/sh -c "exec printf '%s|' $EXEC_START"''',
    )
    assert words.split("|")[:-1] == [
        HOSTILE,
        f"{HOSTILE}/current/bin/kafka-server-start.sh",
        "/etc/kafka/server.properties",
    ]


def test_the_lab_files_are_rendered_as_before(lab):
    """Plain values need no escaping: the env files keep their form (a re-run changes nothing on the hosts)."""
    files = {f.path: f.content for f in state_of(lab).files}
    assert 'LOG_DIR="/var/log/kafka"\n' in files["/etc/kafka/kafka.env"]
    conf = files["/etc/event-broker/services/kafka.conf"]
    assert 'EXEC_START="/opt/kafka/current/bin/kafka-server-start.sh /etc/kafka/server.properties"\n' in conf
