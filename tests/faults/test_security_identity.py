"""Who the secured cluster takes a connection for, and where SCRAM credentials travel.

The security migration from plaintext sends no SCRAM credential to the PLAINTEXT listener. A SCRAM upsert (AlterUserScramCredentials) carries the salted password, enough to log in as that user.
While the stage migrates a plaintext cluster, every Kafka request this machine sends to the lab's
PLAINTEXT port is read off the lab bridge (each TCP stream followed from its SYN and cut into Kafka
request frames); the test asserts none was a SCRAM upsert, and that the stage's own evidence names the
TLS channel each user was created over. The brokers' request log is not used: at DEBUG it writes the
salted password of every upsert into the broker log.

A cluster secured with the former certificate mapping (a node was User:<host>, in the namespace of SCRAM
users and components) moves to User:node-<host> through the security stage's gated rolling restart,
the canary losing nothing, although nodes on either mapping serve side by side meanwhile.
"""

from __future__ import annotations

import shlex
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from event_broker_rollout.hosts.listeners import PRINCIPAL_RULES
from tests.conftest import lab_ssh, needs_root, run_stage
from tests.faults.conftest import SERVICE, recorded_phases, wait_until_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.lab, needs_root()]

BRIDGE = "ebrlab0"  # lab/lab.sh: every lab host's link, and this machine's address 10.77.0.1
PLAINTEXT_PORT = 9092
INTERNAL_PORT = 9095
ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33  # Linux: a receive buffer above rmem_max (root), so a busy moment drops nothing
SYN = 0x02
SEQUENCE_SPACE = 2**32
# Kafka API keys (the first field of every request after its size).
METADATA = 3
ALTER_USER_SCRAM_CREDENTIALS = 51
NODES = {"lab1": "10.77.0.11", "lab2": "10.77.0.12", "lab3": "10.77.0.13"}
SERVER_PROPERTIES = "/etc/kafka/server.properties"
FORMER_RULES = "RULE:^CN=([^,]+)$/$1/,DEFAULT"
FORMER_SUPER_USERS = "User:lab1;User:lab2;User:lab3;User:admin"
NODE_SUPER_USERS = "User:node-lab1;User:node-lab2;User:node-lab3;User:admin"


