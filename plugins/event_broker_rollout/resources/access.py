"""Who may do what: SCRAM users, ACLs and quotas derived from the component contracts, reconciled.

Desired state comes from ``config/components.yaml``; the admin client reconciles it: missing users and
ACL bindings are created, bindings nobody declared are removed (a hand-made ``User:*`` grant included),
and a second run with nothing to do changes nothing. Passwords are sent to the cluster and nowhere else.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from event_broker_rollout.cluster import health
from event_broker_rollout.config.components import CANARY_PRINCIPAL, CANARY_TOPIC, Components, is_prefix
from event_broker_rollout.config.environment import Environment
from event_broker_rollout.evidence.audit import audit
from event_broker_rollout.evidence.results import Result, Status

SCRAM_ITERATIONS = 8192
TIMEOUT = 30.0


@dataclass(frozen=True, order=True)
class Grant:
    principal: str  # "User:<name>"
    resource_type: str  # TOPIC | GROUP
    pattern_type: str  # LITERAL | PREFIXED
    name: str
    operation: str  # READ | WRITE | DESCRIBE

    def binding(self) -> AclBinding:
        return AclBinding(
            ResourceType[self.resource_type],
            self.name,
            ResourcePatternType[self.pattern_type],
            self.principal,
            "*",
            AclOperation[self.operation],
            AclPermissionType.ALLOW,
        )

    def label(self) -> str:
        return f"{self.principal} {self.operation} {self.resource_type}:{self.pattern_type}:{self.name}"


def _topic_grants(principal: str, patterns: Iterable[str], operations: tuple[str, ...]) -> set[Grant]:
    grants = set()
    for pattern in patterns:
        kind = "PREFIXED" if is_prefix(pattern) else "LITERAL"
        grants |= {Grant(principal, "TOPIC", kind, pattern, operation) for operation in operations}
    return grants


def desired_grants(components: Components) -> set[Grant]:
    """Least privilege: write (+describe) what a component produces, read (+describe) what it consumes,
    read on its own consumer-group prefix. Groups are prefixed so per-run groups (``<group>.rollout.<run>``)
    stay inside the grant."""
    grants: set[Grant] = set()
    for component in components.components:
        principal = f"User:{component.principal}"
        grants |= _topic_grants(principal, component.produces, ("WRITE", "DESCRIBE"))
        grants |= _topic_grants(principal, component.consumes, ("READ", "DESCRIBE"))
        if component.group:
            grants.add(Grant(principal, "GROUP", "PREFIXED", component.group, "READ"))
    canary = f"User:{CANARY_PRINCIPAL}"
    grants |= _topic_grants(canary, [CANARY_TOPIC], ("WRITE", "READ", "DESCRIBE"))
    grants.add(Grant(canary, "GROUP", "PREFIXED", CANARY_PRINCIPAL, "READ"))
    return grants


def _grant_of(binding: Any) -> Grant | None:
    if binding.permission_type != AclPermissionType.ALLOW or binding.host != "*":
        return None
    return Grant(
        binding.principal,
        binding.restype.name,
        binding.resource_pattern_type.name,
        binding.name,
        binding.operation.name,
    )


def current_bindings(admin: AdminClient) -> list[Any]:
    # None matches any name, principal and host (the client's type hints say str).
    anything: Any = None
    any_filter = AclBindingFilter(
        ResourceType.ANY,
        anything,
        ResourcePatternType.ANY,
        anything,
        anything,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    return list(admin.describe_acls(any_filter, request_timeout=TIMEOUT).result())


def reconcile_acls(admin: AdminClient, desired: set[Grant], dry_run: bool = False) -> list[Result]:
    bindings = current_bindings(admin)
    present = {grant for grant in (_grant_of(b) for b in bindings) if grant is not None}
    undeclared = [b for b in bindings if _grant_of(b) not in desired]
    missing = sorted(desired - present)
    results: list[Result] = []
    if missing and not dry_run:
        for future in admin.create_acls([g.binding() for g in missing], request_timeout=TIMEOUT).values():
            future.result()
        wait_until_visible(admin, desired)
    for grant in missing:
        audit(
            "security.acl",
            target=grant.label(),
            outcome="planned" if dry_run else "created",
            result_id=f"acl.create[{grant.label()}]",
        )
        results.append(
            Result(
                id=f"acl.create[{grant.label()}]",
                status=Status.WARN if dry_run else Status.CHANGED,
                message=("would grant " if dry_run else "granted ") + grant.label(),
            )
        )
    if undeclared and not dry_run:
        filters = [
            AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
            for b in undeclared
        ]
        for future in admin.delete_acls(filters, request_timeout=TIMEOUT).values():
            future.result()
    for binding in undeclared:
        label = f"{binding.principal} {binding.permission_type.name} {binding.operation.name} {binding.restype.name}:{binding.resource_pattern_type.name}:{binding.name}"
        audit(
            "security.acl",
            target=label,
            outcome="planned-removal" if dry_run else "removed",
            result_id=f"acl.remove[{label}]",
        )
        results.append(
            Result(
                id=f"acl.remove[{label}]",
                status=Status.WARN if dry_run else Status.CHANGED,
                message=("would remove undeclared ACL " if dry_run else "removed undeclared ACL ") + label,
            )
        )
    if not missing and not undeclared:
        results.append(
            Result(
                id="acl.bindings",
                status=Status.OK,
                message=f"{len(desired)} ACL bindings exactly as declared",
                observed=len(present),
                expected=len(desired),
            )
        )
    return results


def wait_until_visible(admin: AdminClient, desired: set[Grant], seconds: float = 30.0) -> None:
    """create_acls returns before every broker applies the bindings; the next stage must not race them."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        present = {g for g in (_grant_of(b) for b in current_bindings(admin)) if g is not None}
        if desired <= present:
            return
        time.sleep(1)


