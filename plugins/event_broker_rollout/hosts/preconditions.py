"""What the change steps would refuse, observed read-only before any change.

A change step must not take over what belongs to someone else: a data folder formatted for another
cluster, a port a foreign process listens on, a file we would overwrite that this project did not write,
an install folder or ``current`` link that another installation occupies. The plan observes each of
these (one read-only round trip, ``observe_command``) and judges them here, as pure functions, so the
infrastructure stage stops at its plan and preflight reports the same findings before a run starts.

A file is ours when its first lines carry ``MANAGED_MARKER`` (every rendered template does). Files whose
desired content carries no marker (key material, the CA certificate, the service wrapper) live in this
project's own folders and are not judged by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from event_broker_rollout.hosts.desired import HostState, ManagedFile
from event_broker_rollout.hosts.shell import script


class ChangeRefused(RuntimeError):
    """A change step would take over what is not ours; raised before any change, naming host and place."""


MANAGED_MARKER = "Managed by event-broker-rollout"
MARKER_LINES = 3  # the marker sits in a template's first line; a little room for a shebang or a wrap

# Read-only: tests and reads only (no write, no mkdir). Values arrive as positional parameters (kind,
# then its values), never parsed by the shell. Output lines:
#   marker <path> absent|marked|unmarked|notafile
#   installdir <name> absent|ours|other          (ours: holds this project's .ebr-installed)
#   current <name> absent|dangling|ours|other    (other: a real folder/file, or a link to a foreign install)
#   listen <port> <pid>|unknown <pid,ppid,...,1> <process name>
_OBSERVE_SCRIPT = r"""
marker=$1; lines=$2; shift 2
while [ "$#" -gt 0 ]; do
  kind=$1; shift
  case "$kind" in
    marker)
      if [ ! -e "$1" ] && [ ! -L "$1" ]; then state=absent
      elif [ ! -f "$1" ]; then state=notafile
      elif head -n "$lines" -- "$1" | grep -qF -- "$marker"; then state=marked
      else state=unmarked; fi
      printf 'marker %s %s\n' "$1" "$state"
      shift ;;
    install)
      if [ -f "$2/.ebr-installed" ]; then state=ours
      elif [ -e "$2" ] || [ -L "$2" ]; then state=other
      else state=absent; fi
      printf 'installdir %s %s\n' "$1" "$state"
      if [ -L "$3" ]; then
        if [ -f "$3/.ebr-installed" ]; then state=ours
        elif [ -e "$3" ]; then state=other
        else state=dangling; fi
      elif [ -e "$3" ]; then state=other
      else state=absent; fi
      printf 'current %s %s\n' "$1" "$state"
      shift 3 ;;
    ports)
      ports=" $1 "; shift
      ss -Hltnp 2>/dev/null | while read -r _state _recv _send local _peer rest; do
        port=${local##*:}
        case "$ports" in *" $port "*) ;; *) continue ;; esac
        pids=$(printf '%s\n' "$rest" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u)
        if [ -z "$pids" ]; then printf 'listen %s unknown - unknown\n' "$port"; continue; fi
        for pid in $pids; do
          chain=$pid; p=$pid
          while [ "$p" -gt 1 ]; do
            p=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f2)
            [ -n "$p" ] || break
            chain="$chain,$p"
          done
          printf 'listen %s %s %s %s\n' "$port" "$pid" "$chain" "$(cat "/proc/$pid/comm" 2>/dev/null || echo unknown)"
        done
      done ;;
    *) echo "observe-preconditions: unknown kind" >&2; exit 2 ;;
  esac
