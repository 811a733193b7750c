"""An environment file and everything it references, validated together without touching a host.

``make validate ENV=<name>`` prints what this finds, one line per problem (``<file>:<yaml path>: <rule>``),
and every stage runs the same validation before its first step (``dag_support.environment_from``):
the environment, its sizing profile, catalog, classification policies, components, the compliance
policy, the principals they all name (a node certificate, a SCRAM user and a component must never
share an identity), the credentials source and provided TLS material. A file that only the machine
running the rollout holds (an operator's TLS material, an Airflow Variable) is reported as a note
when it is absent here, so an environment can be checked from any checkout.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path

from event_broker_rollout import paths
from event_broker_rollout.config.base import ConfigError, ConfigProblem, EnvironmentConfigError
from event_broker_rollout.config.catalog import (
    Catalog,
    Policies,
    load_catalog,
    load_policies,
    validate_catalog,
)
from event_broker_rollout.config.components import (
    PROBE_PRINCIPAL,
    Components,
    contract_problems,
    load_components,
)
from event_broker_rollout.config.environment import (
    CA_CERT,
    NODE_PRINCIPAL_PREFIX,
    Credentials,
    Environment,
    environment_file,
    load_environment,
)
from event_broker_rollout.config.keytabs import keytab_problems
from event_broker_rollout.config.policy import POLICY_FILE, load_policy

SECRET_MODE_BITS = 0o077  # group and others: a secret file grants them nothing


def display_name(source: str | Path) -> str:
    """A config file as an operator names it: relative to the project when inside it."""
    path = Path(source)
    try:
        return str(path.resolve().relative_to(paths.PROJECT_ROOT.resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class FileProblem:
    file: str
    path: str
    message: str

    @property
    def location(self) -> str:
        return f"{self.file}:{self.path}" if self.path else self.file

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


@dataclass
class Validation:
    environment: Environment | None
    problems: list[FileProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def add(self, source: str | Path, problems: list[ConfigProblem]) -> None:
        name = display_name(source)
        self.problems += [FileProblem(file=name, path=p.path, message=p.message) for p in problems]

    def add_error(self, error: ConfigError) -> None:
        self.add(error.source, error.problems)


@dataclass(frozen=True)
class _Claim:
    """One config value that names a Kafka principal (``User:<name>``)."""

    principal: str
    file: str
    path: str
    kind: str  # claims of one kind are checked for duplicates by their own file's rules
    label: str

    @property
    def location(self) -> str:
        return f"{self.file}:{self.path}"


def _principal_claims(
    environment: Environment, env_file: str, components: Components, comp_file: str
) -> list[_Claim]:
    claims: list[_Claim] = []
    for index, host in enumerate(environment.hosts):
        path = f"hosts[{index}].name"
        claims.append(_Claim(host.name, env_file, path, "host", "a host name"))
        node = f"{NODE_PRINCIPAL_PREFIX}{host.name}"
        claims.append(_Claim(node, env_file, path, "node", f"the node certificate of host {host.name}"))
    if environment.security is not None:
        claims.append(
            _Claim(
                environment.security.admin_user, env_file, "security.admin_user", "admin", "the admin user"
            )
        )
    for index, component in enumerate(components.components):
        claims.append(
            _Claim(
                component.principal,
                comp_file,
                f"components[{index}].principal",
                "component",
                f"component {component.name}'s SCRAM user",
            )
        )
    for name in components.service_principals:
        claims.append(_Claim(name, comp_file, f"service_principals.{name}", "service", "a service principal"))
    return claims


def principal_problems(
    environment: Environment, env_file: str, components: Components, comp_file: str
) -> list[FileProblem]:
    """Node certificates map to ``User:node-<host>``; no SCRAM user or component may take a name a host
    (or its certificate) holds, nor another user's: one identity, one owner."""
    problems: list[FileProblem] = []
    claims = _principal_claims(environment, env_file, components, comp_file)
    for claim in claims:
        if claim.kind not in ("host", "node") and claim.principal.startswith(NODE_PRINCIPAL_PREFIX):
            problems.append(
                FileProblem(
                    claim.file,
                    claim.path,
                    f"principal namespace: User:{NODE_PRINCIPAL_PREFIX}* is reserved for node certificates",
                )
            )
    first_claim: dict[str, _Claim] = {}
    for claim in claims:
        earlier = first_claim.setdefault(claim.principal, claim)
        if earlier is claim or earlier.kind == claim.kind:
            continue  # the same kind's duplicates are its own file's rule (duplicate host, duplicate principal)
        problems.append(
            FileProblem(
                claim.file,
                claim.path,
                f"principal collision: User:{claim.principal} ({claim.label}) is also "
                f"{earlier.label} at {earlier.location}",
            )
        )
    return problems


