"""The rollout's own Kerberos clients: each principal logs in from its own keytab into a credential cache
of its own, so clients of different principals live side by side in one process.

The GSSAPI handshake takes its credentials from the thread's default cache, which is process-wide unless
set per thread. Every client therefore loads the project's librdkafka plugin (``native/``), which points
the client's own threads at the client's cache; librdkafka's kinit fills that cache from the keytab and
renews it. The realm and its KDCs come from a krb5.conf rendered from the environment, named in
``KRB5_CONFIG`` for this process (a list: several realms may be in use at once).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from event_broker_rollout import paths
from event_broker_rollout.config.environment import Environment, Kerberos
from event_broker_rollout.config.keytabs import (
    KeytabError,
    client_keytab_path,
    client_principal,
    kdc_addresses,
    keytab_entries,
    read_keytab,
)
from event_broker_rollout.hosts.desired import render
from event_broker_rollout.hosts.shell import command_line

# Built by native/build.sh beside the GSSAPI-capable librdkafka (make setup).
CCACHE_PLUGIN = paths.NATIVE_DIR / "lib" / "ebr-kerberos-ccache.so"
CCACHE_PROPERTY = "ebr.kerberos.ccache"
KRB5_CONFIG = "KRB5_CONFIG"
KINIT_TIMEOUT_S = 30

_lock = threading.Lock()


@functools.cache
def _private_dir() -> Path:
    """This process's 0700 folder for credential caches and realm files, removed when it exits."""
    folder = Path(tempfile.mkdtemp(prefix="ebr-kerberos-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def use_realm(kerberos: Kerberos) -> str:
    """The realm's krb5.conf, rendered once per process and added to ``KRB5_CONFIG``; returns the list."""
    realm_file = _private_dir() / f"krb5-{kerberos.realm}.conf"
    with _lock:
        if not realm_file.exists():
            realm_file.write_text(
                render("kerberos/krb5.conf.j2", realm=kerberos.realm, kdcs=kdc_addresses(kerberos))
            )
        listed = [entry for entry in os.environ.get(KRB5_CONFIG, "").split(":") if entry]
        if str(realm_file) not in listed:
            os.environ[KRB5_CONFIG] = ":".join([*listed, str(realm_file)])
        return os.environ[KRB5_CONFIG]


def client_settings(environment: Environment, principal: str) -> dict[str, Any]:
    """The SASL/GSSAPI part of a client of ``principal``: its keytab, its own cache, the cache plugin."""
    assert environment.security is not None and environment.security.kerberos is not None
    kerberos = environment.security.kerberos
    use_realm(kerberos)
    name = client_principal(kerberos, principal)
    keytab = str(client_keytab_path(kerberos, principal))
    cache = f"FILE:{_private_dir() / f'{principal}.ccache'}"
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "GSSAPI",
        "sasl.kerberos.service.name": kerberos.service_name,
        "sasl.kerberos.principal": name,
        "sasl.kerberos.keytab": keytab,
        # librdkafka runs this with /bin/sh at start and to renew: its words quoted in the one place.
        "sasl.kerberos.kinit.cmd": command_line(["kinit", "-c", cache, "-k", "-t", keytab, name]),
        "plugin.library.paths": str(CCACHE_PLUGIN),
        CCACHE_PROPERTY: cache,
    }


@dataclass(frozen=True)
class Ticket:
    """Evidence that a principal's keytab gets it a ticket: never the key, never the ticket."""

    principal: str
    granted: bool
    key_versions: tuple[int, ...]
    encryption_types: tuple[int, ...]
    error: str = ""

    def evidence(self) -> dict[str, Any]:
        observed: dict[str, Any] = {
            "principal": self.principal,
            "granted": self.granted,
            "key_versions": list(self.key_versions),
            "encryption_types": list(self.encryption_types),
        }
        if self.error:
            observed["error"] = self.error
        return observed


def ticket(environment: Environment, principal: str) -> Ticket:
    """Ask the KDC for ``principal``'s ticket with its keytab, into a cache thrown away at once."""
    assert environment.security is not None and environment.security.kerberos is not None
    kerberos = environment.security.kerberos
    name = client_principal(kerberos, principal)
    keytab = client_keytab_path(kerberos, principal)
    try:
        entries = keytab_entries(read_keytab(keytab, name))
    except KeytabError as unusable:
        return Ticket(name, False, (), (), str(unusable))
    held = [entry for entry in entries if entry.principal == name]
    versions = tuple(sorted({entry.kvno for entry in held}))
    types = tuple(sorted({entry.enctype for entry in held}))
    with tempfile.TemporaryDirectory(prefix="ebr-kinit-", dir=_private_dir()) as scratch:
        process = subprocess.run(
            ["kinit", "-c", f"FILE:{scratch}/ccache", "-k", "-t", str(keytab), name],
            env={**os.environ, KRB5_CONFIG: use_realm(kerberos)},
            capture_output=True,
            text=True,
            timeout=KINIT_TIMEOUT_S,
            check=False,
        )
    error = (
        process.stderr.strip().splitlines()[-1] if process.returncode != 0 and process.stderr.strip() else ""
    )
    return Ticket(name, process.returncode == 0, versions, types, error)
