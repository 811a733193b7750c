"""Changes on one host over SSH: observe, install, write files (keeping the previous ones), format, run services.

Every change is recorded as a result and an audit record (host, target, digest before/after). Writing a
host's files is all-or-nothing: on any failure the previous files are put back before the error is
raised, so a failed rollout leaves the host as it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from event_broker_rollout.evidence.audit import audit
from event_broker_rollout.evidence.results import Result, Severity, Status
from event_broker_rollout.hosts import preconditions
from event_broker_rollout.hosts.desired import SERVICE_WRAPPER, HostState, Install, backup_path
from event_broker_rollout.hosts.plan import (
    ABSENT,
    Change,
    HostPlan,
    Observed,
    observe_command,
    parse_observation,
)
from event_broker_rollout.hosts.preconditions import Occupancy
from event_broker_rollout.hosts.remote import RemoteError, RemoteHost
from event_broker_rollout.hosts.shell import Command, script

# Keep a file's previous version beside it ($1: the file, $2: its backup), or note there was none.
_BACKUP_SCRIPT = 'if [ -f "$1" ]; then cp -p -- "$1" "$2"; else rm -f -- "$2"; fi'
# Put the previous version back ($1: the backup, $2: the file), or remove a file that was new.
_RESTORE_SCRIPT = 'if [ -f "$1" ]; then mv -f -- "$1" "$2"; else rm -f -- "$2"; fi'


# Between the observation's lines and the preconditions' lines of one round trip: no observation line
# is only these words (each starts with its kind: systemd, user, file, ...).
_OCCUPANCY_FOLLOWS = "--- occupancy ---"


def observe(session: RemoteHost, state: HostState) -> tuple[Observed, dict[str, str], Occupancy]:
    """The host's current state, the current text of every managed file whose digest differs, and who
    occupies the places the change steps would write or bind: one round trip (and one per differing file)."""
    both = session.run_command(
        Command.all_of(
            [observe_command(state), ("echo", _OCCUPANCY_FOLLOWS), preconditions.observe_command(state)]
        ),
        timeout=60,
        check=True,
    ).stdout
    observation, _, occupancy = ("\n" + both).partition(f"\n{_OCCUPANCY_FOLLOWS}\n")
    observed = parse_observation(observation)
    contents: dict[str, str] = {}
    for managed in state.files:
        digest = observed.files.get(managed.path, ABSENT)
        if not managed.secret and digest not in (ABSENT, managed.digest):
            contents[managed.path] = session.run_argv(
                ["cat", "--", managed.path], timeout=30, check=True
            ).stdout
    return observed, contents, preconditions.parse_occupancy(occupancy)


def changed(change: Change, message: str) -> Result:
    audit(
        "infrastructure.change",
        target=change.target,
        outcome="changed",
        host=change.host,
        kind=change.kind,
        before=change.before,
        after=change.after,
        result_id=f"infra.{change.kind}[{change.target}]",
    )
    return Result(
        id=f"infra.{change.kind}[{change.target}]",
        status=Status.CHANGED,
        host=change.host,
        message=message,
        observed=change.before,
        expected=change.after,
        details={"diff": change.diff} if change.diff else {},
    )


def already(host: str, item: str) -> Result:
    kind, _, target = item.partition(":")
    return Result(
        id=f"infra.{kind}[{target}]",
        status=Status.OK,
        host=host,
        message="already as desired",
        severity=Severity.ADVISORY,
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _point_current(session: RemoteHost, install_spec: Install) -> None:
    new_link = f"{install_spec.base_dir}/current.new"
    session.run_command(
        Command.of("ln", "-sfn", "--", install_spec.top_dir, new_link).and_then(
            "mv", "-T", "--", new_link, install_spec.current_link
        ),
        check=True,
    )


def install(session: RemoteHost, install_spec: Install) -> None:
    """Upload the archive, check its digest on the host, unpack it beside older versions, point ``current`` at it."""
    local_digest = _file_sha256(install_spec.archive)
    incoming = f"{install_spec.base_dir}/.incoming-{install_spec.archive.name}"
    target = install_spec.target
    unpacking = f"{target}.unpacking"
    session.run_argv(["mkdir", "-p", "--", install_spec.base_dir], check=True)
    marker = session.run_argv(["cat", "--", f"{target}/.ebr-installed"], timeout=10).stdout.strip()
    if marker == install_spec.marker:
        # Already unpacked (a running service may use these files): only point `current` at it.
        _point_current(session, install_spec)
        return
    session.put(install_spec.archive, incoming)
    remote_digest = session.run_argv(["sha256sum", "--", incoming], check=True).stdout.partition(" ")[0]
    if remote_digest != local_digest:
        raise RemoteError(
            f"{session.name}: {install_spec.archive.name} arrived corrupted ({remote_digest} != {local_digest})"
        )
    session.run_command(
        Command.of("rm", "-rf", "--", unpacking)
        .and_then("mkdir", "-p", "--", unpacking)
        .and_then("tar", "-xzf", incoming, "-C", unpacking, "--strip-components=1"),
        timeout=300,
        check=True,
    )
    session.write_file(f"{unpacking}/.ebr-installed", install_spec.marker + "\n")
    session.run_command(
        Command.of("rm", "-rf", "--", target).and_then("mv", "--", unpacking, target), timeout=120, check=True
    )
    _point_current(session, install_spec)
    session.run_argv(["rm", "-f", "--", incoming], check=True)


def ensure_user(session: RemoteHost, user: str) -> None:
    if not session.run_argv(["id", "-u", "--", user]).ok:
        session.run_argv(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--", user],
            check=True,
        )


def ensure_directories(session: RemoteHost, state: HostState) -> None:
    steps = [
        argv
        for path, owner in state.directories
        for argv in (("mkdir", "-p", "--", path), ("chown", "--", f"{owner}:", path))
    ]
    session.run_command(Command.all_of(steps), check=True)


@contextmanager
def restoring_on_failure(session: RemoteHost, written: list[str]) -> Iterator[None]:
    """Keep each overwritten file's previous version; put them all back if anything below fails."""
    try:
        yield
    except Exception:
        for path in reversed(written):
            session.run_argv(script(_RESTORE_SCRIPT, backup_path(path), path), timeout=30)
            audit("infrastructure.restore", target=path, outcome="restored", host=session.name)
        raise


