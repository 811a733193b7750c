"""The desired state of each host: what is installed, which files hold what, which services run.

Rendered from the templates in ``include/templates`` with the environment and the sizing profile. The
security stage changes only the listener layout (``ListenerLayout``); everything else stays as here,
so re-running this stage after security keeps the secured listeners.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath

import jinja2

from event_broker_rollout import paths
from event_broker_rollout.config.components import PROBE_PRINCIPAL, load_components
from event_broker_rollout.config.credentials import load_credentials, load_registry_secrets, password_for
from event_broker_rollout.config.environment import (
    Environment,
    Host,
    RegistryAuthentication,
    RegistryBasicAuthentication,
    SizingProfile,
)
from event_broker_rollout.config.keytabs import broker_keytab, kdc_addresses
from event_broker_rollout.hosts.listeners import (
    ALLOWED_URLS_PROPERTY,
    BROKER_KEYTAB,
    KERBEROS_CONFIG,
    KERBEROS_CONFIG_PROPERTY,
    KERBEROS_DIR,
    OIDC_PROVIDER_CA,
    TLS_DIR,
    TLS_PROTOCOLS,
    ListenerLayout,
    layout_for_phase,
    phase_index,
)
from event_broker_rollout.hosts.shell import command_line, double_quoted
from event_broker_rollout.hosts.tls import node_material, trusted_ca_pem
from event_broker_rollout.hosts.tls_policy import SERVER_CIPHER_SUITES

KAFKA_SERVICE = "kafka"
REGISTRY_SERVICE = "schema-registry"
KAFKA_CONFIG_DIR = "/etc/kafka"
KAFKA_LOG_DIR = "/var/log/kafka"
REGISTRY_CONFIG_DIR = "/etc/schema-registry"
REGISTRY_DATA_DIR = "/var/lib/schema-registry"
REGISTRY_LOG_DIR = "/var/log/schema-registry"
REGISTRY_TLS_DIR = "/etc/schema-registry/tls"
# Confluent Schema Registry's HTTP basic logins: the JAAS file names the password file (Jetty's format).
REGISTRY_JAAS = f"{REGISTRY_CONFIG_DIR}/jaas.conf"
REGISTRY_PASSWORDS = f"{REGISTRY_CONFIG_DIR}/passwords.properties"
REGISTRY_REALM = "SchemaRegistry"
REGISTRY_ADMIN_ROLE = "admin"
REGISTRY_READER_ROLE = "readonly"
# Jetty takes a password starting so as an encoded one, not as the secret the client sends.
JETTY_CREDENTIAL_PREFIXES = ("OBF:", "MD5:", "CRYPT:")
TOOLS_CONFIG = "/etc/kafka/tls/tools.properties"
SERVICE_CONF_DIR = "/etc/event-broker/services"
SERVICE_WRAPPER = "/opt/event-broker/bin/ebr-service"
SYSTEMD_DIR = "/etc/systemd/system"
NOFILE = 100_000


@cache
def _templates() -> jinja2.Environment:
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(paths.TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    # Files a shell sources (the env files, the ebr-service definitions) put every value through this.
    templates.filters["shell_dq"] = double_quoted
    return templates


class UnsafeValueError(ValueError):
    """A value a rendered file cannot hold as it is: a control character would start a line of its own,
    a quote or comma would end the value early where the file's format gives them a meaning."""


def _refuse_control_characters(template: str, name: str, value: object) -> None:
    """A newline in, say, a data dir would append its own line to server.properties; the error names
    the value's key, never the value (it may be a secret)."""
    if isinstance(value, str):
        if any(unicodedata.category(character) in ("Cc", "Zl", "Zp") for character in value):
            raise UnsafeValueError(f"{template}: the value of {name} contains a control character; refused")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                _refuse_control_characters(template, f"{name}[{index}] key", item[0])
                _refuse_control_characters(template, f"{name}[{item[0]}]", item[1])
            else:
                _refuse_control_characters(template, f"{name}[{index}]", item)


def render(template: str, **values: object) -> str:
    for name, value in values.items():
        _refuse_control_characters(template, name, value)
    return _templates().get_template(template).render(**values)


def sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


@dataclass(frozen=True)
class ManagedFile:
    path: str
    content: str | bytes  # bytes: a binary file (a keytab)
    mode: str = "0644"
    owner: str = "root"
    restarts: tuple[str, ...] = ()  # services that must restart when this file changes
    secret: bool = False  # key material: never read back, never diffed, only its digest is compared

    @property
    def digest(self) -> str:
        return sha256(self.content)


