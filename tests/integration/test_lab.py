"""The local multi-host lab (lab/lab.sh) against the real machine: no mocks.

Brings up 9 hosts (3 first, then growing to 9), checks SSH with host-key checking on, per-host
filesystems, lab-to-lab traffic, cut/heal, idempotent `up`, and that `down` leaves nothing behind.
Needs root. Leaves the lab DOWN (other tests bring it up with 3 hosts themselves).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko
import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_SH = REPO / "lab" / "lab.sh"
STATE = Path(os.environ.get("LAB_STATE", "/var/lib/event-broker-lab"))
N_HOSTS = 9

pytestmark = [
    pytest.mark.integration,
    pytest.mark.lab,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="the lab needs root (network namespaces, veths, a bridge, bind mounts, one sshd per host)",
    ),
    pytest.mark.skipif(
        not Path("/usr/sbin/sshd").exists() or shutil.which("ip") is None or shutil.which("unshare") is None,
        reason="lab needs /usr/sbin/sshd (openssh-server), ip (iproute2) and unshare (util-linux)",
    ),
]


def lab_sh(*args: str, check: bool = True, env: dict[str, str] | None = None, timeout: int = 90):
    proc = subprocess.run(
        ["bash", str(LAB_SH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "LAB_STATE": str(STATE), **(env or {})},
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"lab.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def read_lab() -> dict:
    return json.loads((STATE / "lab.json").read_text())


def status() -> dict[str, dict]:
    return {h["name"]: h for h in json.loads(lab_sh("status", "--json").stdout)["hosts"]}


def host(lab: dict, name: str) -> dict:
    return next(h for h in lab["hosts"] if h["name"] == name)


def ssh_client(lab: dict, address: str, known_hosts: str | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts or lab["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        address,
        port=22,
        username="root",
        key_filename=lab["ssh_key"],
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
        banner_timeout=10,
        auth_timeout=10,
    )
    return client


def ssh_run(lab: dict, address: str, command: str, timeout: float = 30) -> tuple[int, str, str]:
    client = ssh_client(lab, address)
    try:
        _, out, err = client.exec_command(command, timeout=timeout)
        stdout, stderr = out.read().decode(), err.read().decode()
        return out.channel.recv_exit_status(), stdout, stderr
    finally:
        client.close()


def lab_netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("ebr-lab")]


def lab_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    names = [line.split(": ")[1].split("@")[0] for line in out.splitlines()]
    return [n for n in names if n == "ebrlab0" or n.startswith("ebrv")]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and proc.name != str(os.getpid()):
            found.append(f"{proc.name}: {cmdline}")
    return found


def pid_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a reaped-later zombie is dead


@pytest.fixture(scope="module")
def lab():
    lab_sh("down")
    try:
        t0 = time.monotonic()
        lab_sh("up", "3")
        small = read_lab()
        assert [h["name"] for h in small["hosts"]] == ["lab1", "lab2", "lab3"]
        lab1_pid = status()["lab1"]["sshd_pid"]
        lab_sh("up", str(N_HOSTS))
        print(f"up 3 + up {N_HOSTS}: {time.monotonic() - t0:.1f}s")
        data = read_lab()
        data["_lab1_sshd_pid_after_up3"] = lab1_pid
        yield data
    finally:
        lab_sh("down", check=False)


def test_lab_json_and_keys(lab):
    assert lab["subnet"] == "10.77.0.0/24"
    assert lab["bridge"] == "ebrlab0"
    assert lab["gateway"] == "10.77.0.1"
    assert lab["state_dir"] == str(STATE)
    assert [h["name"] for h in lab["hosts"]] == [f"lab{i}" for i in range(1, N_HOSTS + 1)]
    for i, h in enumerate(lab["hosts"], start=1):
        assert h["address"] == f"10.77.0.{10 + i}"
        assert h["netns"] == f"ebr-lab{i}"
        assert h["host_key"].startswith("ssh-ed25519 AAAA")
        assert Path(h["root"], "opt").is_dir()
    assert (os.stat(lab["ssh_key"]).st_mode & 0o777) == 0o600
    known = Path(lab["known_hosts"]).read_text().splitlines()
    for h in lab["hosts"]:
        assert f"{h['name']},{h['address']} {h['host_key']}" in known
    # growing 3 -> 9 left the first hosts alone
    assert status()["lab1"]["sshd_pid"] == lab["_lab1_sshd_pid_after_up3"]


def test_every_host_answers_ssh_with_host_key_checking(lab):
    def check(h):
        rc, out, err = ssh_run(
            lab,
            h["address"],
            "hostname; ip -4 -o addr show dev eth0; getent hosts lab2; getent hosts 10.77.0.12",
        )
        return h, rc, out, err

    with ThreadPoolExecutor(max_workers=N_HOSTS) as pool:
        for h, rc, out, err in pool.map(check, lab["hosts"]):
            assert rc == 0, err
            lines = out.splitlines()
            assert lines[0] == h["name"]
            assert f"inet {h['address']}/24" in lines[1]
            assert lines[2].split() == ["10.77.0.12", "lab2"]
            assert lines[3].split() == ["10.77.0.12", "lab2"]


def test_host_key_checking_is_really_on(lab, tmp_path):
    lab1, lab2 = host(lab, "lab1"), host(lab, "lab2")
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{lab1['address']} {lab2['host_key']}\n")  # lab2's key claimed for lab1's address
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_client(lab, lab1["address"], known_hosts=str(wrong))
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        ssh_client(lab, lab1["address"], known_hosts=str(empty))


def test_hosts_have_their_own_filesystems(lab):
    name = f"lab-test-{uuid.uuid4().hex}"
    lab1, lab2 = host(lab, "lab1"), host(lab, "lab2")
    rc, _, err = ssh_run(lab, lab1["address"], f"echo hello > /opt/{name} && echo k > /var/lib/kafka/{name}")
    assert rc == 0, err
    try:
        rc, out, _ = ssh_run(lab, lab1["address"], f"cat /opt/{name}")
        assert (rc, out) == (0, "hello\n")
        rc, _, _ = ssh_run(lab, lab2["address"], f"test -e /opt/{name} || test -e /var/lib/kafka/{name}")
        assert rc != 0, "a file written on lab1 is visible on lab2"
        assert not Path("/opt", name).exists(), "a file written on lab1 leaked into the root namespace"
        assert Path(lab1["root"], "opt", name).read_text() == "hello\n"
        rc, out, _ = ssh_run(lab, lab2["address"], "cat /etc/hosts")
        for h in lab["hosts"]:
            assert f"{h['address']} {h['name']}" in out.splitlines()
    finally:
        ssh_run(lab, lab1["address"], f"rm -f /opt/{name} /var/lib/kafka/{name}")


def test_hosts_start_shells_like_a_plain_server(lab):
    """Root's start-up files on a host are the lab's, not the machine's: remote commands see the system
    PATH (Debian's python3 and java) and no version manager of the machine runs before each of them."""
    lab1 = host(lab, "lab1")
    startup = [name for name in (".bashrc", ".profile") if Path("/root", name).is_file()]
    assert startup, "the machine has no root start-up files to stand in for"
    command = f"cd && cat {' '.join(startup)} && command -v python3 && echo $PATH"
    rc, out, err = ssh_run(lab, lab1["address"], command)
    assert rc == 0, err
    *files, python, path = out.splitlines()
    assert files == ["# lab.sh: root on lab1 starts with the system defaults only"] * len(startup)
    assert python == "/usr/bin/python3"
    assert ".pyenv" not in path


def test_lab_to_lab_tcp_and_ssh(lab):
    lab1 = host(lab, "lab1")
    rc, _, err = ssh_run(lab, lab1["address"], "nc -z -w2 10.77.0.12 22")
    assert rc == 0, err
    # ssh from lab1 to lab2 by name, with the lab's known_hosts and host-key checking on
    rc, out, err = ssh_run(
        lab,
        lab1["address"],
        f"ssh -i {lab['ssh_key']} -o UserKnownHostsFile={lab['known_hosts']} -o StrictHostKeyChecking=yes"
        " -o BatchMode=yes -o ConnectTimeout=5 root@lab2 hostname",
    )
    assert (rc, out.strip()) == (0, "lab2"), err


def test_twenty_parallel_sessions(lab):
    lab1 = host(lab, "lab1")
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda i: ssh_run(lab, lab1["address"], f"sleep 1; echo {i}"), range(20)))
    assert [r[1].strip() for r in results] == [str(i) for i in range(20)]


