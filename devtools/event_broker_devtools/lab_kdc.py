"""The lab's Kerberos KDC: MIT krb5kdc in the identity provider's network namespace on the lab's bridge.

A hospital's Kerberos realm belongs to its identity team, not to the broker's rollout: the environments
only name the realm, its KDCs and the folder where the keytabs the realm's administrators handed over
lie. On the lab this module plays those administrators. It serves the realm of every lab environment
whose Kafka clients authenticate with Kerberos at ``10.77.0.2:88`` (UDP and TCP, on that address only),
from a database in ``$LAB_STATE/kdc`` (0700), and exports a keytab for each broker
(``<service>/<address>``) and each principal (the admin, the components, the canary, the no-grants probe)
into the environment's keytab folder (0600, folders 0700). Exporting a keytab gives its principal a new
key, which makes every earlier copy stale, so a keytab is exported only when its file is missing. One
more client's keytab, ``ebr-stale``'s, is exported and its key changed after: the KDC refuses it. Clients
of the lab read ``$LAB_STATE/kdc/krb5.conf``.

    python -m event_broker_devtools.lab_kdc up [ENV ...]   # idempotent: makes and starts what is missing
    python -m event_broker_devtools.lab_kdc down           # keeps the database and keytabs (lab/lab.sh down stops it too)
    python -m event_broker_devtools.lab_kdc status
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from event_broker_devtools import lab_identity_host
from event_broker_rollout import paths
from event_broker_rollout.config.components import PROBE_PRINCIPAL, load_components
from event_broker_rollout.config.environment import (
    Environment,
    Kerberos,
    available_environments,
    load_environment,
)
from event_broker_rollout.config.keytabs import (
    broker_keytab_path,
    broker_principal,
    client_keytab_path,
    client_principal,
)
from event_broker_rollout.hosts.secret_files import write_secret

NETNS = lab_identity_host.NETNS
ADDRESS = lab_identity_host.ADDRESS
# Another client of the realm whose keytab was exported before its key changed (as when the realm's
# administrators rotated it and the old file stayed behind): the KDC refuses it (preauthentication fails).
STALE_PRINCIPAL = "ebr-stale"
# The KDC's own client, one per realm, its keytab in the state folder: what `answers` logs in as.
CHECK_PRINCIPAL = "ebr-kdc-check"
ENCRYPTION_TYPES = "aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal"  # MIT's and Java's
TICKET_LIFETIME = "1h"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def state_dir() -> Path:
    return paths.lab_state_dir() / "kdc"


def kdc_conf() -> Path:
    return state_dir() / "kdc.conf"


def krb5_conf() -> Path:
    """The lab's krb5.conf for its clients (``KRB5_CONFIG``)."""
    return state_dir() / "krb5.conf"


def _log_file() -> Path:
    return state_dir() / "kdc.log"


def _pid_file() -> Path:
    return state_dir() / "krb5kdc.pid"


def _realm_dir(realm: str) -> Path:
    return state_dir() / realm


def _check_keytab(realm: str) -> Path:
    return _realm_dir(realm) / "check.keytab"


def _tools_environment() -> dict[str, str]:
    """The lab's files for krb5kdc, kdb5_util and kadmin.local (never /etc/krb5.conf or /etc/krb5kdc)."""
    return {**os.environ, "KRB5_CONFIG": str(krb5_conf()), "KRB5_KDC_PROFILE": str(kdc_conf())}


