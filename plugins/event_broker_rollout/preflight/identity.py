"""What the registry's OIDC authentication needs before any host changes: the provider answers its
discovery document over HTTPS that its declared CA verifies, names the declared issuer and token
endpoint, and every registry host reaches it (the registry exchanges logins there)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from event_broker_rollout.config.environment import Environment, RegistryAuthentication
from event_broker_rollout.evidence.results import Result, check
from event_broker_rollout.hosts.parallel import in_parallel
from event_broker_rollout.hosts.remote import RemoteHost
from event_broker_rollout.preflight.network import connect_command, parse_connect_output

DISCOVERY_TIMEOUT_S = 10.0


def discovery(authentication: RegistryAuthentication) -> tuple[dict[str, Any] | None, str | None]:
    """The provider's discovery document, its TLS chain verified against the declared CA."""
    url = f"{authentication.issuer}/.well-known/openid-configuration"
    try:
        context = ssl.create_default_context(cafile=authentication.ca_file)
        with urllib.request.urlopen(url, timeout=DISCOVERY_TIMEOUT_S, context=context) as response:
            document = json.loads(response.read())
    except (OSError, ValueError, ssl.SSLError) as error:
        return None, str(getattr(error, "reason", error))
    return (document if isinstance(document, dict) else None), None


def provider_checks(environment: Environment) -> list[Result]:
    authentication = environment.schema_registry.authentication
    if authentication is None:
        return []
    document, error = discovery(authentication)
    observed = (
        {"issuer": document.get("issuer"), "token_endpoint": document.get("token_endpoint")}
        if document is not None
        else f"no verified answer ({error})"
    )
    expected = {"issuer": authentication.issuer, "token_endpoint": authentication.token_url}
    return [
        check(
            "sec.registry.oidc_provider",
            observed == expected,
            observed=observed,
            expected=expected,
            message="the registry's OIDC provider answers over HTTPS its declared CA verifies, as declared",
        )
    ]


def provider_endpoint(authentication: RegistryAuthentication) -> tuple[str, int]:
    parts = urlsplit(authentication.issuer)
    return parts.hostname or "", parts.port or 443


def reachability_checks(environment: Environment, sessions: Mapping[str, RemoteHost]) -> list[Result]:
    """From every registry host that answered, a TCP connection to the provider."""
    authentication = environment.schema_registry.authentication
    if authentication is None:
        return []
    address, port = provider_endpoint(authentication)
    registries = [host.name for host in environment.registries if host.name in sessions]

    def reaches(name: str) -> bool:
        output = sessions[name].run_argv(connect_command([(address, port)]), timeout=30)
        return parse_connect_output(output.stdout).get((address, port), False)

    return [
        check(
            "sec.registry.oidc_provider_reachable",
            ok,
            host=name,
            observed="connected" if ok else "refused or timed out",
            expected=f"{address}:{port} reachable",
            message="the registry host reaches its OIDC provider",
        )
        for name, ok in in_parallel(registries, reaches).items()
    ]
