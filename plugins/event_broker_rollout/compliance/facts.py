"""What the compliance run observes, from the outside: admin-client reads, real probes, one SSH round trip per host.

Collection only reads. Nothing here writes a record, a config or a file: the no-grants principal is
asked what the broker authorizes it to do (no probe record lands in a PHI topic), and of the audit
trail only the newest record's timestamp is read. A collector that cannot observe something records the error
instead of raising, so every other check still runs and the report names what could not be verified.
The checks over these facts are pure functions (``compliance.checks``).
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from confluent_kafka.schema_registry import SchemaRegistryClient

from event_broker_rollout.cluster import clients, health
from event_broker_rollout.cluster.http_status import status_of
from event_broker_rollout.config.environment import Environment, Host
from event_broker_rollout.config.policy import HostFile
from event_broker_rollout.hosts.fleet import describe_quorum
from event_broker_rollout.hosts.parallel import in_parallel
from event_broker_rollout.hosts.remote import RemoteError, RemoteHost
from event_broker_rollout.hosts.shell import script
from event_broker_rollout.hosts.tls import CLIENTS_DIR, client_certificate_problems
from event_broker_rollout.hosts.tls import days_left as tls_days_left
from event_broker_rollout.hosts.tls_policy import OUTSIDE_POLICY_TLS12_PROBE
from event_broker_rollout.resources import access, verify
from event_broker_rollout.resources.registry import SubjectPlan, observe
from event_broker_rollout.resources.subjects import SubjectSchema
from event_broker_rollout.resources.topics import ObservedTopic, observe_topics

TIMEOUT = 15.0
TLS_VERSIONS = (
    ("1.0", ssl.TLSVersion.TLSv1),
    ("1.1", ssl.TLSVersion.TLSv1_1),
    ("1.2", ssl.TLSVersion.TLSv1_2),
    ("1.3", ssl.TLSVersion.TLSv1_3),
)
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# Settings a broker reports for itself; the authorizer's own settings are not among them (Kafka reports
# unknown settings as sensitive, value hidden): those are read from the node's server.properties.
BROKER_SETTINGS = (
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "authorizer.class.name",
    "auto.create.topics.enable",
)
# What a broker verifies in an OAUTHBEARER token (without an expected audience it takes any token the
# provider signed, for any application).
TOKEN_VALIDATION_SETTINGS = (
    "listener.name.secure.sasl.enabled.mechanisms",
    "listener.name.secure.oauthbearer.sasl.server.callback.handler.class",
    "sasl.oauthbearer.jwks.endpoint.url",
    "sasl.oauthbearer.expected.issuer",
    "sasl.oauthbearer.expected.audience",
    "sasl.oauthbearer.sub.claim.name",
)
# What a broker takes as a Kerberos login: whose tickets (its service principal, from its keytab) and which
# names become principals (without the rules any realm name would map to one).
TICKET_VALIDATION_SETTINGS = (
    "listener.name.secure.sasl.enabled.mechanisms",
    "listener.name.secure.gssapi.sasl.jaas.config",
    "sasl.kerberos.service.name",
    "sasl.kerberos.principal.to.local.rules",
)
AUTHORIZER_SETTINGS = (
    "allow.everyone.if.no.acl.found",
    "super.users",
    "ssl.principal.mapping.rules",
    *TOKEN_VALIDATION_SETTINGS,
    *TICKET_VALIDATION_SETTINGS,
)
SERVER_PROPERTIES = "/etc/kafka/server.properties"


# --- broker settings and listeners ---------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    name: str
    port: int
    protocol: str  # from listener.security.protocol.map ("" when the map does not name it)


def parse_listeners(listeners: str | None, protocol_map: str | None) -> list[Listener]:
    """``SECURE://10.77.0.11:9094,...`` with ``SECURE:SASL_SSL,...`` -> listeners with their protocol."""
    protocols = dict(item.split(":", 1) for item in (protocol_map or "").split(",") if ":" in item)
    found = []
    for item in (listeners or "").split(","):
        name, sep, endpoint = item.strip().partition("://")
        port = endpoint.rsplit(":", 1)[-1]
        if sep and port.isdigit():
            # A listener named after a protocol needs no map entry (PLAINTEXT://:9092).
            found.append(
                Listener(name, int(port), protocols.get(name, name if name in KAFKA_PROTOCOLS else ""))
            )
    return found


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    node_id: int
    values: Mapping[str, str | None] = field(default_factory=dict)
    error: str | None = None

    def listeners(self) -> list[Listener]:
        """The node's listeners and any other port it advertises, each once."""
        protocol_map = self.values.get("listener.security.protocol.map")
        found = parse_listeners(self.values.get("listeners"), protocol_map)
        ports = {listener.port for listener in found}
        for advertised in parse_listeners(self.values.get("advertised.listeners"), protocol_map):
            if advertised.port not in ports:
                found.append(advertised)
                ports.add(advertised.port)
        return found


