"""What OIDC needs before any host changes, for the registry's authentication and for Kafka's OAUTHBEARER:
the provider answers its discovery document over HTTPS that its declared CA verifies, names the declared
issuer and endpoints, and every host that relies on it reaches it."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from event_broker_rollout.config.environment import (
    Environment,
    Host,
    OAuthBearer,
    OidcClients,
    RegistryAuthentication,
)
from event_broker_rollout.evidence.results import Result, check
from event_broker_rollout.hosts.parallel import in_parallel
from event_broker_rollout.hosts.remote import RemoteHost
from event_broker_rollout.preflight.network import connect_command, parse_connect_output

DISCOVERY_TIMEOUT_S = 10.0


def discovery(provider: OidcClients) -> tuple[dict[str, Any] | None, str | None]:
    """The provider's discovery document, its TLS chain verified against the declared CA."""
    url = f"{provider.issuer}/.well-known/openid-configuration"
    try:
        context = ssl.create_default_context(cafile=provider.ca_file)
        with urllib.request.urlopen(url, timeout=DISCOVERY_TIMEOUT_S, context=context) as response:
            document = json.loads(response.read())
    except (OSError, ValueError, ssl.SSLError) as error:
        return None, str(getattr(error, "reason", error))
    return (document if isinstance(document, dict) else None), None


@dataclass(frozen=True)
class ProviderUse:
    """Who relies on an OIDC provider: ``user`` names it in check ids; ``hosts`` reach it themselves."""

    user: str
    provider: OidcClients
    hosts: list[Host]
    description: str


def provider_uses(environment: Environment) -> list[ProviderUse]:
    uses = []
    if isinstance(environment.schema_registry.authentication, RegistryAuthentication):  # not HTTP basic
        uses.append(
            ProviderUse(
                "registry",
                environment.schema_registry.authentication,
                environment.registries,
                "the registry exchanges logins there",
            )
        )
    security = environment.security
    if security is not None and security.client_authentication == "oauthbearer" and security.oauthbearer:
        uses.append(
            ProviderUse(
                "kafka", security.oauthbearer, environment.brokers, "the brokers fetch its signing keys"
            )
        )
    return uses


def _announced(provider: OidcClients) -> dict[str, str]:
    expected = {"issuer": provider.issuer, "token_endpoint": provider.token_url}
    if isinstance(provider, OAuthBearer):
        expected["jwks_uri"] = provider.jwks_url
    return expected


def provider_checks(environment: Environment) -> list[Result]:
    results = []
    for use in provider_uses(environment):
        document, error = discovery(use.provider)
        expected = _announced(use.provider)
        observed: dict[str, Any] | str = (
            {key: document.get(key) for key in expected}
            if document is not None
            else f"no verified answer ({error})"
        )
        results.append(
            check(
                f"sec.{use.user}.oidc_provider",
                observed == expected,
                observed=observed,
                expected=expected,
                message=f"the {use.user}'s OIDC provider answers over HTTPS its declared CA verifies, as declared",
            )
        )
    return results


def provider_endpoint(provider: OidcClients) -> tuple[str, int]:
    parts = urlsplit(provider.issuer)
    return parts.hostname or "", parts.port or 443


def reachability_checks(environment: Environment, sessions: Mapping[str, RemoteHost]) -> list[Result]:
    """From every host that relies on a provider and answered, a TCP connection to it."""
    results = []
    for use in provider_uses(environment):
        address, port = provider_endpoint(use.provider)
        names = [host.name for host in use.hosts if host.name in sessions]

        def reaches(name: str, address: str = address, port: int = port) -> bool:
            output = sessions[name].run_argv(connect_command([(address, port)]), timeout=30)
            return parse_connect_output(output.stdout).get((address, port), False)

        results += [
            check(
                f"sec.{use.user}.oidc_provider_reachable",
                ok,
                host=name,
                observed="connected" if ok else "refused or timed out",
                expected=f"{address}:{port} reachable",
                message=f"the host reaches the {use.user}'s OIDC provider ({use.description})",
            )
            for name, ok in in_parallel(names, reaches).items()
        ]
    return results
