"""Cross-host network checks: ports reachable from every other cluster host, and broker-to-broker throughput.

Reachability is tested between the hosts themselves, not only from the Airflow side: a probe listener
is opened on every free required port, then every host connects to every other host's ports. Throughput
is measured for real with iperf3 around the ring of brokers (each broker sends once and receives once, so
a few pairs are measured at once), each measurement bounded in bytes and time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from event_broker_rollout.config.environment import Environment, Host
from event_broker_rollout.evidence.results import Result, Severity, Status, check
from event_broker_rollout.hosts.parallel import in_parallel
from event_broker_rollout.hosts.remote import RemoteError, RemoteHost
from event_broker_rollout.preflight.checks import required_ports

PROBE_SECONDS = 60
CONNECT_TIMEOUT_SECONDS = 2
IPERF_PORT = 5201
# Each pair sends what the environment's bar carries in half a second: long enough for TCP to reach its
# pace on a LAN, and no more bytes than the bar asks for (a 10 Gbps bar gets 625 MB, a 1 Gbps lab 62.5 MB).
IPERF_SECONDS_AT_BAR = 0.5
IPERF_TIMEOUT_SECONDS = 15
# Around the ring each broker sends once and receives once, so pairs measured at once share no NIC; a
# few at a time keeps the load on the network (and on a one-machine lab's CPUs) bounded.
IPERF_PAIRS_AT_ONCE = 4

# One listener for all the host's probe ports. It binds them, then forks: the parent prints the server's
# pid and exits, so the command returns once every port listens (no polling, no shell); the server accepts
# and closes connections until it is killed or PROBE_SECONDS pass. A port taken meanwhile is left out (the
# connects to it then fail, as they should). ``-S``: the standard library is all it needs.
_PROBE_LISTENER = """
import os, select, socket, sys, time
address, seconds, ports = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
family = socket.AF_INET6 if ":" in address else socket.AF_INET
listening = []
for port in ports:
    s = socket.socket(family)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((address, int(port))); s.listen(128)
    except OSError:
        s.close(); continue
    listening.append(s)
server = os.fork()
if server:
    print(server)
    sys.exit(0)
os.setsid()
quiet = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(quiet, fd)
deadline = time.time() + seconds
while listening and time.time() < deadline:
    ready, _, _ = select.select(listening, [], [], 1)
    for s in ready:
        try:
            c, _ = s.accept(); c.close()
        except OSError:
            pass
"""

# Every connect of one host at once, in one process and one thread (non-blocking connects, one poll): prints
# ``<address> <port> ok|fail`` per target, in order. A shell and a timeout process per connect, or a thread
# pool, cost a many-host preflight more CPU than the connects.
_CONNECT = """
import errno, select, socket, sys, time
seconds, words = float(sys.argv[1]), sys.argv[2:]
targets = list(zip(words[0::2], words[1::2]))
answers = ["fail"] * len(targets)
pending = {}
poll = select.poll()
for index, (address, port) in enumerate(targets):
    s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    s.setblocking(False)
    try:
        started = s.connect_ex((address, int(port)))
    except OSError:
        started = -1
    if started in (0, errno.EINPROGRESS):
        pending[s.fileno()] = (index, s)
        poll.register(s, select.POLLOUT)
    else:
        s.close()
deadline = time.monotonic() + seconds
while pending and deadline > time.monotonic():
    for fd, _ in poll.poll(max(1, int((deadline - time.monotonic()) * 1000))):
        index, s = pending.pop(fd)
        poll.unregister(fd)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            answers[index] = "ok"
        s.close()
for (address, port), answer in zip(targets, answers):
    print(address, port, answer)
