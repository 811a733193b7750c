"""Values that try to run a command, sent to the real lab hosts (no mocks): they arrive as text.

Config validation would refuse these values, so the test hands them straight to the read-only steps (the
infrastructure plan's observation, the compliance stage's host-file facts), as an unvalidated value would
reach them. Before commands were argument lists, such a data dir created its marker as root on every host.
The lab may or may not be rolled out: observing works either way.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from event_broker_devtools.lab_connections import connections_file
from event_broker_rollout.compliance.facts import host_facts
from event_broker_rollout.config.environment import Environment, load_environment
from event_broker_rollout.config.policy import HostFile
from event_broker_rollout.hosts.fleet import plan_environment
from tests.conftest import lab_ssh, needs_root

pytestmark = [pytest.mark.integration, pytest.mark.lab, needs_root(), pytest.mark.timeout(300)]


@pytest.fixture
def lab_connections(lab_hosts: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The lab's SSH connections, where Airflow's hooks look first (AIRFLOW_CONN_<ID> variables)."""
    for conn_id, connection in json.loads(connections_file().read_text()).items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return lab_hosts


@pytest.fixture
def marker(lab_connections: dict) -> Iterator[str]:
    path = f"/tmp/ebr-marker-{uuid.uuid4().hex}"
    yield path
    for host in lab_connections["hosts"]:
        lab_ssh(host["address"], f"rm -f -- {path}")


def hostile_lab(marker: str) -> Environment:
    """The lab with data dirs and an install folder that would each create ``marker`` if a shell ran them."""
    lab = load_environment("lab")
    data_dirs = [
        *lab.kafka.data_dirs,
        f"/var/lib/kafka/data$(touch${{IFS}}{marker})",
        f"/var/lib/kafka/d`touch${{IFS}}{marker}`",
        f"/var/lib/kafka/d;touch${{IFS}}{marker}",
    ]
    return lab.model_copy(
        update={
            "kafka": lab.kafka.model_copy(update={"data_dirs": data_dirs}),
            "distribution": lab.distribution.model_copy(
                update={"install_dir": f"/opt/kafka$(touch${{IFS}}{marker})"}
            ),
        }
    )


def markers_found(lab: dict, marker: str) -> list[str]:
    found = []
    for host in lab["hosts"]:
        result = lab_ssh(host["address"], f"test -e {marker}")
        assert result.returncode in (0, 1), result.stderr
        if result.returncode == 0:
            found.append(host["name"])
    return found


def test_a_hostile_data_dir_is_observed_on_every_host_and_never_run(
    lab_connections: dict, marker: str
) -> None:
    environment = hostile_lab(marker)
    plans = plan_environment(environment)
    assert sorted(plans) == sorted(h.name for h in environment.hosts)
    for name, plan in plans.items():
        assert "error" not in plan, f"{name}: {plan.get('error')}"
        kafka_host = {"broker", "controller"} & set(environment.host(name).roles)
        if kafka_host:
            # The hostile folders were looked at (as folders that are not there), not run.
            formats = {c["target"] for c in plan["changes"] if c["kind"] == "format"}
            assert set(environment.kafka.data_dirs[1:]) <= formats
    assert markers_found(lab_connections, marker) == []


def test_a_hostile_host_file_path_is_checked_as_text(lab_connections: dict, marker: str) -> None:
    environment = load_environment("lab")
    files = [
        HostFile.model_construct(
            path=f"/etc/kafka/server.properties$(touch${{IFS}}{marker})",
            kind="config",
            roles=["broker"],
            max_mode="0640",
            owner=None,
            scan_for_passwords=True,
            allowed_password_settings=[f"x$(touch${{IFS}}{marker})"],
            registry_flavor=None,
        )
    ]
    facts = host_facts(environment.host("lab1"), files)
    assert facts.error is None
    assert facts.files == {files[0].path: None}  # no such file: reported absent
    assert markers_found(lab_connections, marker) == []