def credentials_problems(
    source: Credentials | None,
    yaml_path: str,
    env_file: str,
    users: list[str],
    validation: Validation,
    secret: str = "password",
) -> None:
    """A secrets source (SCRAM passwords, the registry's client secrets): named, a private JSON file
    with one ``secret`` per user when it is a file. Never reads a secret into a message."""
    if source is None:
        return
    if source.source == "airflow_variable":
        if not source.variable:
            validation.add(
                env_file,
                [
                    ConfigProblem(
                        path=f"{yaml_path}.variable",
                        message="required for an airflow_variable source",
                    )
                ],
            )
        else:
            validation.notes.append(
                f"{yaml_path}.variable: the Airflow Variable {source.variable} is read by the stages that need it"
            )
        return
    where = f"{yaml_path}.path"
    if not source.path:
        validation.add(env_file, [ConfigProblem(path=where, message="required for a file source")])
        return
    path = Path(source.path)
    try:
        info = path.stat()
    except FileNotFoundError:
        validation.notes.append(f"{where}: {path} does not exist yet (the lab writes its own when it starts)")
        return
    except OSError as error:  # e.g. another user's state folder: the stage's own user checks it
        validation.notes.append(
            f"{where}: not accessible here ({error.strerror}); checked by the security stage"
        )
        return
    if not stat.S_ISREG(info.st_mode):
        validation.add(env_file, [ConfigProblem(path=where, message="credentials file: not a regular file")])
        return
    if info.st_mode & SECRET_MODE_BITS:
        validation.add(
            env_file,
            [
                ConfigProblem(
                    path=where, message="credentials file: readable by group or others (must be 0600)"
                )
            ],
        )
    try:
        secrets = json.loads(path.read_text())
    except OSError as error:
        validation.notes.append(
            f"{where}: not readable here ({error.strerror}); checked by the security stage"
        )
        return
    except ValueError:
        secrets = None
    if not isinstance(secrets, dict) or not all(isinstance(value, str) for value in secrets.values()):
        validation.add(
            env_file,
            [
                ConfigProblem(
                    path=where, message=f"credentials file: must be a JSON object {{user: {secret}}}"
                )
            ],
        )
        return
    missing = [user for user in users if user not in secrets]
    if missing:
        validation.add(
            env_file,
            [ConfigProblem(path=where, message=f"credentials file: no {secret} for {', '.join(missing)}")],
        )


def tls_material_problems(environment: Environment, env_file: str, validation: Validation) -> None:
    """Provided TLS material: the CA certificate and each host's certificate and private key (0600)."""
    if environment.security is None or environment.security.tls.mode != "provided":
        return
    where = "security.tls.material_dir"
    folder = Path(environment.security.tls.material_dir)
    if not folder.exists():
        validation.notes.append(
            f"{where}: {folder} is not on this machine; the machine running the rollout needs "
            f"{CA_CERT}, <host>.crt and <host>.key there"
        )
        return
    if not folder.is_dir():
        validation.add(env_file, [ConfigProblem(path=where, message="provided TLS material: not a folder")])
        return
    wanted = [CA_CERT]
    for host in environment.hosts:
        wanted += [f"{host.name}.crt", f"{host.name}.key"]
    problems: list[ConfigProblem] = []
    for name in wanted:
        file = folder / name
        if not file.is_file():
            problems.append(ConfigProblem(path=where, message=f"provided TLS material: {name} is missing"))
        elif name.endswith(".key") and file.stat().st_mode & SECRET_MODE_BITS:
            problems.append(
                ConfigProblem(
                    path=where,
                    message=f"provided TLS material: {name} is readable by group or others (must be 0600)",
                )
            )
    validation.add(env_file, problems)