def test_cut_times_out_and_heal_restores(lab):
    lab2, lab3 = host(lab, "lab2"), host(lab, "lab3")
    lab_sh("cut", "lab2")
    try:
        assert status()["lab2"]["link"] == "cut"
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):  # a dead link: no RST, no ICMP -> the connect times out
            socket.create_connection((lab2["address"], 22), timeout=3).close()
        elapsed = time.monotonic() - t0
        assert 2.5 < elapsed < 6, elapsed
        rc, _, _ = ssh_run(lab, host(lab, "lab1")["address"], "nc -z -w2 10.77.0.12 22")
        assert rc != 0, "lab1 still reaches the cut lab2"
        socket.create_connection((lab3["address"], 22), timeout=3).close()  # others unaffected
    finally:
        lab_sh("heal", "lab2")
    assert status()["lab2"]["link"] == "ok"
    socket.create_connection((lab2["address"], 22), timeout=3).close()
    rc, out, _ = ssh_run(lab, lab2["address"], "hostname")
    assert (rc, out.strip()) == (0, "lab2")


def test_up_twice_is_harmless(lab):
    before_status = status()
    before_known = Path(lab["known_hosts"]).read_text()
    lab_sh("up", str(N_HOSTS))
    lab_sh("up", str(N_HOSTS))
    after = read_lab()
    assert [h["host_key"] for h in after["hosts"]] == [h["host_key"] for h in lab["hosts"]]
    assert Path(lab["known_hosts"]).read_text() == before_known
    assert {n: s["sshd_pid"] for n, s in status().items()} == {
        n: s["sshd_pid"] for n, s in before_status.items()
    }
    rc, out, _ = ssh_run(lab, host(lab, "lab9")["address"], "hostname")
    assert (rc, out.strip()) == (0, "lab9")


