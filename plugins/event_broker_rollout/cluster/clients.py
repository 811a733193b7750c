"""Client settings for the rollout's own Kafka and registry clients, by security phase.

Addresses come from the environment; credentials from the Airflow connection (login/password), never
from config files. Before the secure listener exists the admin client speaks plaintext; afterwards it
uses SASL_SSL with the admin user and verifies the broker certificates against the cluster CA.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from event_broker_rollout import orchestrator
from event_broker_rollout.cluster import kerberos
from event_broker_rollout.config.credentials import (
    load_credentials,
    load_oauth_secrets,
    load_registry_secrets,
    password_for,
)
from event_broker_rollout.config.environment import Environment
from event_broker_rollout.hosts.desired import https_mode, registry_authenticates
from event_broker_rollout.hosts.listeners import phase_index
from event_broker_rollout.hosts.tls import client_identity, node_identity_files

SECURE_PHASES_FROM = "listeners"


def uses_secure_listener(environment: Environment, phase: str) -> bool:
    return environment.security is not None and phase_index(phase) >= phase_index(SECURE_PHASES_FROM)


def ca_file(environment: Environment) -> str:
    assert environment.security is not None
    return str(Path(environment.security.tls.material_dir) / "ca.crt")


def kafka_config(
    environment: Environment, phase: str, username: str | None, password: str | None
) -> dict[str, Any]:
    """A client of ``username`` on the listener the phase has: plaintext, or the secure listener with the
    environment's client authentication (SCRAM with the password; mTLS with the principal's certificate,
    the password unused; OAUTHBEARER with the password as the client secret for a token; Kerberos with
    the principal's keytab, the password unused)."""
    if not uses_secure_listener(environment, phase):
        return {"bootstrap.servers": environment.bootstrap_servers()}
    assert environment.security is not None
    tls = {
        "bootstrap.servers": environment.bootstrap_servers(secure=True),
        "ssl.ca.location": ca_file(environment),
        "ssl.endpoint.identification.algorithm": "https",
    }
    if environment.security.client_authentication == "mtls":
        if not username:
            raise ValueError("an mTLS client needs a principal (its certificate's CN)")
        identity = client_identity(environment, username)
        return {
            **tls,
            "security.protocol": "SSL",
            "ssl.certificate.location": str(identity.certificate),
            "ssl.key.location": str(identity.key),
        }
    if environment.security.client_authentication == "kerberos":
        if not username:
            raise ValueError("a Kerberos client needs a principal (its keytab's)")
        return {**tls, **kerberos.client_settings(environment, username)}
    oauthbearer = environment.security.oauthbearer
    if environment.security.client_authentication == "oauthbearer" and oauthbearer is not None:
        if not username:
            raise ValueError("an OAUTHBEARER client needs a principal (its client id at the provider)")
        return {
            **tls,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "OAUTHBEARER",
            "sasl.oauthbearer.method": "oidc",
            "sasl.oauthbearer.token.endpoint.url": oauthbearer.token_url,
            "sasl.oauthbearer.client.id": username,
            "sasl.oauthbearer.client.secret": password or "",
            "https.ca.location": oauthbearer.ca_file,  # the provider's CA, for the token request only
        }
    return {
        **tls,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": username or "",
        "sasl.password": password or "",
    }


def principal_config(environment: Environment, phase: str, principal: str) -> dict[str, Any]:
    """A client of one of the environment's principals (see ``principal_configs``)."""
    return principal_configs(environment, phase, [principal])[principal]