@dataclass(frozen=True)
class Install:
    """An archive unpacked side by side into ``<base>/<top_dir>``, ``<base>/current`` pointing at it."""

    name: str
    archive: Path
    base_dir: str
    top_dir: str
    restarts: tuple[str, ...]

    @property
    def target(self) -> str:
        return f"{self.base_dir}/{self.top_dir}"

    @property
    def marker(self) -> str:
        """What ``<target>/.ebr-installed`` holds: the archive's name and digest, so an archive rebuilt
        under the same name (a changed start script, a patched jar) is installed again."""
        return f"{self.archive.name}@sha256:{archive_digest(self.archive)}"

    @property
    def current_link(self) -> str:
        return f"{self.base_dir}/current"


@dataclass(frozen=True)
class Service:
    name: str
    description: str
    exec_start: str  # its words quoted (``shell.command_line``): ebr-service runs it with sh
    env_file: str
    log_file: str


@dataclass(frozen=True)
class HostState:
    host: str
    service_user: str
    directories: tuple[tuple[str, str], ...]  # (path, owner)
    installs: tuple[Install, ...]
    files: tuple[ManagedFile, ...]
    services: tuple[Service, ...]
    data_dirs: tuple[str, ...] = field(default_factory=tuple)
    ports: tuple[tuple[int, str], ...] = ()  # (port, service that listens on it)


def archive_digest(archive: Path) -> str:
    """The archive's SHA-256: from the ``<archive>.sha256`` the artifact build writes beside it, else
    computed (once per version of the file)."""
    sidecar = archive.with_name(archive.name + ".sha256")
    if sidecar.is_file():
        digest, _, name = sidecar.read_text().strip().partition("  ")
        if name == archive.name and len(digest) == 64:
            return digest
    info = archive.stat()
    return _computed_digest(str(archive), info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=16)
