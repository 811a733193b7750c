"""The lab's directory: OpenLDAP (slapd) on the identity host, holding the platform's people and groups.

A hospital's directory belongs to its identity team; the broker's rollout never binds to it. People
reach the brokers and the registry through the identity provider, which federates the directory
(Keycloak's LDAP user storage, read-only): a person logs in at the provider with the directory's
password, and the tokens carry the person's uid as the Kafka principal and, from the person's groups,
the registry's roles. On the lab this module plays the directory's administrators. It serves LDAPS at
``ldaps://10.77.0.2:636`` only, with the identity host's certificate, from a database in
``$LAB_STATE/idp/directory`` made from the people below; passwords are generated once into
``$LAB_STATE/idp/directory-passwords.json`` (0600), and stored in the directory only as salted hashes.
Anonymous clients may only bind; the provider reads as its own service account.

    python -m event_broker_devtools.lab_directory up      # idempotent (lab_idp up starts it first)
    python -m event_broker_devtools.lab_directory down
    python -m event_broker_devtools.lab_directory status
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from event_broker_devtools.lab_identity_host import (
    ADDRESS,
    NETNS,
    ensure_network,
    ensure_tls,
    netns_exists,
    run,
    service_main,
    state_dir,
)
from event_broker_rollout.hosts.secret_files import write_secret

PORT = 636
URL = f"ldaps://{ADDRESS}:{PORT}"
BASE_DN = "dc=ebr,dc=lab"
PEOPLE_DN = f"ou=people,{BASE_DN}"
GROUPS_DN = f"ou=groups,{BASE_DN}"
SERVICES_DN = f"ou=services,{BASE_DN}"
# The identity provider's own account: it may read people and groups, nothing else.
READER = "identity-provider"
READER_DN = f"cn={READER},{SERVICES_DN}"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Person:
    uid: str
    given_name: str
    surname: str
    groups: tuple[str, ...]


# The platform's groups: what a member may do is decided where the group is used (the provider maps
# each to registry roles; Kafka grants name people, never groups).
GROUPS = {
    "kafka-admins": "Operate the event broker; administer the schema registry",
    "change-approvers": "Approve rollouts inside change windows; read the schema registry",
}
PEOPLE = (
    Person("amara.okafor", "Amara", "Okafor", ("kafka-admins",)),
    Person("li.wei", "Li", "Wei", ("change-approvers",)),
    # In the directory but in no platform group: the provider lets her log in, with no role anywhere.
    Person("sam.ortiz", "Sam", "Ortiz", ()),
)


def _directory() -> Path:
    return state_dir() / "directory"


def passwords_file() -> Path:
    return state_dir() / "directory-passwords.json"


def _reader_password_file() -> Path:
    """The provider's password alone, for ``ldapwhoami -y`` (0600)."""
    return state_dir() / "directory-reader.password"


def _pid_file() -> Path:
    return _directory() / "slapd.pid"  # slapd writes it too (the same pid: ip netns exec execs it)


def _log_file() -> Path:
    return state_dir() / "slapd.log"


def ensure_passwords() -> dict[str, str]:
    """One password per person and for the provider's account, generated once."""
    path = passwords_file()
    existing: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = {
        who: existing.get(who) or secrets.token_urlsafe(18) for who in [READER, *(p.uid for p in PEOPLE)]
    }
    if wanted != existing:
        write_secret(path, json.dumps(wanted, indent=2))
    if not _reader_password_file().is_file() or _reader_password_file().read_text() != wanted[READER]:
        write_secret(_reader_password_file(), wanted[READER])
    return wanted