"""


def start_probe_command(address: str, ports: Sequence[int]) -> tuple[str, ...]:
    """Start the probe listener on these ports; prints its pid and returns once all of them listen."""
    return ("python3", "-S", "-c", _PROBE_LISTENER, address, str(PROBE_SECONDS), *map(str, ports))


def connect_command(targets: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    """One line per target: ``<address> <port> ok|fail``, each connect bounded in time."""
    pairs = [word for address, port in targets for word in (address, str(port))]
    return ("python3", "-S", "-c", _CONNECT, str(CONNECT_TIMEOUT_SECONDS), *pairs)


def parse_connect_output(text: str) -> dict[tuple[str, int], bool]:
    outcome = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            outcome[(parts[0], int(parts[1]))] = parts[2] == "ok"
    return outcome


@dataclass(frozen=True)
class Reachability:
    source: str
    target: str
    port: int
    ok: bool


def reachability_results(
    environment: Environment, matrix: Sequence[Reachability], cut_off: Sequence[str]
) -> list[Result]:
    results = []
    for target in environment.hosts:
        if target.name in cut_off:
            continue
        for port, service in sorted(required_ports(environment, target).items()):
            rows = [r for r in matrix if r.target == target.name and r.port == port]
            failed = sorted(r.source for r in rows if not r.ok)
            results.append(
                check(
                    f"net.port.reachable[{port}]",
                    not failed,
                    host=target.name,
                    observed=f"refused or timed out from {', '.join(failed)}"
                    if failed
                    else f"reachable from {len(rows)} cluster hosts",
                    expected=f"{service} port reachable from every other cluster host",
                    message=f"port {port} ({service}) from the other cluster hosts",
                    details={"sources": sorted(r.source for r in rows)},
                )
            )
    return results


def check_reachability(
    environment: Environment,
    sessions: Mapping[str, RemoteHost],
    free_ports: Mapping[str, Sequence[int]],
) -> list[Reachability]:
    """Open probes on free ports, connect from every host to every other, close the probes."""
    hosts = {h.name: h for h in environment.hosts if h.name in sessions}

    def start(name: str) -> list[str]:
        ports = free_ports.get(name, [])
        if not ports:
            return []
        output = sessions[name].run_argv(start_probe_command(str(hosts[name].address), ports), timeout=20)
        return output.stdout.split()

    probes = in_parallel(list(hosts), start)
    try:

        def probe_from(source: str) -> list[Reachability]:
            targets = [
                (str(h.address), port, h.name)
                for h in hosts.values()
                if h.name != source
                for port in required_ports(environment, h)
            ]
            output = sessions[source].run_argv(connect_command([(a, p) for a, p, _ in targets]), timeout=60)
            outcome = parse_connect_output(output.stdout)
            return [
                Reachability(source, name, port, outcome.get((address, port), False))
                for address, port, name in targets
            ]

        matrix = [row for rows in in_parallel(list(hosts), probe_from).values() for row in rows]
    finally:

        def stop(name: str) -> None:
            if probes.get(name):
                sessions[name].run_argv(["kill", *probes[name]], timeout=20)

        in_parallel(list(hosts), stop)
    return matrix


def broker_ring(brokers: Sequence[Host]) -> list[tuple[Host, Host]]:
    if len(brokers) < 2:
        return []
    return (
        [(brokers[i], brokers[(i + 1) % len(brokers)]) for i in range(len(brokers))]
        if len(brokers) > 2
        else [(brokers[0], brokers[1])]
    )


def parse_iperf_gbps(text: str) -> float:
    data = json.loads(text)
    if "error" in data:
        raise ValueError(data["error"])
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


def throughput_results(environment: Environment, sessions: Mapping[str, RemoteHost]) -> list[Result]:
    required = environment.network.broker_throughput_gbps
    pairs = [(a, b) for a, b in broker_ring(environment.brokers) if a.name in sessions and b.name in sessions]
    if not pairs:
        return [
            Result(
                id="net.throughput",
                status=Status.SKIPPED,
                message="fewer than two reachable brokers to measure between",
                severity=Severity.ADVISORY,
            )
        ]
    by_label = {f"{sender.name}->{receiver.name}": (sender, receiver) for sender, receiver in pairs}
    measured = in_parallel(
        list(by_label),
        lambda label: measure_pair(*by_label[label], sessions, required),
        at_most=IPERF_PAIRS_AT_ONCE,
    )
    return list(measured.values())


def sample_bytes(required_gbps: float) -> int:
    return math.ceil(required_gbps * 1e9 / 8 * IPERF_SECONDS_AT_BAR)


def measure_pair(sender: Host, receiver: Host, sessions: Mapping[str, RemoteHost], required: float) -> Result:
    check_id = f"net.throughput[{sender.name}->{receiver.name}]"
    sample = sample_bytes(required)
    try:
        sessions[receiver.name].run_argv(
            [
                "timeout",
                str(IPERF_TIMEOUT_SECONDS + 5),
                "iperf3",
                "-s",
                "-1",
                "-D",
                "-B",
                str(receiver.address),
                "-p",
                str(IPERF_PORT),
            ],
            timeout=20,
            check=True,
        )
        output = sessions[sender.name].run_argv(
            [
                "timeout",
                str(IPERF_TIMEOUT_SECONDS),
                "iperf3",
                "-J",
                "-c",
                str(receiver.address),
                "-p",
                str(IPERF_PORT),
                "-n",
                str(sample),
            ],
            timeout=IPERF_TIMEOUT_SECONDS + 10,
        )
        gbps = parse_iperf_gbps(output.stdout)
    except (RemoteError, ValueError, KeyError) as error:
        return Result(
            id=check_id,
            status=Status.FAIL,
            host=sender.name,
            observed=f"not measured: {error}",
            expected=f">= {required:g} Gbps",
            message="broker-to-broker throughput (iperf3)",
        )
    return check(
        check_id,
        gbps >= required,
        host=sender.name,
        observed=f"{gbps:.2f} Gbps",
        expected=f">= {required:g} Gbps",
        message=f"throughput {sender.name} -> {receiver.name} (iperf3, {sample / 1e6:g} MB)",
    )