def _computed_digest(path: str, mtime_ns: int, size: int) -> str:  # mtime and size: the cache key
    hasher = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def archive_top_dir(archive: Path) -> str:
    """``kafka_2.13-4.1.2.tgz`` -> ``kafka_2.13-4.1.2`` (the archive's top directory, by convention)."""
    name = archive.name
    for suffix in (".tar.gz", ".tgz"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    raise ValueError(f"{archive}: expected a .tgz or .tar.gz archive")


def https_mode(environment: Environment, phase: str) -> str:
    """The registry's HTTPS: off before security, beside HTTP while clients move, alone once secured."""

    if environment.security is None or phase_index(phase) < phase_index("listeners"):
        return "off"
    return "only" if phase == "secured" else "both"


def registry_authenticates(environment: Environment, phase: str) -> bool:
    """Clients must authenticate at the registry once it answers over HTTPS alone: credentials never
    travel over the plain HTTP it keeps while clients move (and one restart brings HTTPS-only and OIDC)."""
    return environment.schema_registry.authentication is not None and https_mode(environment, phase) == "only"


def kafka_tool(environment: Environment, name: str) -> str:
    """A Kafka tool of the installed distribution: ``bin/<name>.sh`` (Apache) or ``bin/<name>`` (Confluent)."""
    suffix = ".sh" if environment.distribution.flavor == "apache" else ""
    return f"{environment.distribution.install_dir}/current/bin/{name}{suffix}"


def quorum_voters(environment: Environment) -> str:
    port = environment.kafka.listeners.controller_port
    return ",".join(f"{environment.node_id(h)}@{h.address}:{port}" for h in environment.controllers)


def kafka_roles(host: Host) -> list[str]:
    return [role for role in ("broker", "controller") if role in host.roles]


def tls_files(
    environment: Environment, host: Host, directory: str, restarts: tuple[str, ...], keystore: bool
) -> list[ManagedFile]:
    """The node's certificate material: a PEM keystore (key + chain) for Kafka, or cert and key for the registry."""

    material = node_material(environment, host)
    user = environment.kafka.service_user
    files = [ManagedFile(f"{directory}/ca.crt", material.ca_pem, owner=user, restarts=restarts)]
    if keystore:
        files.append(
            ManagedFile(
                f"{directory}/node.pem",
                material.key_pem + material.cert_pem,
                mode="0600",
                owner=user,
                restarts=restarts,
                secret=True,
            )
        )
    else:
        files += [
            ManagedFile(f"{directory}/node.crt", material.cert_pem, owner=user, restarts=restarts),
            ManagedFile(
                f"{directory}/node.key",
                material.key_pem,
                mode="0600",
                owner=user,
                restarts=restarts,
                secret=True,
            ),
        ]
    return files


def desired_state(
    environment: Environment,
    host: Host,
    profile_name: str,
    profile: SizingProfile,
    phase: str = "plaintext",
    systemd: bool = False,
) -> HostState:

    layout = layout_for_phase(environment, host, phase)
    user = environment.kafka.service_user
    distribution = environment.distribution
    java_home = distribution.java_home or ""
    installs: list[Install] = []
    files: list[ManagedFile] = []
    services: list[Service] = []
    directories: list[tuple[str, str]] = [("/etc/event-broker", "root"), ("/opt/event-broker/bin", "root")]
    wrapper = (paths.INCLUDE_DIR / "scripts" / "ebr-service.sh").read_text()
    files.append(ManagedFile(SERVICE_WRAPPER, wrapper, mode="0755"))
    if not systemd:
        directories.append((SERVICE_CONF_DIR, "root"))

    kafka = kafka_roles(host)
    if kafka:
        if distribution.archive is None:
            raise ValueError("installing from a package repository is not supported by this stage yet")
        archive = paths.resolve_project_path(distribution.archive)
        installs.append(
            Install(
                KAFKA_SERVICE, archive, distribution.install_dir, archive_top_dir(archive), (KAFKA_SERVICE,)
            )
        )
        directories += [(KAFKA_CONFIG_DIR, "root"), (KAFKA_LOG_DIR, user)]
        if environment.security is not None:
            directories.append((TLS_DIR, user))
            files += tls_files(environment, host, TLS_DIR, (KAFKA_SERVICE,), keystore=True)
            # Kafka's own tools on this node speak TLS to the controllers with the node's certificate.
            files.append(
                ManagedFile(TOOLS_CONFIG, render("kafka/tools.properties.j2", tls_dir=TLS_DIR), owner=user)
            )
        jvm_properties: list[tuple[str, str]] = []
        # A broker that verifies OAUTHBEARER tokens fetches the provider's keys over the provider's CA.
        oauthbearer = environment.security.oauthbearer if environment.security is not None else None
        if oauthbearer is not None and "broker" in host.roles:
            files.append(
                ManagedFile(
                    OIDC_PROVIDER_CA,
                    trusted_ca_pem(oauthbearer.ca_file),
                    owner=user,
                    restarts=(KAFKA_SERVICE,),
                )
            )
            jvm_properties.append((ALLOWED_URLS_PROPERTY, oauthbearer.jwks_url))
        # A broker that accepts Kerberos tickets holds its service principal's keytab and the realm's KDCs.
        security = environment.security
        kerberos = (
            security.kerberos
            if security is not None and security.client_authentication == "kerberos"
            else None
        )
        if kerberos is not None and "broker" in host.roles:
            directories.append((KERBEROS_DIR, user))
            files += [
                ManagedFile(
                    KERBEROS_CONFIG,
                    render("kerberos/krb5.conf.j2", realm=kerberos.realm, kdcs=kdc_addresses(kerberos)),
                    owner=user,
                    restarts=(KAFKA_SERVICE,),
                ),
                ManagedFile(
                    BROKER_KEYTAB,
                    broker_keytab(kerberos, host),
                    mode="0600",
                    owner=user,
                    restarts=(KAFKA_SERVICE,),
                    secret=True,
                ),
            ]
            jvm_properties.append((KERBEROS_CONFIG_PROPERTY, KERBEROS_CONFIG))
        directories += [(d, user) for d in environment.kafka.data_dirs]
        restart = (KAFKA_SERVICE,)
        files += [
            ManagedFile(
                f"{KAFKA_CONFIG_DIR}/server.properties",
                render(
                    "kafka/server.properties.j2",
                    cluster_id=environment.kafka.cluster_id,
                    host=host.name,
                    roles=kafka,
                    node_id=environment.node_id(host),
                    quorum_voters=quorum_voters(environment),
                    listeners=layout.listeners,
                    advertised_listeners=layout.advertised,
                    protocol_map=layout.protocol_map,
                    inter_broker_listener=layout.inter_broker_listener,
                    security_settings=layout.settings,
                    tls_cipher_suites=SERVER_CIPHER_SUITES if environment.security is not None else (),
                    log_dirs=environment.kafka.data_dirs,
                    replication_factor=environment.kafka.default_replication_factor,
                    min_insync_replicas=environment.kafka.min_insync_replicas,
                    auto_create_topics=environment.kafka.auto_create_topics,
                ),
                mode="0640",
                owner=user,
                restarts=restart,
            ),
            ManagedFile(
                f"{KAFKA_CONFIG_DIR}/kafka.env",
                render(
                    "kafka/kafka.env.j2",
                    profile=profile_name,
                    heap_mb=profile.broker_heap_mb,
                    config_dir=KAFKA_CONFIG_DIR,
                    log_dir=KAFKA_LOG_DIR,
                    java_home=java_home,
                    jvm_properties=jvm_properties,
                ),
                restarts=restart,
            ),
            ManagedFile(
                f"{KAFKA_CONFIG_DIR}/log4j2.yaml",
                render("kafka/log4j2.yaml.j2", log_dir=KAFKA_LOG_DIR),
                restarts=restart,
            ),
        ]
        services.append(
            Service(
                KAFKA_SERVICE,
                f"Apache Kafka {distribution.version} (KRaft {'+'.join(kafka)})",
                command_line(
                    [kafka_tool(environment, "kafka-server-start"), f"{KAFKA_CONFIG_DIR}/server.properties"]
                ),
                f"{KAFKA_CONFIG_DIR}/kafka.env",
                f"{KAFKA_LOG_DIR}/kafka.out",
            )
        )

    if "schema_registry" in host.roles:
        files, services, installs, directories = _registry(
            environment, host, profile_name, profile, phase, files, services, installs, directories
        )

    for service in services:
        files.append(service_definition(service, user, distribution.install_dir, systemd))
    return HostState(
        host=host.name,
        service_user=user,
        directories=tuple(directories),
        installs=tuple(installs),
        files=tuple(files),
        services=tuple(services),
        data_dirs=tuple(environment.kafka.data_dirs) if kafka else (),
        ports=tuple(service_ports(environment, host, layout, phase)),
    )


def service_ports(
    environment: Environment, host: Host, layout: ListenerLayout, phase: str
) -> list[tuple[int, str]]:
    """The ports this host's services listen on in ``phase``: Kafka's listeners, the registry's HTTP(S)."""
    ports = [(int(listener.rpartition(":")[2]), KAFKA_SERVICE) for listener in layout.listeners]
    if "schema_registry" in host.roles:
        ports.append((environment.schema_registry.port, REGISTRY_SERVICE))
        if https_mode(environment, phase) != "off" and environment.security is not None:
            ports.append((environment.security.registry_https_port, REGISTRY_SERVICE))
    return ports


def _registry(
    environment: Environment,
    host: Host,
    profile_name: str,
    profile: SizingProfile,
    phase: str,
    files: list[ManagedFile],
    services: list[Service],
    installs: list[Install],
    directories: list[tuple[str, str]],
) -> tuple[list[ManagedFile], list[Service], list[Install], list[tuple[str, str]]]:
    """Apicurio (its own archive, Confluent-compatible API) or Confluent Schema Registry (part of the CP install)."""
    registry = environment.schema_registry
    user = environment.kafka.service_user
    java_home = environment.distribution.java_home or ""
    restart = (REGISTRY_SERVICE,)
    directories = [
        *directories,
        (REGISTRY_CONFIG_DIR, "root"),
        (REGISTRY_DATA_DIR, user),
        (REGISTRY_LOG_DIR, user),
    ]
    https = https_mode(environment, phase)
    if https != "off":
        directories.append((REGISTRY_TLS_DIR, user))
        # Confluent's rest-utils reads a PEM keystore (key + chain in one file), Quarkus cert and key files.
        keystore = registry.flavor == "confluent"
        files = [*files, *tls_files(environment, host, REGISTRY_TLS_DIR, restart, keystore=keystore)]
    authentication = registry.authentication if registry_authenticates(environment, phase) else None
    oidc = authentication if isinstance(authentication, RegistryAuthentication) else None
    basic = authentication if isinstance(authentication, RegistryBasicAuthentication) else None
    oidc_ca_file = f"{REGISTRY_TLS_DIR}/oidc-provider-ca.crt" if oidc is not None else ""
    if oidc is not None:
        files.append(ManagedFile(oidc_ca_file, trusted_ca_pem(oidc.ca_file), owner=user, restarts=restart))
    if basic is not None:
        files += registry_login_files(environment, user, restart)
    env_file = ManagedFile(
        f"{REGISTRY_CONFIG_DIR}/registry.env",
        render(
            "schema-registry/registry.env.j2",
            profile=profile_name,
            heap_mb=profile.registry_heap_mb,
            config_dir=REGISTRY_CONFIG_DIR,
            java_home=java_home,
            oidc_ca_file=oidc_ca_file,
            data_dir=REGISTRY_DATA_DIR,
            jaas_file=REGISTRY_JAAS if basic is not None else "",
        ),
        restarts=restart,
    )
    if registry.flavor == "apicurio":
        if registry.archive is None:
            raise ValueError("Apicurio Registry installs from its archive: set schema_registry.archive")
        archive = paths.resolve_project_path(registry.archive)
        installs = [
            *installs,
            Install(REGISTRY_SERVICE, archive, registry.install_dir, archive_top_dir(archive), restart),
        ]
        config = ManagedFile(
            f"{REGISTRY_CONFIG_DIR}/application.properties",
            render(
                "schema-registry/application.properties.j2",
                cluster_id=environment.kafka.cluster_id,
                host=host.name,
                address=str(host.address),
                port=registry.port,
                data_dir=REGISTRY_DATA_DIR,
                https=https,
                https_port=environment.security.registry_https_port if environment.security else 0,
                tls_dir=REGISTRY_TLS_DIR,
                tls_cipher_suites=SERVER_CIPHER_SUITES,
                oidc=oidc,
            ),
            mode="0640",
            owner=user,
            restarts=restart,
        )
        exec_start = command_line([f"{registry.install_dir}/current/bin/apicurio-registry-start.sh"])
        description = f"Apicurio Registry {registry.version} (Confluent-compatible API)"
    else:
        kafkastore = kafkastore_settings(environment, phase)
        config = ManagedFile(
            f"{REGISTRY_CONFIG_DIR}/schema-registry.properties",
            render(
                "schema-registry/schema-registry.properties.j2",
                cluster_id=environment.kafka.cluster_id,
                host=host.name,
                address=str(host.address),
                port=registry.port,
                https=https,
                https_port=environment.security.registry_https_port if environment.security else 0,
                tls_dir=REGISTRY_TLS_DIR,
                tls_protocols=TLS_PROTOCOLS,
                tls_cipher_suites=SERVER_CIPHER_SUITES,
                basic_realm=REGISTRY_REALM if basic is not None else "",
                basic_roles=[REGISTRY_ADMIN_ROLE, REGISTRY_READER_ROLE],
                bootstrap_servers=environment.bootstrap_servers(secure=bool(kafkastore)),
                kafkastore=kafkastore,
                replication_factor=environment.kafka.default_replication_factor,
            ),
            # Once secured it holds the kafkastore's SCRAM password: a secret like a key file.
            mode="0600" if kafkastore else "0640",
            owner=user,
            restarts=restart,
            secret=bool(kafkastore),
        )
        exec_start = command_line(
            [f"{environment.distribution.install_dir}/current/bin/schema-registry-start", config.path]
        )
        description = f"Confluent Schema Registry {registry.version}"
    files = [*files, config, env_file]
    services = [
        *services,
        Service(REGISTRY_SERVICE, description, exec_start, env_file.path, f"{REGISTRY_LOG_DIR}/registry.out"),
    ]
    return files, services, installs, directories


def registry_logins(environment: Environment) -> dict[str, str]:
    """principal -> its role at Confluent's registry: the rollout's admin registers schemas, every
    component and the probe only read. The community registry authenticates and does not enforce the
    roles (that needs Confluent's commercial security plugin); they record who is meant to do what."""
    assert environment.security is not None
    admin = environment.security.admin_user
    readers = [*load_components(environment.security.components).principals(), PROBE_PRINCIPAL]
    return {admin: REGISTRY_ADMIN_ROLE, **{who: REGISTRY_READER_ROLE for who in readers if who != admin}}


def _jetty_password(principal: str, secret: str) -> str:
    """Jetty reads the password file as Java properties (a backslash escapes, edge whitespace goes), then
    splits the value at its first comma into secret and roles: such a secret would not be the one the
    client sends. The error names the principal, never the secret."""
    if any(character in ",\\" or character.isspace() for character in secret) or secret.startswith(
        JETTY_CREDENTIAL_PREFIXES
    ):
        raise UnsafeValueError(
            f"schema_registry.authentication.credentials: the secret of {principal} holds a comma, backslash "
            f"or whitespace, or starts with {'/'.join(JETTY_CREDENTIAL_PREFIXES)}: the registry's password "
            "file cannot hold it; choose another"
        )
    return secret


def registry_login_files(environment: Environment, user: str, restarts: tuple[str, ...]) -> list[ManagedFile]:
    """Confluent's registry checks HTTP basic logins against a password file through JAAS (Jetty's
    PropertyFileLoginModule): the JAAS file names it, the password file holds each principal's secret
    (read from ``credentials``) and role, readable by the service user alone."""
    secrets = load_registry_secrets(environment)
    logins = [
        (who, _jetty_password(who, password_for(secrets, who)), role)
        for who, role in registry_logins(environment).items()
    ]
    return [
        ManagedFile(
            REGISTRY_JAAS,
            render("schema-registry/jaas.conf.j2", realm=REGISTRY_REALM, passwords_file=REGISTRY_PASSWORDS),
            mode="0640",
            owner=user,
            restarts=restarts,
        ),
        ManagedFile(
            REGISTRY_PASSWORDS,
            render("schema-registry/passwords.properties.j2", logins=logins),
            mode="0600",
            owner=user,
            restarts=restarts,
            secret=True,
        ),
    ]


def kafkastore_settings(environment: Environment, phase: str) -> list[tuple[str, str]]:
    """Confluent's registry keeps its schemas in Kafka: once the cluster is secured (its plaintext
    listener gone) its client logs in on the secure listener as the rollout's admin with SCRAM. The
    registry has no principal of its own; the admin, a super user, needs no ACLs on _schemas or the
    registry's group. Validation refuses the confluent flavor with any other client authentication."""
    security = environment.security
    if security is None or https_mode(environment, phase) != "only":
        return []
    if security.client_authentication != "scram":
        raise ValueError(
            "security.client_authentication: the confluent registry's kafkastore logs in with SCRAM only"
        )
    admin = security.admin_user
    password = password_for(load_credentials(environment), admin)
    if '"' in password or "\\" in password:  # the JAAS value is quoted, the properties file escapes
        raise UnsafeValueError(
            f"security.credentials: the password of {admin} holds a quote or backslash: the registry's "
            "kafkastore login cannot hold it; choose another"
        )
    return [
        ("kafkastore.security.protocol", "SASL_SSL"),
        ("kafkastore.sasl.mechanism", "SCRAM-SHA-512"),
        (
            "kafkastore.sasl.jaas.config",
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{admin}" password="{password}";',
        ),
        ("kafkastore.ssl.truststore.type", "PEM"),
        ("kafkastore.ssl.truststore.location", f"{REGISTRY_TLS_DIR}/ca.crt"),
        ("kafkastore.ssl.enabled.protocols", TLS_PROTOCOLS),
        ("kafkastore.ssl.endpoint.identification.algorithm", "https"),
    ]


def service_definition(service: Service, user: str, install_dir: str, systemd: bool) -> ManagedFile:
    """A systemd unit where the host runs systemd, else the ebr-service wrapper's definition."""
    if systemd:
        content = render(
            "service/systemd.service.j2",
            description=service.description,
            install_dir=install_dir,
            after=["kafka.service"] if service.name == REGISTRY_SERVICE else [],
            user=user,
            env_file=service.env_file,
            exec_start=service.exec_start,
            nofile=NOFILE,
        )
        return ManagedFile(f"{SYSTEMD_DIR}/{service.name}.service", content, restarts=(service.name,))
    content = render(
        "service/wrapper.conf.j2",
        name=service.name,
        description=service.description,
        user=user,
        env_file=service.env_file,
        exec_start=service.exec_start,
        log_file=service.log_file,
        nofile=NOFILE,
    )
    return ManagedFile(f"{SERVICE_CONF_DIR}/{service.name}.conf", content, restarts=(service.name,))


def backup_path(path: str) -> str:
    return str(PurePosixPath(path).with_name(PurePosixPath(path).name + ".ebr-previous"))
