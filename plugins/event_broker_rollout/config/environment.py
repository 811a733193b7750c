"""The environment model: one YAML file per target environment, validated before any host is touched.

Validation reports every problem at once, each with its YAML path (``hosts[1].roles``), so an operator
fixes a broken file in one pass. Structural problems (unknown keys, wrong types) come from pydantic;
cross-field rules (KRaft quorum size, replication factor against broker count, port clashes) are checked
over the raw mapping so that they are reported even when the structure has mistakes too.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from event_broker_rollout import paths
from event_broker_rollout.config.base import ConfigProblem, EnvironmentConfigError, Strict
from event_broker_rollout.config.types import (
    IDENTIFIER,
    AbsolutePath,
    DnsName,
    FreeText,
    HostName,
    HttpsUrl,
    HttpUrl,
    Identifier,
    KafkaClusterId,
    KerberosRealm,
    LdapDnTemplate,
    LdapUrl,
    Principal,
    ProjectPath,
    UnixName,
    Version,
    control_character_problems,
)

ROLES = ("controller", "broker", "schema_registry")
ModelT = TypeVar("ModelT", bound=BaseModel)


# The CA certificate's file name in a TLS material folder (``security.tls.material_dir``).
CA_CERT = "ca.crt"
# Node certificates (subject CN=<host name>, see tls.issue_node_certificate; a provided certificate may
# add attributes after the CN) map to principals of their own, User:node-<host>, so a host named like a
# component or a SCRAM user named like a host never shares its identity. Any other subject keeps its DN.
NODE_PRINCIPAL_PREFIX = "node-"

LAB_STATE_PLACEHOLDER = "${LAB_STATE}"


def expand_lab_state(value: Any) -> Any:
    """``${LAB_STATE}/ca`` -> ``<the lab's state folder>/ca``: the lab's files follow its state folder.

    Only this one placeholder, and only at the start of a path: a fresh ``LAB_STATE`` is a fresh
    machine (new CA, new passwords), with no general variable expansion in config files.
    """
    if isinstance(value, str) and value.startswith(LAB_STATE_PLACEHOLDER + "/"):
        return str(paths.lab_state_dir()) + value[len(LAB_STATE_PLACEHOLDER) :]
    return value


# A folder or file on the Airflow side that may live in the lab's state folder: checked as an absolute
# path once the placeholder is expanded.
ControllerPath = Annotated[AbsolutePath, BeforeValidator(expand_lab_state)]


class DeploymentMode(StrEnum):
    BARE_METAL = "bare_metal"
    DOCKER = "docker"
    KUBERNETES = "kubernetes"


class SizingTier(Strict):
    servers: int = Field(ge=1)
    memory_gb: float = Field(gt=0)
    vcpus: int = Field(ge=1)
    disk_gb: float = Field(gt=0)
    # Free share of each Kafka data disk: a broker whose disk fills stops (it cannot roll a segment).
    disk_free_percent: float = Field(default=10, ge=0, lt=100)
    disk_type: Literal["ssd", "any"] = "ssd"


class SizingProfile(Strict):
    description: FreeText = ""
    minimum: SizingTier
    recommended: SizingTier
    broker_heap_mb: int = Field(ge=128)
    registry_heap_mb: int = Field(ge=64)


class Host(Strict):
    name: HostName
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ssh_conn_id: Identifier
    roles: list[Literal["controller", "broker", "schema_registry"]] = Field(min_length=1)
    node_id: int | None = Field(default=None, ge=0)
    advertised_names: list[DnsName] = Field(default_factory=list)


class Distribution(Strict):
    flavor: Literal["apache", "confluent"]
    version: Version
    archive: ProjectPath | None = None
    package_repository: HttpUrl | None = None
    install_dir: AbsolutePath = "/opt/kafka"
    java_home: AbsolutePath | None = None


class Credentials(Strict):
    """Where secrets come from: a JSON file {principal: secret} or an Airflow Variable holding that JSON."""

    source: Literal["file", "airflow_variable"]
    path: ControllerPath | None = None
    variable: Identifier | None = None


class OidcClients(Strict):
    """Principals that log in at an OIDC provider with the client-credentials grant: the principal is the
    client id, its secret comes from ``credentials``; ``ca_file`` is the CA that signed the provider's
    HTTPS certificate (nothing else is trusted for it)."""

    issuer: HttpsUrl
    token_url: HttpsUrl
    ca_file: ControllerPath
    credentials: Credentials  # client secrets per principal (client id = principal)


class RegistryAuthentication(OidcClients):
    """OIDC at the registry: every request carries a token the ``issuer`` signed for ``audience``, or
    HTTP basic with a principal's client id and secret, which the registry exchanges at the issuer (for
    tools that cannot fetch tokens). At the issuer the rollout's admin holds the registry's sr-admin
    role and each component sr-readonly: components read schemas, only the schemas stage registers."""

    kind: Literal["oidc"] = "oidc"
    audience: Identifier = "registry-api"


class RegistryBasicAuthentication(Strict):
    """HTTP basic at Confluent Schema Registry (community license): every request names a principal and
    its secret from ``credentials``, checked against a password file on the registry host. The rollout's
    admin holds the role ``admin``, each component and the probe ``readonly``; the community registry only
    authenticates, so these roles are not enforced (a reader could register a schema): authorization by
    role needs Confluent's commercial security plugin."""

    kind: Literal["basic"]
    credentials: Credentials  # secret per principal (the user name at the registry)


