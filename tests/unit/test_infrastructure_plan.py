from __future__ import annotations

from pathlib import Path

import pytest

from event_broker_rollout.environment import load_environment, load_sizing_profiles
from event_broker_rollout.infrastructure import desired, health
from event_broker_rollout.infrastructure.plan import (
    Observed,
    ServiceStatus,
    mask_secrets,
    parse_observation,
    plan_host,
)


def with_material_dir(environment, directory):
    """The environment with its TLS material kept in a test folder (never the lab's real CA)."""
    tls = environment.security.tls.model_copy(update={"material_dir": str(directory)})
    return environment.model_copy(update={"security": environment.security.model_copy(update={"tls": tls})})


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return with_material_dir(load_environment("lab"), tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def lab1_state(lab):
    profiles = load_sizing_profiles()
    return desired.desired_state(lab, lab.host("lab1"), "lab", profiles["lab"])


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_server_properties_for_a_combined_kraft_node(lab1_state):
    server = next(f for f in lab1_state.files if f.path == "/etc/kafka/server.properties")
    values = props(server.content)
    assert values["process.roles"] == "broker,controller"
    assert values["node.id"] == "1"
    assert values["controller.quorum.voters"] == "1@10.77.0.11:9093,2@10.77.0.12:9093,3@10.77.0.13:9093"
    assert values["listeners"] == "CLIENT://10.77.0.11:9092,CONTROLLER://10.77.0.11:9093"
    assert (
        values["listener.security.protocol.map"]
        == "CLIENT:PLAINTEXT,SECURE:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL"
    )
    assert values["listener.name.controller.ssl.client.auth"] == "required"
    assert values["advertised.listeners"] == "CLIENT://10.77.0.11:9092"
    assert values["log.dirs"] == "/var/lib/kafka/data"
    assert (values["default.replication.factor"], values["min.insync.replicas"]) == ("3", "2")
    assert values["auto.create.topics.enable"] == "false"
    assert values["unclean.leader.election.enable"] == "false"
    assert server.restarts == ("kafka",)


def provided_material(environment, directory):
    """Operator-provided PEM files, as an organisation's PKI would hand them over (made here with a test CA)."""
    from event_broker_rollout.security import tls

    ca_cert, ca_key = tls.ensure_internal_ca(directory / "pki", "test-pki")
    (directory / "ca.crt").write_text((directory / "pki" / "ca.crt").read_text())
    for host in environment.hosts:
        material = tls.issue_node_certificate(host, ca_cert, ca_key, 365)
        (directory / f"{host.name}.crt").write_text(material.cert_pem)
        (directory / f"{host.name}.key").write_text(material.key_pem)
    return with_material_dir(environment, directory)


def test_dedicated_controller_and_broker_roles(tmp_path):
    prod = load_environment("prod")
    prod = prod.model_copy(
        update={
            "distribution": prod.distribution.model_copy(update={"archive": "/srv/confluent-8.1.0.tar.gz"})
        }
    )
    prod = provided_material(prod, tmp_path)
    profiles = load_sizing_profiles()
    controller = desired.desired_state(
        prod, prod.host("kctl-1"), "production", profiles["production"], systemd=True
    )
    broker = desired.desired_state(
        prod, prod.host("kbrk-1"), "production", profiles["production"], systemd=True
    )
    c = props(next(f for f in controller.files if f.path.endswith("server.properties")).content)
    b = props(next(f for f in broker.files if f.path.endswith("server.properties")).content)
    assert (
        c["process.roles"] == "controller"
        and "advertised.listeners" not in c
        and "inter.broker.listener.name" not in c
    )
    assert b["process.roles"] == "broker" and b["listeners"] == "CLIENT://198.51.100.21:9092"
    assert "authorizer.class.name" not in b  # the security stage turns it on
    assert b["controller.quorum.voters"] == "1@198.51.100.11:9093,2@198.51.100.12:9093,3@198.51.100.13:9093"
    assert b["log.dirs"] == "/data/kafka/1,/data/kafka/2"
    unit = next(f for f in broker.files if f.path == "/etc/systemd/system/kafka.service").content
    assert "LimitNOFILE=100000" in unit and "User=cp-kafka" in unit and "Restart=on-failure" in unit


def test_heap_comes_from_the_sizing_profile(lab, lab1_state):
    env_file = next(f for f in lab1_state.files if f.path == "/etc/kafka/kafka.env").content
    assert 'KAFKA_HEAP_OPTS="-Xms512m -Xmx512m"' in env_file
    registry_env = next(f for f in lab1_state.files if f.path == "/etc/schema-registry/registry.env").content
    assert "-Xmx256m" in registry_env


def test_lab_hosts_get_the_service_wrapper_not_systemd(lab1_state):
    paths = {f.path for f in lab1_state.files}
    assert {
        "/etc/event-broker/services/kafka.conf",
        "/etc/event-broker/services/schema-registry.conf",
        desired.SERVICE_WRAPPER,
    } <= paths
    assert not any(p.startswith("/etc/systemd") for p in paths)
    assert [i.top_dir for i in lab1_state.installs] == ["kafka_2.13-4.1.2", "apicurio-registry-3.0.9"]


def observation_matching(state: desired.HostState, running: bool = True) -> Observed:
    return Observed(
        systemd=False,
        user_present=True,
        files={f.path: f.digest for f in state.files},
        installs={i.name: (i.archive.name, i.target) for i in state.installs},
        formatted={d: "E7wgiw9MQ16ue4RNGgSA6Q" for d in state.data_dirs},
        services={s.name: ServiceStatus(running=running, pid=100, start_ticks=5) for s in state.services},
    )


def test_nothing_to_do_plans_nothing(lab1_state):
    plan = plan_host(lab1_state, observation_matching(lab1_state), "E7wgiw9MQ16ue4RNGgSA6Q", {})
    assert (plan.changes, plan.start, plan.restart, plan.problems) == ([], [], [], [])
    assert "service:kafka" in plan.unchanged and "storage:/var/lib/kafka/data" in plan.unchanged


def test_fresh_host_plans_everything_and_starts_services(lab1_state):
    fresh = Observed(services={}, formatted={"/var/lib/kafka/data": "no"})
    plan = plan_host(lab1_state, fresh, "E7wgiw9MQ16ue4RNGgSA6Q", {})
    kinds = [c.kind for c in plan.changes]
    assert kinds.count("install") == 2 and kinds.count("format") == 1 and "user" in kinds
    assert plan.start == ["kafka", "schema-registry"] and plan.restart == []


def test_a_changed_config_restarts_only_its_service_and_shows_a_diff(lab1_state):
    observed = observation_matching(lab1_state)
    observed.files["/etc/kafka/server.properties"] = "0" * 64
    server = next(f for f in lab1_state.files if f.path == "/etc/kafka/server.properties")
    on_host = server.content.replace("min.insync.replicas=2", "min.insync.replicas=1")
    plan = plan_host(lab1_state, observed, "E7wgiw9MQ16ue4RNGgSA6Q", {server.path: on_host})
    (change,) = plan.changes
    assert change.kind == "file" and plan.restart == ["kafka"] and plan.start == []
    assert "-min.insync.replicas=1" in change.diff and "+min.insync.replicas=2" in change.diff


def test_a_log_dir_formatted_for_another_cluster_is_never_touched(lab1_state):
    observed = observation_matching(lab1_state)
    observed.formatted["/var/lib/kafka/data"] = "SomeOtherClusterId0000"
    plan = plan_host(lab1_state, observed, "E7wgiw9MQ16ue4RNGgSA6Q", {})
    assert plan.problems and "refusing" in plan.problems[0]
    assert not [c for c in plan.changes if c.kind == "format"]


def test_observation_parsing():
    text = "systemd no\nuser present\nfile /etc/kafka/server.properties abc\ninstall kafka kafka_2.13-4.1.2.tgz /opt/kafka/kafka_2.13-4.1.2\nformatted /var/lib/kafka/data E7wgiw9MQ16ue4RNGgSA6Q\nservice kafka running 4242 123456\nservice schema-registry stopped\n"
    observed = parse_observation(text)
    assert observed.user_present and not observed.systemd
    assert observed.services["kafka"] == ServiceStatus(True, 4242, 123456)
    assert not observed.services["schema-registry"].running


def test_secrets_never_reach_a_diff():
    text = 'listener.name.client.scram-sha-512.sasl.jaas.config=org.apache...ScramLoginModule required username="admin" password="s3cret";\nssl.keystore.password=hunter2\nnum.partitions=3'
    masked = mask_secrets(text)
    assert "s3cret" not in masked and "hunter2" not in masked and "num.partitions=3" in masked


def test_quorum_parsing_flags_missing_and_stale_voters():
    output = """now=1764245000000
NodeId  DirectoryId             LogEndOffset    Lag     LastFetchTimestamp      LastCaughtUpTimestamp   Status
1       pLZ3R4x0Q4qRkH5Vd0Zb1A  1520            0       1764245000000           1764245000000           Leader
2       Xq0k1c3PSt6o8VxJmVQm7w  1520            0       1764244999800           1764244999800           Follower
3       a0qL3Ki0R7a8y2Uo8Q9YtQ  1400            120     1764244960000           1764244960000           Follower
"""
    status = health.quorum_status(output, [1, 2, 3])
    assert not status["healthy"] and status["lagging"] == [3] and status["leader"] == 1
    assert health.quorum_status(output.replace("1764244960000", "1764244999900"), [1, 2, 3])["healthy"]
    assert health.quorum_status(output, [1, 2, 3, 4])["missing"] == [4]


def test_archive_top_dir():
    assert desired.archive_top_dir(Path("x/kafka_2.13-4.1.2.tgz")) == "kafka_2.13-4.1.2"
    assert desired.archive_top_dir(Path("confluent-8.1.0.tar.gz")) == "confluent-8.1.0"
    with pytest.raises(ValueError):
        desired.archive_top_dir(Path("kafka.zip"))


def test_a_broker_that_refuses_connections_is_silent_whatever_the_metadata_says():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listening:
        answering = listening.getsockname()[1]
        with socket.create_server(("127.0.0.1", 0)) as closed:
            gone = closed.getsockname()[1]  # bound then closed: nothing listens there any more
        servers = f"127.0.0.1:{answering},127.0.0.1:{gone}"
        assert health.silent_brokers(servers, skip_address="10.77.0.11") == [f"127.0.0.1:{gone}"]
        # the broker about to be restarted is not asked
        assert health.silent_brokers(servers, skip_address="127.0.0.1") == []
