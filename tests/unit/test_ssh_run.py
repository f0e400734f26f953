"""Connection.run (wgmesh/adapters/ssh.py) reads a command's output without select() and without
a channel's fileno() (which makes a pipe pair per channel, and select() fails on fds past 1024):
it waits on an event paramiko's transport thread sets. Against a scripted channel, then a real
paramiko server in this process (a socket pair: no sshd, no root)."""

from __future__ import annotations

import select
import socket
import threading
import time

import paramiko
import pytest
from paramiko.buffered_pipe import BufferedPipe

from wgmesh.adapters import hostkeys, ssh


@pytest.fixture(autouse=True)
def no_select(monkeypatch):
    """select() and Channel.fileno() fail if called; a missed wake-up would wait 30 s (the
    commands below time out after 5 s)."""

    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("select() or fileno() called")

    monkeypatch.setattr(select, "select", refuse)
    monkeypatch.setattr(paramiko.Channel, "fileno", refuse)
    monkeypatch.setattr(ssh, "WAKE_AT_LEAST", 30.0)


class ScriptedChannel:
    """What Connection.run uses of a paramiko Channel, fed from a thread of its own: `script`
    is a list of ("out"|"err", bytes), ("eof",), ("status", rc), ("close",) with a pause before each."""

    def __init__(self, script: list[tuple], pause: float = 0.02):
        self.script, self.pause = script, pause
        self.in_buffer, self.in_stderr_buffer = BufferedPipe(), BufferedPipe()
        self.status_event = threading.Event()
        self.exit_status = -1
        self.eof_received = self.closed = False
        self.stdin = b""

    def fileno(self) -> int:
        raise AssertionError("fileno() called: a pipe pair per channel, and select() on it")

    def settimeout(self, timeout: float) -> None:
        pass

    def exec_command(self, command: str) -> None:
        threading.Thread(target=self._feed, daemon=True).start()

    def _feed(self) -> None:
        for what, *args in self.script:
            time.sleep(self.pause)
            if what == "out":
                self.in_buffer.feed(args[0])
            elif what == "err":
                self.in_stderr_buffer.feed(args[0])
            elif what == "eof":
                self.eof_received = True
                self.in_buffer.close()
                self.in_stderr_buffer.close()
            elif what == "status":
                self.exit_status = args[0]
                self.status_event.set()
            elif what == "close":  # as paramiko's _set_closed
                self.closed = True
                self.in_buffer.close()
                self.in_stderr_buffer.close()
                self.status_event.set()

    def sendall(self, data: bytes) -> None:
        self.stdin += data

    def shutdown_write(self) -> None:
        pass

    def recv_ready(self) -> bool:
        return self.in_buffer.read_ready()

    def recv(self, n: int) -> bytes:
        return self.in_buffer.read(n)

    def recv_stderr_ready(self) -> bool:
        return self.in_stderr_buffer.read_ready()

    def recv_stderr(self, n: int) -> bytes:
        return self.in_stderr_buffer.read(n)

    def recv_exit_status(self) -> int:
        self.status_event.wait()
        return self.exit_status

    def close(self) -> None:
        self.closed = True


class ScriptedTransport:
    def __init__(self, chan: ScriptedChannel, active: bool = True):
        self.chan, self.active = chan, active

    def open_session(self, timeout: float | None = None) -> ScriptedChannel:
        return self.chan

    def is_active(self) -> bool:
        return self.active


def run(chan: ScriptedChannel, active: bool = True, stdin: bytes | None = None) -> tuple[int, str, str]:
    conn = ssh.Connection(ScriptedTransport(chan, active), hostkeys.Target("root", "192.0.2.1"))  # type: ignore[arg-type]
    return conn.run("x", stdin=stdin, timeout=5)


def test_output_on_both_streams_then_eof_then_the_exit_status():
    chan = ScriptedChannel([("out", b"a"), ("err", b"e1 "), ("out", b"b"), ("err", b"e2"), ("eof",),
                            ("status", 3), ("close",)])
    assert run(chan, stdin=b"in") == (3, "ab", "e1 e2")
    assert chan.stdin == b"in" and chan.closed


def test_the_exit_status_before_eof():
    chan = ScriptedChannel([("out", b"x" * 200_000), ("status", 0), ("err", b"late"), ("eof",), ("close",)])
    assert run(chan) == (0, "x" * 200_000, "late")


def test_stderr_only_while_stdout_stays_quiet():
    chan = ScriptedChannel([("err", b"1"), ("err", b"2"), ("err", b"3"), ("eof",), ("status", 1)], pause=0.05)
    assert run(chan) == (1, "", "123")


def test_a_connection_lost_while_the_command_runs():
    chan = ScriptedChannel([("out", b"half"), ("close",)])
    with pytest.raises(hostkeys.SshError, match="connection lost"):
        run(chan, active=False)


def test_a_command_that_never_ends_times_out():
    chan = ScriptedChannel([("out", b"x")])
    conn = ssh.Connection(ScriptedTransport(chan), hostkeys.Target("root", "192.0.2.1"))  # type: ignore[arg-type]
    with pytest.raises(hostkeys.SshError, match="timed out after 0 s"):
        conn.run("x", timeout=0.3)


# ---------------------------------------------------------------- a real paramiko server


class EchoServer(paramiko.ServerInterface):
    """Any login; a command "N RC" answers with its standard input, then N bytes on stdout,
    "err" on stderr, exit status RC."""

    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=self._serve, args=(channel, command), daemon=True).start()
        return True

    @staticmethod
    def _serve(channel: paramiko.Channel, command: bytes) -> None:
        size, rc = (int(x) for x in command.split())
        got = b""
        while chunk := channel.recv(65536):
            got += chunk
        channel.sendall(got + b"o" * size)
        channel.sendall_stderr(b"err")
        channel.send_exit_status(rc)
        channel.close()


@pytest.fixture(scope="module")
def host_key() -> paramiko.RSAKey:
    return paramiko.RSAKey.generate(2048)


def test_real_channels_many_at_once_without_a_file_descriptor_each(host_key):
    a, b = socket.socketpair()
    server = paramiko.Transport(a)
    server.add_server_key(host_key)
    server.start_server(threading.Event(), server=EchoServer())  # with an event: it does not wait here
    client = paramiko.Transport(b)
    try:
        client.start_client(timeout=10)
        client.auth_none("root")
        conn = ssh.Connection(client, hostkeys.Target("root", "192.0.2.1"))
        results: dict[int, tuple[int, str, str]] = {}

        def one(i: int) -> None:
            results[i] = conn.run(f"{i * 50_000} {i % 3}", stdin=f"in{i}".encode(), timeout=5)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert results == {i: (i % 3, f"in{i}" + "o" * (i * 50_000), "err") for i in range(8)}
    finally:
        client.close()
        server.close()
