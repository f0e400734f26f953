"""SSH through paramiko: the only module that imports it.

Connections are verified against pinned host keys (an OpenSSH known_hosts file per
inventory). A host with no pin is verified against the keys the stack exported or
`--host-key` gave; a host with none of these is trusted on first use (the key it shows,
reported as such), or refused when `strict`. A key is pinned only after a successful
login. A changed key is a hard failure for that host.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import shlex
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
BANNER_TIMEOUT = AUTH_TIMEOUT  # a port that accepts but never says "SSH-2.0-..." fails after this
COMMAND_TIMEOUT = 60.0
WAKE_AT_LEAST = 1.0  # a running command's output is looked at this often even if no wake-up came

# paramiko's transport thread logs every failed handshake with a traceback; the reason reaches the
# caller as an SshError, so without a handler of their own those lines must not reach stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_RSA_ALGS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


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


def _public_blob(key_file: str) -> bytes | None:
    """The public half of a private key file that needs a passphrase: from KEY.pub, else from the
    file itself (an OpenSSH-format key carries its public key in clear)."""
    try:
        return base64.b64decode(Path(key_file + ".pub").read_text().split()[1], validate=True)
    except (OSError, IndexError, ValueError):
        pass
    try:
        lines = Path(key_file).read_text().splitlines()
        raw = base64.b64decode("".join(line for line in lines if not line.startswith("-----")))
    except (OSError, ValueError):
        return None
    magic = b"openssh-key-v1\0"
    if not raw.startswith(magic):
        return None
    msg = paramiko.Message(raw[len(magic):])
    for _ in ("cipher", "kdf", "kdf options"):
        msg.get_string()
    return msg.get_binary() if msg.get_int() >= 1 else None


def _agent_keys() -> list[paramiko.PKey]:
    try:
        return list(paramiko.Agent().get_keys())
    except (paramiko.SSHException, OSError):
        return []  # no usable agent: the other keys are still tried


def _load_client_keys(key_file: str | None, fallback: tuple[str, ...] = ()) -> list[paramiko.PKey]:
    """The keys to offer, each once. A peer with its own key file (`--ssh-key`, a stack's
    `ssh_key`): that key alone (or ssh-agent's copy of it, when the file needs a passphrase) —
    the identity named for a host is the only one offered to it. Without one: the agent's keys,
    ~/.ssh/id_*, then the fallback keys. sshd counts every key offered against its MaxAuthTries
    (6 by default), so no key is offered twice."""
    agent = _agent_keys()
    chosen: list[paramiko.PKey] = []
    try:
        chosen = _choose_keys(agent, key_file, fallback)
        return chosen
    finally:
        _close_agents(agent, keep=chosen)  # an agent none of whose keys is offered


def _choose_keys(agent: list[paramiko.PKey], key_file: str | None, fallback: tuple[str, ...]) -> list[paramiko.PKey]:
    keys: list[paramiko.PKey] = []
    if key_file:
        try:
            keys.append(paramiko.PKey.from_path(key_file))
        except FileNotFoundError:
            raise SshError(f"SSH key file not found: {key_file}") from None
        except (paramiko.PasswordRequiredException, TypeError):  # paramiko 4+ says so with a TypeError
            blob = _public_blob(key_file)
            keys.extend(k for k in agent if blob is not None and k.asbytes() == blob)
            if not keys:
                raise SshError(
                    f"SSH key {key_file} needs a passphrase and ssh-agent does not hold it: ssh-add {key_file}"
                ) from None
        except (paramiko.SSHException, ValueError) as exc:
            raise SshError(f"SSH key {key_file} could not be read: {type(exc).__name__}") from None
        return keys
    keys.extend(agent)
    home = Path.home() / ".ssh"
    for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
        p = home / name
        if p.exists():
            try:
                keys.append(paramiko.PKey.from_path(p))
            except (paramiko.SSHException, ValueError, TypeError):  # TypeError: it needs a passphrase
                continue
    for extra in fallback:
        try:
            keys.append(paramiko.PKey.from_path(extra))
        except (OSError, paramiko.SSHException, ValueError, TypeError):
            continue
    if not keys:
        raise SshError("no SSH key: give --ssh-key or load a key into ssh-agent")
    unique: dict[bytes, paramiko.PKey] = {}
    for k in keys:
        unique.setdefault(k.asbytes(), k)
    return list(unique.values())


class _Wake(threading.Event):
    """Set by paramiko's transport thread when a channel's stdout or stderr gets data or ends
    (BufferedPipe.set_event: where Channel.fileno() would hook a pipe). Only the reader resets
    it: paramiko clears it when one buffer is read empty, while the other may still hold data."""

    def clear(self) -> None:
        pass  # paramiko's

    def reset(self) -> None:
        super().clear()


class Connection:
    """One authenticated SSH transport to one host (one socket and one paramiko thread; a jump
    connection rides on a channel of its gateway's transport: a thread, no socket)."""

    def __init__(self, transport: paramiko.Transport, target: Target, first_use: str | None = None) -> None:
        self.transport = transport
        self.target = target
        self.first_use = first_use  # the fingerprint pinned on first use (trusted unverified), else None

    def run(self, command: str, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT) -> tuple[int, str, str]:
        """Run `command`; send `stdin`; drain stdout and stderr, then read the exit status.

        It waits on an event that paramiko's transport thread sets (no select() on a file
        descriptor, no pipe per channel): any number of connections, any fd number."""
        try:
            chan = self.transport.open_session(timeout=AUTH_TIMEOUT)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SshError(f"session refused: {exc or type(exc).__name__}") from None
        try:
            wake = _Wake()
            chan.in_buffer.set_event(wake)
            chan.in_stderr_buffer.set_event(wake)
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
                wake.reset()  # before reading: whatever arrives from now on sets it again
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                # EOF (or the channel's end) closes both buffers at once: after it they only drain.
                if (chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SshError(f"command timed out after {timeout:.0f} s")
                wake.wait(min(left, WAKE_AT_LEAST))
            # The exit status may come after EOF; a channel closed without one says -1.
            if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise SshError(f"command timed out after {timeout:.0f} s")
            rc = chan.recv_exit_status()
            if rc == -1 and not self.transport.is_active():
                raise SshError("connection lost while the command ran")
            return rc, out.decode(errors="replace"), err.decode(errors="replace")
        except TimeoutError:
            raise SshError(f"command timed out after {timeout:.0f} s") from None
        finally:
            chan.close()

    def jump(self, target: Target, pins: Pins, strict: bool = False) -> Connection:
        """Connect to `target` through this host (direct-tcpip), as `ssh -J` does."""
        try:
            chan = self.transport.open_channel(
                "direct-tcpip", (target.host, target.port), ("127.0.0.1", 0), timeout=CONNECT_TIMEOUT
            )
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SshError(f"jump to {target.host}:{target.port} refused: {exc or type(exc).__name__}") from None
        return _handshake(chan, target, pins, strict)

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


def _no_handshake(transport: paramiko.Transport, exc: BaseException | None) -> SshError:
    """Why the handshake did not finish, in words (paramiko's own would be "No existing session")."""
    cause = exc.__context__ if exc is not None else None
    if not transport.remote_version:
        if exc is None or isinstance(cause, TimeoutError):
            return SshError(
                f"SSH handshake failed: no SSH banner within {BANNER_TIMEOUT:g} s "
                "(the port accepts connections, but no SSH server answers on it)"
            )
        if isinstance(exc, (EOFError, ConnectionError)) or isinstance(cause, (EOFError, ConnectionError)):
            return SshError("SSH handshake failed: the host closed the connection before its SSH banner")
    if exc is None:
        return SshError(f"SSH handshake failed: no key exchange within {AUTH_TIMEOUT:g} s of the banner")
    return SshError(f"SSH handshake failed: {exc or type(exc).__name__}")


def _check_host_key(target: Target, pins: Pins, pinned: set[str], shown: str, strict: bool) -> bool:
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


def _close_agents(keys: list[paramiko.PKey], keep: list[paramiko.PKey] | None = None) -> None:
    """Close the ssh-agent connections behind `keys`, but one a key of `keep` still signs with: an
    agent and its keys refer to each other, so without this its socket stays open until the
    cyclic GC runs (one per host connected meanwhile)."""
    needed = {id(k.agent) for k in keep or () if isinstance(k, paramiko.AgentKey)}
    agents = {id(k.agent): k.agent for k in keys if isinstance(k, paramiko.AgentKey)}
    for ident, agent in agents.items():
        if ident not in needed and isinstance(agent, paramiko.Agent):
            agent.close()


def _authenticate(transport: paramiko.Transport, target: Target) -> None:
    last: Exception | None = None
    tried = 0
    keys = _load_client_keys(target.key_file, target.fallback_keys)
    try:
        for key in keys:
            try:
                tried += 1
                transport.auth_publickey(target.user, key)
                return
            except paramiko.AuthenticationException as exc:
                last = exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if tried > 1 and not transport.is_active():
                    raise SshError(
                        f"authentication as {target.user!r} failed: the host hung up after {tried - 1} refused keys "
                        "(sshd's MaxAuthTries): give the host's own key as the peer's SSH key, or hold fewer in "
                        "ssh-agent"
                    ) from None
                raise SshError(f"authentication failed: {exc or type(exc).__name__}") from None
        raise SshError(f"authentication as {target.user!r} refused ({type(last).__name__}, {tried} keys tried)")
    finally:
        _close_agents(keys)


def _handshake(
    sock: socket.socket | paramiko.Channel, target: Target, pins: Pins, strict: bool = False
) -> Connection:
    transport = paramiko.Transport(sock)
    transport.banner_timeout = BANNER_TIMEOUT
    transport.handshake_timeout = AUTH_TIMEOUT
    transport.auth_timeout = AUTH_TIMEOUT
    try:
        pinned = pins.get(target.host, target.port)
        _prefer_key_types(transport, {k.split()[0] for k in pinned or target.expected_keys})
        try:
            # Longer than the banner's own timeout: a silent port fails with its reason, not this one.
            transport.start_client(timeout=BANNER_TIMEOUT + AUTH_TIMEOUT)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise _no_handshake(transport, exc) from None
        if not transport.is_active() or transport.host_key is None:
            raise _no_handshake(transport, None)
        server_key = transport.get_remote_server_key()
        shown = f"{server_key.get_name()} {server_key.get_base64()}"
        first_use = _check_host_key(target, pins, pinned, shown, strict)
        _authenticate(transport, target)
        if shown not in pinned:  # only now: a host that refused the login leaves no pin behind
            pins.pin(target.host, target.port, shown)
        transport.set_keepalive(15)
        return Connection(transport, target, fingerprint(shown) if first_use else None)
    except BaseException:
        transport.close()
        raise


def connect(target: Target, pins: Pins, strict: bool = False) -> Connection:
    """An authenticated connection to `target`; `strict` refuses a host key nothing vouches for."""
    try:
        sock = socket.create_connection((target.host, target.port), timeout=CONNECT_TIMEOUT)
    except TimeoutError:
        raise SshError(f"unreachable: connecting to {entry(target.host, target.port)} timed out") from None
    except OSError as exc:
        raise SshError(f"unreachable: {entry(target.host, target.port)}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    try:
        return _handshake(sock, target, pins, strict)
    except BaseException:
        sock.close()
        raise