def write_files(session: RemoteHost, state: HostState, changes: list[Change]) -> list[str]:
    """Write the changed files (each replaced atomically); returns their paths for a possible restore."""
    by_path = {managed.path: managed for managed in state.files}
    written: list[str] = []
    for change in changes:
        managed = by_path[change.target]
        session.run_argv(script(_BACKUP_SCRIPT, managed.path, backup_path(managed.path)), check=True)
        written.append(managed.path)
        session.write_file(managed.path, managed.content, mode=managed.mode, owner=managed.owner)
    return written


def format_storage(session: RemoteHost, storage_tool: str, cluster_id: str, user: str) -> None:
    """Format the log dirs once; ``--ignore-formatted`` guards against ever reformatting one."""
    session.run_argv(
        [
            "setpriv",
            f"--reuid={user}",
            f"--regid={user}",
            "--init-groups",
            "--",
            storage_tool,
            "format",
            "--ignore-formatted",
            "-t",
            cluster_id,
            "-c",
            "/etc/kafka/server.properties",
        ],
        timeout=120,
        check=True,
    )


def apply_host_plan(
    session: RemoteHost, state: HostState, plan: HostPlan, storage_tool: str, cluster_id: str
) -> list[Result]:
    """Write one host's files and format its storage (installs and service starts are separate steps).

    All or nothing: if anything fails, the host's previous files are put back before the error is raised.
    """
    if plan.problems:
        raise RemoteError(f"{plan.host}: " + "; ".join(problem.message for problem in plan.problems))
    ensure_directories(session, state)
    results: list[Result] = []
    file_changes = [c for c in plan.changes if c.kind == "file"]
    written: list[str] = []
    with restoring_on_failure(session, written):
        written += write_files(session, state, file_changes)
        results += [changed(c, f"wrote {c.target}") for c in file_changes]
        for change in plan.changes:
            if change.kind == "format":
                format_storage(session, storage_tool, cluster_id, state.service_user)
                results.append(changed(change, f"formatted {change.target} for cluster {cluster_id}"))
    return results


def service(session: RemoteHost, action: str, name: str, systemd: bool, timeout: float = 240) -> str:
    if systemd:
        verb = {"start": ("enable", "--now"), "restart": ("restart",), "stop": ("stop",)}[action]
        return session.run_command(
            Command.of("systemctl", "daemon-reload").and_then("systemctl", *verb, "--", name),
            timeout=timeout,
            check=True,
        ).stdout
    return session.run_argv([SERVICE_WRAPPER, action, name], timeout=timeout, check=True).stdout