def _scram_credentials(admin: AdminClient) -> dict[str, list[Any]]:
    """Each user's SCRAM credentials (mechanism and iterations), users without any left out."""
    future: Any = admin.describe_user_scram_credentials(request_timeout=TIMEOUT)  # all users: one future
    described = future.result()
    return {
        user: infos
        for user, description in described.items()
        if (infos := getattr(description, "scram_credential_infos", None))
    }


def _alter_scram_credentials(admin: AdminClient, alterations: list[Any]) -> None:
    for future in admin.alter_user_scram_credentials(alterations, request_timeout=TIMEOUT).values():
        future.result()


def scram_users(admin: AdminClient) -> set[str]:
    return set(_scram_credentials(admin))


class PlaintextChannelError(ValueError):
    """A SCRAM credential was about to travel on a channel without TLS."""


ENCRYPTED_PROTOCOLS = ("SSL", "SASL_SSL")


def scram_channel(config: Mapping[str, Any], plaintext_ports: Iterable[int]) -> dict[str, Any]:
    """The admin client's channel for SCRAM credentials, refused unless it is TLS: an upsert carries the
    salted password, which is enough to log in as that user. A bootstrap entry on a port the cluster
    serves PLAINTEXT on is refused whatever protocol the client asks for."""
    protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
    bootstrap = [
        entry.strip() for entry in str(config.get("bootstrap.servers", "")).split(",") if entry.strip()
    ]
    refused = {str(port) for port in plaintext_ports}
    on_plaintext = [entry for entry in bootstrap if entry.rpartition(":")[2] in refused]
    if protocol not in ENCRYPTED_PROTOCOLS:
        raise PlaintextChannelError(
            f"SCRAM credentials are sent only over TLS (SSL or SASL_SSL), not {protocol}"
        )
    if not bootstrap:
        raise PlaintextChannelError("no bootstrap servers for the SCRAM credentials' admin client")
    if on_plaintext:
        raise PlaintextChannelError(
            f"SCRAM credentials are never sent to a PLAINTEXT listener: {', '.join(on_plaintext)}"
        )
    return {"protocol": protocol, "bootstrap": bootstrap}


