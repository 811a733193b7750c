"""Airflow as the orchestrator of the plain layers: connections through the providers' hooks, Variables,
the secrets masker, the running task's identity and the task-log folder (see ``orchestrator``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.configuration import conf
from airflow.providers.ssh.hooks.ssh import SSHHook
from airflow.sdk import BaseHook, Variable, get_current_context
from airflow.sdk.log import mask_secret

from event_broker_rollout import orchestrator
from event_broker_rollout.orchestrator import Login, OrchestratorError, SshEndpoint


class AirflowOrchestrator:
    def connection(self, conn_id: str) -> Login:
        try:
            connection = BaseHook.get_connection(conn_id)
        except Exception as error:  # AirflowNotFoundException and the secrets backends' own errors
            raise OrchestratorError(f"no Airflow connection {conn_id} ({type(error).__name__})") from None
        return Login(
            conn_id=conn_id,
            host=connection.host,
            port=connection.port,
            login=connection.login,
            password=connection.password,
            extra=connection.extra_dejson,
        )

    def ssh_endpoint(self, conn_id: str, connect_timeout: int) -> SshEndpoint:
        # The SSH provider's own parsing: key, password, host key and its no_host_key_check flag.
        hook = SSHHook(ssh_conn_id=conn_id, conn_timeout=connect_timeout)
        return SshEndpoint(
            conn_id=conn_id,
            host=str(hook.remote_host),
            port=int(hook.port or 22),
            username=str(hook.username),
            password=hook.password,
            pkey=hook.pkey,
            key_file=hook.key_file,
            host_key=hook.host_key,
            no_host_key_check=bool(hook.no_host_key_check),
            connect_timeout=int(hook.conn_timeout or connect_timeout),
        )

    def variable(self, name: str) -> str:
        return str(Variable.get(name))

    def mask_secret(self, secret: str) -> None:
        mask_secret(secret)

    def task_identity(self) -> dict[str, Any]:
        try:
            context = get_current_context()
        except Exception:  # outside a running task (the CLI, tests): no run to name
            return {}
        ti = context.get("ti")
        return {
            "dag_id": getattr(ti, "dag_id", None),
            "run_id": context.get("run_id"),
            "task_id": getattr(ti, "task_id", None),
            "map_index": getattr(ti, "map_index", None),
            "try_number": getattr(ti, "try_number", None),
        }

    def task_log_folder(self) -> Path:
        return Path(conf.get("logging", "base_log_folder"))


# Importing this module is what installs Airflow: the task-facing modules of this layer import it.
orchestrator.install(AirflowOrchestrator())