def _run(
    argv: list[str], stdin: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_tools_environment(),
        umask=0o077,  # what the tools create (databases, exported keytabs) is private from its first byte
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")
    return result


# --- what the realm holds -------------------------------------------------------------------------


def kerberos_of(environment: Environment) -> Kerberos | None:
    security = environment.security
    if security is None or security.client_authentication != "kerberos":
        return None
    return security.kerberos


def served_environments(names: list[str]) -> list[Environment]:
    """The environments whose Kafka clients authenticate with Kerberos against this KDC."""
    served: list[Environment] = []
    for environment in map(load_environment, names):
        kerberos = kerberos_of(environment)
        if kerberos is not None and ADDRESS in map(str, kerberos.kdcs):
            served.append(environment)
    return served


def _kerberos(environment: Environment) -> Kerberos:
    kerberos = kerberos_of(environment)
    assert kerberos is not None
    return kerberos


def realms_of(environments: list[Environment]) -> list[str]:
    return sorted({_kerberos(environment).realm for environment in environments})


def kdc_port(environments: list[Environment]) -> int:
    ports = {_kerberos(environment).kdc_port for environment in environments}
    if len(ports) != 1:
        raise RuntimeError(f"the lab's environments name different KDC ports: {sorted(ports)}")
    (port,) = ports
    return port


def client_principals(environment: Environment) -> list[str]:
    """As the lab's identity provider has them: the admin, every component and service principal (the
    canary among them), the no-grants probe."""
    assert environment.security is not None
    readers = [*load_components(environment.security.components).principals(), PROBE_PRINCIPAL]
    return list(dict.fromkeys([environment.security.admin_user, *readers]))


@dataclass(frozen=True)
class Keytab:
    principal: str  # with its realm
    path: Path
    stale: bool = False  # exported, then the principal's key changed

    @property
    def realm(self) -> str:
        return self.principal.rpartition("@")[2]


def keytabs(environment: Environment) -> list[Keytab]:
    """The keytabs the realm's administrators hand over for ``environment``: its brokers', its clients',
    and the stale one its refusal tests present."""
    kerberos = _kerberos(environment)
    clients = [*client_principals(environment), STALE_PRINCIPAL]
    return [
        *(
            Keytab(broker_principal(kerberos, h), broker_keytab_path(kerberos, h))
            for h in environment.brokers
        ),
        *(
            Keytab(
                client_principal(kerberos, name), client_keytab_path(kerberos, name), name == STALE_PRINCIPAL
            )
            for name in clients
        ),
    ]


def planned_keytabs(environments: list[Environment]) -> list[Keytab]:
    """Every keytab of the served environments and the KDC's own. A principal has one keytab file and a
    file one principal: exporting a principal's keytab a second time would make the first stale."""
    planned = {keytab for environment in environments for keytab in keytabs(environment)}
    planned |= {
        Keytab(f"{CHECK_PRINCIPAL}@{realm}", _check_keytab(realm)) for realm in realms_of(environments)
    }
    files: dict[str, set[Path]] = {}
    holders: dict[Path, set[str]] = {}
    for keytab in planned:
        files.setdefault(keytab.principal, set()).add(keytab.path)
        holders.setdefault(keytab.path, set()).add(keytab.principal)
    twice = sorted(principal for principal, named in files.items() if len(named) > 1)
    if twice:
        raise RuntimeError(
            f"more than one keytab file each (the environments' keytab_dir): {', '.join(twice)}"
        )
    shared = sorted(str(path) for path, principals in holders.items() if len(principals) > 1)
    if shared:
        raise RuntimeError(f"more than one principal each (the environments' realms): {', '.join(shared)}")
    return sorted(planned, key=lambda keytab: (str(keytab.path), keytab.principal))


# --- the configuration ------------------------------------------------------------------------------


def render_kdc_conf(realms: list[str], directory: Path, address: str, port: int) -> str:
    """The KDC's profile: its realms' databases, one listening address (UDP and TCP), a log file; no
    kadmind (no ACL, no kpasswd): the realm is administered with kadmin.local only."""
    blocks = "".join(
        f"    {realm} = {{\n"
        f"        database_name = {directory / realm / 'principal'}\n"
        f"        key_stash_file = {directory / realm / 'stash'}\n"
        f"        supported_enctypes = {ENCRYPTION_TYPES}\n"
        "        default_principal_flags = +preauth\n"
        "        max_life = 10h\n"
        "        max_renewable_life = 1d\n"
        "    }\n"
        for realm in realms
    )
    return (
        "# The lab's KDC (event_broker_devtools.lab_kdc): written by `lab_kdc up`.\n"
        "[kdcdefaults]\n"
        f"    kdc_listen = {address}:{port}\n"
        f"    kdc_tcp_listen = {address}:{port}\n"
        "\n"
        "[realms]\n"
        f"{blocks}"
        "\n"
        "[logging]\n"
        f"    kdc = FILE:{directory / 'kdc.log'}\n"
        f"    default = FILE:{directory / 'kdc.log'}\n"
    )


def render_krb5_conf(realms: list[str], address: str, port: int) -> str:
    """For the lab's clients: the realm's KDC by address, nothing from DNS, TCP always."""
    blocks = "".join(f"    {realm} = {{\n        kdc = {address}:{port}\n    }}\n" for realm in realms)
    return (
        "# The lab's Kerberos clients (event_broker_devtools.lab_kdc): KRB5_CONFIG=<this file>.\n"
        "[libdefaults]\n"
        f"    default_realm = {realms[0]}\n"
        "    dns_lookup_kdc = false\n"
        "    dns_lookup_realm = false\n"
        "    dns_canonicalize_hostname = false\n"
        "    rdns = false\n"
        "    udp_preference_limit = 1\n"
        f"    ticket_lifetime = {TICKET_LIFETIME}\n"
        "\n"
        "[realms]\n"
        f"{blocks}"
    )


def served_realms() -> list[str]:
    """The realms of the KDC's profile as written last (what a started KDC serves)."""
    try:
        text = kdc_conf().read_text()
    except OSError:
        return []
    return re.findall(r"^    (\S+) = \{$", text, flags=re.MULTILINE)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return True


# --- the database and the principals ---------------------------------------------------------------


def ensure_database(realm: str) -> bool:
    """The realm's database and its stash, made once (True when made now). The master password is random,
    goes to kdb5_util on its standard input and is kept nowhere: the stash holds the master key."""
    folder = _realm_dir(realm)
    database, stash = folder / "principal", folder / "stash"
    if database.exists() and stash.exists():
        return False
    if database.exists() or stash.exists():
        raise RuntimeError(
            f"{folder}: a database without its stash or the other way round; remove {folder} to make the "
            "realm anew (every keytab exported from it is then stale)"
        )
    _private_dir(folder)
    password = secrets.token_urlsafe(32)
    _run(["kdb5_util", "-r", realm, "create", "-s"], stdin=f"{password}\n{password}\n")
    return True


def principals(realm: str) -> set[str]:
    listed = _run(["kadmin.local", "-r", realm, "-q", "listprincs"]).stdout.split()
    return {name for name in listed if name.endswith(f"@{realm}")}


def _kadmin(realm: str, commands: list[str]) -> str:
    """Queries run by one kadmin.local (it exits 0 whatever a query did: the caller checks the outcome)."""
    result = _run(["kadmin.local", "-r", realm], stdin="".join(f"{command}\n" for command in commands))
    return result.stdout + result.stderr


def _quoted(path: Path) -> str:
    if any(character in str(path) for character in '"\n'):
        raise RuntimeError(f"kadmin.local cannot be given the path {path!r}")
    return f'"{path}"'


def provision(realm: str, wanted: list[Keytab]) -> list[Path]:
    """The principals of ``wanted`` created where missing (random keys) and their keytabs exported where
    the file is missing; returns the keytabs written.

    An export goes into a private scratch folder (kadmin.local under umask 077, so 0600 from its creation),
    and only then is copied into place with ``write_secret`` (0600 before any byte, renamed over the
    target): a keytab exists at its path only whole, and the stale one only after its key changed. A crash
    half-way leaves no file that a later ``up`` would take for exported."""
    present = principals(realm)
    missing = sorted({keytab.principal for keytab in wanted} - present)
    exports = [keytab for keytab in wanted if not keytab.path.exists()]
    if not missing and not exports:
        return []
    with tempfile.TemporaryDirectory(dir=state_dir(), prefix="export-") as scratch:
        commands = [f"addprinc -randkey {principal}" for principal in missing]
        exported = [Path(scratch) / f"{index}.keytab" for index in range(len(exports))]
        for keytab, file in zip(exports, exported, strict=True):
            commands.append(f"ktadd -k {_quoted(file)} {keytab.principal}")
            if keytab.stale:
                commands.append(f"cpw -randkey {keytab.principal}")
        output = _kadmin(realm, commands)
        absent = set(missing) - principals(realm)
        if absent:
            raise RuntimeError(f"kadmin.local created no principal {sorted(absent)}: {output.strip()}")
        for keytab, file in zip(exports, exported, strict=True):
            if not file.is_file() or file.stat().st_size == 0:
                raise RuntimeError(
                    f"kadmin.local exported no keytab for {keytab.principal}: {output.strip()}"
                )
            _private_dir(keytab.path.parent)
            write_secret(keytab.path, file.read_bytes())
    return [keytab.path for keytab in exports]


# --- the process --------------------------------------------------------------------------------


def running_pid() -> int | None:
    """krb5kdc's pid, if the one recorded is a krb5kdc inside the namespace (a pid reused after
    ``lab.sh down``, or the identity provider's, is never ours to signal)."""
    try:
        pid = int(_pid_file().read_text())
    except (OSError, ValueError):
        return None
    if not lab_identity_host.netns_exists():
        return None
    inside = subprocess.run(["ip", "netns", "pids", NETNS], capture_output=True, text=True, check=False)
    if str(pid) not in inside.stdout.split():
        return None
    try:
        command = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if command == "krb5kdc" else None


def kinit(keytab: Path, principal: str) -> subprocess.CompletedProcess[str]:
    """A ticket for ``principal`` from its keytab, as a client of the lab gets one, into a cache thrown
    away after."""
    with tempfile.TemporaryDirectory(prefix="ebr-kinit-") as cache:
        argv = ["kinit", "-k", "-t", str(keytab), principal]
        environment = {**os.environ, "KRB5_CONFIG": str(krb5_conf()), "KRB5CCNAME": f"FILE:{cache}/ccache"}
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=environment,
                stdin=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", "kinit: no answer within 10 s")


def answers() -> bool:
    """The KDC issues a ticket, in every realm it serves, to its check principal (over TCP, through the
    bridge)."""
    realms = served_realms()
    return bool(realms) and all(
        kinit(_check_keytab(realm), f"{CHECK_PRINCIPAL}@{realm}").returncode == 0 for realm in realms
    )


def start(realms: list[str]) -> None:
    """krb5kdc inside the namespace; it forks to the background once listening and records its pid."""
    _pid_file().unlink(missing_ok=True)
    argv = ["ip", "netns", "exec", NETNS, "krb5kdc", "-P", str(_pid_file())]
    for realm in realms:
        argv += ["-r", realm]
    _run(argv, timeout=30)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the KDC did not answer within {START_TIMEOUT_S:.0f} s; see {_log_file()}")
        time.sleep(0.2)


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


def up(names: list[str]) -> None:
    environments = served_environments(names or available_environments())
    if not environments:
        raise RuntimeError(f"no environment among {names or 'config/environments'} uses the KDC at {ADDRESS}")
    realms, port = realms_of(environments), kdc_port(environments)
    wanted = planned_keytabs(environments)
    lab_identity_host.ensure_network()
    directory = state_dir()
    _private_dir(directory)
    changed = _write_if_changed(kdc_conf(), render_kdc_conf(realms, directory, ADDRESS, port))
    changed |= _write_if_changed(krb5_conf(), render_krb5_conf(realms, ADDRESS, port))
    for environment in environments:
        _private_dir(Path(_kerberos(environment).keytab_dir))
    for keytab in wanted:
        _private_dir(keytab.path.parent)
    for realm in realms:
        ensure_database(realm)
        provision(realm, [keytab for keytab in wanted if keytab.realm == realm])
    if running_pid() is not None:
        if not changed and answers():
            return
        stop()
    start(realms)


def down() -> None:
    """The KDC stopped; its database, stash and every keytab stay (the next ``up`` serves them again)."""
    stop()


def status() -> str:
    pid = running_pid()
    realms = ", ".join(served_realms()) or "no realm"
    return f"KDC {ADDRESS} ({realms}): " + (
        f"up (pid {pid})" if pid is not None and answers() else "not answering" if pid is not None else "down"
    )


def main(argv: list[str]) -> int:
    return lab_identity_host.service_main("lab_kdc", argv, up, down, status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
