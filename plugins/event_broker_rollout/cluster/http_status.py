"""The HTTP status a URL answers, or why there was none: the registry's door probes (security stage,
compliance) ask exactly that, over HTTPS that only the given CA verifies."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping


def status_of(
    url: str,
    ca_file: str | None,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int | None, str | None]:
    """(status, None) for any HTTP answer, error statuses included; (None, why) without one."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    call = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(call, timeout=timeout, context=context) as response:
            return response.status, None
    except urllib.error.HTTPError as error:
        return error.code, None
    except (urllib.error.URLError, OSError, ValueError) as error:
        return None, str(getattr(error, "reason", error))
