"""SSH connections through paramiko (with sshkeys.py, the client keys: the only importers of it).

Connections are verified against pinned host keys (hostkeys.py: the pins, the target, the rule
that accepts, pins or refuses a host's key); a command's output is read without select().
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import paramiko

from wgmesh.adapters import sshkeys
from wgmesh.adapters.hostkeys import Pins, SshError, Target, check_host_key, entry, fingerprint

CONNECT_TIMEOUT = 5.0
AUTH_TIMEOUT = 10.0
BANNER_TIMEOUT = AUTH_TIMEOUT  # a port that accepts but never says "SSH-2.0-..." fails after this
COMMAND_TIMEOUT = 60.0
WAKE_AT_LEAST = 1.0  # a running command's output is looked at this often even if no wake-up came

# paramiko's transport thread logs every failed handshake with a traceback; the reason reaches the
# caller as an SshError, so without a handler of their own those lines must not reach stderr.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_RSA_ALGS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


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


def _authenticate(transport: paramiko.Transport, target: Target) -> None:
    last: Exception | None = None
    tried = 0
    keys = sshkeys.load_client_keys(target.key_file, target.fallback_keys)
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
        sshkeys.close_agents(keys)


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
        first_use = check_host_key(target, pins, pinned, shown, strict)
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


