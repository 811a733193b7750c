"""Tokens from an OIDC provider with the client-credentials grant (what every OAUTHBEARER client of the
cluster does), for evidence that each principal gets a token the brokers will take. A token is a secret:
only its claims leave this module, never the token."""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from event_broker_rollout import orchestrator
from event_broker_rollout.config.environment import OidcClients

TOKEN_TIMEOUT_S = 10.0


class TokenRefused(RuntimeError):
    pass


def fetch_token(provider: OidcClients, principal: str, secret: str) -> str:
    """An access token for ``principal``, over HTTPS that only the provider's declared CA verifies."""
    body = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": principal, "client_secret": secret}
    ).encode()
    request = urllib.request.Request(provider.token_url, data=body, method="POST")
    context = ssl.create_default_context(cafile=provider.ca_file)
    try:
        with urllib.request.urlopen(request, timeout=TOKEN_TIMEOUT_S, context=context) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise TokenRefused(f"the provider refused {principal}: HTTP {error.code}") from None
    except (OSError, ValueError) as error:
        raise TokenRefused(f"no token for {principal}: {getattr(error, 'reason', error)}") from None
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str):
        raise TokenRefused(f"the provider's answer for {principal} holds no access token")
    orchestrator.current().mask_secret(token)
    return token


def unverified_claims(token: str) -> dict[str, Any]:
    """The token's claims as written (the brokers verify the signature; this only reads what was issued)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise TokenRefused("the provider issued something that is not a JWT") from None
    if not isinstance(claims, dict):
        raise TokenRefused("the token's payload is not a JSON object")
    return claims


def audiences(claims: dict[str, Any]) -> list[str]:
    audience = claims.get("aud")
    return [audience] if isinstance(audience, str) else [a for a in audience or [] if isinstance(a, str)]


def token_evidence(claims: dict[str, Any], principal_claim: str) -> dict[str, Any]:
    """What a token says about who and for whom, without the token."""
    return {
        "principal": claims.get(principal_claim),
        "issuer": claims.get("iss"),
        "audience": audiences(claims),
        "expires_in_s": int(claims.get("exp", 0) - time.time())
        if isinstance(claims.get("exp"), int)
        else None,
    }
