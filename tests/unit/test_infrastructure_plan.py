from __future__ import annotations

import os
import socket
import subprocess
import types
from pathlib import Path

import pytest

from event_broker_rollout.cluster import health
from event_broker_rollout.config.environment import load_environment, load_sizing_profiles
from event_broker_rollout.hosts import desired, fleet, preconditions
from event_broker_rollout.hosts import operations as hostops
from event_broker_rollout.hosts.plan import (
    HostPlan,
    Observed,
    ServiceStatus,
    mask_secrets,
    parse_observation,
    plan_host,
)
from event_broker_rollout.hosts.preconditions import Holder, Occupancy
from event_broker_rollout.hosts.shell import command_line


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
    from event_broker_rollout.hosts import tls

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
        installs={i.name: (i.marker, i.target) for i in state.installs},
        formatted={d: "E7wgiw9MQ16ue4RNGgSA6Q" for d in state.data_dirs},
        services={s.name: ServiceStatus(running=running, pid=100, start_ticks=5) for s in state.services},
    )


SERVICE_PID = 100  # our services' pid in ``observation_matching``


def occupancy_matching(state: desired.HostState) -> Occupancy:
    """A rolled-out host: our marked files, our installs, our services on their ports."""
    return Occupancy(
        markers={f.path: "marked" for f in state.files},
        install_dirs={i.name: "ours" for i in state.installs},
        current_links={i.name: "ours" for i in state.installs},
        listeners={port: [Holder(SERVICE_PID, (SERVICE_PID, 1), "java")] for port, _ in state.ports},
    )


def test_nothing_to_do_plans_nothing(lab1_state):
    plan = plan_host(
        lab1_state,
        observation_matching(lab1_state),
        "E7wgiw9MQ16ue4RNGgSA6Q",
        {},
        occupancy_matching(lab1_state),
    )
    assert (plan.changes, plan.start, plan.restart, plan.problems) == ([], [], [], [])
    assert "service:kafka" in plan.unchanged and "storage:/var/lib/kafka/data" in plan.unchanged


def test_fresh_host_plans_everything_and_starts_services(lab1_state):
    fresh = Observed(services={}, formatted={"/var/lib/kafka/data": "no"})
    plan = plan_host(lab1_state, fresh, "E7wgiw9MQ16ue4RNGgSA6Q", {}, Occupancy())
    assert plan.problems == []
    kinds = [c.kind for c in plan.changes]
    assert kinds.count("install") == 2 and kinds.count("format") == 1 and "user" in kinds
    assert plan.start == ["kafka", "schema-registry"] and plan.restart == []


def test_a_changed_config_restarts_only_its_service_and_shows_a_diff(lab1_state):
    observed = observation_matching(lab1_state)
    observed.files["/etc/kafka/server.properties"] = "0" * 64
    server = next(f for f in lab1_state.files if f.path == "/etc/kafka/server.properties")
    on_host = server.content.replace("min.insync.replicas=2", "min.insync.replicas=1")
    plan = plan_host(
        lab1_state, observed, "E7wgiw9MQ16ue4RNGgSA6Q", {server.path: on_host}, occupancy_matching(lab1_state)
    )
    (change,) = plan.changes
    assert change.kind == "file" and plan.restart == ["kafka"] and plan.start == []
    assert "-min.insync.replicas=1" in change.diff and "+min.insync.replicas=2" in change.diff


def test_a_log_dir_formatted_for_another_cluster_is_never_touched(lab1_state):
    observed = observation_matching(lab1_state)
    observed.formatted["/var/lib/kafka/data"] = "SomeOtherClusterId0000"
    plan = plan_host(lab1_state, observed, "E7wgiw9MQ16ue4RNGgSA6Q", {}, occupancy_matching(lab1_state))
    (problem,) = plan.problems
    assert problem.id == "infra.storage.cluster_id[/var/lib/kafka/data]" and not problem.met
    assert problem.observed == "cluster.id=SomeOtherClusterId0000"
    assert problem.expected == "not formatted, or cluster.id=E7wgiw9MQ16ue4RNGgSA6Q"
    assert "refusing to touch it" in problem.message
    assert not [c for c in plan.changes if c.kind == "format"]
    assert "storage:/var/lib/kafka/data" not in plan.unchanged
    assert HostPlan.from_dict(plan.to_dict()) == plan  # travels through XCom intact


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


