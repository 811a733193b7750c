"""Secret files on the Airflow side (keys, passwords, connections): mode 0600 from their first byte.

A secret is written to ``<name>.ebr-tmp``, created exclusively with mode 0600 (set exactly, whatever the
umask) before any content goes in, then renamed over the target; a file that was readable by others is
thereby replaced, never rewritten in place. On any failure the temp file is removed.
"""

from __future__ import annotations

import os
from pathlib import Path

TEMP_SUFFIX = ".ebr-tmp"


def write_secret(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + TEMP_SUFFIX)
    tmp.unlink(missing_ok=True)  # left by an interrupted write; ours is created fresh (O_EXCL)
    data = content.encode() if isinstance(content, str) else content
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