def _authentication_kind(value: Any) -> str:
    """The declaration's member by ``kind``, OIDC where it is absent (declarations from before the basic
    kind). The tag is bracketed so that a problem's YAML path leaves it out, as it leaves out the names
    of other unions' members."""
    kind = value.get("kind", "oidc") if isinstance(value, Mapping) else getattr(value, "kind", None)
    return f"kind[{kind}]"


AnyRegistryAuthentication = Annotated[
    Annotated[RegistryAuthentication, Tag("kind[oidc]")]
    | Annotated[RegistryBasicAuthentication, Tag("kind[basic]")],
    Discriminator(
        _authentication_kind,
        custom_error_type="registry_authentication_kind",
        custom_error_message="kind: oidc (the apicurio flavor) or basic (the confluent flavor)",
    ),
]
# Each flavor's one way to authenticate: Apicurio through an OIDC provider, Confluent's community registry
# with HTTP basic against its own password file.
REGISTRY_AUTHENTICATION_KINDS = {"apicurio": "oidc", "confluent": "basic"}


class OAuthBearer(OidcClients):
    """SASL/OAUTHBEARER on the secure listener (KIP-768): clients fetch a token for ``audience`` from the
    issuer; brokers verify its signature against ``jwks_url``, its issuer, audience and expiry, and take
    the principal from ``principal_claim`` (``azp``: the client id, which the ACLs name)."""

    jwks_url: HttpsUrl
    audience: Identifier = "kafka"
    principal_claim: Identifier = "azp"


class SchemaRegistry(Strict):
    flavor: Literal["apicurio", "confluent"]
    version: Version
    archive: ProjectPath | None = None
    install_dir: AbsolutePath = "/opt/schema-registry"
    port: int = Field(default=8081, ge=1, le=65535)
    # None: the registry answers anyone who reaches it (compliance fails that where topics carry PHI)
    authentication: AnyRegistryAuthentication | None = None

    @field_validator("authentication")
    @classmethod
    def flavor_authenticates_so(
        cls, authentication: RegistryAuthentication | RegistryBasicAuthentication | None, info: ValidationInfo
    ) -> RegistryAuthentication | RegistryBasicAuthentication | None:
        flavor = info.data.get("flavor")  # absent where the flavor itself was refused
        if authentication is None or flavor is None:
            return authentication
        expected = REGISTRY_AUTHENTICATION_KINDS[flavor]
        if authentication.kind != expected:
            raise ValueError(
                f"kind: {authentication.kind} is not built for the {flavor} flavor, which authenticates "
                f"with kind: {expected}"
            )
        return authentication


class Listeners(Strict):
    client_port: int = Field(default=9092, ge=1, le=65535)
    controller_port: int = Field(default=9093, ge=1, le=65535)
    zookeeper_port: int = Field(default=2181, ge=1, le=65535)


