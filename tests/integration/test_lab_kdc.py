"""The lab's KDC on the real lab (no mocks): started for lab-kerberos, it gives a broker and a client a
ticket from their keytabs, from this machine and from inside a lab host, refuses the stale keytab,
listens on the lab's address only, and a second ``up`` changes nothing.

The lab's hosts are only brought up (idempotent), never taken down here: the fixture stops the KDC alone.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from event_broker_devtools import lab_kdc
from event_broker_rollout.cluster import kerberos
from event_broker_rollout.config.environment import load_environment
from event_broker_rollout.config.keytabs import keytab_problems
from tests.conftest import REPO, needs_root

pytestmark = [pytest.mark.integration, pytest.mark.lab, needs_root()]

ENVIRONMENT = "lab-kerberos"
LAB1_NETNS = "ebr-lab1"  # lab.sh: host_ns 1


def devtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "event_broker_devtools.lab_kdc", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def keytab_files(folder: Path) -> dict[Path, tuple[bytes, int]]:
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in sorted(folder.rglob("*.keytab"))}


@pytest.fixture(scope="module")
def keytab_dir() -> Iterator[Path]:
    """The KDC up for lab-kerberos on the lab's bridge; stopped after (the lab stays as it was)."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    subprocess.run(
        ["bash", str(REPO / "lab" / "lab.sh"), "up", "3"], check=True, capture_output=True, timeout=180
    )
    try:
        devtool("up", ENVIRONMENT)
        kerberos = lab_kdc.kerberos_of(load_environment(ENVIRONMENT))
        assert kerberos is not None
        yield Path(kerberos.keytab_dir)
    finally:
        devtool("down")


def kinit(
    tmp_path: Path, keytab: Path, principal: str, netns: str | None = None
) -> subprocess.CompletedProcess:
    """kinit then klist, as a client of the lab: the lab's krb5.conf, a cache of the test's own."""
    environment = {**os.environ, "KRB5_CONFIG": str(lab_kdc.krb5_conf()), "KRB5CCNAME": f"FILE:{tmp_path}/cc"}
    prefix = ["ip", "netns", "exec", netns] if netns else []
    command = f"kinit -k -t '{keytab}' '{principal}' && klist"
    return subprocess.run(
        [*prefix, "sh", "-c", command],
        capture_output=True,
        text=True,
        env=environment,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("keytab", "principal"),
    [("brokers/lab10.keytab", "kafka/10.77.0.20@EBR.LAB"), ("clients/admin.keytab", "admin@EBR.LAB")],
)
def test_a_broker_and_a_client_get_a_ticket_from_their_keytab(keytab_dir, tmp_path, keytab, principal):
    proc = kinit(tmp_path, keytab_dir / keytab, principal)
    assert proc.returncode == 0, proc.stderr
    assert f"Default principal: {principal}" in proc.stdout
    assert "krbtgt/EBR.LAB@EBR.LAB" in proc.stdout


def test_a_lab_host_gets_a_ticket_from_inside_its_namespace(keytab_dir, tmp_path):
    proc = kinit(tmp_path, keytab_dir / "brokers" / "lab11.keytab", "kafka/10.77.0.21@EBR.LAB", LAB1_NETNS)
    assert proc.returncode == 0, proc.stderr
    assert "Default principal: kafka/10.77.0.21@EBR.LAB" in proc.stdout


def test_the_stale_keytab_is_refused(keytab_dir, tmp_path):
    proc = kinit(tmp_path, keytab_dir / "clients" / f"{lab_kdc.STALE_PRINCIPAL}.keytab", "ebr-stale@EBR.LAB")
    assert proc.returncode != 0
    assert "Preauthentication failed" in proc.stderr, proc.stderr


def test_the_rollouts_own_checks_accept_the_lab_realm(keytab_dir):
    """What preflight and the security stage will ask of the realm: every keytab usable, the admin's
    ticket granted through the environment's own krb5.conf, the stale keytab refused."""
    environment = load_environment(ENVIRONMENT)
    assert keytab_problems(environment, lab_kdc.client_principals(environment)) == []
    admin = kerberos.ticket(environment, "admin")
    assert admin.granted, admin.error
    stale = kerberos.ticket(environment, lab_kdc.STALE_PRINCIPAL)
    assert not stale.granted
    assert "Preauthentication failed" in stale.error


def test_the_kdc_listens_on_the_labs_address_only(keytab_dir):
    pid = lab_kdc.running_pid()
    assert pid is not None
    sockets = subprocess.run(
        ["ip", "netns", "exec", lab_kdc.NETNS, "ss", "-H", "-lntup"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ours = [line.split() for line in sockets.splitlines() if f"pid={pid}," in line]
    assert sorted((fields[0], fields[4]) for fields in ours) == [
        ("tcp", "10.77.0.2:88"),
        ("udp", "10.77.0.2:88"),
    ]


def test_keytabs_are_private_and_a_second_up_changes_nothing(keytab_dir):
    before = keytab_files(keytab_dir)
    names = {path.relative_to(keytab_dir).as_posix() for path in before}
    assert {"brokers/lab10.keytab", "brokers/lab11.keytab", "brokers/lab12.keytab"} <= names
    assert {"clients/admin.keytab", "clients/canary.keytab", "clients/ebr-probe.keytab"} <= names
    for path in [*before, lab_kdc._check_keytab("EBR.LAB")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
    for folder in (keytab_dir, lab_kdc.state_dir()):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    pid = lab_kdc.running_pid()
    assert pid is not None

    devtool("up", ENVIRONMENT)

    assert keytab_files(keytab_dir) == before
    assert lab_kdc.running_pid() == pid
    assert "up (pid" in devtool("status").stdout