def test_down_leaves_nothing(lab):
    # a process started over SSH that outlives the session and ignores SIGTERM (like a stuck JVM)
    lab3 = host(lab, "lab3")
    rc, out, err = ssh_run(
        lab,
        lab3["address"],
        "setsid sh -c 'trap \"\" TERM; exec sleep 600' </dev/null >/dev/null 2>&1 & echo $!",
    )
    assert rc == 0, err
    stray = int(out.strip())
    assert pid_running(stray)
    t0 = time.monotonic()
    lab_sh("down", env={"LAB_STOP_GRACE": "2"})
    print(f"down: {time.monotonic() - t0:.1f}s")
    assert lab_netns() == []
    assert lab_links() == []
    assert not pid_running(stray)
    assert processes_mentioning(str(STATE)) == []
    assert str(STATE) not in Path("/proc/self/mountinfo").read_text()
    assert read_lab()["hosts"] == []
    assert all(s["state"] == "down" for s in status().values())
    # keys survive so known_hosts stays valid for the next `up`
    assert Path(lab["ssh_key"]).exists()
    assert Path(lab["known_hosts"]).read_text().count("ssh-ed25519") >= N_HOSTS
    # down again is fine
    lab_sh("down")


def test_commands_work_on_a_machine_that_never_saw_the_lab(tmp_path):
    """A state folder that does not exist (a new machine): nothing to stop is success and creates
    nothing; `up` from it builds a fresh lab (new keys), also inside a private folder under /tmp."""
    fresh = {"LAB_STATE": str(tmp_path / "state" / "none")}
    for command in (["down"], ["down", "--purge"], ["status"], ["status", "--json"]):
        proc = lab_sh(*command, env=fresh)
        assert proc.returncode == 0, proc.stderr
        assert not (tmp_path / "state").exists(), f"lab.sh {' '.join(command)} created the state folder"
    assert json.loads(lab_sh("status", "--json", env=fresh).stdout)["hosts"] == []
    assert lab_sh("cut", "lab1", env=fresh, check=False).returncode != 0  # nothing to cut: says so

    private = Path(
        subprocess.run(["mktemp", "-d"], capture_output=True, text=True, check=True).stdout.strip()
    )
    state = private / "lab"
    try:
        lab_sh("up", "1", env={"LAB_STATE": str(state)})
        lab = json.loads((state / "lab.json").read_text())
        assert lab["ssh_key"] == str(state / "ssh" / "id_ed25519")
        assert lab["ssh_key"] != str(STATE / "ssh" / "id_ed25519")
        rc, out, _ = ssh_run(lab, host(lab, "lab1")["address"], "hostname")
        assert (rc, out.strip()) == (0, "lab1")
    finally:
        lab_sh("down", env={"LAB_STATE": str(state)}, check=False)
        shutil.rmtree(private, ignore_errors=True)
    assert lab_netns() == []