class Kafka(Strict):
    mode: Literal["kraft", "zookeeper"] = "kraft"
    cluster_id: KafkaClusterId
    data_dirs: list[AbsolutePath] = Field(min_length=1)
    listeners: Listeners = Listeners()
    default_replication_factor: int = Field(ge=1)
    min_insync_replicas: int = Field(ge=1)
    service_user: UnixName = "kafka"
    auto_create_topics: bool = False


class Network(Strict):
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    broker_throughput_gbps: float = Field(gt=0)
    max_clock_offset_ms: float = Field(default=500, gt=0)


class Connections(Strict):
    kafka_admin: Identifier
    schema_registry: Identifier


class Tls(Strict):
    mode: Literal["internal_ca", "provided"] = "internal_ca"
    # internal_ca: the CA key and certificate live here on the Airflow side (created once, mode 0700).
    # provided: the operator's PEM files here: ca.crt, <host>.crt (chain), <host>.key.
    material_dir: ControllerPath
    keystore_type: Literal["PEM", "PKCS12"] = "PEM"
    validity_days: int = Field(default=365, ge=1)
    renew_before_days: int = Field(default=30, ge=1)


class Ldap(Strict):
    url: LdapUrl
    user_dn_template: LdapDnTemplate


class Kerberos(Strict):
    """SASL/GSSAPI on the secure listener: each broker is ``<service_name>/<its address>@<realm>``, each
    client ``<principal>@<realm>``, and the brokers map a client's Kerberos name to its principal (the
    part before ``@``), which the ACLs name. Keytabs come from the realm's administrators, in
    ``keytab_dir``: ``brokers/<host name>.keytab`` and ``clients/<principal>.keytab`` (0600)."""

    realm: KerberosRealm
    kdcs: list[ipaddress.IPv4Address | DnsName] = Field(min_length=1)
    kdc_port: int = Field(default=88, ge=1, le=65535)
    service_name: Identifier = "kafka"
    keytab_dir: ControllerPath


class Security(Strict):
    tls: Tls
    secure_client_port: int = Field(default=9094, ge=1, le=65535)
    internal_port: int = Field(default=9095, ge=1, le=65535)
    registry_https_port: int = Field(default=8443, ge=1, le=65535)
    # scram: SASL/SCRAM-SHA-512 with passwords from ``credentials``; mtls: a client certificate per
    # principal (CN=<principal>) from the cluster CA, no password anywhere.
    # oauthbearer: a token per principal from the OIDC provider ``oauthbearer`` names (client credentials).
    # kerberos: a ticket per principal from the realm ``kerberos`` names, each from its own keytab.
    client_authentication: Literal["scram", "mtls", "oauthbearer", "kerberos"] = "scram"
    credentials: Credentials | None = None
    oauthbearer: OAuthBearer | None = None
    admin_user: Principal = "admin"
    ldap: Ldap | None = None
    kerberos: Kerberos | None = None
    components: ProjectPath = "config/components.yaml"

    @model_validator(mode="after")
    def mechanism_inputs_declared(self) -> Security:
        if self.client_authentication == "scram" and self.credentials is None:
            raise ValueError(
                "credentials: required when client_authentication is scram (where the passwords come from)"
            )
        if self.client_authentication == "oauthbearer" and self.oauthbearer is None:
            raise ValueError(
                "oauthbearer: required when client_authentication is oauthbearer (the provider that issues tokens)"
            )
        if self.client_authentication == "kerberos" and self.kerberos is None:
            raise ValueError(
                "kerberos: required when client_authentication is kerberos (the realm, its KDCs and keytabs)"
            )
        return self


class Approvers(Strict):
    """Who may approve a rollout under change control: Airflow user names and Airflow roles (a role
    counts where the auth manager can tell a user's role). Whoever triggered a rollout never approves it."""

    users: list[Identifier] = Field(default_factory=list)
    roles: list[Identifier] = Field(default_factory=list)

    @model_validator(mode="after")
    def someone_can_approve(self) -> Approvers:
        if not self.users and not self.roles:
            raise ValueError("name at least one user or role, or leave approvers out")
        return self


