"""Atomic file writes: temporary file in the same directory, fsync, rename, fsync the directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

BACKUPS = 3


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700 for the last component; tighten it if needed."""
    path.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def write_atomic(path: Path, data: str | bytes, mode: int = 0o600, backups: int = 0, durable: bool = True) -> bool:
    """Write `data` to `path` atomically with `mode`. Returns False (and writes nothing) if unchanged.

    durable=False skips the fsyncs: for files wgmesh can always render again (output/), where
    only atomicity (never a half-written file) matters.
    """
    raw = data.encode() if isinstance(data, str) else data
    try:
        st = path.stat()
        if st.st_size == len(raw) and stat.S_IMODE(st.st_mode) == mode and path.read_bytes() == raw:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # umask must not loosen or tighten what we asked for
        view = memoryview(raw)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    if backups and path.exists():
        _rotate(path, backups)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
    return True


def _rotate(path: Path, count: int) -> None:
    for i in range(count - 1, 0, -1):
        older = path.with_name(f"{path.name}.bak{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.bak{i + 1}"))
    first = path.with_name(f"{path.name}.bak1")
    first.unlink(missing_ok=True)
    os.link(path, first)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