def test_the_quorum_gate_names_the_controllers_whose_listener_is_still_closed():
    """Before running Kafka's quorum tool (a JVM) the gate checks each controller's listener accepts."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        answering = listening.getsockname()[1]
        with socket.create_server(("127.0.0.1", 0)) as closed:
            gone = closed.getsockname()[1]
        nodes = {1: ("127.0.0.1", answering), 2: ("127.0.0.1", gone), 3: ("127.0.0.1", answering)}
        assert health.closed_listeners(nodes) == [2]


def test_a_registered_broker_that_refuses_connections_keeps_the_brokers_gate_closed():
    """A broker killed a moment ago is still registered (until its session times out): the gate connects."""
    from types import SimpleNamespace

    with socket.create_server(("127.0.0.1", 0)) as listening:
        answering = listening.getsockname()[1]
        with socket.create_server(("127.0.0.1", 0)) as closed:
            gone = closed.getsockname()[1]
        nodes = [SimpleNamespace(id=1, host="127.0.0.1", port=answering)]
        nodes.append(SimpleNamespace(id=3, host="127.0.0.1", port=gone))

        class Admin:
            def describe_cluster(self, request_timeout):
                cluster = SimpleNamespace(nodes=nodes, controller=nodes[0], cluster_id="c")
                return SimpleNamespace(result=lambda: cluster)

        observed = health.brokers_status(Admin(), [1, 3])
        assert observed["healthy"] is False
        assert (observed["missing"], observed["unreachable"]) == ([], [3])
        nodes.pop()
        assert health.brokers_status(Admin(), [1])["healthy"] is True


def refusals(state, observed, occupancy):
    plan = plan_host(state, observed, "E7wgiw9MQ16ue4RNGgSA6Q", {}, occupancy)
    return {problem.id: problem for problem in plan.problems}


def test_a_file_this_project_did_not_write_is_never_overwritten(lab1_state):
    occupancy = occupancy_matching(lab1_state)
    occupancy.markers["/etc/kafka/server.properties"] = "unmarked"
    occupancy.markers["/etc/kafka/kafka.env"] = "notafile"
    found = refusals(lab1_state, observation_matching(lab1_state), occupancy)
    assert set(found) == {
        "infra.file.managed[/etc/kafka/server.properties]",
        "infra.file.managed[/etc/kafka/kafka.env]",
    }
    server = found["infra.file.managed[/etc/kafka/server.properties]"]
    assert server.observed == "present without 'Managed by event-broker-rollout'"
    assert "refusing to overwrite it" in server.message


def test_only_files_whose_template_carries_the_marker_are_judged_by_it(lab1_state):
    judged = set(preconditions.observe_command(lab1_state))
    assert "/etc/kafka/server.properties" in judged and "/etc/event-broker/services/kafka.conf" in judged
    assert desired.SERVICE_WRAPPER not in judged  # a script of our own folder, with no marker line
    occupancy = occupancy_matching(lab1_state)
    occupancy.markers[desired.SERVICE_WRAPPER] = "unmarked"
    assert refusals(lab1_state, observation_matching(lab1_state), occupancy) == {}


def test_an_install_folder_or_current_link_of_another_installation_is_refused(lab1_state):
    occupancy = occupancy_matching(lab1_state)
    occupancy.install_dirs["kafka"] = "other"
    occupancy.current_links["schema-registry"] = "other"
    found = refusals(lab1_state, observation_matching(lab1_state), occupancy)
    assert set(found) == {
        "infra.install.dir[/opt/kafka/kafka_2.13-4.1.2]",
        "infra.install.current[/opt/schema-registry/current]",
    }
    assert (
        "occupied by another installation" in found["infra.install.dir[/opt/kafka/kafka_2.13-4.1.2]"].message
    )
    occupancy = Occupancy(current_links={"kafka": "dangling"})  # a link to nothing is ours to repoint
    assert refusals(lab1_state, Observed(formatted={"/var/lib/kafka/data": "no"}), occupancy) == {}


def test_a_port_held_by_a_process_that_is_not_our_service_is_refused(lab1_state):
    observed = observation_matching(lab1_state, running=False)
    observed.services = {"kafka": ServiceStatus(False), "schema-registry": ServiceStatus(False)}
    occupancy = occupancy_matching(lab1_state)
    occupancy.listeners = {
        9092: [Holder(4242, (4242, 1), "java")],  # another Kafka, started by hand: our service is stopped
        8081: [Holder(None, (), "unknown")],  # ss could not name it
    }
    found = refusals(lab1_state, observed, occupancy)
    assert set(found) == {"infra.port.owner[9092]", "infra.port.owner[8081]"}
    assert found["infra.port.owner[9092]"].observed == "java (pid 4242, not ours)"
    assert found["infra.port.owner[9092]"].expected == "free, or held by this project's kafka"
    assert "refusing to start beside it" in found["infra.port.owner[9092]"].message


def test_a_port_held_by_our_service_or_its_child_process_is_ours(lab1_state):
    occupancy = occupancy_matching(lab1_state)
    occupancy.listeners[8081] = [Holder(4300, (4300, SERVICE_PID, 1), "java")]  # forked by the start script
    assert refusals(lab1_state, observation_matching(lab1_state), occupancy) == {}


def test_lab_ports_follow_the_security_phase(lab):
    profiles = load_sizing_profiles()
    plain = desired.desired_state(lab, lab.host("lab1"), "lab", profiles["lab"], phase="plaintext")
    secured = desired.desired_state(lab, lab.host("lab1"), "lab", profiles["lab"], phase="secured")
    assert dict(plain.ports) == {9092: "kafka", 9093: "kafka", 8081: "schema-registry"}
    assert {9094, 9095, 8443} <= set(dict(secured.ports))


def test_occupancy_parsing():
    text = (
        "marker /etc/kafka/server.properties unmarked\n"
        "marker /etc/my dir/x.conf marked\n"
        "installdir kafka other\ncurrent kafka dangling\n"
        "listen 9092 4242 4242,300,1 java\nlisten 9092 unknown - unknown\n"
    )
    occupancy = preconditions.parse_occupancy(text)
    assert occupancy.markers == {"/etc/kafka/server.properties": "unmarked", "/etc/my dir/x.conf": "marked"}
    assert (occupancy.install_dirs, occupancy.current_links) == ({"kafka": "other"}, {"kafka": "dangling"})
    assert occupancy.listeners[9092] == [Holder(4242, (4242, 300, 1), "java"), Holder(None, (), "unknown")]


def tree_snapshot(root: Path) -> list[tuple[str, float, int]]:
    return sorted((str(p), p.lstat().st_mtime, p.lstat().st_mode) for p in root.rglob("*"))


def test_the_observation_script_reads_a_real_tree_and_changes_nothing(tmp_path):
    """The constant script run by sh on a local tree: every state it reports, values with shell syntax kept
    literal, a real listener on loopback traced to this process, and the tree untouched."""
    marker = preconditions.MANAGED_MARKER
    etc = tmp_path / "etc $(touch pwned)"
    etc.mkdir()
    (etc / "ours.properties").write_text(f"# {marker} (cluster x)\na=1\n")
    (etc / "foreign.properties").write_text("# hand-written\na=1\n")
    (etc / "a-folder.conf").mkdir()
    opt = tmp_path / "opt"
    (opt / "kafka_ours").mkdir(parents=True)
    (opt / "kafka_ours" / ".ebr-installed").write_text("kafka_ours.tgz\n")
    (opt / "current").symlink_to(opt / "kafka_ours")
    (opt / "other" / "kafka_foreign").mkdir(parents=True)  # another installation, without our marker
    (opt / "other" / "current").symlink_to(opt / "other" / "kafka_foreign")
    (opt / "dangling").mkdir()
    (opt / "dangling" / "current").symlink_to(opt / "gone")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def install(name: str, top: str, base: Path) -> desired.Install:
        return desired.Install(name, Path(f"{top}.tgz"), str(base), top, ())

    state = desired.HostState(
        host="local",
        service_user="kafka",
        directories=(),
        installs=(
            install("ours", "kafka_ours", opt),
            install("foreign", "kafka_foreign", opt / "other"),
            install("dangling", "kafka_new", opt / "dangling"),
        ),
        files=tuple(
            desired.ManagedFile(str(etc / name), f"# {marker}\n")
            for name in ("ours.properties", "foreign.properties", "a-folder.conf", "absent.conf")
        ),
        services=(),
        ports=((port, "kafka"),),
    )
    before = tree_snapshot(tmp_path)
    try:
        argv = preconditions.observe_command(state)
        output = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
    finally:
        listener.close()
    assert tree_snapshot(tmp_path) == before and not (tmp_path / "pwned").exists()
    occupancy = preconditions.parse_occupancy(output)
    assert occupancy.markers == {
        str(etc / "ours.properties"): "marked",
        str(etc / "foreign.properties"): "unmarked",
        str(etc / "a-folder.conf"): "notafile",
        str(etc / "absent.conf"): "absent",
    }
    assert occupancy.install_dirs == {"ours": "ours", "foreign": "other", "dangling": "absent"}
    assert occupancy.current_links == {"ours": "ours", "foreign": "other", "dangling": "dangling"}
    (holder,) = occupancy.listeners[port]
    assert holder.pid == os.getpid() and holder.lineage[0] == os.getpid() and holder.lineage[-1] == 1
    judged = {p.id: p.met for p in preconditions.evaluate(state, occupancy, {}, {"kafka": os.getppid()}, "x")}
    assert judged[f"infra.port.owner[{port}]"]  # this process descends from the "service" (its parent)
    assert not preconditions.evaluate(state, occupancy, {}, {"kafka": 1_000_000_000}, "x")[-1].met


def test_the_stage_stops_at_its_plan_naming_host_and_folder_before_any_change(lab, lab1_state):
    from event_broker_rollout.hosts import fleet
    from event_broker_rollout.hosts.preconditions import ChangeRefused
    from event_broker_rollout.infrastructure import stage

    clean = plan_host(
        lab1_state,
        observation_matching(lab1_state),
        "E7wgiw9MQ16ue4RNGgSA6Q",
        {},
        occupancy_matching(lab1_state),
    )
    observed = observation_matching(lab1_state)
    observed.formatted["/var/lib/kafka/data"] = "SomeOtherClusterId0000"
    foreign = plan_host(lab1_state, observed, "E7wgiw9MQ16ue4RNGgSA6Q", {}, occupancy_matching(lab1_state))
    extra = {"systemd": False, "phase": "plaintext", "recorded_phase": "plaintext"}
    plans = {"lab1": {**foreign.to_dict(), **extra}, "lab2": {**clean.to_dict(), "host": "lab2", **extra}}

    with pytest.raises(
        ChangeRefused,
        match=r"lab1: data folder /var/lib/kafka/data is formatted for cluster "
        r"SomeOtherClusterId0000.*nothing was changed",
    ):
        fleet.planned_hosts(plans)
    with pytest.raises(ChangeRefused, match="lab1: data folder /var/lib/kafka/data"):
        stage.install_host(lab, plans, "lab1")  # refuses before it opens a session
    (blocking,) = stage.blocking_results(plans)
    assert (blocking.id, blocking.host, blocking.status, blocking.severity) == (
        "infra.storage.cluster_id[/var/lib/kafka/data]",
        "lab1",
        "fail",
        "blocking",
    )
    assert blocking.observed == "cluster.id=SomeOtherClusterId0000"
    assert fleet.planned_hosts({"lab2": plans["lab2"]})["lab2"].problems == []


def test_the_restart_safety_policy_names_what_makes_a_restart_unsafe(lab, monkeypatch):
    from event_broker_rollout.cluster import clients, restarts

    monkeypatch.setattr(clients, "admin_config", lambda environment, phase: {"bootstrap.servers": "b:9092"})
    monkeypatch.setattr(health, "admin_client", lambda config: object())
    monkeypatch.setattr(health, "silent_brokers", lambda servers, skip: ["10.77.0.12:9092"])
    monkeypatch.setattr(health, "restart_blockers", lambda admin, node, min_isr: [])
    assert (
        restarts.restart_refusal(lab, "plaintext", "lab1")
        == "another broker does not answer: lab2 (10.77.0.12:9092)"
    )
    monkeypatch.setattr(health, "silent_brokers", lambda servers, skip: [])
    monkeypatch.setattr(health, "restart_blockers", lambda admin, node, min_isr: ["healthcare.x-0"])
    assert restarts.restart_refusal(lab, "plaintext", "lab1") == (
        "it would take partitions below min.insync.replicas: healthcare.x-0"
    )
    monkeypatch.setattr(health, "restart_blockers", lambda admin, node, min_isr: [])
    assert restarts.restart_refusal(lab, "plaintext", "lab1") is None


class _PhaseFile:
    """A host's session as recorded_phase uses it: the security-phase file's text."""

    def __init__(self, phase: str, asked: list[str], name: str) -> None:
        self.phase, self.asked, self.name = phase, asked, name

    def __enter__(self) -> _PhaseFile:
        self.asked.append(self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run_argv(self, argv, timeout=60, check=False):
        return types.SimpleNamespace(stdout=self.phase + "\n")


@pytest.mark.parametrize(
    ("phases", "expected", "asks_brokers"),
    [
        ({"lab1": "plaintext", "lab2": "secured", "lab3": "secured"}, "plaintext", False),
        ({"lab1": "secured", "lab2": "secured", "lab3": "secured", "lab4": "listeners"}, "listeners", True),
        ({name: "secured" for name in ("lab1", "lab2", "lab3", "lab4", "lab5")}, "secured", True),
    ],
)
def test_recorded_phase_asks_the_brokers_only_when_the_controllers_do_not_settle_it(
    monkeypatch, phases, expected, asks_brokers
):
    lab = load_environment("lab")
    brokers = [
        lab.hosts[0].model_copy(update={"name": name, "roles": ["broker"], "ssh_conn_id": f"ssh_{name}"})
        for name in ("lab4", "lab5")
    ]
    environment = lab.model_copy(update={"hosts": [*lab.hosts, *brokers]})
    asked: list[str] = []
    monkeypatch.setattr(
        fleet,
        "session",
        lambda env, host: _PhaseFile(phases.get(host.name, "secured"), asked, host.name),
    )
    assert fleet.recorded_phase(environment) == expected
    assert ({"lab4", "lab5"} <= set(asked)) is asks_brokers
    assert {"lab1", "lab2", "lab3"} <= set(asked)


class _LocalSession:
    """A host session that runs each command line here, as the host's shell would (``sh -c LINE``)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _run(self, line: str, check: bool) -> types.SimpleNamespace:
        self.lines.append(line)
        done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=check, timeout=30)
        return types.SimpleNamespace(stdout=done.stdout)

    def run_command(self, command, timeout=60, check=False):
        return self._run(command_line(command), check)

    def run_argv(self, argv, timeout=60, check=False):
        return self._run(command_line(argv), check)