def principal_configs(
    environment: Environment, phase: str, principals: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """Clients of the environment's principals: with SCRAM their passwords come from the credentials source,
    read once (masked); with mTLS their certificates are the identities and no password is read."""
    passwords = secrets_of_principals(environment)
    return {
        principal: kafka_config(
            environment, phase, principal, password_for(passwords, principal) if passwords else None
        )
        for principal in principals
    }


def secrets_of_principals(environment: Environment) -> dict[str, str]:
    """What the principals log in with: SCRAM passwords, or client secrets at the OIDC provider (read once,
    masked); nothing with mTLS, where certificates are the identities."""
    mechanism = environment.security.client_authentication if environment.security is not None else None
    if mechanism == "scram":
        return load_credentials(environment)
    if mechanism == "oauthbearer":
        return load_oauth_secrets(environment)
    return {}


def node_admin_config(environment: Environment) -> dict[str, Any]:
    """An admin client on the brokers' INTERNAL listener (SSL, client certificate required) with the first
    broker's node identity, a super user: the channel SCRAM credentials travel on, never PLAINTEXT.
    Exists from the ``listeners`` phase on."""
    assert environment.security is not None
    certificate, key = node_identity_files(environment, environment.brokers[0])
    return {
        "bootstrap.servers": ",".join(
            f"{broker.address}:{environment.security.internal_port}" for broker in environment.brokers
        ),
        "security.protocol": "SSL",
        "ssl.ca.location": ca_file(environment),
        "ssl.certificate.location": str(certificate),
        "ssl.key.location": str(key),
        "ssl.endpoint.identification.algorithm": "https",
    }


def admin_login_in_connection(environment: Environment) -> bool:
    """Whether the admin's login is the environment's Kafka connection. Not with OAUTHBEARER or Kerberos:
    there the admin is a client at the provider (its secret read with the others') or a principal of the
    realm (its keytab beside the others') like every principal."""
    return environment.security is None or environment.security.client_authentication not in (
        "oauthbearer",
        "kerberos",
    )


def admin_config(environment: Environment, phase: str) -> dict[str, Any]:
    """The admin client's settings, its login from the environment's Kafka connection (read at run time)."""
    if not admin_login_in_connection(environment):
        assert environment.security is not None
        return principal_config(environment, phase, environment.security.admin_user)
    connection = orchestrator.current().connection(environment.connections.kafka_admin)
    return kafka_config(environment, phase, connection.login, connection.password)


# The path of the Confluent-compatible API under each registry flavor's base URL: Apicurio serves it
# under a path, Confluent's Schema Registry at its root.
REGISTRY_API_PATHS = {"apicurio": "/apis/ccompat/v7", "confluent": ""}


def registry_api_url(environment: Environment, base: str) -> str:
    """The URL ``SchemaRegistryClient`` needs, for the environment's registry flavor."""
    return flavor_api_url(environment.schema_registry.flavor, base)


def flavor_api_url(flavor: str, base: str) -> str:
    """The Confluent-compatible API under a registry's base URL (``http(s)://host:port``)."""
    return f"{base}{REGISTRY_API_PATHS[flavor]}"


def registry_base_url(environment: Environment, phase: str) -> str:
    host = environment.registries[0]
    if https_mode(environment, phase) == "only":
        assert environment.security is not None
        return f"https://{host.address}:{environment.security.registry_https_port}"
    return f"http://{host.address}:{environment.schema_registry.port}"


def basic_authorization(principal: str, secret: str) -> dict[str, str]:
    """The HTTP header of a basic login (the registry exchanges it for a token at the OIDC provider)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{principal}:{secret}".encode()).decode()}


def registry_logins(
    environment: Environment, phase: str, principals: Iterable[str]
) -> dict[str, tuple[str, str] | None]:
    """Each principal's login at the registry (client id, secret), the secrets read once; None for all
    where the registry does not authenticate (yet)."""
    if not registry_authenticates(environment, phase):
        return dict.fromkeys(principals)
    secrets = load_registry_secrets(environment)
    return {who: (who, password_for(secrets, who)) for who in principals}


def _admin(environment: Environment) -> str:
    return environment.security.admin_user if environment.security is not None else ""


def registry_headers(environment: Environment, phase: str) -> dict[str, str]:
    """The admin's login for a plain HTTP request to the registry, where it authenticates."""
    login = registry_logins(environment, phase, [_admin(environment)])[_admin(environment)]
    return basic_authorization(*login) if login else {}


def registry_configs(
    environment: Environment, phase: str, principals: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """``SchemaRegistryClient`` settings per principal: the Confluent-compatible API, over HTTPS once
    secured, and where the registry authenticates HTTP basic with the principal's client id and secret,
    which the registry exchanges for a token at the OIDC provider."""
    base = registry_base_url(environment, phase)
    common: dict[str, Any] = {"url": registry_api_url(environment, base)}
    if base.startswith("https"):
        common["ssl.ca.location"] = ca_file(environment)
    return {
        who: {**common, **({"basic.auth.user.info": ":".join(login)} if login else {})}
        for who, login in registry_logins(environment, phase, principals).items()
    }


def registry_config(environment: Environment, phase: str, principal: str | None = None) -> dict[str, Any]:
    """``registry_configs`` of one principal (default: the rollout's admin)."""
    who = principal or _admin(environment)
    return registry_configs(environment, phase, [who])[who]
