"""Atomic file writes: temporary file in the same directory, fsync, rename, fsync the directory;
and reading a file that may not exist."""

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


def read_if_exists(path: Path) -> str | None:
    """The file's text, or None if there is no such file."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


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


def backup(path: Path, i: int) -> Path:
    """The `i`th rolling backup of `path` (1: the newest) that write_atomic(backups=...) keeps."""
    return path.with_name(f"{path.name}.bak{i}")


def remove_backups(path: Path) -> None:
    """Every rolling backup of `path` (after a purge they would still hold what was purged)."""
    for old in path.parent.glob(f"{path.name}.bak*"):
        old.unlink()


def _rotate(path: Path, count: int) -> None:
    for i in range(count - 1, 0, -1):
        older = backup(path, i)
        if older.exists():
            os.replace(older, backup(path, i + 1))
    first = backup(path, 1)
    first.unlink(missing_ok=True)
    os.link(path, first)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
