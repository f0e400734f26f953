"""Host-key trust for SSH: pinned host keys (an OpenSSH known_hosts file per inventory), the
target a connection is for, and the rule that accepts, pins or refuses the key a host shows.
No paramiko here (wgmesh/adapters/ssh.py connects): destroy forgets pins without loading it.

A host with no pin is verified against the keys the stack exported or `--host-key` gave; a host
with none of these is trusted on first use (the key it shows, reported as such), or refused when
`strict`. A key is pinned only after a successful login. A changed key is a hard failure.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shlex
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wgmesh.fsutil import write_atomic


class SshError(Exception):
    """A host could not be used; `reason` is short and has no secrets."""

    def __init__(self, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


class HostKeyChanged(SshError):
    pass


class HostKeyUnknown(SshError):
    """strict: the host showed a key that nothing vouches for (no pin, no key from the stack or --host-key)."""


def fingerprint(key_type_b64: str) -> str:
    """OpenSSH-style SHA256 fingerprint of 'type base64'."""
    blob = base64.b64decode(key_type_b64.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def entry(host: str, port: int) -> str:
    """The host's name in known_hosts: HOST, or [HOST]:PORT."""
    return host if port == 22 else f"[{host}]:{port}"


class Pins:
    """Pinned host keys: `known_hosts` in OpenSSH format (usable with ssh -o UserKnownHostsFile)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        # The file as last read, by (inode, mtime, size): a run connects to every host (some of
        # them again), and must not parse a file of every host's pin for each connection.
        self._seen: tuple[tuple[int, int, int], dict[str, set[str]]] | None = None

    def _read(self) -> dict[str, set[str]]:
        pins: dict[str, set[str]] = {}
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return pins
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and not line.startswith("#"):
                for host in parts[0].split(","):
                    pins.setdefault(host, set()).add(f"{parts[1]} {parts[2]}")
        return pins

    def get(self, host: str, port: int) -> set[str]:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                return set()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._seen is None or self._seen[0] != stamp:
                self._seen = (stamp, self._read())
            return set(self._seen[1].get(entry(host, port), ()))

    def pin(self, host: str, port: int, key: str) -> None:
        with self._lock, self._file_lock():  # other wgmesh processes may pin at the same time
            pins = self._read()
            pins.setdefault(entry(host, port), set()).add(key)
            self._write(pins)

    def keep_only(self, entries: set[str]) -> list[str]:
        """Forget every pin but those of `entries`; the forgotten entries, sorted."""
        with self._lock, self._file_lock():
            pins = self._read()
            gone = sorted(set(pins) - entries)
            kept = {host: keys for host, keys in pins.items() if host in entries}
            if kept:
                self._write(kept)
            else:
                self.path.unlink(missing_ok=True)
        if not kept:
            self.path.with_name(self.path.name + ".lock").unlink(missing_ok=True)
        return gone

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, pins: dict[str, set[str]]) -> None:
        lines = [f"{host} {key}" for host in sorted(pins) for key in sorted(pins[host])]
        write_atomic(self.path, "".join(line + "\n" for line in lines), 0o600)


@dataclass(frozen=True)
class Target:
    user: str
    host: str
    port: int = 22
    key_file: str | None = None  # the peer's own key: offered first
    fallback_keys: tuple[str, ...] = ()  # offered last, after ssh-agent and ~/.ssh
    expected_keys: tuple[str, ...] = ()  # host keys known from the stack or --host-key, 'type base64'
    label: str = ""
    trust_with: str = ""  # the command that records an expected host key for it, e.g. "wgmesh setpeer X --host-key"


def check_host_key(target: Target, pins: Pins, pinned: set[str], shown: str, strict: bool) -> bool:
    """Refuse a key that differs from the trusted ones, or (strict) one that nothing vouches for.
    True when the host is trusted on first use: no pin, no key from the stack or --host-key."""
    host = entry(target.host, target.port)
    trusted = pinned or set(target.expected_keys)
    if trusted and shown not in trusted:
        where = "pinned" if pinned else "expected (from the stack or --host-key)"
        raise HostKeyChanged(
            f"host key of {host} is {fingerprint(shown)}, "
            f"not the one {where} ({', '.join(sorted(fingerprint(k) for k in trusted))}): refusing to connect",
            hint=f"if the host was re-created on purpose: ssh-keygen -R '{host}' -f {pins.path}",
        )
    if trusted or not strict:
        return not trusted
    how = (
        f"{target.trust_with} {shlex.quote(shown)}" if target.trust_with
        else f"echo {shlex.quote(f'{host} {shown}')} >> {shlex.quote(str(pins.path))}"
    )
    raise HostKeyUnknown(
        f"host key of {host} is {fingerprint(shown)}, which nothing vouches for (no key from the stack, "
        "no --host-key, no pin): --strict-host-keys refuses it",
        hint=f"if it is the host's key (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the host, or its console), "
        f"trust it with: {how}",
    )