@dataclass
class TcpStream:
    """One client-to-broker byte stream, followed in sequence order from its SYN."""

    next_sequence: int
    buffer: bytes = b""
    broken: bool = False  # a segment the capture missed: what follows cannot be framed

    def feed(self, sequence: int, payload: bytes) -> list[int]:
        """The API keys of the requests this segment completes."""
        ahead = (sequence - self.next_sequence) % SEQUENCE_SPACE
        if self.broken or (0 < ahead < SEQUENCE_SPACE // 2):
            self.broken = True
            return []
        behind = (self.next_sequence - sequence) % SEQUENCE_SPACE
        if behind >= len(payload):
            return []  # a retransmission of bytes already read
        fresh = payload[behind:]
        self.next_sequence = (self.next_sequence + len(fresh)) % SEQUENCE_SPACE
        self.buffer += fresh
        keys = []
        while len(self.buffer) >= 6:
            size = int.from_bytes(self.buffer[:4], "big")
            if len(self.buffer) < 4 + size:
                break
            keys.append(int.from_bytes(self.buffer[4:6], "big"))
            self.buffer = self.buffer[4 + size :]
        return keys


@dataclass
class PlaintextRequests:
    """Kafka requests sent to ``port`` across the lab bridge while it runs (a raw packet socket, root)."""

    port: int
    api_keys: Counter[int] = field(default_factory=Counter)
    streams: dict[tuple[bytes, int, bytes], TcpStream] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self._socket.bind((BRIDGE, 0))
        self._socket.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._capture, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._socket.close()

    def broken_streams(self) -> int:
        return sum(stream.broken for stream in self.streams.values())

    def _capture(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._socket.recv(262144)
            except TimeoutError:
                continue
            self._packet(frame)

    def _packet(self, frame: bytes) -> None:
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":  # IPv4 only: the lab has no IPv6
            return
        ip = frame[14:]
        if ip[9] != 6:  # TCP
            return
        header = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big") or len(ip)
        tcp = ip[header:total]
        if len(tcp) < 20 or int.from_bytes(tcp[2:4], "big") != self.port:
            return
        key = (ip[12:16], int.from_bytes(tcp[0:2], "big"), ip[16:20])
        sequence = int.from_bytes(tcp[4:8], "big")
        if tcp[13] & SYN:
            self.streams[key] = TcpStream((sequence + 1) % SEQUENCE_SPACE)
            return
        payload = tcp[(tcp[12] >> 4) * 4 :]
        stream = self.streams.get(key)
        if stream is not None and payload:  # a connection older than the capture is not followed
            self.api_keys.update(stream.feed(sequence, payload))


def test_no_scram_credential_reaches_the_plaintext_listener_during_the_migration(
    plaintext_cluster: None,
) -> None:
    capture = PlaintextRequests(PLAINTEXT_PORT)
    try:
        proc, report = run_stage("security", {"gate_settle_seconds": 5})
    finally:
        capture.stop()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report is not None and set(recorded_phases().values()) == {"secured"}

    # The capture saw the rollout speak Kafka on the PLAINTEXT port, whole: its verdict counts.
    assert capture.api_keys[METADATA] > 0, capture.api_keys
    assert capture.broken_streams() == 0, f"{capture.broken_streams()} of {len(capture.streams)} streams"
    assert capture.api_keys[ALTER_USER_SCRAM_CREDENTIALS] == 0, capture.api_keys

    created: list[dict[str, Any]] = [
        r for r in report["results"] if r["id"].startswith("scram.user[") and r["status"] == "changed"
    ]
    assert {r["id"] for r in created} >= {"scram.user[admin]", "scram.user[ebr-probe]"}, created
    for result in created:
        assert result["observed"]["protocol"] == "SSL", result
        assert all(entry.endswith(f":{INTERNAL_PORT}") for entry in result["observed"]["bootstrap"]), result


def identity_settings(address: str) -> dict[str, str]:
    text = lab_ssh(
        address, f"grep -E '^(ssl.principal.mapping.rules|super.users)=' {SERVER_PROPERTIES}"
    ).stdout
    return dict(line.split("=", 1) for line in text.splitlines())


def test_a_cluster_secured_with_the_former_mapping_moves_to_node_principals(security_ready: dict) -> None:
    # The cluster as the former rollout secured it: every node restarted, one at a time, on the former mapping.
    former = [
        f"s|^ssl.principal.mapping.rules=.*|ssl.principal.mapping.rules={FORMER_RULES}|",
        f"s|^super.users=.*|super.users={FORMER_SUPER_USERS}|",
    ]
    edit = " ".join(["sed", "-i", *(f"-e {shlex.quote(e)}" for e in former), SERVER_PROPERTIES])
    for address in NODES.values():
        assert lab_ssh(address, edit).returncode == 0
        restarted = lab_ssh(address, f"{SERVICE} restart kafka", timeout=300)
        assert restarted.returncode == 0, restarted.stderr
        wait_until_healthy()
        assert identity_settings(address) == {
            "ssl.principal.mapping.rules": FORMER_RULES,
            "super.users": FORMER_SUPER_USERS,
        }

    started = time.time()
    proc, report = run_stage("security", {"gate_settle_seconds": 5})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report is not None
    canary = next(r for r in report["results"] if r["id"] == "canary.zero_loss")
    assert canary["status"] == "pass", canary
    for address in NODES.values():
        assert identity_settings(address) == {
            "ssl.principal.mapping.rules": PRINCIPAL_RULES,
            "super.users": NODE_SUPER_USERS,
        }
        uptime = float(lab_ssh(address, f"ps -o etimes= -p $({SERVICE} pid kafka)").stdout.strip())
        assert time.time() - uptime > started, (
            f"{address}: the broker runs a configuration it did not restart for"
        )
    assert set(recorded_phases().values()) == {"secured"}