def test_a_secret_written_to_a_lab_host_is_0600_owned_and_leaves_no_temp_file(lab_connections: dict) -> None:
    """The real SFTP path of every managed file: temp file 0600, owner set, renamed; overwrite keeps it so."""
    from event_broker_rollout.hosts.remote import TEMP_SUFFIX, RemoteHost

    lab1 = next(h for h in lab_connections["hosts"] if h["name"] == "lab1")
    folder = f"/tmp/ebr-write-{uuid.uuid4().hex}"
    environment = load_environment("lab")
    with RemoteHost.from_conn_id("lab1", environment.host("lab1").ssh_conn_id) as remote:
        try:
            remote.run_argv(["mkdir", "--", folder], check=True)
            target = f"{folder}/node.key"
            for content in ("first\n", "second $(touch x) `touch x`\n"):
                remote.write_file(target, content, mode="0600", owner="nobody")
                stat = remote.run_argv(["stat", "-c", "%a %U", "--", target], check=True).stdout.split()
                assert stat == ["600", "nobody"]
                assert remote.run_argv(["cat", "--", target], check=True).stdout == content
            listing = remote.run_argv(["ls", "-A", "--", folder], check=True).stdout.split()
            assert listing == ["node.key"] and not any(name.endswith(TEMP_SUFFIX) for name in listing)
        finally:
            lab_ssh(lab1["address"], f"rm -rf -- {folder}")


def test_host_changes_run_as_argument_lists_on_a_lab_host(lab_connections: dict, tmp_path) -> None:
    """Install, directories, file writes with backup and restore, on lab1 in a scratch folder (a hostile
    directory name among them): what the infrastructure stage does to a host, with no service touched."""
    import tarfile

    from event_broker_rollout.hosts import operations as hostops
    from event_broker_rollout.hosts.desired import HostState, Install, ManagedFile, backup_path
    from event_broker_rollout.hosts.plan import Change
    from event_broker_rollout.hosts.remote import RemoteHost

    lab1 = next(h for h in lab_connections["hosts"] if h["name"] == "lab1")
    base = f"/tmp/ebr-hostops-{uuid.uuid4().hex}"
    marker = f"{base}-marker"
    (tmp_path / "demo-1.0" / "bin").mkdir(parents=True)
    (tmp_path / "demo-1.0" / "bin" / "demo").write_text("#!/bin/sh\n")
    archive = tmp_path / "demo-1.0.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "demo-1.0", arcname="demo-1.0")
    spec = Install("demo", archive, f"{base}/opt", "demo-1.0", ())
    config = f"{base}/etc/demo.conf"
    state = HostState(
        host="lab1",
        service_user="nobody",
        directories=((f"{base}/etc", "nobody"), (f"{base}/data$(touch${{IFS}}{marker})", "root")),
        installs=(spec,),
        files=(ManagedFile(config, "A=1\n", mode="0640", owner="nobody"),),
        services=(),
    )
    change = Change("lab1", "file", config)
    environment = load_environment("lab")
    with RemoteHost.from_conn_id("lab1", environment.host("lab1").ssh_conn_id) as remote:

        def sh(*argv: str) -> str:
            return remote.run_argv(list(argv), check=True).stdout

        try:
            hostops.install(remote, spec)
            hostops.install(remote, spec)  # already unpacked: only `current` is pointed at it again
            assert sh("readlink", "-f", "--", spec.current_link).strip() == spec.target
            assert sh("cat", "--", f"{spec.target}/.ebr-installed") == spec.marker + "\n"
            assert spec.marker.startswith("demo-1.0.tgz@sha256:")
            assert sh("ls", "-A", "--", spec.base_dir).split() == ["current", "demo-1.0"]

            hostops.ensure_directories(remote, state)
            assert sh("stat", "-c", "%U", "--", f"{base}/etc").strip() == "nobody"
            hostops.write_files(remote, state, [change])
            assert sh("stat", "-c", "%a %U", "--", config).split() == ["640", "nobody"]
            rewritten = HostState(
                **{**state.__dict__, "files": (ManagedFile(config, "A=2\n", owner="nobody"),)}
            )
            written: list[str] = []
            with pytest.raises(RuntimeError), hostops.restoring_on_failure(remote, written):
                written += hostops.write_files(remote, rewritten, [change])
                assert sh("cat", "--", config) == "A=2\n"
                assert sh("cat", "--", backup_path(config)) == "A=1\n"
                raise RuntimeError("a later step failed")
            assert sh("cat", "--", config) == "A=1\n"  # the previous file is back
            observed, _, _ = hostops.observe(remote, state)
            assert observed.files == {config: state.files[0].digest}
            assert observed.installs["demo"] == (spec.marker, spec.target)
            assert not [
                name for name in sh("ls", "-A", "--", f"{base}/etc").split() if name.endswith(".ebr-tmp")
            ]
        finally:
            lab_ssh(lab1["address"], f"rm -rf -- {base}")
    assert markers_found(lab_connections, marker) == []
