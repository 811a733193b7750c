"""Strict string types for every config value that reaches a host, a command or a rendered file.

Each type is ``Annotated[str, ...]`` with a validator and a ``StringRule`` marker naming its rule, so a
refusal reads ``<yaml path>: <rule>: <why>`` and tests can check that no config model keeps a bare
``str``. Refusals never quote the refused value: the rule and the YAML path say enough, and a value
typed into the wrong field may be a secret. ``control_character_problems`` walks a whole loaded YAML
document (keys and values), so even a field without a stricter type refuses control characters.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator

MAX_PATH_LENGTH = 255
MAX_TEXT_LENGTH = 1000
MAX_NAME_LENGTH = 128

# C0 controls, DEL, C1 controls, the Unicode line/paragraph separators and bidirectional overrides:
# each can end a line in a log, a properties file or a shell, or hide text from a reviewer.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")
# Characters a path may hold: no space, quote, `$`, backtick, `;`, `|`, `&`, `*`, `~`, brackets...
_PATH_CHARS = re.compile(r"^[A-Za-z0-9._+@/-]+$")
_VERSION = re.compile(r"^\d+(\.\d+){1,3}([-.][A-Za-z0-9]+)?$")
_UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HOST_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_NAME = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PRINCIPAL = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_REALM = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?$")
_URL_PATH = re.compile(r"^[A-Za-z0-9._~/+-]*$")
_DN_ATTRIBUTE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*|\d+(\.\d+)+)$")
_CLUSTER_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")
_FILE_MODE = re.compile(r"^0[0-7]{3}$")
_DN_VALUE = re.compile(r"^[A-Za-z0-9._@-]([A-Za-z0-9 ._@-]*[A-Za-z0-9._@-])?$")
DN_PLACEHOLDER = "{username}"


@dataclass(frozen=True)
class StringRule:
    """Marks an ``Annotated[str, ...]`` as a strict config type; ``name`` is the rule's name."""

    name: str


def _rule(name: str, check: Callable[[str], str | None]) -> Callable[[str], str]:
    """A pydantic after-validator: ``check`` returns why the value breaks the rule, or None."""

    def validate(value: str) -> str:
        why = "control character" if _CONTROL.search(value) else check(value)
        if why is not None:
            raise ValueError(f"{name}: {why}")
        return value

    return validate


def _bounded(limit: int) -> Callable[[str], str | None]:
    return lambda value: f"longer than {limit} characters" if len(value) > limit else None


def _path_problem(value: str, *, relative_allowed: bool) -> str | None:
    if not value:
        return "empty"
    if len(value) > MAX_PATH_LENGTH:
        return f"longer than {MAX_PATH_LENGTH} characters"
    if not _PATH_CHARS.match(value):
        return "only letters, digits and . _ + @ / - are allowed (no spaces or shell metacharacters)"
    if not value.startswith("/") and not relative_allowed:
        return "must be absolute"
    parts = value.split("/")[1:] if value.startswith("/") else value.split("/")
    if "//" in value or value.endswith("/") or any(part in ("", ".", "..") for part in parts):
        return "must be normalized (no '..', '.', '//' or trailing '/')"
    if any(part.startswith("-") for part in parts):
        return "no path component may start with '-'"
    if posixpath.normpath(value) != value:
        return "must be normalized"
    return None


def _absolute_path(value: str) -> str | None:
    return _path_problem(value, relative_allowed=False)


def _project_path(value: str) -> str | None:
    return _path_problem(value, relative_allowed=True)


def _matches(
    pattern: re.Pattern[str], expectation: str, limit: int = MAX_NAME_LENGTH
) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if len(value) > limit:
            return f"longer than {limit} characters"
        return None if pattern.match(value) else expectation

    return check


def _dns_name(value: str) -> str | None:
    if len(value) > 253:
        return "longer than 253 characters"
    return (
        None if _DNS_NAME.match(value) else "must be a DNS name (letters, digits, '-', dot-separated labels)"
    )


def _topic(value: str) -> str | None:
    if value in (".", ".."):
        return "'.' and '..' are not topic names"
    return None if _TOPIC.match(value) else "at most 249 letters, digits, '.', '_' or '-'"


def _url(*schemes: str) -> Callable[[str], str | None]:
    allowed = " or ".join(f"{scheme}://" for scheme in schemes)

    def check(value: str) -> str | None:
        if len(value) > MAX_PATH_LENGTH:
            return f"longer than {MAX_PATH_LENGTH} characters"
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            return f"must be a URL {allowed}host[:port][/path]"
        if parts.scheme not in schemes or not value.startswith(f"{parts.scheme}://"):
            return f"the scheme must be {allowed}"
        if parts.username is not None or parts.password is not None:
            return "no user or password in the URL (credentials come from the credentials source)"
        if parts.query or parts.fragment or "?" in value or "#" in value:
            return "no query or fragment"
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if _dns_name(host) is not None:
                return "the host must be a DNS name or an IP address"
        if port == 0:
            return "the port must be 1-65535"
        if not _URL_PATH.match(parts.path) or "/../" in f"{parts.path}/" or "//" in parts.path:
            return "the path may hold only letters, digits and . _ ~ / + - (normalized)"
        return None

    return check


