"""Secrets of the principals (SCRAM passwords, client secrets at the OIDC provider for Kafka and the registry): from the file or Airflow Variable the environment names.

Every password is registered with the orchestrator's secrets masker (Airflow's) the moment it is read, so a password that
slips into a log line is shown as ***. Passwords are never returned in evidence, XCom or reports.
"""

from __future__ import annotations

import json
from pathlib import Path

from event_broker_rollout import orchestrator
from event_broker_rollout.config.environment import Credentials, Environment


class CredentialsError(RuntimeError):
    pass


def _mask(passwords: dict[str, str]) -> None:
    # A helper process without an orchestrator (the migration canary) has no masker and needs none: it
    # never logs a password.
    for password in passwords.values():
        orchestrator.current().mask_secret(password)


def load_credentials(environment: Environment) -> dict[str, str]:
    """The SCRAM passwords per principal."""
    if environment.security is None:
        raise CredentialsError("the environment has no security section")
    source = environment.security.credentials
    if source is None:
        raise CredentialsError(
            f"security.credentials: none declared (clients authenticate with {environment.security.client_authentication})"
        )
    return _read_secrets(source, "security.credentials")


def load_registry_secrets(environment: Environment) -> dict[str, str]:
    """The registry's client secrets per principal (the principal is the client id at the issuer)."""
    authentication = environment.schema_registry.authentication
    if authentication is None:
        raise CredentialsError("schema_registry.authentication: none declared (the registry is anonymous)")
    return _read_secrets(authentication.credentials, "schema_registry.authentication.credentials")


def load_oauth_secrets(environment: Environment) -> dict[str, str]:
    """The Kafka clients' secrets at the OIDC provider per principal (client id = principal)."""
    oauthbearer = environment.security.oauthbearer if environment.security is not None else None
    if oauthbearer is None:
        raise CredentialsError(
            "security.oauthbearer: none declared (clients do not authenticate with tokens)"
        )
    return _read_secrets(oauthbearer.credentials, "security.oauthbearer.credentials")


def _read_secrets(source: Credentials, yaml_path: str) -> dict[str, str]:
    if source.source == "file":
        if not source.path:
            raise CredentialsError(f"{yaml_path}.path: required for a file source")
        path = Path(source.path)
        try:
            mode = path.stat().st_mode & 0o077
        except OSError as error:
            raise CredentialsError(f"{yaml_path}: file {path}: {error.strerror}") from None
        if mode:
            raise CredentialsError(f"{yaml_path}: file {path} is readable by group or others (chmod 600)")
        raw = path.read_text()
    else:
        if not source.variable:
            raise CredentialsError(f"{yaml_path}.variable: required for an airflow_variable source")
        raw = orchestrator.current().variable(source.variable)
    secrets = json.loads(raw)
    if not isinstance(secrets, dict) or not all(
        isinstance(v, str) and len(v) >= 16 for v in secrets.values()
    ):
        raise CredentialsError(f"{yaml_path}: must map each principal to a secret of at least 16 characters")
    _mask(secrets)
    return secrets


def password_for(credentials: dict[str, str], user: str) -> str:
    try:
        return credentials[user]
    except KeyError:
        raise CredentialsError(f"no secret for {user} in the credentials source") from None
