"""SSH through paramiko: the only module that imports it.

Connections are verified against pinned host keys (an OpenSSH known_hosts file per
inventory). First contact pins the key the stack exported (or, where none is known,
the key the host shows). A changed key is a hard failure for that host.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

from wgmesh.fsutil import write_atomic

CONNECT_TIMEOUT = 5.0
AUTH_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0

_RSA_ALGS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


class SshError(Exception):
    """A host could not be used; `reason` is short and has no secrets."""

    def __init__(self, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


class HostKeyChanged(SshError):
    pass


def fingerprint(key_type_b64: str) -> str:
    """OpenSSH-style SHA256 fingerprint of 'type base64'."""
    blob = base64.b64decode(key_type_b64.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class Pins:
    """Pinned host keys: `known_hosts` in OpenSSH format (usable with ssh -o UserKnownHostsFile)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

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
            return self._read().get(_entry(host, port), set())

    def pin(self, host: str, port: int, key: str) -> None:
        with self._lock, self._file_lock():  # other wgmesh processes may pin at the same time
            pins = self._read()
            pins.setdefault(_entry(host, port), set()).add(key)
            self._write(pins)

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
    key_file: str | None = None
    fallback_keys: tuple[str, ...] = ()  # tried, after ssh-agent and ~/.ssh, when key_file is None
    expected_keys: tuple[str, ...] = ()  # host keys known from the stack, 'type base64'
    label: str = ""


def _load_client_keys(key_file: str | None, fallback: tuple[str, ...] = ()) -> list[paramiko.PKey]:
    if key_file:
        try:
            return [paramiko.PKey.from_path(key_file)]
        except FileNotFoundError:
            raise SshError(f"SSH key file not found: {key_file}") from None
        except paramiko.PasswordRequiredException:
            raise SshError(
                f"SSH key {key_file} needs a passphrase: load it into ssh-agent and omit --ssh-key"
            ) from None
        except (paramiko.SSHException, ValueError) as exc:
            raise SshError(f"SSH key {key_file} could not be read: {type(exc).__name__}") from None
    keys: list[paramiko.PKey] = list(paramiko.Agent().get_keys())
    home = Path.home() / ".ssh"
    for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
        p = home / name
        if p.exists():
            try:
                keys.append(paramiko.PKey.from_path(p))
            except (paramiko.SSHException, ValueError):
                continue
    for extra in fallback:
        try:
            keys.append(paramiko.PKey.from_path(extra))
        except (OSError, paramiko.SSHException, ValueError):
            continue
    if not keys:
        raise SshError("no SSH key: give --ssh-key or load a key into ssh-agent")
    return keys


class Connection:
    """One authenticated SSH transport to one host."""

    def __init__(self, transport: paramiko.Transport, target: Target) -> None:
        self.transport = transport
        self.target = target

    def run(self, command: str, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str, str]:
        """Run `command`; send `stdin`; drain stdout and stderr, then read the exit status."""
        try:
            chan = self.transport.open_session(timeout=AUTH_TIMEOUT)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SshError(f"session refused: {exc or type(exc).__name__}") from None
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            try:
                if stdin:
                    chan.sendall(stdin)
                chan.shutdown_write()
            except OSError:
                pass  # the command ended before reading its input (e.g. sudo refused): its stderr says why
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                progressed = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    progressed = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    progressed = True
                # In this order: once EOF has come, the buffers can only drain, not fill again.
                if (
                    chan.exit_status_ready()
                    and chan.eof_received
                    and not chan.recv_ready()
                    and not chan.recv_stderr_ready()
                ):
                    break
                if time.monotonic() > deadline:
                    raise SshError(f"command timed out after {timeout:.0f} s")
                if not progressed:
                    select.select([chan], [], [], 0.02)
            rc = chan.recv_exit_status()
            return rc, out.decode(errors="replace"), err.decode(errors="replace")
        except TimeoutError:
            raise SshError(f"command timed out after {timeout:.0f} s") from None
        finally:
            chan.close()

    def jump(self, target: Target, pins: Pins) -> Connection:
        """Connect to `target` through this host (direct-tcpip), as `ssh -J` does."""
        try:
            chan = self.transport.open_channel(
                "direct-tcpip", (target.host, target.port), ("127.0.0.1", 0), timeout=CONNECT_TIMEOUT
            )
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SshError(f"jump to {target.host}:{target.port} refused: {exc or type(exc).__name__}") from None
        return _handshake(chan, target, pins)

    def close(self) -> None:
        self.transport.close()


def _prefer_key_types(transport: paramiko.Transport, wanted: set[str]) -> None:
    if not wanted:
        return
    opts = transport.get_security_options()
    prefer: list[str] = []
    for t in sorted(wanted):
        prefer.extend(_RSA_ALGS if t == "ssh-rsa" else (t,))
    available = list(opts.key_types)
    opts.key_types = tuple([t for t in prefer if t in available] + [t for t in available if t not in prefer])


def _handshake(sock: socket.socket | paramiko.Channel, target: Target, pins: Pins) -> Connection:
    transport = paramiko.Transport(sock)
    transport.banner_timeout = AUTH_TIMEOUT
    transport.handshake_timeout = AUTH_TIMEOUT
    transport.auth_timeout = AUTH_TIMEOUT
    try:
        pinned = pins.get(target.host, target.port)
        trusted = pinned or set(target.expected_keys)
        _prefer_key_types(transport, {k.split()[0] for k in trusted})
        try:
            transport.start_client(timeout=AUTH_TIMEOUT)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SshError(f"SSH handshake failed: {exc or type(exc).__name__}") from None
        server_key = transport.get_remote_server_key()
        shown = f"{server_key.get_name()} {server_key.get_base64()}"
        if trusted and shown not in trusted:
            where = "pinned" if pinned else "exported by the stack"
            raise HostKeyChanged(
                f"host key of {_entry(target.host, target.port)} is {fingerprint(shown)}, "
                f"not the one {where} ({', '.join(sorted(fingerprint(k) for k in trusted))}): refusing to connect",
                hint=f"if the host was re-created on purpose: ssh-keygen -R '{_entry(target.host, target.port)}' "
                f"-f {pins.path}, or run 'wgmesh destroy' to forget all pins",
            )
        if not pinned:
            pins.pin(target.host, target.port, shown)
        last: Exception | None = None
        for key in _load_client_keys(target.key_file, target.fallback_keys):
            try:
                transport.auth_publickey(target.user, key)
                break
            except paramiko.AuthenticationException as exc:
                last = exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise SshError(f"authentication failed: {exc or type(exc).__name__}") from None
        else:
            raise SshError(f"authentication as {target.user!r} refused ({type(last).__name__})")
        transport.set_keepalive(15)
        return Connection(transport, target)
    except BaseException:
        transport.close()
        raise


def connect(target: Target, pins: Pins) -> Connection:
    try:
        sock = socket.create_connection((target.host, target.port), timeout=CONNECT_TIMEOUT)
    except TimeoutError:
        raise SshError(f"unreachable: connecting to {_entry(target.host, target.port)} timed out") from None
    except OSError as exc:
        raise SshError(f"unreachable: {_entry(target.host, target.port)}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    try:
        return _handshake(sock, target, pins)
    except BaseException:
        sock.close()
        raise


