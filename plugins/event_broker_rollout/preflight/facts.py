"""Host facts: parsed from the output of ``include/scripts/collect_host_facts.sh``.

Parsing is separate from collecting so the checks can be unit-tested on recorded outputs of real hosts.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from event_broker_rollout import paths
from event_broker_rollout.config.environment import Environment
from event_broker_rollout.hosts.shell import script

FACTS_SCRIPT = paths.INCLUDE_DIR / "scripts" / "collect_host_facts.sh"


@dataclass(frozen=True)
class Disk:
    directory: str
    mount_point: str
    size_gb: float
    available_gb: float
    source: str
    rotational: bool | None  # None when the kernel does not say (e.g. a network or overlay mount)


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    process: str  # "" when ss could not name it (not root)


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    os_id: str
    os_id_like: tuple[str, ...]
    os_version: str
    os_pretty: str
    vcpus: int
    memory_total_gb: float
    memory_available_gb: float
    disks: tuple[Disk, ...]
    java_version: str | None
    listeners: tuple[Listener, ...]
    service_user_exists: bool
    nofile: int | None
    swappiness: int | None
    max_map_count: int | None
    interface_addresses: tuple[str, ...]
    forward: dict[str, str] = field(default_factory=dict)  # name -> address ("" if unresolved)
    reverse: dict[str, str] = field(default_factory=dict)  # address -> name ("" if unresolved)
    tools: dict[str, bool] = field(default_factory=dict)
    docker_version: str | None = None
    kubernetes_version: str | None = None
    installed_kafka_clients: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostFacts:
        values = dict(data)
        values["disks"] = tuple(Disk(**d) for d in data["disks"])
        values["listeners"] = tuple(Listener(**item) for item in data["listeners"])
        for key in ("os_id_like", "interface_addresses"):
            values[key] = tuple(data[key])
        return cls(**values)


def facts_command(environment: Environment, host_roles: list[str], mode: str) -> tuple[str, ...]:
    """The remote command: the script run by ``sh -c``, with its inputs as environment variables (``env``)."""
    data_dirs = environment.kafka.data_dirs if {"broker", "controller"} & set(host_roles) else []
    env = {
        "EBR_DATA_DIRS": " ".join(data_dirs),
        "EBR_SERVICE_USER": environment.kafka.service_user,
        "EBR_JAVA_HOME": environment.distribution.java_home or "",
        "EBR_NAMES": " ".join(h.name for h in environment.hosts),
        "EBR_ADDRESSES": " ".join(str(h.address) for h in environment.hosts),
        "EBR_MODE": mode,
        "EBR_INSTALL_DIR": environment.distribution.install_dir,
    }
    return ("env", *(f"{key}={value}" for key, value in env.items()), *script(FACTS_SCRIPT.read_text()))


def split_sections(output: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("### "):
            current = sections.setdefault(line[4:].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


def _key_values(text: str, separator: str = "=") -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if separator in line:
            key, _, value = line.partition(separator)
            values[key.strip()] = value.strip().strip('"')
    return values


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


# ``JAVA_VERSION="17.0.15"`` from the JDK's release file, or ``openjdk version "17.0.15"`` from ``java -version``
_JAVA_VERSION = re.compile(r'(?:^JAVA_VERSION=| version )"([^"]+)"', re.MULTILINE)


def parse_java_version(text: str) -> str | None:
    match = _JAVA_VERSION.search(text)
    return match.group(1) if match else None


def java_major(version: str) -> int:
    """``1.8.0_392`` -> 8, ``17.0.15`` -> 17, ``21`` -> 21."""
    parts = version.split(".")
    return int(parts[1]) if parts[0] == "1" and len(parts) > 1 else int(re.sub(r"\D.*", "", parts[0]))


def _parse_disk(directory: str, text: str) -> Disk:
    values = _key_values(text)
    df_line = next(
        (line for line in text.splitlines() if line.startswith("/") or (" " in line and "=" not in line)), ""
    )
    fields = df_line.split()
    # df -Pk: Filesystem 1024-blocks Used Available Capacity Mounted-on
    size_kb = int(fields[1]) if len(fields) >= 6 else 0
    available_kb = int(fields[3]) if len(fields) >= 6 else 0
    mount_point = fields[5] if len(fields) >= 6 else values.get("probe", directory)
    rotational = values.get("rotational")
    return Disk(
        directory=directory,
        mount_point=mount_point,
        # Disks are sold in decimal gigabytes: a "100 GB SSD" holds 100e9 bytes (93 GiB).
        size_gb=round(size_kb * 1024 / 1e9, 1),
        available_gb=round(available_kb * 1024 / 1e9, 1),
        source=values.get("source", ""),
        rotational=None if rotational in (None, "") else rotational == "1",
    )


_SS_PROCESS = re.compile(r'users:\(\("([^"]+)"')


def _parse_listeners(text: str) -> tuple[Listener, ...]:
    listeners = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        local = fields[3]
        address, _, port = local.rpartition(":")
        if not port.isdigit():
            continue
        process = _SS_PROCESS.search(line)
        listeners.append(Listener(address.strip("[]"), int(port), process.group(1) if process else ""))
    return tuple(listeners)


def _parse_addresses(text: str) -> tuple[str, ...]:
    found = re.findall(r"\binet6?\s+([0-9a-fA-F:.]+)/\d+", text)
    return tuple(found)


def _pairs(text: str) -> dict[str, str]:
    pairs = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            pairs[key] = value.strip()
    return pairs


def parse_facts(output: str) -> HostFacts:
    sections = split_sections(output)
    os_release = _key_values(sections.get("os_release", ""))
    meminfo = {k: v.split()[0] for k, v in _key_values(sections.get("meminfo", ""), ":").items()}
    limits = _key_values(sections.get("limits", ""))
    sysctl = _key_values(sections.get("sysctl", ""))
    disks = tuple(
        _parse_disk(name.removeprefix("disk "), text)
        for name, text in sections.items()
        if name.startswith("disk ")
    )
    installed = sections.get("installed", "")
    match = re.search(r"kafka-clients-([\w.\-]+)\.jar", installed)
    docker = sections.get("docker")
    kubernetes = sections.get("kubernetes")
    kube_match = re.search(r'"serverVersion":\s*{[^}]*"gitVersion":\s*"v?([\d.]+)', kubernetes or "", re.S)
    mem_kb = _int(meminfo.get("MemTotal")) or 0
    available_kb = _int(meminfo.get("MemAvailable")) or 0
    return HostFacts(
        hostname=sections.get("hostname", "").strip(),
        os_id=os_release.get("ID", "").lower(),
        os_id_like=tuple(os_release.get("ID_LIKE", "").lower().split()),
        os_version=os_release.get("VERSION_ID", ""),
        os_pretty=os_release.get("PRETTY_NAME", ""),
        vcpus=_int(sections.get("nproc", "").strip()) or 0,
        memory_total_gb=round(mem_kb / 1024 / 1024, 1),
        memory_available_gb=round(available_kb / 1024 / 1024, 1),
        disks=disks,
        java_version=parse_java_version(sections.get("java", "")),
        listeners=_parse_listeners(sections.get("listening", "")),
        service_user_exists=limits.get("user", "absent") != "absent",
        nofile=_int(limits.get("nofile")),
        swappiness=_int(sysctl.get("vm.swappiness")),
        max_map_count=_int(sysctl.get("vm.max_map_count")),
        interface_addresses=_parse_addresses(sections.get("addresses", "")),
        forward=_pairs(sections.get("resolve_forward", "")),
        reverse=_pairs(sections.get("resolve_reverse", "")),
        tools={k: v == "yes" for k, v in _key_values(sections.get("tools", "")).items()},
        docker_version=docker.splitlines()[0].strip() if docker and re.match(r"^\d", docker) else None,
        kubernetes_version=kube_match.group(1) if kube_match else None,
        installed_kafka_clients=match.group(1) if match else None,
    )
