"""Secret files on the Airflow side are 0600 from the moment they exist, and a failed write leaves no temp file."""

from __future__ import annotations

import os
import stat

import pytest

from event_broker_rollout.hosts import secret_files
from event_broker_rollout.hosts.secret_files import write_secret


@pytest.fixture
def open_umask():
    """Umask 0: a file created without an explicit mode would be readable by everyone."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def record_modes_at_write(monkeypatch) -> list[int]:
    """The file's mode each time content is written to it."""
    modes: list[int] = []
    real_write = os.write

    def write(fd: int, data) -> int:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(secret_files.os, "write", write)
    return modes


def test_secret_is_0600_before_its_content(tmp_path, monkeypatch, open_umask):
    modes = record_modes_at_write(monkeypatch)
    path = tmp_path / "material" / "ca.key"
    write_secret(path, "-----BEGIN PRIVATE KEY-----\n")
    assert modes and set(modes) == {0o600}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text() == "-----BEGIN PRIVATE KEY-----\n"
    assert list(path.parent.iterdir()) == [path]


def test_a_world_readable_secret_is_replaced_not_rewritten(tmp_path, open_umask):
    path = tmp_path / "credentials.json"
    path.write_text("{}")
    path.chmod(0o644)
    (tmp_path / "credentials.json.ebr-tmp").write_text("stale")  # an interrupted write's leftover
    write_secret(path, b'{"admin": "x"}')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b'{"admin": "x"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["credentials.json"]


def test_a_failed_write_keeps_the_old_secret_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "node.key"
    write_secret(path, "old")

    def fail(fd: int, data) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(secret_files.os, "write", fail)
    with pytest.raises(OSError, match="disk full"):
        write_secret(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]
