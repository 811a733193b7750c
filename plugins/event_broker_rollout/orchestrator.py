"""What the plain layers need from the orchestrator that runs them, behind one small interface.

Stages, transports and evidence are plain Python. Connections, Variables, the secrets masker, the running
task's identity and the task-log folder belong to Airflow: the Airflow layer installs its implementation
(``event_broker_rollout.airflow.runtime``) as soon as any of its modules is imported, so DAGs, the
triggerer and the dev tools always run with it. Plain code asks ``current()`` and never imports Airflow.
Without an orchestrator (a helper process such as the migration canary, a unit test) secrets are not
masked, there is no task identity, and asking for a connection fails with a message saying why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paramiko


class OrchestratorError(RuntimeError):
    """A connection, Variable or setting the orchestrator could not give; the message names it."""


@dataclass(frozen=True)
class Login:
    """A connection's address and credentials (a Kafka admin login, the audit signing key)."""

    conn_id: str
    host: str | None
    port: int | None
    login: str | None
    password: str | None = field(repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class SshEndpoint:
    """An SSH connection as the SSH provider parses it: where, who, how to authenticate, which host key."""

    conn_id: str
    host: str
    port: int
    username: str
    password: str | None = field(repr=False)
    pkey: paramiko.PKey | None = field(repr=False)
    key_file: str | None
    host_key: paramiko.PKey | None
    no_host_key_check: bool
    connect_timeout: int


class Orchestrator(Protocol):
    def connection(self, conn_id: str) -> Login: ...

    def ssh_endpoint(self, conn_id: str, connect_timeout: int) -> SshEndpoint: ...

    def variable(self, name: str) -> str: ...

    def mask_secret(self, secret: str) -> None: ...

    def task_identity(self) -> dict[str, Any]: ...

    def task_log_folder(self) -> Path: ...


class NoOrchestrator:
    """Outside Airflow: nothing to read connections from, nothing to mask with."""

    def _missing(self, what: str) -> OrchestratorError:
        return OrchestratorError(
            f"{what}: no orchestrator in this process (import event_broker_rollout.airflow to use Airflow's)"
        )

    def connection(self, conn_id: str) -> Login:
        raise self._missing(f"connection {conn_id}")

    def ssh_endpoint(self, conn_id: str, connect_timeout: int) -> SshEndpoint:
        raise self._missing(f"SSH connection {conn_id}")

    def variable(self, name: str) -> str:
        raise self._missing(f"Variable {name}")

    def mask_secret(self, secret: str) -> None:
        return None

    def task_identity(self) -> dict[str, Any]:
        return {}

    def task_log_folder(self) -> Path:
        raise self._missing("the task log folder")


# One per process, replaced once by the Airflow layer when it is imported.
_installed: list[Orchestrator] = [NoOrchestrator()]


def install(orchestrator: Orchestrator) -> None:
    _installed[0] = orchestrator


def current() -> Orchestrator:
    return _installed[0]