def validate_environment(name_or_path: str) -> Validation:
    """Every problem of the environment and the files it references; stops early only when a file it
    needs to go on cannot be loaded."""
    source = environment_file(name_or_path)
    env_file = display_name(source)
    try:
        environment = load_environment(name_or_path)
    except ConfigError as error:
        validation = Validation(environment=None)
        validation.add_error(error)
        return validation
    validation = Validation(
        environment=environment, files=[env_file, display_name(paths.CONFIG_DIR / "sizing_profiles.yaml")]
    )

    catalog: Catalog | None = None
    policies: Policies | None = None
    for loader, reference in ((load_catalog, environment.catalog), (load_policies, environment.policies)):
        validation.files.append(display_name(paths.resolve_project_path(reference)))
        try:
            loaded = loader(reference)
        except ConfigError as error:
            validation.add_error(error)
            continue
        if isinstance(loaded, Catalog):
            catalog = loaded
        elif isinstance(loaded, Policies):
            policies = loaded
    if catalog is None or policies is None:
        return validation
    validation.add(paths.resolve_project_path(environment.catalog), validate_catalog(catalog, policies))

    validation.files.append(display_name(paths.resolve_project_path(POLICY_FILE)))
    try:
        load_policy(catalog, policies)
    except ConfigError as error:
        validation.add_error(error)

    if environment.security is None:
        return validation
    components_source = paths.resolve_project_path(environment.security.components)
    comp_file = display_name(components_source)
    validation.files.append(comp_file)
    try:
        components = load_components(environment.security.components)
    except ConfigError as error:
        validation.add_error(error)
        return validation
    validation.add(components_source, contract_problems(components, catalog, policies))
    validation.problems += principal_problems(environment, env_file, components, comp_file)
    users = [environment.security.admin_user, *components.principals()]
    credentials_problems(
        environment.security.credentials, "security.credentials", env_file, users, validation
    )
    if environment.security.oauthbearer is not None:
        credentials_problems(
            environment.security.oauthbearer.credentials,
            "security.oauthbearer.credentials",
            env_file,
            users,
            validation,
            secret="client secret",
        )
    registry_authentication = environment.schema_registry.authentication
    if registry_authentication is not None:
        credentials_problems(
            registry_authentication.credentials,
            "schema_registry.authentication.credentials",
            env_file,
            [*users, PROBE_PRINCIPAL],
            validation,
            secret="client secret" if registry_authentication.kind == "oidc" else "password",
        )
    tls_material_problems(environment, env_file, validation)
    keytab_problems_of(environment, env_file, [*users, PROBE_PRINCIPAL], validation)
    return validation


def keytab_problems_of(
    environment: Environment, env_file: str, principals: list[str], validation: Validation
) -> None:
    """Kerberos clients: every broker's and every principal's keytab, 0600, holding its principal."""
    security = environment.security
    if security is None or security.client_authentication != "kerberos" or security.kerberos is None:
        return
    where = "security.kerberos.keytab_dir"
    folder = Path(security.kerberos.keytab_dir)
    if not folder.is_dir():
        validation.notes.append(
            f"{where}: {folder} is not on this machine; the machine running the rollout needs "
            "brokers/<host>.keytab and clients/<principal>.keytab there"
        )
        return
    validation.add(
        env_file,
        [ConfigProblem(path=where, message=problem) for problem in keytab_problems(environment, principals)],
    )


def validated_environment(name_or_path: str) -> Environment:
    """The environment, once it and everything it references passed ``validate_environment``; raises
    ``EnvironmentConfigError`` naming each problem's file and YAML path otherwise. Every stage starts here."""
    validation = validate_environment(name_or_path)
    if validation.problems or validation.environment is None:
        raise EnvironmentConfigError(
            display_name(environment_file(name_or_path)),
            [
                ConfigProblem(path=problem.location, message=problem.message)
                for problem in validation.problems
            ],
        )
    return validation.environment