def _dn_template(value: str) -> str | None:
    if len(value) > MAX_TEXT_LENGTH:
        return f"longer than {MAX_TEXT_LENGTH} characters"
    if value.count(DN_PLACEHOLDER) != 1:
        return f"must hold {DN_PLACEHOLDER} exactly once"
    for rdn in value.split(","):
        attribute, equals, rdn_value = rdn.strip().partition("=")
        if not equals or not _DN_ATTRIBUTE.match(attribute):
            return "must be an LDAP DN: attribute=value pairs separated by commas"
        if rdn_value != DN_PLACEHOLDER and not _DN_VALUE.match(rdn_value):
            return "DN values may hold only letters, digits, spaces and . _ @ - (no escapes or specials)"
    return None


# Free text (descriptions, clause titles): anything printable, bounded.
FreeText = Annotated[
    str, AfterValidator(_rule("free text", _bounded(MAX_TEXT_LENGTH))), StringRule("free text")
]
# An absolute, normalized path on a host (or the Airflow side) that commands and files may hold.
AbsolutePath = Annotated[
    str, AfterValidator(_rule("absolute path", _absolute_path)), StringRule("absolute path")
]
# A path read on the Airflow side: relative to the project root, or absolute; never '..'.
ProjectPath = Annotated[str, AfterValidator(_rule("project path", _project_path)), StringRule("project path")]
Version = Annotated[
    str,
    AfterValidator(_rule("version", _matches(_VERSION, "must look like 4.1.2 or 7.9.0-ce", 64))),
    StringRule("version"),
]
UnixName = Annotated[
    str,
    AfterValidator(
        _rule(
            "unix user/group name", _matches(_UNIX_NAME, "lowercase letters, digits, '_' or '-', at most 32")
        )
    ),
    StringRule("unix user/group name"),
]
HostName = Annotated[
    str,
    AfterValidator(
        _rule("host name", _matches(_HOST_LABEL, "a lowercase DNS label (letters, digits, '-')", 63))
    ),
    StringRule("host name"),
]
DnsName = Annotated[str, AfterValidator(_rule("DNS name", _dns_name)), StringRule("DNS name")]
# Names the project uses as keys, connection ids, variable names, classifications, groups.
Identifier = Annotated[
    str,
    AfterValidator(
        _rule("identifier", _matches(IDENTIFIER, "letters, digits, '.', '_' or '-', starting alphanumeric"))
    ),
    StringRule("identifier"),
]
# A Kafka/SCRAM principal (User:<name>); node certificates take User:node-<host name>.
Principal = Annotated[
    str,
    AfterValidator(
        _rule("principal", _matches(_PRINCIPAL, "lowercase letters, digits or '-', at most 64", 64))
    ),
    StringRule("principal"),
]
TopicName = Annotated[str, AfterValidator(_rule("topic name", _topic)), StringRule("topic name")]
KafkaClusterId = Annotated[
    str,
    AfterValidator(
        _rule(
            "kafka cluster id",
            _matches(_CLUSTER_ID, "22 characters of base64url (kafka-storage random-uuid)"),
        )
    ),
    StringRule("kafka cluster id"),
]
FileMode = Annotated[
    str,
    AfterValidator(_rule("file mode", _matches(_FILE_MODE, "an octal mode such as 0600"))),
    StringRule("file mode"),
]
LdapUrl = Annotated[str, AfterValidator(_rule("ldap url", _url("ldap", "ldaps"))), StringRule("ldap url")]
HttpUrl = Annotated[str, AfterValidator(_rule("http url", _url("http", "https"))), StringRule("http url")]
HttpsUrl = Annotated[str, AfterValidator(_rule("https url", _url("https"))), StringRule("https url")]
KerberosRealm = Annotated[
    str,
    AfterValidator(
        _rule("kerberos realm", _matches(_REALM, "letters, digits, '.' or '-' (e.g. EXAMPLE.ORG)", 255))
    ),
    StringRule("kerberos realm"),
]
LdapDnTemplate = Annotated[
    str, AfterValidator(_rule("ldap dn template", _dn_template)), StringRule("ldap dn template")
]


# --- whole documents -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RawProblem:
    path: str
    message: str


def _key_path(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def control_character_problems(raw: Any, prefix: str = "") -> list[RawProblem]:
    """Every string of a loaded YAML document (keys included) that holds a control character."""
    problems: list[RawProblem] = []
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            path = _key_path(prefix, key)
            if isinstance(key, str) and _CONTROL.search(key):
                problems.append(RawProblem(path=path, message="key: control character refused"))
            problems += control_character_problems(value, path)
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            problems += control_character_problems(value, f"{prefix}[{index}]")
    elif isinstance(raw, str) and _CONTROL.search(raw):
        problems.append(RawProblem(path=prefix, message="control character refused"))
    return problems


def printable(text: str) -> str:
    """``text`` on one line: control characters shown as escapes (for one-line-per-problem output)."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode(), text)