class Environment(Strict):
    name: Identifier
    description: FreeText = ""
    sizing_profile: Identifier
    deployment_mode: DeploymentMode = DeploymentMode.BARE_METAL
    requires_approval: bool = False
    # False only where every event is synthetic (the lab): compliance then grades what protects patient
    # data beyond the catalog's rules (the registry's authentication) as advisory. It says so in the report.
    holds_patient_data: bool = True
    approvers: Approvers | None = None
    distribution: Distribution
    schema_registry: SchemaRegistry
    kafka: Kafka
    network: Network
    connections: Connections
    hosts: list[Host] = Field(min_length=1)
    security: Security | None = None
    catalog: ProjectPath = "config/catalog.yaml"
    policies: ProjectPath = "config/policies.yaml"

    @model_validator(mode="after")
    def registry_credentials_over_https(self) -> Environment:
        if self.schema_registry.authentication is not None and self.security is None:
            raise ValueError(
                "schema_registry.authentication: needs the security section (the registry takes "
                "credentials over HTTPS only)"
            )
        return self

    def hosts_with(self, role: str) -> list[Host]:
        return [host for host in self.hosts if role in host.roles]

    @property
    def controllers(self) -> list[Host]:
        return self.hosts_with("controller")

    @property
    def brokers(self) -> list[Host]:
        return self.hosts_with("broker")

    @property
    def registries(self) -> list[Host]:
        return self.hosts_with("schema_registry")

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"environment {self.name!r} has no host {name!r}")

    def node_id(self, host: Host) -> int:
        """KRaft node id: declared, or the host's 1-based position, so it never changes between runs."""
        return host.node_id if host.node_id is not None else self.hosts.index(host) + 1

    def bootstrap_servers(self, secure: bool = False) -> str:
        port = (
            self.security.secure_client_port if secure and self.security else self.kafka.listeners.client_port
        )
        return ",".join(f"{_hostport(host.address, port)}" for host in self.brokers)