def broker_settings(admin: AdminClient, environment: Environment) -> list[BrokerSettings]:
    """Each broker's own view of its listeners, authorizer and topic auto-creation (one request per
    broker: the client takes one broker resource per request)."""

    def describe(name: str) -> BrokerSettings:
        node = environment.node_id(environment.host(name))
        resource = ConfigResource(ConfigResource.Type.BROKER, str(node))
        try:
            entries = admin.describe_configs([resource], request_timeout=TIMEOUT)[resource].result()
        except KafkaException as error:
            return BrokerSettings(name, node, error=health.kafka_error_text(error))
        return BrokerSettings(
            name, node, {key: entries[key].value if key in entries else None for key in BROKER_SETTINGS}
        )

    return list(in_parallel([host.name for host in environment.brokers], describe).values())


# --- probes of listeners and the registry endpoint -----------------------------------------------


@dataclass(frozen=True)
class Handshake:
    version: str  # "1.0" .. "1.3"
    accepted: bool
    offered: bool = True  # False: this client's TLS library cannot offer the version
    protocol: str | None = None
    cipher: str | None = None
    error: str | None = None
    days_left: int | None = None  # of the certificate the handshake verified


@dataclass(frozen=True)
class Endpoint:
    host: str
    address: str
    port: int
    name: str  # listener name, or REGISTRY / FORMER_CLIENT
    protocol: str  # as configured: SSL, SASL_SSL, PLAINTEXT, HTTPS, ...
    # mTLS: a client without a certificate is refused after the version is agreed.
    client_certificate_required: bool = False
    plaintext_answer: bool | None = None  # Kafka answered a plaintext request; None: nothing listens
    handshakes: tuple[Handshake, ...] = ()
    kafka: bool = True  # a Kafka port (probed with a plaintext Kafka request too)
    # TLS 1.2 offering only suites outside the policy (not ECDHE with AEAD): it must be refused.
    outside_policy_suites: Handshake | None = None

    @property
    def tls(self) -> bool:
        return is_tls(self.protocol)

    @property
    def target(self) -> str:
        return f"{self.name} {self.address}:{self.port}"


@dataclass(frozen=True)
class EndpointTarget:
    host: str
    address: str
    port: int
    name: str
    protocol: str
    kafka: bool = True  # a Kafka listener (probed with a plaintext ApiVersions request)


