"""Commands and files on target hosts over SSH, with the host key always checked.

Credentials come from the host's SSH connection as the orchestrator parses it (Airflow: the SSH provider's
own ``SSHHook``, see ``orchestrator.SshEndpoint``); the
session itself is a fabric ``Connection`` (for ``run``/``put``). fabric installs paramiko's
AutoAddPolicy, which would trust any host key: we replace it with RejectPolicy and load the host key the
connection declares, so a changed or unknown host key is refused, never accepted silently.

Commands are argument lists (``shell.Command``) quoted in ``shell.command_line`` only: there is no
method that sends a formatted string.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import paramiko

from event_broker_rollout import orchestrator
from event_broker_rollout.hosts.shell import Command, command_line
from event_broker_rollout.orchestrator import SshEndpoint

if TYPE_CHECKING:
    import fabric


log = logging.getLogger(__name__)

TEMP_SUFFIX = ".ebr-tmp"


class RemoteError(RuntimeError):
    """A host could not be reached or refused us; the message names the host and the cause."""


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class RemoteHost:
    """One SSH session to one host; use as a context manager so the session is always closed."""

    def __init__(self, name: str, endpoint: SshEndpoint) -> None:
        import fabric

        if endpoint.no_host_key_check:
            raise RemoteError(
                f"{name}: connection {endpoint.conn_id} disables host key checking; this project refuses that"
            )
        self.name = name
        self.address = endpoint.host
        connect_kwargs: dict[str, object] = {
            "look_for_keys": False,
            "allow_agent": False,
            "banner_timeout": endpoint.connect_timeout,
            "auth_timeout": endpoint.connect_timeout,
        }
        if endpoint.pkey is not None:
            connect_kwargs["pkey"] = endpoint.pkey
        elif endpoint.key_file:
            connect_kwargs["key_filename"] = endpoint.key_file
        if endpoint.password:
            connect_kwargs["password"] = endpoint.password
        config = fabric.Config(ssh_config=paramiko.SSHConfig())  # hermetic: no ~/.ssh/config surprises
        self.connection: fabric.Connection = fabric.Connection(
            host=endpoint.host,
            user=endpoint.username,
            port=endpoint.port,
            config=config,
            connect_timeout=endpoint.connect_timeout,
            connect_kwargs=connect_kwargs,
        )
        client = self.connection.client
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if endpoint.host_key is not None:
            entry = endpoint.host if endpoint.port == 22 else f"[{endpoint.host}]:{endpoint.port}"
            client.get_host_keys().add(entry, endpoint.host_key.get_name(), endpoint.host_key)
        else:
            client.load_system_host_keys()

    @classmethod
    def from_conn_id(cls, name: str, ssh_conn_id: str, connect_timeout: int = 10) -> RemoteHost:
        return cls(name, orchestrator.current().ssh_endpoint(ssh_conn_id, connect_timeout))

    def __enter__(self) -> RemoteHost:
        try:
            self.connection.open()
        except paramiko.BadHostKeyException as error:
            raise RemoteError(f"{self.name} ({self.address}): host key changed — refused ({error})") from None
        except paramiko.SSHException as error:
            raise RemoteError(f"{self.name} ({self.address}): SSH refused: {error}") from None
        except TimeoutError:
            raise RemoteError(f"{self.name} ({self.address}): unreachable (connection timed out)") from None
        except OSError as error:
            raise RemoteError(f"{self.name} ({self.address}): unreachable ({error})") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.connection.close()

    def run_argv(self, argv: Sequence[str], timeout: float = 60, check: bool = False) -> CommandResult:
        """Run one program with its arguments (each passed as one literal word)."""
        return self._exec(command_line(argv), timeout, check)

    def run_command(self, command: Command, timeout: float = 60, check: bool = False) -> CommandResult:
        """Run argv lists joined by fixed operators (``Command``), for the few steps that need a pipe or ``&&``."""
        return self._exec(command_line(command), timeout, check)

    def _exec(self, line: str, timeout: float, check: bool) -> CommandResult:
        # The only call into the SSH session's exec; ``line`` always comes from ``shell.command_line``.
        # Commands never carry secrets (those travel as files), so the line may be logged as it is.
        log.debug("%s: %s", self.name, line)
        try:
            raw = self.connection.run(line, hide=True, warn=True, timeout=timeout, in_stream=False)
        except Exception as error:  # invoke raises CommandTimedOut, paramiko socket errors, ...
            raise RemoteError(
                f"{self.name}: command failed to run: {type(error).__name__}: {error}"
            ) from None
        result = CommandResult(line, raw.exited, raw.stdout, raw.stderr)
        if check and not result.ok:
            raise RemoteError(
                f"{self.name}: `{line}` exited {result.exit_code}: {result.stderr.strip()[-500:]}"
            )
        return result

    def put(self, local: Path, remote: str) -> None:
        try:
            self.connection.put(str(local), remote)
        except Exception as error:
            raise RemoteError(f"{self.name}: upload to {remote} failed: {error}") from None

    def write_file(
        self, remote: str, content: str | bytes, mode: str = "0644", owner: str | None = None
    ) -> None:
        """Write a file atomically (temp file + rename) so a reader never sees half of it; see ``write_atomically``."""

        def hand_over(tmp: str) -> None:
            if owner is not None:
                self.run_argv(["chown", f"{owner}:", tmp], check=True)

        try:
            write_atomically(self.connection.sftp(), remote, content, int(mode, 8), hand_over)
        except OSError as error:  # paramiko reports SFTP failures as IOError
            raise RemoteError(f"{self.name}: writing {remote} failed: {error}") from None


class SftpFile(Protocol):
    def __enter__(self) -> SftpFile: ...
    def __exit__(self, *exc_info: object) -> object: ...
    def chmod(self, mode: int) -> None: ...
    def write(self, data: str | bytes) -> None: ...


class Sftp(Protocol):
    """The part of paramiko's ``SFTPClient`` that ``write_atomically`` uses."""

    def open(self, filename: str, mode: str = "r") -> SftpFile: ...
    def chmod(self, path: str, mode: int) -> None: ...
    def posix_rename(self, oldpath: str, newpath: str) -> None: ...
    def remove(self, path: str) -> None: ...


def write_atomically(
    sftp: Sftp, path: str, content: str | bytes, mode: int, before_rename: Callable[[str], None] | None = None
) -> None:
    """Create ``<path>.ebr-tmp`` fresh, make it 0600 before any content is in it, write, set the final mode,
    let the caller hand it over (owner), rename it into place. On any failure the temp file is removed."""
    tmp = path + TEMP_SUFFIX
    _remove_if_present(sftp, tmp)  # left by an interrupted run; ours is created fresh (O_EXCL)
    renamed = False
    try:
        with sftp.open(tmp, "wx") as handle:
            handle.chmod(0o600)
            handle.write(content)
        sftp.chmod(tmp, mode)
        if before_rename is not None:
            before_rename(tmp)
        sftp.posix_rename(tmp, path)
        renamed = True
    finally:
        if not renamed:
            _remove_if_present(sftp, tmp)


def _remove_if_present(sftp: Sftp, path: str) -> None:
    with suppress(OSError):  # absent (or already gone): nothing to clean up
        sftp.remove(path)


@contextmanager
def session(name: str, ssh_conn_id: str, connect_timeout: int = 10) -> Iterator[RemoteHost]:
    with RemoteHost.from_conn_id(name, ssh_conn_id, connect_timeout) as host:
        yield host