def _hostport(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


class SizingProfiles(Strict):
    profiles: dict[Identifier, SizingProfile]


# --- loading -------------------------------------------------------------------------------------


def yaml_path(loc: Iterable[str | int]) -> str:
    """``('hosts', 1, 'roles')`` -> ``hosts[1].roles``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _pydantic_problems(error: ValidationError) -> list[ConfigProblem]:
    problems = []
    for item in error.errors():
        # Union members add their type name to the location; it is noise to an operator.
        loc = [part for part in item["loc"] if not (isinstance(part, str) and "[" in part)]
        kind = item["type"]
        if kind == "extra_forbidden":
            message = "unknown key (a typo?)"
        elif kind == "missing":
            message = "required key is missing"
        else:
            message = item["msg"].removeprefix("Value error, ")
        problems.append(ConfigProblem(path=yaml_path(loc), message=message))
    return problems


def model_problems(model: type[ModelT], raw: Any) -> tuple[ModelT | None, list[ConfigProblem]]:
    """``raw`` validated as ``model``, with every control character anywhere in the document (keys
    included) reported once at its path, even where no stricter type applies."""
    control = [ConfigProblem(path=p.path, message=p.message) for p in control_character_problems(raw)]
    flagged = {problem.path for problem in control}
    try:
        return model.model_validate(raw), control
    except ValidationError as error:
        structural = [p for p in _pydantic_problems(error) if p.path not in flagged]
        return None, control + structural


def beyond(refused: list[ConfigProblem], more: list[ConfigProblem]) -> list[ConfigProblem]:
    """``more`` without the problems at paths already ``refused``: a rule across fields adds nothing to a
    value its own type refused, and it would quote that value back (it may be a secret in the wrong field)."""
    paths_refused = {problem.path for problem in refused}
    return [problem for problem in more if problem.path not in paths_refused]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def cross_field_problems(raw: Mapping[str, Any], profiles: Mapping[str, Any]) -> list[ConfigProblem]:
    """Rules across fields, checked on the raw mapping so they run even when the structure is broken."""
    hosts = [_as_dict(h) for h in _as_list(raw.get("hosts"))]
    kafka = _as_dict(raw.get("kafka"))
    return [
        *_duplicate_hosts(hosts),
        *_roles_and_quorum(hosts, kafka),
        *_replication(hosts, kafka),
        *_port_clashes(raw, hosts, kafka),
        *_sizing_profile(raw, profiles),
        *_not_deployable_yet(raw, kafka),
        *_distribution(raw),
        *_subnet(raw, hosts),
        *_approvals_and_files(raw),
    ]


def _with_role(hosts: list[Mapping[str, Any]], role: str) -> list[int]:
    return [i for i, h in enumerate(hosts) if role in _as_list(h.get("roles"))]


def _duplicate_hosts(hosts: list[Mapping[str, Any]]) -> list[ConfigProblem]:
    """Each host name and address once."""
    problems: list[ConfigProblem] = []
    for key in ("name", "address"):
        counts = Counter(str(h.get(key)) for h in hosts if h.get(key) is not None)
        seen: set[str] = set()
        for index, host in enumerate(hosts):
            value = host.get(key)
            if value is None:
                continue
            if counts[str(value)] > 1 and str(value) in seen:
                problems.append(
                    ConfigProblem(path=f"hosts[{index}].{key}", message=f"duplicate {key} {value}")
                )
            seen.add(str(value))
    return problems


def _roles_and_quorum(hosts: list[Mapping[str, Any]], kafka: Mapping[str, Any]) -> list[ConfigProblem]:
    """Every role on some host; an odd number of KRaft controllers."""
    problems: list[ConfigProblem] = []
    for role in ROLES:
        if hosts and not _with_role(hosts, role):
            problems.append(ConfigProblem(path="hosts", message=f"no host has the role {role}"))

    controllers = _with_role(hosts, "controller")
    if kafka.get("mode", "kraft") == "kraft" and controllers and len(controllers) % 2 == 0:
        problems.append(
            ConfigProblem(
                path="hosts",
                message=f"{len(controllers)} KRaft controllers: a quorum needs an odd number (3 or 5)",
            )
        )
    return problems


def _replication(hosts: list[Mapping[str, Any]], kafka: Mapping[str, Any]) -> list[ConfigProblem]:
    """Replication within the brokers, min.insync.replicas below it."""
    problems: list[ConfigProblem] = []
    brokers = _with_role(hosts, "broker")
    replication = _int_or_none(kafka.get("default_replication_factor"))
    min_isr = _int_or_none(kafka.get("min_insync_replicas"))
    if replication is not None and brokers and replication > len(brokers):
        problems.append(
            ConfigProblem(
                path="kafka.default_replication_factor",
                message=f"replication factor {replication} is above the {len(brokers)} brokers",
            )
        )
    if replication is not None and min_isr is not None and min_isr >= replication:
        problems.append(
            ConfigProblem(
                path="kafka.min_insync_replicas",
                message=f"min.insync.replicas {min_isr} must be below the replication factor {replication}"
                " (otherwise one broker down stops every producer)",
            )
        )
    return problems


def _port_clashes(
    raw: Mapping[str, Any], hosts: list[Mapping[str, Any]], kafka: Mapping[str, Any]
) -> list[ConfigProblem]:
    """No two roles of one host on the same port."""
    problems: list[ConfigProblem] = []
    listeners = _as_dict(kafka.get("listeners"))
    ports_by_role = {
        "broker": ("kafka.listeners.client_port", listeners.get("client_port", 9092)),
        "controller": ("kafka.listeners.controller_port", listeners.get("controller_port", 9093)),
        "schema_registry": ("schema_registry.port", _as_dict(raw.get("schema_registry")).get("port", 8081)),
    }
    for index, host in enumerate(hosts):
        taken: dict[Any, str] = {}
        for role in _as_list(host.get("roles")):
            if role not in ports_by_role:
                continue
            setting, port = ports_by_role[role]
            if port in taken:
                problems.append(
                    ConfigProblem(
                        path=f"hosts[{index}].roles",
                        message=f"{taken[port]} and {setting} both use port {port} on host {host.get('name')}",
                    )
                )
            taken[port] = setting
    return problems


def _sizing_profile(raw: Mapping[str, Any], profiles: Mapping[str, Any]) -> list[ConfigProblem]:
    """A sizing profile that exists."""
    problems: list[ConfigProblem] = []
    profile = raw.get("sizing_profile")
    if isinstance(profile, str) and profiles and profile not in profiles:
        problems.append(
            ConfigProblem(
                path="sizing_profile",
                message=f"unknown profile {profile!r}; known: {', '.join(sorted(profiles))}",
            )
        )
    return problems


def _not_deployable_yet(raw: Mapping[str, Any], kafka: Mapping[str, Any]) -> list[ConfigProblem]:
    """Settings the schema accepts but no stage builds yet, refused rather than ignored."""
    problems: list[ConfigProblem] = []
    tls = _as_dict(_as_dict(raw.get("security")).get("tls"))
    if tls.get("keystore_type") == "PKCS12":
        problems.append(
            ConfigProblem(
                path="security.tls.keystore_type",
                message="PKCS12 broker keystores are not built yet: brokers read PEM key and certificate files "
                "(the registry's keystore is made from them); use PEM",
            )
        )
    # Confluent's registry keeps its schemas in Kafka; once secured its own client logs in on the secure
    # listener with the admin's SCRAM credentials. No other mechanism's login is rendered for it yet.
    confluent = _as_dict(raw.get("schema_registry")).get("flavor") == "confluent"
    mechanism = _as_dict(raw.get("security")).get("client_authentication", "scram")
    if confluent and raw.get("security") is not None and mechanism != "scram":
        problems.append(
            ConfigProblem(
                path="security.client_authentication",
                message=f"{mechanism}: the confluent registry's own Kafka client (its kafkastore) logs in "
                "with SCRAM only; use scram (or the apicurio flavor, which keeps no schemas in Kafka)",
            )
        )
    distribution = _as_dict(raw.get("distribution"))
    if kafka.get("mode") == "zookeeper":
        confluent_7 = distribution.get("flavor") == "confluent" and str(
            distribution.get("version", "")
        ).startswith("7.")
        problems.append(
            ConfigProblem(
                path="kafka.mode",
                message="zookeeper is not deployable yet (ZooKeeper and the migration to KRaft come with the "
                "Confluent Platform 7.x DAGs); use kraft"
                if confluent_7
                else "ZooKeeper mode exists only up to Confluent Platform 7.x; Kafka 4.x is KRaft only",
            )
        )
    return problems


def _distribution(raw: Mapping[str, Any]) -> list[ConfigProblem]:
    """Where each distribution flavor installs from."""
    problems: list[ConfigProblem] = []
    distribution = _as_dict(raw.get("distribution"))
    if distribution.get("flavor") == "apache" and not distribution.get("archive"):
        problems.append(
            ConfigProblem(path="distribution.archive", message="the apache flavor installs from an archive")
        )
    if (
        distribution.get("flavor") == "confluent"
        and not distribution.get("archive")
        and not distribution.get("package_repository")
    ):
        problems.append(
            ConfigProblem(
                path="distribution",
                message="the confluent flavor needs an archive or a package_repository",
            )
        )
    return problems


def _subnet(raw: Mapping[str, Any], hosts: list[Mapping[str, Any]]) -> list[ConfigProblem]:
    """Every host inside the cluster subnet."""
    problems: list[ConfigProblem] = []
    network = _as_dict(raw.get("network"))
    subnet = network.get("subnet")
    if isinstance(subnet, str):
        try:
            net = ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            net = None
        if net is not None:
            for index, host in enumerate(hosts):
                try:
                    address = ipaddress.ip_address(str(host.get("address")))
                except ValueError:
                    continue
                if address not in net:
                    problems.append(
                        ConfigProblem(
                            path=f"hosts[{index}].address",
                            message=f"{address} is outside the cluster subnet {subnet}",
                        )
                    )
    return problems


def _approvals_and_files(raw: Mapping[str, Any]) -> list[ConfigProblem]:
    """Approvers only under change control; the catalog and policies files exist."""
    problems: list[ConfigProblem] = []
    if raw.get("approvers") is not None and raw.get("requires_approval") is not True:
        problems.append(
            ConfigProblem(path="approvers", message="approvers decide only with requires_approval: true")
        )

    for key in ("catalog", "policies"):
        value = raw.get(key)
        if isinstance(value, str) and not paths.resolve_project_path(value).is_file():
            problems.append(ConfigProblem(path=key, message="file not found (relative to the project root)"))
    return problems


def load_sizing_profiles(path: Path | None = None) -> dict[str, SizingProfile]:
    source = path or paths.CONFIG_DIR / "sizing_profiles.yaml"
    return dict(_sizing_profiles_of(source, source.stat().st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _sizing_profiles_of(source: Path, version: int) -> Mapping[str, SizingProfile]:
    """Parsed once per version of the file (the profiles are frozen): each host's checks and desired state
    ask for them, and parsing the YAML cost a many-host preflight 28 ms of CPU per host."""
    raw = yaml.safe_load(source.read_text())
    loaded, problems = model_problems(SizingProfiles, raw)
    if loaded is None or problems:
        raise EnvironmentConfigError(str(source), problems)
    return loaded.profiles


def environment_file(name_or_path: str) -> Path:
    """An environment by name (``lab`` -> ``config/environments/lab.yaml``) or by path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        return paths.resolve_project_path(candidate)
    return paths.ENVIRONMENTS_DIR / f"{name_or_path}.yaml"


def available_environments() -> list[str]:
    return sorted(p.stem for p in paths.ENVIRONMENTS_DIR.glob("*.yaml"))


def parse_environment(raw: Any, source: str, profiles: Mapping[str, SizingProfile]) -> Environment:
    if not isinstance(raw, Mapping):
        raise EnvironmentConfigError(source, [ConfigProblem(path="", message="expected a mapping")])
    environment, problems = model_problems(Environment, raw)
    problems.extend(beyond(problems, cross_field_problems(raw, profiles)))
    if problems or environment is None:
        raise EnvironmentConfigError(source, problems)
    return environment


def _read_yaml(source: Path) -> Any:
    if not source.is_file():
        known = ", ".join(available_environments())
        raise EnvironmentConfigError(
            str(source), [ConfigProblem(path="", message=f"no such environment file (known: {known})")]
        )
    try:
        return yaml.safe_load(source.read_text())
    except yaml.YAMLError as error:
        raise EnvironmentConfigError(
            str(source), [ConfigProblem(path="", message=f"not YAML: {error}")]
        ) from None


def _merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) is replaced whole."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve_extends(raw: Any, source: Path, chain: tuple[Path, ...]) -> Any:
    """``extends: <environment>`` starts from another environment file and overrides some of it
    (e.g. the lab under change control), so variants cannot drift from their base."""
    if not isinstance(raw, Mapping) or "extends" not in raw:
        return raw
    base_name = raw["extends"]
    # A name in config/environments/, never a path: a variant cannot pull in a file from elsewhere.
    named = isinstance(base_name, str) and IDENTIFIER.match(base_name) is not None
    base_source = environment_file(str(base_name)) if named else None
    if base_source is None or base_source in chain or base_source == source:
        raise EnvironmentConfigError(
            str(source),
            [
                ConfigProblem(
                    path="extends",
                    message="must name another environment of config/environments/, without cycles",
                )
            ],
        )
    base = _resolve_extends(_read_yaml(base_source), base_source, (*chain, source))
    if not isinstance(base, Mapping):
        raise EnvironmentConfigError(str(base_source), [ConfigProblem(path="", message="expected a mapping")])
    return _merged(base, {key: value for key, value in raw.items() if key != "extends"})


def load_environment(name_or_path: str) -> Environment:
    source = environment_file(name_or_path)
    raw = _resolve_extends(_read_yaml(source), source, ())
    return parse_environment(raw, str(source), load_sizing_profiles())


def sizing_profile(environment: Environment, override: str | None = None) -> tuple[str, SizingProfile]:
    profiles = load_sizing_profiles()
    name = override or environment.sizing_profile
    if name not in profiles:
        raise EnvironmentConfigError(
            "sizing_profile", [ConfigProblem(path="sizing_profile", message=f"unknown profile {name!r}")]
        )
    return name, profiles[name]