def listener_targets(environment: Environment, settings: Iterable[BrokerSettings]) -> list[EndpointTarget]:
    """Every port a Kafka node listens on (as it reports), its controller port, and the former plaintext
    client port, which must stay closed. A node that cannot report is probed on the declared ports."""
    assert environment.security is not None
    security, ports = environment.security, environment.kafka.listeners
    by_host = {item.host: item for item in settings}
    targets: list[EndpointTarget] = []
    for host in environment.hosts:
        if not {"broker", "controller"} & set(host.roles):
            continue
        reported = by_host.get(host.name)
        listeners = reported.listeners() if reported and not reported.error else []
        if not listeners:
            listeners = (
                [Listener("CONTROLLER", ports.controller_port, "SSL")] if "controller" in host.roles else []
            )
            if "broker" in host.roles:
                listeners += [
                    Listener("SECURE", security.secure_client_port, "SASL_SSL"),
                    Listener("INTERNAL", security.internal_port, "SSL"),
                ]
        seen = {listener.port for listener in listeners}
        for listener in listeners:
            targets.append(
                EndpointTarget(host.name, str(host.address), listener.port, listener.name, listener.protocol)
            )
        if "controller" in host.roles and ports.controller_port not in seen:
            targets.append(
                EndpointTarget(host.name, str(host.address), ports.controller_port, "CONTROLLER", "SSL")
            )
        if "broker" in host.roles and ports.client_port not in seen:
            targets.append(
                EndpointTarget(host.name, str(host.address), ports.client_port, "FORMER_CLIENT", "none")
            )
    return targets


def registry_target(environment: Environment) -> EndpointTarget:
    assert environment.security is not None
    host = environment.registries[0]
    return EndpointTarget(
        host.name, str(host.address), environment.security.registry_https_port, "REGISTRY", "HTTPS", False
    )


def is_tls(protocol: str) -> bool:
    return protocol in (*TLS_PROTOCOLS, "HTTPS")


def handshake(
    address: str, port: int, name: str, version: ssl.TLSVersion, ca_file: str, ciphers: str | None = None
) -> Handshake:
    """One handshake pinned to one version, chain and hostname verified against the cluster CA."""
    outcome = verify.tls_handshake(address, port, version, ca_file, ciphers)
    if not outcome["accepted"]:
        return Handshake(name, False, offered=outcome.get("offered", True), error=str(outcome.get("error")))
    return Handshake(
        name,
        True,
        protocol=outcome["protocol"],
        cipher=outcome["cipher"],
        days_left=verify.days_left(outcome["certificate"]) if outcome.get("certificate") else None,
    )


def probe_endpoint(target: EndpointTarget, ca_file: str) -> Endpoint:
    plaintext = verify.plaintext_answers(target.address, target.port) if target.kafka else None
    handshakes = (
        tuple(
            handshake(target.address, target.port, name, version, ca_file) for name, version in TLS_VERSIONS
        )
        if is_tls(target.protocol)
        else ()
    )
    outside_policy = (
        handshake(
            target.address, target.port, "1.2", ssl.TLSVersion.TLSv1_2, ca_file, OUTSIDE_POLICY_TLS12_PROBE
        )
        if is_tls(target.protocol)
        else None
    )
    return Endpoint(
        host=target.host,
        address=target.address,
        port=target.port,
        name=target.name,
        protocol=target.protocol,
        client_certificate_required=target.protocol == "SSL",
        plaintext_answer=plaintext,
        handshakes=handshakes,
        kafka=target.kafka,
        outside_policy_suites=outside_policy,
    )


# --- authentication, users, ACLs, the no-grants principal ----------------------------------------


@dataclass(frozen=True)
class Authentication:
    approved_error: str | None  # the admin's own login: it must work, or the refusals prove nothing
    no_credentials_error: str | None  # None: a client without credentials got metadata
    wrong_password_error: str | None


def authentication(secure_config: Mapping[str, Any]) -> Authentication:
    logins = {"approved": dict(secure_config), **health.clients_to_refuse(secure_config)}
    approved, none, wrong_password = in_parallel(
        ["approved", "none", "wrong"],
        lambda which: health.login_error(logins[which], expect_refusal=which != "approved"),
    ).values()
    return Authentication(approved, none, wrong_password)


@dataclass(frozen=True)
class ClientCertificate:
    principal: str
    days_left: int | None  # None: the certificate could not be read
    problems: tuple[str, ...]  # besides expiry: missing, key mismatch, not from the cluster CA, wrong CN


