"""Who the schema registry lets in, tried from outside over HTTPS by the security stage (compliance
re-checks the anonymous answer only).

Each probe is a real request to the Confluent-compatible API. The writes are harmless even where a
registry wrongly accepts them: they set a catalog subject's compatibility to the level the catalog
declares, which the schemas stage keeps anyway. Secrets go only into the Authorization header; the
evidence names principals and status codes.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from event_broker_rollout.cluster import clients
from event_broker_rollout.cluster.http_status import status_of
from event_broker_rollout.config.components import PROBE_PRINCIPAL
from event_broker_rollout.config.environment import Environment, RegistryBasicAuthentication
from event_broker_rollout.evidence.results import Result, Severity, Status, check
from event_broker_rollout.hosts.desired import REGISTRY_ADMIN_ROLE, REGISTRY_READER_ROLE
from event_broker_rollout.resources.subjects import SubjectSchema

TIMEOUT_S = 10.0
UNAUTHENTICATED = (401,)
FORBIDDEN = (403,)


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer
    error: str | None = None

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else f"no answer ({self.error})"


def request(
    url: str,
    ca_file: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    user: tuple[str, str] | None = None,
) -> Answer:
    headers = {"Content-Type": "application/vnd.schemaregistry.v1+json"} if body is not None else {}
    if user is not None:
        headers.update(clients.basic_authorization(*user))
    return Answer(*status_of(url, ca_file, method=method, body=body, headers=headers, timeout=TIMEOUT_S))


def access_checks(environment: Environment, subject: SubjectSchema) -> list[Result]:
    """Anonymous reads and writes and a wrong secret refused (401), a read-only principal's write
    refused (403) while its read is served, and the admin served: the registry's door, both ways.
    Confluent's community registry authenticates only: there the read-only write is not tried, an
    advisory says that roles are not enforced."""
    assert environment.security is not None
    api = clients.registry_config(environment, "secured")["url"]
    ca_file = clients.ca_file(environment)
    admin = environment.security.admin_user
    logins = clients.registry_logins(environment, "secured", [admin, PROBE_PRINCIPAL])
    reader, admin_login = logins[PROBE_PRINCIPAL], logins[admin]
    if reader is None or admin_login is None:
        raise ValueError("the registry's door is probed only where it authenticates")
    subjects_url = f"{api}/subjects"
    config_url = f"{api}/config/{subject.subject}"
    declared = json.dumps({"compatibility": subject.compatibility}).encode()
    basic = isinstance(environment.schema_registry.authentication, RegistryBasicAuthentication)
    reader_role, admin_role = (
        (REGISTRY_READER_ROLE, REGISTRY_ADMIN_ROLE) if basic else ("sr-readonly", "sr-admin")
    )
    probes = [
        (
            "registry.anonymous_read_refused",
            request(subjects_url, ca_file),
            UNAUTHENTICATED,
            "a client without credentials listing subjects",
        ),
        (
            "registry.anonymous_write_refused",
            request(config_url, ca_file, method="PUT", body=declared),
            UNAUTHENTICATED,
            f"a client without credentials changing {subject.subject}'s compatibility",
        ),
        (
            "registry.wrong_secret_refused",
            request(subjects_url, ca_file, user=(admin, secrets.token_urlsafe(24))),
            UNAUTHENTICATED,
            f"{admin} with a wrong client secret",
        ),
        (
            "registry.read_only_read_served",
            request(subjects_url, ca_file, user=reader),
            (200,),
            f"{PROBE_PRINCIPAL} ({reader_role}) listing subjects",
        ),
        (
            "registry.admin_served",
            request(subjects_url, ca_file, user=admin_login),
            (200,),
            f"{admin} ({admin_role}) listing subjects",
        ),
    ]
    results: list[Result] = []
    if basic:
        results.append(
            Result(
                id="registry.read_only_write_refused",
                status=Status.WARN,
                severity=Severity.ADVISORY,
                message="Confluent's community Schema Registry authenticates only: a principal with the "
                "readonly role can change schemas (roles need Confluent's commercial security plugin)",
            )
        )
    else:
        probes.insert(
            3,
            (
                "registry.read_only_write_refused",
                request(config_url, ca_file, method="PUT", body=declared, user=reader),
                FORBIDDEN,
                f"{PROBE_PRINCIPAL} ({reader_role}) changing {subject.subject}'s compatibility",
            ),
        )
    return results + [
        check(
            probe_id,
            answer.status in expected,
            observed=answer.describe(),
            expected=" or ".join(f"HTTP {code}" for code in expected),
            message=what,
        )
        for probe_id, answer, expected, what in probes
    ]
