"""Kerberos material the environment names: the keytabs the realm's administrators issue (brokers' service principals, each
client principal) and the realm's client configuration (krb5.conf).

Keytabs are read from ``security.kerberos.keytab_dir`` (``brokers/<host name>.keytab``,
``clients/<principal>.keytab``, 0600) and checked before use: which principals they hold, at which key
version and with which encryption types. Key bytes never leave this module's parser.
"""

from __future__ import annotations

import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from event_broker_rollout.config.environment import Environment, Host, Kerberos

BROKERS_DIR = "brokers"
CLIENTS_DIR = "clients"
KEYTAB_VERSION = b"\x05\x02"  # MIT keytab format, version 2 (what kadmin and ktutil write)


class KeytabError(ValueError):
    """A keytab that cannot serve: missing, readable by others, malformed, or without the principal."""


@dataclass(frozen=True)
class KeytabEntry:
    principal: str  # name/instance@REALM
    kvno: int
    enctype: int


def broker_keytab_path(kerberos: Kerberos, host: Host) -> Path:
    return Path(kerberos.keytab_dir) / BROKERS_DIR / f"{host.name}.keytab"


def client_keytab_path(kerberos: Kerberos, principal: str) -> Path:
    return Path(kerberos.keytab_dir) / CLIENTS_DIR / f"{principal}.keytab"


def broker_principal(kerberos: Kerberos, host: Host) -> str:
    """The broker's Kerberos name: clients ask the KDC for a ticket to the address they connect to."""
    return f"{kerberos.service_name}/{host.address}@{kerberos.realm}"


def client_principal(kerberos: Kerberos, principal: str) -> str:
    return f"{principal}@{kerberos.realm}"


def kdc_addresses(kerberos: Kerberos) -> list[str]:
    return [f"{kdc}:{kerberos.kdc_port}" for kdc in kerberos.kdcs]


def keytab_entries(content: bytes) -> list[KeytabEntry]:
    """The entries of a keytab in MIT's format; raises ``KeytabError`` when it is not one."""
    if not content.startswith(KEYTAB_VERSION):
        raise KeytabError("not a keytab (MIT format version 0x0502)")
    entries: list[KeytabEntry] = []
    offset = len(KEYTAB_VERSION)
    try:
        while offset < len(content):
            (size,) = struct.unpack_from(">i", content, offset)
            offset += 4
            if size < 0:  # a hole left by a removed entry
                offset -= size
                continue
            entries.append(_entry(content[offset : offset + size]))
            offset += size
    except struct.error as error:
        raise KeytabError(f"truncated keytab: {error}") from None
    return entries


def _entry(record: bytes) -> KeytabEntry:
    (components,) = struct.unpack_from(">H", record, 0)
    offset = 2
    realm, offset = _counted(record, offset)
    names = []
    for _ in range(components):
        name, offset = _counted(record, offset)
        names.append(name)
    offset += 4 + 4  # name type, timestamp
    (kvno,) = struct.unpack_from(">B", record, offset)
    offset += 1
    (enctype,) = struct.unpack_from(">H", record, offset)
    offset += 2
    (key_length,) = struct.unpack_from(">H", record, offset)
    offset += 2 + key_length
    if len(record) - offset >= 4:  # a 32-bit key version follows where 8 bits were not enough
        (kvno32,) = struct.unpack_from(">I", record, offset)
        kvno = kvno32 or kvno
    return KeytabEntry(f"{'/'.join(names)}@{realm}", kvno, enctype)


def _counted(record: bytes, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from(">H", record, offset)
    start = offset + 2
    if start + length > len(record):
        raise struct.error("a name runs past its entry")
    return record[start : start + length].decode("utf-8", "strict"), start + length


def read_keytab(path: Path, principal: str) -> bytes:
    """The keytab's bytes, checked: a regular file nobody but its owner can read, holding ``principal``."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeytabError(f"{path}: no keytab (the realm's administrators issue it)") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeytabError(f"{path}: not a regular file")
    if info.st_mode & 0o077:
        raise KeytabError(f"{path}: mode {stat.S_IMODE(info.st_mode):04o}, keytabs must be 0600")
    content = path.read_bytes()
    held = {entry.principal for entry in keytab_entries(content)}
    if principal not in held:
        raise KeytabError(f"{path}: holds {sorted(held)}, not {principal}")
    return content


def broker_keytab(kerberos: Kerberos, host: Host) -> bytes:
    return read_keytab(broker_keytab_path(kerberos, host), broker_principal(kerberos, host))


def keytab_problems(environment: Environment, principals: list[str]) -> list[str]:
    """Every keytab the environment needs, checked (brokers' and ``principals``'); one line per problem."""
    assert environment.security is not None and environment.security.kerberos is not None
    kerberos = environment.security.kerberos
    problems: list[str] = []
    for host in environment.brokers:
        try:
            broker_keytab(kerberos, host)
        except KeytabError as error:
            problems.append(str(error))
    for principal in principals:
        try:
            read_keytab(client_keytab_path(kerberos, principal), client_principal(kerberos, principal))
        except KeytabError as error:
            problems.append(str(error))
    return problems