def ensure_scram_users(
    config: Mapping[str, Any],
    passwords: dict[str, str],
    users: Iterable[str],
    *,
    plaintext_ports: Iterable[int],
    dry_run: bool = False,
) -> list[Result]:
    """Create the SCRAM users that do not exist, through an admin client with ``config`` (refused before
    any connection unless its channel is TLS); existing ones are left alone (no password rotation here)."""
    channel = scram_channel(config, plaintext_ports)
    admin = health.authenticated_admin(config)
    existing = scram_users(admin)
    wanted = sorted(set(users))
    missing = [user for user in wanted if user not in existing]
    results = [
        Result(id=f"scram.user[{user}]", status=Status.OK, message="exists")
        for user in wanted
        if user in existing
    ]
    if missing and not dry_run:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        upserts: list[Any] = [
            UserScramCredentialUpsertion(user, info, passwords[user].encode()) for user in missing
        ]
        _alter_scram_credentials(admin, upserts)
    for user in missing:
        audit(
            "security.scram_user",
            target=user,
            outcome="planned" if dry_run else "created",
            channel=channel,
            result_id=f"scram.user[{user}]",
        )
        results.append(
            Result(
                id=f"scram.user[{user}]",
                status=Status.WARN if dry_run else Status.CHANGED,
                message=("would create" if dry_run else "created")
                + f" SCRAM-SHA-512 user {user} over {channel['protocol']}",
                observed=channel,
                expected={"protocol": " or ".join(ENCRYPTED_PROTOCOLS)},
            )
        )
    return results


def approved_scram_users(environment: Environment, components: Components) -> set[str]:
    """Who may hold a SCRAM credential: the admin and every component principal under SCRAM; nobody under
    mTLS, where a password would be a way in past the certificates."""
    security = environment.security
    if security is None or security.client_authentication != "scram":
        return set()
    return {security.admin_user, *components.principals()}


def remove_scram_users(config: Mapping[str, Any], *, dry_run: bool = False) -> list[Result]:
    """Delete every SCRAM credential (the mechanism is mTLS: a password that still logs in is a second way
    in, past the certificates). A cluster without any changes nothing."""
    admin = health.authenticated_admin(config)
    credentials = _scram_credentials(admin)
    users = sorted(credentials)
    deletions: list[Any] = [
        UserScramCredentialDeletion(user, info.mechanism) for user in users for info in credentials[user]
    ]
    if not users:
        return [
            Result(id="scram.users_removed", status=Status.OK, message="no SCRAM user exists", observed=[])
        ]
    if not dry_run:
        _alter_scram_credentials(admin, deletions)
    for user in users:
        audit(
            "security.scram_user",
            target=user,
            outcome="planned removal" if dry_run else "removed",
            result_id="scram.users_removed",
        )
    return [
        Result(
            id="scram.users_removed",
            status=Status.WARN if dry_run else Status.CHANGED,
            message=("would remove" if dry_run else "removed")
            + " SCRAM users: clients authenticate with certificates",
            observed=users,
            expected=[],
        )
    ]


def quota_command(entity: str, quotas: dict[str, int]) -> list[str]:
    """The kafka-configs arguments that set a user's quotas (an argument list: the user is one word)."""
    settings = ",".join(f"{key}={value}" for key, value in sorted(quotas.items()))
    return ["--alter", "--entity-type", "users", "--entity-name", entity, "--add-config", settings]


def parse_quotas(describe_output: str) -> dict[str, dict[str, int]]:
    """``kafka-configs.sh --describe --entity-type users``: "Quota configs for user-principal 'x' are a=1, b=2"."""
    found: dict[str, dict[str, int]] = {}
    for line in describe_output.splitlines():
        # SCRAM credentials are listed too ("SCRAM credential configs for user-principal ..."): skip them.
        if not line.startswith("Quota configs for user-principal '") or " are " not in line:
            continue
        user = line.split("user-principal '", 1)[1].split("'", 1)[0]
        values = {}
        for item in line.split(" are ", 1)[1].split(","):
            key, _, value = item.strip().partition("=")
            if key and value:
                values[key] = int(float(value))
        found[user] = values
    return found


def desired_quotas(components: Components) -> dict[str, dict[str, int]]:
    wanted: dict[str, dict[str, int]] = {}
    for component in components.components:
        values = {k: v for k, v in component.quotas.model_dump().items() if v is not None}
        if values:
            wanted[component.principal] = values
    return wanted