done
"""


def carries_marker(managed: ManagedFile) -> bool:
    if isinstance(managed.content, bytes):  # a binary file (a keytab) has no place for a marker
        return False
    return any(MANAGED_MARKER in line for line in managed.content.splitlines()[:MARKER_LINES])


def observe_command(state: HostState) -> tuple[str, ...]:
    args = [MANAGED_MARKER, str(MARKER_LINES)]
    for managed in state.files:
        if carries_marker(managed):
            args += ["marker", managed.path]
    for install in state.installs:
        args += ["install", install.name, install.target, install.current_link]
    if state.ports:
        args += ["ports", " ".join(str(port) for port, _ in state.ports)]
    return script(_OBSERVE_SCRIPT, *args, name="ebr-observe-preconditions")


@dataclass(frozen=True)
class Holder:
    """A process listening on a port: its pid and the pids of its ancestors (up to init)."""

    pid: int | None  # None when ss could not name the process (not root)
    lineage: tuple[int, ...]
    process: str


@dataclass
class Occupancy:
    """Who occupies the places the change steps would write or bind."""

    markers: dict[str, str] = field(default_factory=dict)  # path -> absent|marked|unmarked|notafile
    install_dirs: dict[str, str] = field(default_factory=dict)  # install name -> absent|ours|other
    current_links: dict[str, str] = field(default_factory=dict)  # install name -> absent|dangling|ours|other
    listeners: dict[int, list[Holder]] = field(default_factory=dict)


def parse_occupancy(text: str) -> Occupancy:
    occupancy = Occupancy()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        kind = parts[0]
        if kind == "marker":  # the path is everything between the kind and the state (it may hold spaces)
            path, _, state = line.removeprefix("marker ").rpartition(" ")
            occupancy.markers[path] = state
        elif kind == "installdir":
            occupancy.install_dirs[parts[1]] = parts[2]
        elif kind == "current":
            occupancy.current_links[parts[1]] = parts[2]
        elif kind == "listen" and len(parts) >= 5 and parts[1].isdigit():
            known = parts[2].isdigit()
            holder = Holder(
                pid=int(parts[2]) if known else None,
                lineage=tuple(int(p) for p in parts[3].split(",") if p.isdigit()) if known else (),
                process=" ".join(parts[4:]),
            )
            occupancy.listeners.setdefault(int(parts[1]), []).append(holder)
    return occupancy


@dataclass(frozen=True)
class Precondition:
    """One place a change step would take over, judged: ``met`` False means the step would refuse."""

    id: str
    target: str
    met: bool
    observed: str
    expected: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NOT_FORMATTED = "no"


def evaluate(
    state: HostState,
    occupancy: Occupancy,
    formatted: Mapping[str, str],
    service_pids: Mapping[str, int | None],
    cluster_id: str,
) -> list[Precondition]:
    """Every place this host's change steps would write, format or bind, and whether they may.

    ``formatted``: data dir -> the cluster id in its meta.properties, or ``"no"``; ``service_pids``: our
    services' main pids (None when stopped), from the plan's observation.
    """
    results = [
        _storage(directory, formatted.get(directory, NOT_FORMATTED), cluster_id)
        for directory in state.data_dirs
    ]
    results += [
        _managed_file(managed.path, occupancy.markers.get(managed.path, "absent"))
        for managed in state.files
        if carries_marker(managed)
    ]
    for install in state.installs:
        results.append(_install_dir(install.target, occupancy.install_dirs.get(install.name, "absent")))
        results.append(
            _current_link(install.current_link, occupancy.current_links.get(install.name, "absent"))
        )
    ours = {pid for pid in service_pids.values() if pid is not None}
    for port, service in state.ports:
        results.append(_port(port, service, occupancy.listeners.get(port, []), ours))
    return results


def _storage(directory: str, formatted: str, cluster_id: str) -> Precondition:
    met = formatted in (NOT_FORMATTED, cluster_id)
    return Precondition(
        id=f"infra.storage.cluster_id[{directory}]",
        target=directory,
        met=met,
        observed="not formatted" if formatted == NOT_FORMATTED else f"cluster.id={formatted}",
        expected=f"not formatted, or cluster.id={cluster_id}",
        message=f"data folder {directory}"
        + (
            ": ours to format or use"
            if met
            else f" is formatted for cluster {formatted}, not {cluster_id}: refusing to touch it"
        ),
    )


_MARKER_STATES = {
    "absent": "absent",
    "marked": f"carries '{MANAGED_MARKER}'",
    "unmarked": f"present without '{MANAGED_MARKER}'",
    "notafile": "not a regular file",
}


def _managed_file(path: str, state: str) -> Precondition:
    met = state in ("absent", "marked")
    return Precondition(
        id=f"infra.file.managed[{path}]",
        target=path,
        met=met,
        observed=_MARKER_STATES.get(state, state),
        expected=f"absent, or a file carrying '{MANAGED_MARKER}'",
        message=f"{path}: "
        + ("ours to write" if met else "not written by this project: refusing to overwrite it"),
    )


def _install_dir(target: str, state: str) -> Precondition:
    met = state in ("absent", "ours")
    return Precondition(
        id=f"infra.install.dir[{target}]",
        target=target,
        met=met,
        observed={"absent": "absent", "ours": "installed by this project (.ebr-installed)"}.get(
            state, "present without this project's .ebr-installed"
        ),
        expected="absent, or installed by this project",
        message=f"install folder {target}: "
        + ("ours to install into" if met else "occupied by another installation: refusing to replace it"),
    )


def _current_link(link: str, state: str) -> Precondition:
    met = state in ("absent", "dangling", "ours")
    return Precondition(
        id=f"infra.install.current[{link}]",
        target=link,
        met=met,
        observed={
            "absent": "absent",
            "dangling": "a dangling link",
            "ours": "a link to an installation of this project",
        }.get(state, "a folder, file or link of another installation"),
        expected="absent, or a link to an installation of this project",
        message=f"{link}: "
        + ("ours to point" if met else "belongs to another installation: refusing to repoint it"),
    )


def _port(port: int, service: str, holders: list[Holder], ours: set[int]) -> Precondition:
    foreign = [holder for holder in holders if holder.pid is None or not ours & set(holder.lineage)]
    observed = (
        "free"
        if not holders
        else "; ".join(
            f"{holder.process} (pid {holder.pid if holder.pid is not None else 'unknown'}, "
            f"{'ours' if holder not in foreign else 'not ours'})"
            for holder in holders
        )
    )
    return Precondition(
        id=f"infra.port.owner[{port}]",
        target=str(port),
        met=not foreign,
        observed=observed,
        expected=f"free, or held by this project's {service}",
        message=f"port {port} ({service}): "
        + (
            "free or ours"
            if not foreign
            else f"a process that is not this project's {service} listens on it: refusing to start beside it"
        ),
    )