def client_certificates(environment: Environment, principals: Iterable[str]) -> list[ClientCertificate]:
    """Under mTLS, each principal's client certificate on the Airflow side, read and never issued here."""
    security = environment.security
    if security is None or security.client_authentication != "mtls":
        return []
    folder = Path(security.tls.material_dir) / CLIENTS_DIR
    found = []
    for principal in sorted(set(principals)):
        problems = tuple(client_certificate_problems(environment, principal, min_days=0))
        try:
            days: int | None = tls_days_left((folder / f"{principal}.crt").read_text())
        except (OSError, ValueError):
            days = None
        found.append(ClientCertificate(principal, days, problems))
    return found


@dataclass(frozen=True)
class ScramUsers:
    users: tuple[str, ...] = ()
    error: str | None = None


def scram_users(admin: AdminClient) -> ScramUsers:
    try:
        return ScramUsers(tuple(sorted(access.scram_users(admin))))
    except KafkaException as error:
        return ScramUsers(error=str(error))


@dataclass(frozen=True)
class AclEntry:
    principal: str
    host: str
    operation: str
    permission: str  # ALLOW | DENY
    resource_type: str  # TOPIC | GROUP | CLUSTER | ...
    pattern_type: str  # LITERAL | PREFIXED
    name: str

    def grant(self) -> access.Grant | None:
        """As a declared grant would look; None for what no declaration produces (DENY, a host limit)."""
        if self.permission != "ALLOW" or self.host != "*":
            return None
        return access.Grant(self.principal, self.resource_type, self.pattern_type, self.name, self.operation)

    def label(self) -> str:
        return f"{self.principal} {self.permission} {self.operation} {self.resource_type}:{self.pattern_type}:{self.name}"


@dataclass(frozen=True)
class Acls:
    entries: tuple[AclEntry, ...] = ()
    error: str | None = None


def acls(admin: AdminClient) -> Acls:
    try:
        bindings = access.current_bindings(admin)
    except KafkaException as error:
        return Acls(error=str(error))
    return Acls(
        tuple(
            sorted(
                (
                    AclEntry(
                        principal=b.principal,
                        host=b.host,
                        operation=b.operation.name,
                        permission=b.permission_type.name,
                        resource_type=b.restype.name,
                        pattern_type=b.resource_pattern_type.name,
                        name=b.name,
                    )
                    for b in bindings
                ),
                key=AclEntry.label,
            )
        )
    )


@dataclass(frozen=True)
class NoGrantsProbe:
    principal: str
    topic: str
    error: str | None  # the broker's refusal (TOPIC_AUTHORIZATION_FAILED), None when it described the topic
    operations: tuple[str, ...] = ()  # what the broker authorizes the principal to do on the topic


def no_grants_probes(config: Mapping[str, Any], principal: str, topics: Sequence[str]) -> list[NoGrantsProbe]:
    """Ask the broker, as the principal, what it may do on each topic (its authorizer answers for that
    principal; one request for all of them). Nothing is written or read: a wrongly granted write would
    otherwise land a non-event record in a PHI topic, and a consumer's group refusal would hide a topic
    grant."""
    admin = AdminClient(dict(config))
    answers = admin.describe_topics(
        TopicCollection(list(topics)), include_authorized_operations=True, request_timeout=TIMEOUT
    )
    probes = []
    for topic in topics:
        try:
            description = answers[topic].result()
        except KafkaException as error:
            probes.append(NoGrantsProbe(principal, topic, health.kafka_error_text(error)))
            continue
        operations = tuple(sorted(op.name for op in description.authorized_operations or []))
        probes.append(NoGrantsProbe(principal, topic, None, operations))
    return probes


# --- cluster health ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    brokers: Mapping[str, Any]
    partitions: Mapping[str, Any]
    quorum: Mapping[str, Any]


