"""Plans: the difference between a host's desired state and what was observed on it.

Pure functions: the observation is text from one SSH round trip (``observe_command``), the plan is a
list of changes with before/after digests and a diff, and the services to start or restart. Applying a
plan with nothing in it changes nothing and restarts nothing.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from event_broker_rollout.hosts import preconditions
from event_broker_rollout.hosts.desired import SERVICE_WRAPPER, HostState
from event_broker_rollout.hosts.preconditions import Occupancy, Precondition
from event_broker_rollout.hosts.shell import script

ABSENT = "absent"
_SECRET_LINE = re.compile(r"(password|secret|jaas\.config|private|keystore\.key|token)", re.IGNORECASE)


# One round trip reports the host's state. The script is constant: the user, paths and service names
# arrive as positional parameters (kind, then its values), so no value is ever parsed by the shell.
_OBSERVE_SCRIPT = r"""
wrapper=$1; shift
if [ -d /run/systemd/system ]; then echo "systemd yes"; else echo "systemd no"; fi
while [ "$#" -gt 0 ]; do
  kind=$1; shift
  case "$kind" in
    user)
      if id -u -- "$1" >/dev/null 2>&1; then echo "user present"; else echo "user absent"; fi
      shift ;;
    file)
      if [ -f "$1" ]; then printf 'file %s %s\n' "$1" "$(sha256sum -- "$1" | cut -d' ' -f1)"
      else printf 'file %s absent\n' "$1"; fi
      shift ;;
    install)
      printf 'install %s %s %s\n' "$1" "$(cat -- "$2" 2>/dev/null || echo absent)" \
        "$(readlink -f -- "$3" 2>/dev/null || echo none)"
      shift 3 ;;
    formatted)
      if [ -f "$1/meta.properties" ]; then
        printf 'formatted %s %s\n' "$1" "$(sed -n 's/^cluster.id=//p' "$1/meta.properties")"
      else printf 'formatted %s no\n' "$1"; fi
      shift ;;
    service)
      pid=$( (systemctl show -p MainPID --value -- "$1" 2>/dev/null | grep -v '^0$') || "$wrapper" pid "$1" 2>/dev/null || true)
      if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then
        printf 'service %s running %s %s\n' "$1" "$pid" "$(cut -d' ' -f22 "/proc/$pid/stat")"
      else printf 'service %s stopped\n' "$1"; fi
      shift ;;
    *) echo "observe: unknown kind" >&2; exit 2 ;;
  esac