def ssha(password: str) -> str:
    """OpenLDAP's salted SHA-1 (``{SSHA}``): what the directory stores instead of a password."""
    salt = secrets.token_bytes(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def entries(passwords: dict[str, str]) -> str:
    """The directory's content as LDIF (hashed passwords only)."""
    blocks = [
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\no: event-broker lab\ndc: ebr",
        *(
            f"dn: ou={unit},{BASE_DN}\nobjectClass: organizationalUnit\nou: {unit}"
            for unit in ("people", "groups", "services")
        ),
        f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: {READER}\nuserPassword: {ssha(passwords[READER])}",
        *(
            f"dn: uid={person.uid},{PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: {person.uid}\n"
            f"cn: {person.given_name} {person.surname}\ngivenName: {person.given_name}\nsn: {person.surname}\n"
            f"mail: {person.uid}@ebr.lab\nuserPassword: {ssha(passwords[person.uid])}"
            for person in PEOPLE
        ),
        *(
            f"dn: cn={group},{GROUPS_DN}\nobjectClass: groupOfNames\ncn: {group}\ndescription: {description}\n"
            + "\n".join(
                f"member: uid={person.uid},{PEOPLE_DN}" for person in PEOPLE if group in person.groups
            )
            for group, description in GROUPS.items()
        ),
    ]
    return "\n\n".join(blocks) + "\n"


def render_config(directory: Path, ca_cert: Path, cert: Path, key: Path) -> str:
    """slapd.conf: the schemas people need, TLS from the identity host, and access for binds only, people
    to themselves and the provider's account to read."""
    return "\n".join(
        [
            "include /etc/ldap/schema/core.schema",
            "include /etc/ldap/schema/cosine.schema",
            "include /etc/ldap/schema/inetorgperson.schema",
            "modulepath /usr/lib/ldap",
            "moduleload back_mdb",
            f"pidfile {directory}/slapd.pid",
            f"argsfile {directory}/slapd.args",
            f"TLSCACertificateFile {ca_cert}",
            f"TLSCertificateFile {cert}",
            f"TLSCertificateKeyFile {key}",
            "TLSProtocolMin 3.3",
            "disallow bind_anon",
            "require authc",
            "access to attrs=userPassword by anonymous auth by * none",
            f'access to dn.subtree="{BASE_DN}" by dn.exact="{READER_DN}" read by self read by * none',
            "database mdb",
            "maxsize 67108864",
            f'suffix "{BASE_DN}"',
            f"directory {directory}/data",
            "index objectClass eq",
            "index uid,member eq",
            "",
        ]
    )


def running_pid() -> int | None:
    """slapd's pid, if the one recorded is a slapd inside the namespace."""
    try:
        pid = int(_pid_file().read_text())
    except (OSError, ValueError):
        return None
    if not netns_exists() or str(pid) not in run(["ip", "netns", "pids", NETNS], check=False).stdout.split():
        return None
    try:
        return pid if Path(f"/proc/{pid}/comm").read_text().strip() == "slapd" else None
    except OSError:
        return None


def bind(dn: str, password_file: Path) -> subprocess.CompletedProcess[str]:
    """``ldapwhoami`` as ``dn`` over LDAPS, trusting only the identity host's CA."""
    argv = ["ldapwhoami", "-x", "-H", URL, "-D", dn, "-y", str(password_file)]
    environment = {**os.environ, "LDAPTLS_CACERT": str(state_dir() / "ca.crt"), "LDAPTLS_REQCERT": "demand"}
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=10, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", "ldapwhoami: no answer within 10 s")


def bind_as_person(uid: str, password: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="ebr-ldap-") as scratch:
        password_file = Path(scratch) / "password"
        write_secret(password_file, password)
        return bind(f"uid={uid},{PEOPLE_DN}", password_file)


def answers() -> bool:
    return bind(READER_DN, _reader_password_file()).returncode == 0


def _content_digest(configuration: str, passwords: dict[str, str]) -> str:
    """What the database was made from (the LDIF itself has fresh salts every time)."""
    people = [(p.uid, p.given_name, p.surname, p.groups) for p in PEOPLE]
    material = json.dumps([configuration, passwords, people, GROUPS], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def _load(directory: Path, configuration: Path, passwords: dict[str, str]) -> None:
    """A new database from the people (slapadd, offline: no administrator password exists at all)."""
    shutil.rmtree(directory / "data", ignore_errors=True)
    (directory / "data").mkdir(mode=0o700, parents=True)
    with tempfile.TemporaryDirectory(prefix="ebr-ldif-") as scratch:
        ldif = Path(scratch) / "directory.ldif"
        write_secret(ldif, entries(passwords))
        run(["slapadd", "-q", "-f", str(configuration), "-l", str(ldif)])


def start(configuration: Path) -> None:
    _pid_file().unlink(missing_ok=True)
    with _log_file().open("ab") as log:
        # Foreground (-d 0) under a session of its own: its pid is the one recorded.
        process = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, "slapd", "-d", "0", "-f", str(configuration), "-h", f"{URL}/"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _pid_file().write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers():
        if process.poll() is not None:
            raise RuntimeError(f"slapd exited ({process.returncode}); see {_log_file()}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the directory did not answer within {START_TIMEOUT_S:.0f} s; see {_log_file()}"
            )
        time.sleep(0.1)


def stop() -> None:
    pid = running_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while running_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if running_pid() is not None:
            os.kill(pid, signal.SIGKILL)
    _pid_file().unlink(missing_ok=True)


def up(_names: list[str] | None = None) -> None:
    """The directory serving the people above; nothing restarts when nothing changed."""
    ensure_network()
    ca_cert, cert, key = ensure_tls(state_dir())
    directory = _directory()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    passwords = ensure_passwords()
    configuration = directory / "slapd.conf"
    text = render_config(directory, ca_cert, cert, key)
    digest = _content_digest(text, passwords)
    loaded = directory / "content.sha256"
    changed = not loaded.is_file() or loaded.read_text() != digest
    if not changed and running_pid() is not None and answers():
        return
    stop()
    if changed:
        write_secret(configuration, text)
        _load(directory, configuration, passwords)
        loaded.write_text(digest)
    start(configuration)


def down() -> None:
    """slapd stopped; its database and the passwords stay."""
    stop()


def status() -> str:
    pid = running_pid()
    return f"directory {URL}: " + (
        f"up (pid {pid})" if pid is not None and answers() else "not answering" if pid is not None else "down"
    )


def main(argv: list[str]) -> int:
    return service_main("lab_directory", argv, up, down, status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