def cluster_health(admin: AdminClient, environment: Environment) -> Health:

    voters = [environment.node_id(h) for h in environment.controllers]
    try:
        quorum = health.quorum_status(describe_quorum(environment), voters)
    except RemoteError as error:
        quorum = {"healthy": False, "missing": [], "lagging": [], "error": str(error)}
    return Health(
        brokers=health.brokers_status(admin, [environment.node_id(h) for h in environment.brokers]),
        partitions=health.partitions_status(admin, environment.kafka.min_insync_replicas),
        quorum=quorum,
    )


# --- topics and the audit trail ------------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    names: tuple[str, ...] = ()
    observed: Mapping[str, ObservedTopic] = field(default_factory=dict)
    error: str | None = None


def topics(admin: AdminClient) -> Topics:
    try:
        names = sorted(admin.list_topics(timeout=TIMEOUT).topics)
        return Topics(tuple(names), observe_topics(admin, names, TIMEOUT))
    except KafkaException as error:
        return Topics(error=health.kafka_error_text(error))


@dataclass(frozen=True)
class AuditTrail:
    topic: str
    records: int = 0  # records the topic holds now (after retention)
    latest_record_at: dt.datetime | None = None
    error: str | None = None


def audit_trail(config: Mapping[str, Any], topic: str, partitions: int) -> AuditTrail:
    """How many records the audit topic holds and when the newest was written, read as the compliance
    principal (it may read the trail, nothing else); only the newest record of each partition is fetched."""
    consumer = Consumer({**config, "group.id": "compliance-audit-probe", "enable.auto.commit": False})
    held, latest = 0, None
    try:
        ends = []
        for partition in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT)
            held += high - low
            if high > low:
                ends.append(TopicPartition(topic, partition, high - 1))
        if ends:
            consumer.assign(ends)
            pending = {tp.partition for tp in ends}
            deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=TIMEOUT)
            while pending and dt.datetime.now(dt.UTC) < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error() is not None:
                    continue
                pending.discard(message.partition())
                _kind, millis = message.timestamp()
                written = dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
                latest = written if latest is None or written > latest else latest
            if pending:
                return AuditTrail(
                    topic, held, latest, f"newest record of partitions {sorted(pending)} not read in time"
                )
    except KafkaException as error:
        return AuditTrail(topic, held, latest, health.kafka_error_text(error))
    finally:
        consumer.close()
    return AuditTrail(topic, held, latest)


# --- the registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registry:
    https_status: int | None  # HTTP status of the subjects list over verified HTTPS, no credentials
    https_error: str | None
    plain_http_answers: bool  # something answered HTTP on the registry's plain port
    subjects: tuple[SubjectPlan, ...] = ()


def registry(environment: Environment, ca_file: str, subjects: Iterable[SubjectSchema]) -> Registry:
    assert environment.security is not None
    host = environment.registries[0]
    base = clients.registry_api_url(
        environment, f"https://{host.address}:{environment.security.registry_https_port}"
    )
    status, error = status_of(f"{base}/subjects", ca_file)
    plain, _ = status_of(f"http://{host.address}:{environment.schema_registry.port}/", None)
    # the catalog's subjects are read as the rollout's admin where the registry authenticates
    client = SchemaRegistryClient(
        {**clients.registry_config(environment, "secured"), "url": base, "ssl.ca.location": ca_file}
    )
    return Registry(status, error, plain is not None, tuple(observe(client, item) for item in subjects))


# --- hosts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileStat:
    path: str
    mode: int
    owner: str
    group: str


@dataclass(frozen=True)
class HostFacts:
    host: str
    files: Mapping[str, FileStat | None] = field(default_factory=dict)  # None: absent
    password_settings: Mapping[str, int] = field(default_factory=dict)  # file -> lines setting a password
    # the authorizer's and the token validation's settings in server.properties
    settings: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None


# A line that sets a password-like key to a non-empty value (comments excluded); only counted, never read.
_PASSWORD_LINE = r"^[[:space:]]*[^#[:space:]]*(password|secret)[^=]*=[[:space:]]*[^[:space:]]"


