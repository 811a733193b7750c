"""Changes on one host over SSH: observe, install, write files (keeping the previous ones), format, run services.

Every change is recorded as a result and an audit record (host, target, digest before/after). Writing a
host's files is all-or-nothing: on any failure the previous files are put back before the error is
raised, so a failed rollout leaves the host as it was.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from event_broker_rollout.audit import audit
from event_broker_rollout.evidence import Result, Severity, Status
from event_broker_rollout.infrastructure.desired import SERVICE_WRAPPER, HostState, Install, backup_path
from event_broker_rollout.infrastructure.plan import ABSENT, Change, HostPlan, Observed, parse_observation
from event_broker_rollout.remote import RemoteError, RemoteHost


def observe(session: RemoteHost, state: HostState) -> tuple[Observed, dict[str, str]]:
    """The host's current state, and the current text of every managed file whose digest differs."""
    from event_broker_rollout.infrastructure.plan import observe_command

    observed = parse_observation(session.run(observe_command(state), timeout=60, check=True).stdout)
    contents: dict[str, str] = {}
    for managed in state.files:
        digest = observed.files.get(managed.path, ABSENT)
        if not managed.secret and digest not in (ABSENT, managed.digest):
            contents[managed.path] = session.run(
                f"cat {shlex.quote(managed.path)}", timeout=30, check=True
            ).stdout
    return observed, contents


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


def install(session: RemoteHost, install_spec: Install) -> None:
    """Upload the archive, check its digest on the host, unpack it beside older versions, point ``current`` at it."""
    local_digest = _file_sha256(install_spec.archive)
    base = shlex.quote(install_spec.base_dir)
    incoming = f"{install_spec.base_dir}/.incoming-{install_spec.archive.name}"
    target = shlex.quote(install_spec.target)
    session.run(f"mkdir -p {base}", check=True)
    marker = session.run(f"cat {target}/.ebr-installed 2>/dev/null", timeout=10).stdout.strip()
    if marker == install_spec.archive.name:
        # Already unpacked (a running service may use these files): only point `current` at it.
        session.run(
            f"ln -sfn {shlex.quote(install_spec.top_dir)} {base}/current.new && mv -T {base}/current.new {shlex.quote(install_spec.current_link)}",
            check=True,
        )
        return
    session.put(install_spec.archive, incoming)
    remote_digest = session.run(
        f"sha256sum {shlex.quote(incoming)} | cut -d' ' -f1", check=True
    ).stdout.strip()
    if remote_digest != local_digest:
        raise RemoteError(
            f"{session.name}: {install_spec.archive.name} arrived corrupted ({remote_digest} != {local_digest})"
        )
    session.run(
        f"rm -rf {target}.unpacking && mkdir -p {target}.unpacking && "
        f"tar -xzf {shlex.quote(incoming)} -C {target}.unpacking --strip-components=1 && "
        f"echo {shlex.quote(install_spec.archive.name)} > {target}.unpacking/.ebr-installed && "
        f"rm -rf {target} && mv {target}.unpacking {target} && "
        f"ln -sfn {shlex.quote(install_spec.top_dir)} {base}/current.new && mv -T {base}/current.new {shlex.quote(install_spec.current_link)} && "
        f"rm -f {shlex.quote(incoming)}",
        timeout=300,
        check=True,
    )


def ensure_user(session: RemoteHost, user: str) -> None:
    q = shlex.quote(user)
    session.run(
        f"id -u {q} >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin {q}",
        check=True,
    )


def ensure_directories(session: RemoteHost, state: HostState) -> None:
    commands = [
        f"mkdir -p {shlex.quote(path)} && chown {shlex.quote(owner)}: {shlex.quote(path)}"
        for path, owner in state.directories
    ]
    session.run(" && ".join(commands), check=True)


@contextmanager
def restoring_on_failure(session: RemoteHost, written: list[str]) -> Iterator[None]:
    """Keep each overwritten file's previous version; put them all back if anything below fails."""
    try:
        yield
    except Exception:
        for path in reversed(written):
            q, backup = shlex.quote(path), shlex.quote(backup_path(path))
            session.run(f"if [ -f {backup} ]; then mv -f {backup} {q}; else rm -f {q}; fi", timeout=30)
            audit("infrastructure.restore", target=path, outcome="restored", host=session.name)
        raise


def write_files(session: RemoteHost, state: HostState, changes: list[Change]) -> list[str]:
    """Write the changed files (each replaced atomically); returns their paths for a possible restore."""
    by_path = {managed.path: managed for managed in state.files}
    written: list[str] = []
    for change in changes:
        managed = by_path[change.target]
        q, backup = shlex.quote(managed.path), shlex.quote(backup_path(managed.path))
        session.run(f"if [ -f {q} ]; then cp -p {q} {backup}; else rm -f {backup}; fi", check=True)
        written.append(managed.path)
        session.write_file(managed.path, managed.content, mode=managed.mode)
        session.run(f"chown {shlex.quote(managed.owner)}: {q}", check=True)
    return written


def format_storage(session: RemoteHost, storage_tool: str, cluster_id: str, user: str) -> None:
    """Format the log dirs once; ``--ignore-formatted`` guards against ever reformatting one."""
    session.run(
        f"setpriv --reuid={shlex.quote(user)} --regid={shlex.quote(user)} --init-groups -- "
        f"{storage_tool} format --ignore-formatted -t {shlex.quote(cluster_id)} -c /etc/kafka/server.properties",
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
        raise RemoteError(f"{plan.host}: " + "; ".join(plan.problems))
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
        verb = {"start": "enable --now", "restart": "restart", "stop": "stop"}[action]
        return session.run(
            f"systemctl daemon-reload && systemctl {verb} {shlex.quote(name)}", timeout=timeout, check=True
        ).stdout
    return session.run(f"{SERVICE_WRAPPER} {action} {shlex.quote(name)}", timeout=timeout, check=True).stdout