done
"""


def observe_command(state: HostState) -> tuple[str, ...]:
    args = [SERVICE_WRAPPER, "user", state.service_user]
    for managed in state.files:
        args += ["file", managed.path]
    for install in state.installs:
        args += ["install", install.name, f"{install.target}/.ebr-installed", install.current_link]
    for directory in state.data_dirs:
        args += ["formatted", directory]
    for service in state.services:
        args += ["service", service.name]
    return script(_OBSERVE_SCRIPT, *args, name="ebr-observe")


@dataclass(frozen=True)
class ServiceStatus:
    running: bool
    pid: int | None = None
    start_ticks: int | None = None  # /proc/<pid>/stat starttime: changes if and only if the process restarted


@dataclass
class Observed:
    systemd: bool = False
    user_present: bool = False
    files: dict[str, str] = field(default_factory=dict)  # path -> digest | "absent"
    installs: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (marker, current link)
    formatted: dict[str, str] = field(default_factory=dict)  # data dir -> cluster id | "no"
    services: dict[str, ServiceStatus] = field(default_factory=dict)


def parse_observation(text: str) -> Observed:
    observed = Observed()
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        kind = parts[0]
        if kind == "systemd":
            observed.systemd = parts[1] == "yes"
        elif kind == "user":
            observed.user_present = parts[1] == "present"
        elif kind == "file" and len(parts) == 3:
            observed.files[parts[1]] = parts[2]
        elif kind == "install" and len(parts) == 4:
            observed.installs[parts[1]] = (parts[2], parts[3])
        elif kind == "formatted" and len(parts) >= 2:
            observed.formatted[parts[1]] = parts[2] if len(parts) > 2 else "no"
        elif kind == "service" and len(parts) >= 3:
            running = parts[2] == "running"
            observed.services[parts[1]] = ServiceStatus(
                running=running,
                pid=int(parts[3]) if running else None,
                start_ticks=int(parts[4]) if running and len(parts) > 4 else None,
            )
    return observed


@dataclass(frozen=True)
class Change:
    host: str
    kind: str  # user | install | file | format | start | restart
    target: str
    before: str | None = None
    after: str | None = None
    diff: str | None = None
    restarts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        return cls(**{**data, "restarts": tuple(data.get("restarts") or ())})


@dataclass
class HostPlan:
    host: str
    changes: list[Change]
    start: list[str]  # services not running
    restart: list[str]  # running services whose files or install changed
    unchanged: list[str]  # items already as desired (reported "ok")
    # What a change step would refuse (e.g. another cluster's data folder): the stage changes nothing.
    problems: list[Precondition]
    running: dict[str, ServiceStatus]

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "changes": [c.to_dict() for c in self.changes],
            "start": self.start,
            "restart": self.restart,
            "unchanged": self.unchanged,
            "problems": [problem.to_dict() for problem in self.problems],
            "running": {name: asdict(status) for name, status in self.running.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostPlan:
        return cls(
            host=data["host"],
            changes=[Change.from_dict(c) for c in data["changes"]],
            start=list(data["start"]),
            restart=list(data["restart"]),
            unchanged=list(data["unchanged"]),
            problems=[Precondition(**problem) for problem in data["problems"]],
            running={name: ServiceStatus(**status) for name, status in data["running"].items()},
        )


def mask_secrets(text: str) -> str:
    """Lines that may carry credentials never reach a diff, a report or a log."""
    return "\n".join(
        (line.split("=", 1)[0] + "=<masked>" if "=" in line else "<masked>")
        if _SECRET_LINE.search(line)
        else line
        for line in text.splitlines()
    )


def unified_diff(path: str, before: str | None, after: str) -> str:
    diff = difflib.unified_diff(
        mask_secrets(before or "").splitlines(),
        mask_secrets(after).splitlines(),
        fromfile=f"{path} (on host)" if before is not None else "/dev/null",
        tofile=f"{path} (desired)",
        lineterm="",
    )
    return "\n".join(diff)


def host_preconditions(
    state: HostState, observed: Observed, occupancy: Occupancy, cluster_id: str
) -> list[Precondition]:
    """Every place the change steps would take on this host, judged (see ``preconditions``)."""
    service_pids = {name: status.pid for name, status in observed.services.items() if status.running}
    return preconditions.evaluate(state, occupancy, observed.formatted, service_pids, cluster_id)


def plan_host(
    state: HostState,
    observed: Observed,
    cluster_id: str,
    current_contents: dict[str, str],
    occupancy: Occupancy,
) -> HostPlan:
    """Compare desired with observed. ``current_contents`` holds the on-host text of changed files;
    ``occupancy`` who holds the places the change steps would take (its refusals become ``problems``)."""
    changes: list[Change] = []
    unchanged: list[str] = []
    problems = [p for p in host_preconditions(state, observed, occupancy, cluster_id) if not p.met]
    needs_restart: set[str] = set()

    if not observed.user_present:
        changes.append(Change(state.host, "user", state.service_user, before=ABSENT, after="system user"))
    for install in state.installs:
        marker, link = observed.installs.get(install.name, (ABSENT, "none"))
        wanted = install.marker
        if marker != wanted or link != install.target:
            changes.append(
                Change(
                    state.host,
                    "install",
                    install.target,
                    before=f"{marker} -> {link}",
                    after=f"{wanted} -> {install.target}",
                    restarts=install.restarts,
                )
            )
            needs_restart.update(install.restarts)
        else:
            unchanged.append(f"install:{install.target}")
    for managed in state.files:
        before = observed.files.get(managed.path, ABSENT)
        if before != managed.digest:
            changes.append(
                Change(
                    state.host,
                    "file",
                    managed.path,
                    before=before,
                    after=managed.digest,
                    diff="(key material: not shown)"
                    if managed.secret or isinstance(managed.content, bytes)
                    else unified_diff(managed.path, current_contents.get(managed.path), managed.content),
                    restarts=managed.restarts,
                )
            )
            needs_restart.update(managed.restarts)
        else:
            unchanged.append(f"file:{managed.path}")
    for directory in state.data_dirs:
        formatted = observed.formatted.get(directory, "no")
        if formatted == "no":
            changes.append(
                Change(
                    state.host, "format", directory, before="unformatted", after=f"cluster.id={cluster_id}"
                )
            )
        elif formatted == cluster_id:
            unchanged.append(f"storage:{directory}")

    start: list[str] = []
    restart: list[str] = []
    for service in state.services:
        status = observed.services.get(service.name, ServiceStatus(running=False))
        if not status.running:
            start.append(service.name)
        elif service.name in needs_restart:
            restart.append(service.name)
        else:
            unchanged.append(f"service:{service.name}")
    return HostPlan(state.host, changes, start, restart, unchanged, problems, dict(observed.services))