# Reads the host files; constant, with the paths and patterns as positional parameters (kind, values...).
_HOST_SCRIPT = r"""
while [ "$#" -gt 0 ]; do
  kind=$1; shift
  case "$kind" in
    file)
      if [ -e "$1" ]; then printf 'file %s %s\n' "$1" "$(stat -c '%a %U %G' -- "$1")"
      else printf 'file %s absent\n' "$1"; fi
      shift ;;
    passwords)  # file, password-line pattern, allowed-settings pattern (grep -c prints 0 when none are left)
      if [ -e "$1" ]; then printf 'passwords %s %s\n' "$1" "$(grep -iE -- "$2" "$1" | grep -cvE -- "$3")"; fi
      shift 3 ;;
    settings)  # file, pattern
      grep -E -- "$2" "$1" | sed 's/^/setting /'
      shift 2 ;;
    *) echo "host facts: unknown kind" >&2; exit 2 ;;
  esac
done
exit 0
"""


def host_command(files: Iterable[HostFile], kafka_node: bool) -> tuple[str, ...]:
    args: list[str] = []
    for item in files:
        args += ["file", item.path]
        if item.scan_for_passwords:
            # Count the password lines other than the allowed ones.
            allowed = "|".join(key.replace(".", r"\.") for key in item.allowed_password_settings) or "$^"
            args += ["passwords", item.path, _PASSWORD_LINE, f"^[[:space:]]*({allowed})[[:space:]]*="]
    if kafka_node:
        keys = "|".join(key.replace(".", r"\.") for key in AUTHORIZER_SETTINGS)
        args += ["settings", SERVER_PROPERTIES, f"^({keys})="]
    return script(_HOST_SCRIPT, *args, name="ebr-host-facts")


def parse_host_output(host: str, text: str) -> HostFacts:
    files: dict[str, FileStat | None] = {}
    passwords: dict[str, int] = {}
    settings: dict[str, str] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        parts = rest.split()
        if kind == "file" and len(parts) == 2 and parts[1] == "absent":
            files[parts[0]] = None
        elif kind == "file" and len(parts) == 4:
            files[parts[0]] = FileStat(parts[0], int(parts[1], 8), parts[2], parts[3])
        elif kind == "passwords" and len(parts) == 2 and parts[1].isdigit():
            passwords[parts[0]] = int(parts[1])
        elif kind == "setting":
            key, _, value = rest.partition("=")
            settings[key.strip()] = value.strip()
    return HostFacts(host, files, passwords, settings)


def host_facts(host: Host, files: list[HostFile]) -> HostFacts:

    kafka_node = bool({"broker", "controller"} & set(host.roles))
    try:
        with RemoteHost.from_conn_id(host.name, host.ssh_conn_id, connect_timeout=10) as session:
            output = session.run_argv(host_command(files, kafka_node), timeout=30, check=True).stdout
    except RemoteError as error:
        return HostFacts(host.name, error=str(error))
    return parse_host_output(host.name, output)


def airflow_secret_files(environment: Environment) -> list[FileStat | str]:
    """The Airflow side's key material and password file, as stat results (or the path when absent)."""
    assert environment.security is not None
    security = environment.security
    material = Path(security.tls.material_dir)
    candidates = []
    if security.tls.mode == "internal_ca":
        candidates += [material / "ca.key", *sorted((material / "issued").glob("*.key"))]
    else:
        candidates += sorted(material.glob("*.key"))
    candidates += sorted((material / CLIENTS_DIR).glob("*.key"))
    credentials = security.credentials
    if credentials is not None and credentials.source == "file" and credentials.path:
        candidates.append(Path(credentials.path))
    found: list[FileStat | str] = []
    for path in candidates:
        try:
            info = path.stat()
        except FileNotFoundError:
            found.append(str(path))
            continue
        found.append(FileStat(str(path), stat.S_IMODE(info.st_mode), _user(info.st_uid), _group(info.st_gid)))
    return found


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def current_user() -> str:
    return _user(os.geteuid())