def test_one_round_trip_observes_the_host_and_who_occupies_its_places(tmp_path):
    marker = preconditions.MANAGED_MARKER
    ours, foreign = tmp_path / "ours.properties", tmp_path / "foreign.properties"
    ours.write_text(f"# {marker}\nx=1\n")
    foreign.write_text("# someone else's\n")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        state = desired.HostState(
            host="local",
            service_user="kafka",
            directories=(),
            installs=(),
            files=tuple(desired.ManagedFile(str(p), f"# {marker}\nx=2\n") for p in (ours, foreign)),
            services=(),
            ports=((port, "kafka"),),
        )
        session = _LocalSession()
        observed, contents, occupancy = hostops.observe(session, state)
    assert observed.files[str(ours)] != state.files[0].digest  # differs: its text is fetched
    assert contents == {str(ours): f"# {marker}\nx=1\n", str(foreign): "# someone else's\n"}
    assert occupancy.markers == {str(ours): "marked", str(foreign): "unmarked"}
    assert list(occupancy.listeners) == [port]
    assert len(session.lines) == 3  # the observation with its preconditions, then each differing file


def test_an_archive_rebuilt_under_the_same_name_is_installed_again(tmp_path):
    from event_broker_rollout.hosts.desired import Install

    archive = tmp_path / "demo-1.0.tgz"
    archive.write_bytes(b"first build")
    spec = Install("demo", archive, "/opt/demo", "demo-1.0", ())
    first = spec.marker
    assert first.startswith("demo-1.0.tgz@sha256:") and " " not in first  # one word in the observation
    archive.write_bytes(b"second build, same version")
    assert spec.marker != first
    # the build's sidecar, when it names this archive, spares hashing it
    (tmp_path / "demo-1.0.tgz.sha256").write_text(f"{'a' * 64}  demo-1.0.tgz\n")
    assert spec.marker == f"demo-1.0.tgz@sha256:{'a' * 64}"
