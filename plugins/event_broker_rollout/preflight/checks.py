"""Preflight checks: plain functions over collected facts, the environment and the sizing profile.

Every result has a stable id, a severity, the observed value and the expected threshold. Minimum misses
are blocking; recommended misses and OS tuning are advisory. A check that does not apply to the chosen
deployment mode is reported as skipped, with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from event_broker_rollout.config.environment import Environment, Host, SizingProfile, SizingTier
from event_broker_rollout.evidence.results import Result, Severity, Status, check
from event_broker_rollout.hosts.preconditions import Precondition
from event_broker_rollout.hosts.tls import client_certificate_problems
from event_broker_rollout.preflight import tls_material
from event_broker_rollout.preflight.facts import HostFacts, java_major

BLOCKING = Severity.BLOCKING
ADVISORY = Severity.ADVISORY

# Supported operating systems (guide: "RHEL 8+, Ubuntu 20.04+, or similar").
SUPPORTED_OS: Mapping[str, tuple[str, tuple[int, ...]]] = {
    "rhel": ("RHEL", (8,)),
    "rocky": ("Rocky Linux", (8,)),
    "almalinux": ("AlmaLinux", (8,)),
    "ol": ("Oracle Linux", (8,)),
    "centos": ("CentOS Stream", (8,)),
    "ubuntu": ("Ubuntu", (20, 4)),
    "debian": ("Debian", (11,)),
}

# MemTotal excludes what firmware and the kernel reserve: a "16 GB" server reads about 15.5 GiB.
MEMORY_TOLERANCE = 0.95
RECOMMENDED_NOFILE = 100_000
RECOMMENDED_SWAPPINESS = 1
RECOMMENDED_MAX_MAP_COUNT = 262_144
MIN_DOCKER = (20, 10)
MIN_KUBERNETES = (1, 21)
MIN_CONFLUENT = (7, 0)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def required_java(environment: Environment) -> int:
    """Kafka 4.x and Confluent Platform 8.x need Java 17; Confluent Platform 7.x runs on 11."""
    version = version_tuple(environment.distribution.version)
    if environment.distribution.flavor == "confluent" and version and version[0] < 8:
        return 11
    if environment.distribution.flavor == "apache" and version and version[0] < 4:
        return 11
    return 17


def required_ports(environment: Environment, host: Host) -> dict[int, str]:
    listeners = environment.kafka.listeners
    ports: dict[int, str] = {}
    if "broker" in host.roles:
        ports[listeners.client_port] = "Kafka client"
    if "controller" in host.roles:
        if environment.kafka.mode == "kraft":
            ports[listeners.controller_port] = "KRaft controller"
        else:
            ports[listeners.zookeeper_port] = "ZooKeeper"
    if "schema_registry" in host.roles:
        ports[environment.schema_registry.port] = "Schema Registry"
    return ports


def _tiers(
    check_id: str,
    host: str | None,
    observed: float,
    minimum: float,
    recommended: float,
    unit: str,
    what: str,
    tolerance: float = 1.0,
) -> list[Result]:
    """A minimum (blocking) and a recommended (advisory) check of one measure."""
    note = f" (accepting {tolerance:.0%} of nominal)" if tolerance < 1 else ""
    return [
        check(
            f"{check_id}.{tier}",
            observed >= threshold * tolerance,
            host=host,
            observed=f"{observed:g} {unit}".strip(),
            expected=f">= {threshold:g} {unit}{note}".strip(),
            message=f"{what}: {observed:g} {unit}, {tier} {threshold:g}".strip(),
            severity=severity,
        )
        for tier, threshold, severity in (
            ("minimum", minimum, BLOCKING),
            ("recommended", recommended, ADVISORY),
        )
    ]


def hardware_checks(
    host: Host, facts: HostFacts, profile_name: str, profile: SizingProfile, environment: Environment
) -> list[Result]:
    minimum: SizingTier = profile.minimum
    recommended: SizingTier = profile.recommended
    results = _tiers(
        "hw.memory.total",
        host.name,
        facts.memory_total_gb,
        minimum.memory_gb,
        recommended.memory_gb,
        "GB",
        f"total memory ({profile_name} profile)",
        tolerance=MEMORY_TOLERANCE,
    )
    results += _tiers(
        "hw.vcpus",
        host.name,
        facts.vcpus,
        minimum.vcpus,
        recommended.vcpus,
        "",
        f"vCPUs ({profile_name} profile)",
    )

    # The JVMs this host will run must fit in memory the kernel can hand out now: MemAvailable counts
    # reclaimable page cache as available (cp-ansible #1014 counted it as used and failed upgrades).
    heap_gb = (
        (profile.broker_heap_mb if {"broker", "controller"} & set(host.roles) else 0)
        + (profile.registry_heap_mb if "schema_registry" in host.roles else 0)
    ) / 1024
    needed_gb = round(heap_gb * 1.5, 1)  # heap plus metaspace, threads and direct buffers
    results.append(
        check(
            "hw.memory.available",
            facts.memory_available_gb >= needed_gb,
            host=host.name,
            observed=f"{facts.memory_available_gb:g} GB available",
            expected=f">= {needed_gb:g} GB for this host's JVMs",
            message="memory available (MemAvailable, page cache counted as reclaimable)",
            severity=BLOCKING,
        )
    )

    for disk in facts.disks:
        results += [
            replace_id(r, f"{r.id}[{disk.directory}]")
            for r in _tiers(
                "hw.disk.size",
                host.name,
                disk.size_gb,
                minimum.disk_gb,
                recommended.disk_gb,
                "GB",
                f"disk for {disk.directory} on {disk.mount_point}",
            )
        ]
        free_percent = 100 * disk.available_gb / disk.size_gb if disk.size_gb else 0.0
        results += [
            replace_id(r, f"{r.id}[{disk.directory}]")
            for r in _tiers(
                "hw.disk.free",
                host.name,
                round(free_percent, 1),
                minimum.disk_free_percent,
                recommended.disk_free_percent,
                "% free",
                f"free space for {disk.directory} on {disk.mount_point} "
                f"({disk.available_gb:g} of {disk.size_gb:g} GB)",
            )
        ]
        kind = "unknown" if disk.rotational is None else ("rotational (HDD)" if disk.rotational else "SSD")
        if minimum.disk_type == "ssd":
            results.append(
                check(
                    f"hw.disk.type[{disk.directory}]",
                    disk.rotational is False,
                    host=host.name,
                    observed=kind,
                    expected="SSD",
                    message=f"the kernel reports {disk.source or disk.mount_point} as {kind} (a virtual disk may report rotational: check its backing storage)",
                    severity=BLOCKING if disk.rotational else ADVISORY,
                )
            )
        else:
            results.append(
                Result(
                    id=f"hw.disk.type[{disk.directory}]",
                    status=Status.PASS,
                    host=host.name,
                    observed=kind,
                    expected="any (profile)",
                    message=f"{disk.mount_point} ({disk.source}) is {kind}; the {profile_name} profile accepts any disk",
                    severity=ADVISORY,
                )
            )
    if {"broker", "controller"} & set(host.roles) and not facts.disks:
        results.append(
            check(
                "hw.disk.size.minimum",
                False,
                host=host.name,
                observed="no data dir measured",
                expected=", ".join(environment.kafka.data_dirs),
                message="no Kafka data directory could be measured",
            )
        )
    return results


def replace_id(result: Result, new_id: str) -> Result:
    return Result(
        id=new_id,
        status=result.status,
        message=result.message,
        host=result.host,
        observed=result.observed,
        expected=result.expected,
        severity=result.severity,
        details=result.details,
    )


def software_checks(host: Host, facts: HostFacts, environment: Environment, mode: str) -> list[Result]:
    results: list[Result] = []
    family = SUPPORTED_OS.get(facts.os_id)
    if family is None:
        family = next((SUPPORTED_OS[like] for like in facts.os_id_like if like in SUPPORTED_OS), None)
    if family is None:
        results.append(
            check(
                "sw.os",
                False,
                host=host.name,
                observed=facts.os_pretty or facts.os_id or "unknown",
                expected="RHEL 8+, Rocky/Alma 8+, Ubuntu 20.04+, Debian 11+",
                message="operating system not supported",
            )
        )
    else:
        name, minimum = family
        observed = version_tuple(facts.os_version)
        results.append(
            check(
                "sw.os",
                observed >= minimum,
                host=host.name,
                observed=facts.os_pretty,
                expected=f"{name} {'.'.join(map(str, minimum))}+",
                message=f"operating system {facts.os_pretty}",
            )
        )

    needed = required_java(environment)
    major = java_major(facts.java_version) if facts.java_version else None
    results.append(
        check(
            "sw.java",
            major is not None and major >= needed,
            host=host.name,
            observed=facts.java_version or "not found",
            expected=f"Java {needed}+ ({environment.distribution.flavor} {environment.distribution.version})",
            message="Java runtime",
        )
    )

    if environment.distribution.flavor == "confluent":
        declared = version_tuple(environment.distribution.version)
        results.append(
            check(
                "sw.confluent",
                declared >= MIN_CONFLUENT,
                host=host.name,
                observed=environment.distribution.version
                + (
                    f" (installed kafka-clients {facts.installed_kafka_clients})"
                    if facts.installed_kafka_clients
                    else ""
                ),
                expected=">= 7.0",
                message="Confluent Platform version",
            )
        )
    else:
        results.append(
            _skipped("sw.confluent", host.name, "the distribution flavor is apache, not confluent")
        )

    if mode == "docker":
        observed_docker = version_tuple(facts.docker_version or "")
        results.append(
            check(
                "sw.docker",
                bool(observed_docker) and observed_docker >= MIN_DOCKER,
                host=host.name,
                observed=facts.docker_version or "not found",
                expected=">= 20.10",
                message="Docker engine",
            )
        )
    else:
        results.append(_skipped("sw.docker", host.name, f"deployment mode is {mode}, not docker"))
    if mode == "kubernetes":
        observed_kube = version_tuple(facts.kubernetes_version or "")
        results.append(
            check(
                "sw.kubernetes",
                bool(observed_kube) and observed_kube >= MIN_KUBERNETES,
                host=host.name,
                observed=facts.kubernetes_version or "not found",
                expected=">= 1.21",
                message="Kubernetes server",
            )
        )
    else:
        results.append(_skipped("sw.kubernetes", host.name, f"deployment mode is {mode}, not kubernetes"))
    return results


def _skipped(check_id: str, host: str | None, reason: str) -> Result:
    return Result(id=check_id, status=Status.SKIPPED, host=host, message=reason, severity=ADVISORY)


MANAGED_PROCESSES = ("java",)


def port_checks(host: Host, facts: HostFacts, environment: Environment) -> list[Result]:
    """A required port must be free, or held by the event broker a previous rollout started (java)."""
    results = []
    for port, service in sorted(required_ports(environment, host).items()):
        holders = sorted({item.process or "unknown process" for item in facts.listeners if item.port == port})
        managed = bool(holders) and all(holder in MANAGED_PROCESSES for holder in holders)
        results.append(
            Result(
                id=f"net.port.free[{port}]",
                status=Status.PASS if not holders or managed else Status.FAIL,
                host=host.name,
                observed="free" if not holders else f"in use by {', '.join(holders)}",
                expected=f"free for {service}" + (" (or held by the broker's own JVM)" if managed else ""),
                message=f"port {port} ({service})",
                severity=BLOCKING,
            )
        )
    return results


def change_precondition_checks(host: Host, preconditions: Sequence[Precondition]) -> list[Result]:
    """What the infrastructure stage's change steps would refuse on this host (another cluster's data
    folder, a foreign listener on a port, a file or install folder that is not ours), so a run stops
    before its first change rather than midway."""
    return [
        Result(
            id=precondition.id,
            status=Status.PASS if precondition.met else Status.FAIL,
            host=host.name,
            observed=precondition.observed,
            expected=precondition.expected,
            message=precondition.message,
            severity=BLOCKING,
        )
        for precondition in preconditions
    ]


def change_preconditions_unjudged(host: Host, reason: str) -> Result:
    return Result(
        id="infra.preconditions",
        status=Status.WARN,
        host=host.name,
        observed=reason,
        expected="the places the infrastructure stage would change, observed",
        message=f"not judged here ({reason}); the infrastructure stage's plan judges them before any change",
        severity=ADVISORY,
    )


def subnet_checks(host: Host, facts: HostFacts, environment: Environment) -> list[Result]:
    subnet = environment.network.subnet
    if subnet is None:
        return [_skipped("net.subnet", host.name, "the environment declares no dedicated subnet")]
    import ipaddress

    inside = [a for a in facts.interface_addresses if ipaddress.ip_address(a) in subnet]
    return [
        check(
            "net.subnet",
            str(host.address) in inside,
            host=host.name,
            observed=", ".join(inside) or "no address in the subnet",
            expected=f"{host.address} on {subnet}",
            message="host sits on the dedicated cluster subnet",
        )
    ]


def name_resolution_checks(host: Host, facts: HostFacts, environment: Environment) -> list[Result]:
    """From this host, every cluster name resolves to its address and back (forward and reverse agree)."""
    wrong_forward = {
        h.name: facts.forward.get(h.name) or "unresolved"
        for h in environment.hosts
        if facts.forward.get(h.name) != str(h.address)
    }
    wrong_reverse = {
        str(h.address): facts.reverse.get(str(h.address)) or "unresolved"
        for h in environment.hosts
        if facts.reverse.get(str(h.address), "").split(".")[0] != h.name
    }
    return [
        check(
            "net.dns.forward",
            not wrong_forward,
            host=host.name,
            observed=wrong_forward or "all names resolve to their addresses",
            expected="name -> declared address for every cluster host",
            message="forward name resolution",
        ),
        check(
            "net.dns.reverse",
            not wrong_reverse,
            host=host.name,
            observed=wrong_reverse or "all addresses resolve to their names",
            expected="address -> declared name for every cluster host",
            message="reverse name resolution",
        ),
    ]


def tuning_checks(host: Host, facts: HostFacts, environment: Environment) -> list[Result]:
    user = environment.kafka.service_user
    nofile_note = (
        ""
        if facts.service_user_exists
        else f" (user {user} not created yet: the login limit; the service unit sets LimitNOFILE)"
    )
    return [
        check(
            "os.nofile",
            (facts.nofile or 0) >= RECOMMENDED_NOFILE,
            host=host.name,
            observed=facts.nofile,
            expected=f">= {RECOMMENDED_NOFILE}",
            message=f"open-file limit for {user}{nofile_note}",
            severity=ADVISORY,
        ),
        check(
            "os.vm.swappiness",
            facts.swappiness is not None and facts.swappiness <= RECOMMENDED_SWAPPINESS,
            host=host.name,
            observed=facts.swappiness,
            expected=f"<= {RECOMMENDED_SWAPPINESS}",
            message="vm.swappiness (keep the page cache, avoid swapping the broker)",
            severity=ADVISORY,
        ),
        check(
            "os.vm.max_map_count",
            (facts.max_map_count or 0) >= RECOMMENDED_MAX_MAP_COUNT,
            host=host.name,
            observed=facts.max_map_count,
            expected=f">= {RECOMMENDED_MAX_MAP_COUNT}",
            message="vm.max_map_count (one map per log segment index)",
            severity=ADVISORY,
        ),
    ]


def tls_material_checks(host: Host, environment: Environment, now: datetime) -> list[Result]:
    """Operator-provided certificates and keys, read on the Airflow side; internal-CA material does not
    exist before the security stage issues it."""
    if environment.security is None:
        return [_skipped("sec.tls.material", host.name, "the environment has no security section")]
    tls = environment.security.tls
    if tls.mode != "provided":
        return [
            _skipped(
                "sec.tls.material",
                host.name,
                "generated by the security stage: it issues the node certificates from its internal CA",
            )
        ]
    return tls_material.provided_material_checks(tls, host, now)


def security_prerequisite_checks(host: Host, environment: Environment, now: datetime) -> list[Result]:
    """TLS material and authentication prerequisites the environment names, checked on the Airflow side
    (so they run whether or not the host answers)."""
    mechanism = environment.security.client_authentication if environment.security is not None else None
    if mechanism == "mtls":
        return tls_material_checks(host, environment, now)  # client certificates: client_identity_checks
    if mechanism == "oauthbearer":
        return tls_material_checks(host, environment, now)  # the provider: sec.kafka.oidc_provider*
    if mechanism == "kerberos":
        return tls_material_checks(host, environment, now)  # the realm: sec.kerberos.*
    return [
        *tls_material_checks(host, environment, now),
        _skipped(
            "sec.auth.prerequisites",
            host.name,
            "the environment configures no LDAP, Kerberos or mTLS client material",
        ),
    ]


def client_identity_checks(environment: Environment, principals: Sequence[str]) -> list[Result]:
    """mTLS: each principal's client certificate. The internal CA issues them in the security stage;
    provided ones must be usable now (present, key matching, chain to ca.crt, CN=<principal>, not expired)
    and are a warning inside the renewal window."""
    security = environment.security
    if security is None or security.client_authentication != "mtls":
        return []
    if security.tls.mode != "provided":
        return [
            Result(
                id="sec.auth.client_certificates",
                status=Status.PASS,
                message=f"issued by the security stage from the internal CA for {len(principals)} principals",
                observed=sorted(principals),
            )
        ]
    results = []
    for principal in principals:
        unusable = client_certificate_problems(environment, principal, min_days=1)
        renewal = (
            []
            if unusable
            else client_certificate_problems(environment, principal, security.tls.renew_before_days)
        )
        results.append(
            Result(
                id=f"sec.auth.client_certificate[{principal}]",
                status=Status.FAIL if unusable else (Status.WARN if renewal else Status.PASS),
                observed="; ".join(unusable or renewal) or "usable",
                expected=f"CN={principal} from ca.crt, at least {security.tls.renew_before_days} days left",
                message=f"the provided client certificate of {principal}",
            )
        )
    return results


def host_checks(
    host: Host,
    facts: HostFacts,
    environment: Environment,
    profile_name: str,
    profile: SizingProfile,
    mode: str,
) -> list[Result]:
    return [
        *hardware_checks(host, facts, profile_name, profile, environment),
        *software_checks(host, facts, environment, mode),
        *port_checks(host, facts, environment),
        *subnet_checks(host, facts, environment),
        *name_resolution_checks(host, facts, environment),
        *tuning_checks(host, facts, environment),
    ]


def unreachable(host: Host, error: str) -> Result:
    return Result(
        id="host.reachable",
        status=Status.FAIL,
        host=host.name,
        observed=error,
        expected="SSH session with a verified host key",
        message=f"{host.name} is unreachable: {error}",
        severity=BLOCKING,
    )


def reachable(host: Host, facts: HostFacts) -> Result:
    return Result(
        id="host.reachable",
        status=Status.PASS,
        host=host.name,
        observed=f"{facts.hostname} ({facts.os_pretty})",
        expected="SSH session with a verified host key",
        message="SSH session established, host key verified",
        severity=BLOCKING,
    )


def server_count_checks(environment: Environment, profile_name: str, profile: SizingProfile) -> list[Result]:
    return _tiers(
        "hw.servers",
        None,
        len(environment.hosts),
        profile.minimum.servers,
        profile.recommended.servers,
        "servers",
        f"cluster servers ({profile_name} profile)",
    )


@dataclass(frozen=True)
class ClockSample:
    host: str
    offset_ms: float  # host clock minus the Airflow side's, at the middle of the round trip
    uncertainty_ms: float  # half the round trip


def clock_checks(samples: Iterable[ClockSample], max_offset_ms: float) -> list[Result]:
    samples = list(samples)
    if len(samples) < 2:
        return [_skipped("net.clock.offset", None, "fewer than two reachable hosts to compare")]
    spread = max(s.offset_ms for s in samples) - min(s.offset_ms for s in samples)
    uncertainty = max(s.uncertainty_ms for s in samples) * 2
    observed = f"{spread:.1f} ms between hosts (± {uncertainty:.1f} ms)"
    details = {s.host: round(s.offset_ms, 1) for s in samples}
    if spread > max_offset_ms and spread - uncertainty <= max_offset_ms:
        # Slow round trips (a loaded Airflow worker) blur the measurement: it cannot show a violation.
        return [
            Result(
                id="net.clock.offset",
                status=Status.WARN,
                severity=Severity.ADVISORY,
                message="clock offset between cluster hosts: inconclusive, the measurement's uncertainty "
                "covers the limit; check the hosts' time sync (chrony/NTP) directly",
                observed=observed,
                expected=f"<= {max_offset_ms:g} ms",
                details=details,
            )
        ]
    return [
        check(
            "net.clock.offset",
            spread <= max_offset_ms,
            observed=observed,
            expected=f"<= {max_offset_ms:g} ms",
            message="clock offset between cluster hosts",
            details=details,
        )
    ]
