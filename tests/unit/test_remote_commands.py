"""One way to reach a host: commands are argument lists quoted in ``shell.command_line`` only, and remote
files are 0600 before their content is written."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from event_broker_rollout import paths
from event_broker_rollout.hosts.desired import HostState, ManagedFile
from event_broker_rollout.hosts.plan import observe_command, parse_observation
from event_broker_rollout.hosts.remote import RemoteHost, write_atomically
from event_broker_rollout.hosts.shell import Command, command_line, script

PLUGINS = paths.PROJECT_ROOT / "plugins" / "event_broker_rollout"
REMOTE_RUNNERS = {"run_argv", "run_command"}
SESSION_EXEC = {"run", "sudo", "exec_command", "invoke_shell"}  # fabric / paramiko entry points


def hostile_values(marker: Path) -> list[str]:
    return [
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"x; touch {marker}",
        f"x | touch {marker}",
        f"x && touch {marker}",
        f"x\ntouch {marker}",
        f"x'; touch {marker}; echo '",
        f'x"; touch {marker}; echo "',
        "-n",
        "",
    ]


def plugin_modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in sorted(PLUGINS.rglob("*.py"))]


def enclosing_functions(tree: ast.Module) -> dict[ast.AST, str]:
    owner: dict[ast.AST, str] = {}
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if node is not function:
                    owner.setdefault(node, function.name)
    return owner


def is_formatted_text(node: ast.expr) -> bool:
    """A string literal, an f-string, ``"..." % x``, ``"...".format()`` or ``" ".join(...)``: text, not argv."""
    if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return True
    if isinstance(node, ast.BinOp) and (is_formatted_text(node.left) or is_formatted_text(node.right)):
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("format", "join")
        and isinstance(node.func.value, ast.Constant | ast.JoinedStr)
    )


def test_only_remote_exec_calls_the_ssh_session():
    """Every call that would hand a command line to the SSH session is RemoteHost._exec's."""
    callers = []
    for path, tree in plugin_modules():
        owner = enclosing_functions(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                receiver = ast.unparse(node.func.value)
                if node.func.attr in SESSION_EXEC and ("connection" in receiver or "client" in receiver):
                    callers.append((path.relative_to(PLUGINS).as_posix(), owner.get(node)))
    assert callers == [("hosts/remote.py", "_exec")]
    assert not hasattr(RemoteHost, "run"), "a string-taking run would let a formatted command through"


def test_remote_commands_are_never_formatted_text():
    """run_argv/run_command get argument lists; ``script`` gets a constant script, its values as arguments."""
    offenders = []
    for path, tree in plugin_modules():
        constants = {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            first = node.args[0]
            where = f"{path.relative_to(PLUGINS)}:{node.lineno}"
            if name in REMOTE_RUNNERS and is_formatted_text(first):
                offenders.append(f"{where}: {name} of text")
            if name == "script" and path.name != "shell.py":
                from_file = isinstance(first, ast.Call) and ast.unparse(first).endswith(".read_text()")
                if not (isinstance(first, ast.Name) and first.id in constants) and not from_file:
                    offenders.append(f"{where}: script text is not a module constant or a project file")
    assert offenders == []


def imports_shlex(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.module == "shlex"
    return isinstance(node, ast.Import) and any(alias.name == "shlex" for alias in node.names)


def test_shlex_is_used_only_by_the_command_builder():
    users = [
        path.relative_to(PLUGINS).as_posix()
        for path, tree in plugin_modules()
        for node in ast.walk(tree)
        if imports_shlex(node)
    ]
    assert users == ["hosts/shell.py"]


def run_locally(argv) -> subprocess.CompletedProcess:
    """As the SSH server runs a command: the line handed to a shell."""
    return subprocess.run(
        ["sh", "-c", command_line(argv)], check=False, capture_output=True, text=True, timeout=30
    )


def test_hostile_values_stay_single_literal_words(tmp_path):
    marker = tmp_path / "marker"
    for value in hostile_values(marker):
        result = run_locally(["printf", "%s|", value, "second"])
        assert result.returncode == 0 and result.stdout == f"{value}|second|", value
    assert not marker.exists()


def test_operators_join_argv_lists_and_values_stay_literal(tmp_path):
    marker = tmp_path / "marker"
    for value in hostile_values(marker):
        chained = Command.of("printf", "%s;", value).and_then("printf", "%s", value)
        assert run_locally(chained).stdout == f"{value};{value}"
        piped = Command.of("printf", "%s", value).pipe("wc", "-c")
        assert int(run_locally(piped).stdout) == len(value.encode())
        fallback = Command.of("false").or_else("printf", "%s", value).then("printf", "!")
        assert run_locally(fallback).stdout == f"{value}!"
        quiet = Command.of("ls", "--", str(tmp_path / value)).quiet().or_else("printf", "%s", value)
        result = run_locally(quiet)
        assert (result.stdout, result.stderr) == (value, "")
    assert not marker.exists()


def test_a_script_gets_its_values_as_positional_parameters(tmp_path):
    marker = tmp_path / "marker"
    values = hostile_values(marker)
    result = subprocess.run(
        script('for value in "$@"; do printf "%s|" "$value"; done', *values),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout == "".join(f"{value}|" for value in values)
    assert run_locally(script('printf "%s" "$1"', values[0])).stdout == values[0]
    assert not marker.exists()


def test_a_formatted_string_is_refused_as_a_command():
    with pytest.raises(TypeError):
        command_line("rm -rf /tmp/x")
    with pytest.raises(TypeError):
        Command.of("echo").and_then()
    with pytest.raises(TypeError):
        Command.all_of([])


def test_observe_command_reads_hostile_paths_without_running_them(tmp_path):
    """The observe script locally (in tmp_path), with a data dir, a file and a user that try to run a command."""
    # No spaces (the observation is whitespace-separated), as in the value that once ran on every lab host.
    data_dir = tmp_path / "data$(touch${IFS}ebr-marker)"
    data_dir.mkdir()
    (data_dir / "meta.properties").write_text("cluster.id=abc\n")
    managed = tmp_path / "server`touch${IFS}ebr-marker`.properties"
    managed.write_text("x=1\n")
    state = HostState(
        host="local",
        service_user="nobody;touch${IFS}ebr-marker",
        directories=(),
        installs=(),
        files=(ManagedFile(str(managed), "x=1\n"),),
        services=(),
        data_dirs=(str(data_dir),),
    )
    result = subprocess.run(
        observe_command(state), check=False, capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "ebr-marker").exists()
    observed = parse_observation(result.stdout)
    assert observed.user_present is False
    assert observed.formatted == {str(data_dir): "abc"}
    assert observed.files == {str(managed): ManagedFile("x", "x=1\n").digest}


class FakeSftp:
    """An SFTP server's files in memory (new files 0644, as a 022 umask makes them), recording each call."""

    def __init__(self, fail_on_write: bool = False) -> None:
        self.files: dict[str, tuple[int, str]] = {}
        self.calls: list[tuple] = []
        self.fail_on_write = fail_on_write

    def open(self, filename, mode="r"):
        self.calls.append(("open", filename, mode))
        if "x" in mode and filename in self.files:
            raise OSError(f"{filename} exists")
        self.files[filename] = (0o644, "")
        return FakeHandle(self, filename)

    def chmod(self, path, mode):
        self.calls.append(("chmod", path, mode))
        self.files[path] = (mode, self.files[path][1])

    def posix_rename(self, oldpath, newpath):
        self.calls.append(("rename", oldpath, newpath))
        self.files[newpath] = self.files.pop(oldpath)

    def remove(self, path):
        self.calls.append(("remove", path))
        if path not in self.files:
            raise OSError(f"{path}: no such file")
        del self.files[path]


class FakeHandle:
    def __init__(self, server: FakeSftp, path: str) -> None:
        self.server, self.path = server, path

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def chmod(self, mode):
        self.server.calls.append(("fchmod", self.path, mode))
        self.server.files[self.path] = (mode, self.server.files[self.path][1])

    def write(self, data):
        mode, content = self.server.files[self.path]
        self.server.calls.append(("write", self.path, mode))  # the file's mode when content arrives
        if self.server.fail_on_write:
            raise OSError("connection lost mid-write")
        self.server.files[self.path] = (mode, content + data)


def test_remote_file_is_0600_before_its_content_and_renamed_into_place():
    sftp = FakeSftp()
    sftp.files["/etc/kafka/tls/node.pem.ebr-tmp"] = (0o644, "left by an interrupted run")
    handed_over: list[str] = []
    write_atomically(sftp, "/etc/kafka/tls/node.pem", "KEY", 0o600, handed_over.append)
    tmp = "/etc/kafka/tls/node.pem.ebr-tmp"
    assert sftp.calls == [
        ("remove", tmp),
        ("open", tmp, "wx"),
        ("fchmod", tmp, 0o600),
        ("write", tmp, 0o600),
        ("chmod", tmp, 0o600),
        ("rename", tmp, "/etc/kafka/tls/node.pem"),
    ]
    assert handed_over == [tmp]  # the owner is set before the file appears under its name
    assert sftp.files == {"/etc/kafka/tls/node.pem": (0o600, "KEY")}


def test_remote_file_gets_its_final_mode_after_the_content():
    sftp = FakeSftp()
    write_atomically(sftp, "/etc/kafka/kafka.env", "A=1\n", 0o644)
    writes = [call for call in sftp.calls if call[0] == "write"]
    assert writes == [("write", "/etc/kafka/kafka.env.ebr-tmp", 0o600)]
    assert sftp.files == {"/etc/kafka/kafka.env": (0o644, "A=1\n")}


def test_a_failed_remote_write_leaves_no_temp_file():
    sftp = FakeSftp(fail_on_write=True)
    sftp.files["/etc/kafka/tls/node.pem"] = (0o600, "OLD")
    with pytest.raises(OSError, match="mid-write"):
        write_atomically(sftp, "/etc/kafka/tls/node.pem", "NEW", 0o600)
    assert sftp.files == {"/etc/kafka/tls/node.pem": (0o600, "OLD")}
    assert not [path for path in sftp.files if path.endswith(".ebr-tmp")]

    def refuse(tmp: str) -> None:
        raise RuntimeError("chown refused")

    sftp = FakeSftp()
    with pytest.raises(RuntimeError):
        write_atomically(sftp, "/etc/kafka/server.properties", "x=1\n", 0o640, refuse)
    assert sftp.files == {}
