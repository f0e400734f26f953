"""Host-key trust, the SSH banner and the order of client keys (wgmesh/adapters/ssh.py, hosts.py).

What is about sshd runs against a real one: /usr/sbin/sshd on 127.0.0.1, a random high port, its
own host key and authorized keys, every command forced to /bin/true (nothing runs on this
machine), stopped at the end of each test. Those tests need root (sshd authenticates the user it
runs as); the others are plain unit tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from wgmesh.adapters import hostkeys, ssh, sshkeys
from wgmesh.hosts import HostPool
from wgmesh.model import Peer, Source, SshTarget
from wgmesh.peers import UNALLOCATED

SSHD = Path("/usr/sbin/sshd")
needs_sshd = pytest.mark.skipif(
    os.geteuid() != 0 or not SSHD.exists() or shutil.which("ssh-keygen") is None,
    reason="a real sshd on 127.0.0.1 needs root, /usr/sbin/sshd and ssh-keygen",
)


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name, "-f", str(path)],
                   check=True)
    return path


def public(path: Path) -> str:
    """'type base64' of a key pair's public half."""
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """A real sshd on 127.0.0.1 for one test: logs in as root with the authorized keys, runs /bin/true
    whatever the command, `max_auth_tries` as given."""

    def __init__(self, root: Path, authorized: list[Path], max_auth_tries: int = 6):
        self.dir = root / "sshd"
        self.dir.mkdir(mode=0o700)
        self.port = free_port()
        self.host_key = public(keygen(self.dir / "host_ed25519"))
        (self.dir / "authorized_keys").write_text("".join(public(k) + "\n" for k in authorized))
        (self.dir / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1:{self.port}\n"
            f"HostKey {self.dir / 'host_ed25519'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            f"MaxAuthTries {max_auth_tries}\n"
            "StrictModes no\nUsePAM no\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nAllowUsers root\n"
            "ForceCommand /bin/true\nAllowTcpForwarding no\nAllowAgentForwarding no\nX11Forwarding no\n"
            "PermitTTY no\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sshd:
        log = (self.dir / "sshd.log").open("wb")
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                     stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, (self.dir / "sshd.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                assert time.monotonic() < deadline, "sshd did not start"
                time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def entry(self) -> str:
        return f"[127.0.0.1]:{self.port}"

    def target(self, key: Path | None, **more: object) -> hostkeys.Target:
        return hostkeys.Target("root", "127.0.0.1", self.port, str(key) if key else None, **more)  # type: ignore[arg-type]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """No ~/.ssh keys and no ssh-agent of the machine's: only the keys a test gives."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    d.mkdir()
    return d


# ---------------------------------------------------------------- item 4: a port with no SSH server


class Listener:
    """127.0.0.1 only: accepts connections and says nothing (or hangs up at once)."""

    def __init__(self, hang_up: bool = False):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.hang_up = hang_up
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.hang_up:
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


def test_a_silent_port_says_no_ssh_banner(tmp_path, home, monkeypatch):
    monkeypatch.setattr(ssh, "BANNER_TIMEOUT", 1.0, raising=False)
    quiet = Listener()
    try:
        t0 = time.monotonic()
        with pytest.raises(hostkeys.SshError) as err:
            ssh.connect(hostkeys.Target("root", "127.0.0.1", quiet.port), hostkeys.Pins(tmp_path / "known_hosts"))
        took = time.monotonic() - t0
    finally:
        quiet.close()
    assert "no SSH banner within 1 s" in err.value.reason, err.value.reason
    assert "No existing session" not in err.value.reason
    assert took < 5
    assert not (tmp_path / "known_hosts").exists()


def test_a_port_that_hangs_up_says_so(tmp_path, home):
    rude = Listener(hang_up=True)
    try:
        with pytest.raises(hostkeys.SshError) as err:
            ssh.connect(hostkeys.Target("root", "127.0.0.1", rude.port), hostkeys.Pins(tmp_path / "known_hosts"))
    finally:
        rude.close()
    assert err.value.reason == "SSH handshake failed: the host closed the connection before its SSH banner"


# ---------------------------------------------------------------- item 5: trust


@needs_sshd
def test_pinned_only_after_a_successful_login_and_first_use_is_said(tmp_path, home, keys):
    right, wrong = keygen(keys / "right"), keygen(keys / "wrong")
    pins = hostkeys.Pins(tmp_path / "known_hosts")
    with Sshd(tmp_path, [right]) as sshd:
        with pytest.raises(hostkeys.SshError, match="authentication"):
            ssh.connect(sshd.target(wrong), pins)
        assert pins.get("127.0.0.1", sshd.port) == set()  # a refused login leaves no pin

        conn = ssh.connect(sshd.target(right), pins)
        conn.close()
        assert conn.first_use == hostkeys.fingerprint(sshd.host_key)
        assert pins.get("127.0.0.1", sshd.port) == {sshd.host_key}

        again = ssh.connect(sshd.target(right), pins)  # verified against the pin now
        again.close()
        assert again.first_use is None

        stack = ssh.connect(sshd.target(right, expected_keys=(sshd.host_key,)), hostkeys.Pins(tmp_path / "kh2"))
        stack.close()
        assert stack.first_use is None  # verified against the stack's key: not trust on first use


@needs_sshd
def test_strict_refuses_an_unknown_host_and_says_how_to_trust_it(tmp_path, home, keys):
    key = keygen(keys / "id")
    pins = hostkeys.Pins(tmp_path / "known_hosts")
    with Sshd(tmp_path, [key]) as sshd:
        fp = hostkeys.fingerprint(sshd.host_key)
        trust_with = "wgmesh -i lab setpeer srv --host-key"
        with pytest.raises(hostkeys.HostKeyUnknown) as err:
            ssh.connect(sshd.target(key, trust_with=trust_with), pins, strict=True)
        assert fp in err.value.reason and "--strict-host-keys" in err.value.reason
        assert f"{trust_with} '{sshd.host_key}'" in (err.value.hint or "")
        assert not pins.path.exists()

        # A host wgmesh cannot record a key for (a Terraform peer, an instance): the pin line to add.
        with pytest.raises(hostkeys.HostKeyUnknown) as err:
            ssh.connect(sshd.target(key), pins, strict=True)
        hint = err.value.hint or ""
        command = hint.split("trust it with: ", 1)[1]
        subprocess.run(["sh", "-c", command], check=True)
        assert pins.get("127.0.0.1", sshd.port) == {sshd.host_key}
        conn = ssh.connect(sshd.target(key), pins, strict=True)
        conn.close()
        assert conn.first_use is None

        # The key given (the stack's, or --host-key) is enough for strict.
        target = sshd.target(key, expected_keys=(sshd.host_key,))
        conn = ssh.connect(target, hostkeys.Pins(tmp_path / "kh2"), strict=True)
        conn.close()


@needs_sshd
def test_pool_reports_first_use_and_names_the_setpeer_command(tmp_path, home, keys):
    key = keygen(keys / "id")
    with Sshd(tmp_path, [key]) as sshd:
        peer = Peer(name="srv", address=UNALLOCATED, source=Source.MANUAL,
                    ssh=SshTarget("root", "127.0.0.1", sshd.port, str(key)))
        strict = HostPool(hostkeys.Pins(tmp_path / "known_hosts"), strict_host_keys=True)
        with strict, pytest.raises(hostkeys.HostKeyUnknown) as err:
            strict.connection(peer)
        assert f"setpeer srv --host-key '{sshd.host_key}'" in (err.value.hint or "")

        seen: list[tuple[str, str]] = []
        with HostPool(hostkeys.Pins(tmp_path / "known_hosts"), on_first_use=lambda h, fp: seen.append((h, fp))) as pool:
            pool.connection(peer)
        with HostPool(hostkeys.Pins(tmp_path / "known_hosts"), on_first_use=lambda h, fp: seen.append((h, fp))) as pool:
            pool.connection(peer)
        assert seen == [("srv", hostkeys.fingerprint(sshd.host_key))]  # once: the second run verifies the pin


def test_pins_keep_only(tmp_path):
    pins = hostkeys.Pins(tmp_path / "known_hosts")
    pins.pin("198.51.100.1", 22, "ssh-ed25519 AAAA1")
    pins.pin("127.0.0.1", 2222, "ssh-ed25519 AAAA2")
    assert pins.keep_only({"[127.0.0.1]:2222"}) == ["198.51.100.1"]
    assert pins.path.read_text() == "[127.0.0.1]:2222 ssh-ed25519 AAAA2\n"
    assert pins.keep_only(set()) == ["[127.0.0.1]:2222"]
    assert not pins.path.exists()


# ---------------------------------------------------------------- item 8: the order of client keys


class FakeAgent:
    keys: list[paramiko.PKey] = []

    def get_keys(self) -> list[paramiko.PKey]:
        return list(self.keys)


def test_client_keys_own_file_alone_else_agent_then_home_then_fallback(home, keys, monkeypatch):
    own = keygen(keys / "own")
    agent = [keygen(keys / f"agent{i}") for i in range(3)]
    (home / ".ssh").mkdir()
    mine = keygen(home / ".ssh" / "id_ed25519")
    fallback = keygen(keys / "stack")
    loaded = {p: paramiko.PKey.from_path(p) for p in (own, *agent, mine, fallback)}
    # The agent also holds the own key and the fallback key: each is offered once, in its first place.
    monkeypatch.setattr(FakeAgent, "keys", [loaded[agent[0]], loaded[own], loaded[agent[1]], loaded[fallback],
                                            loaded[agent[2]]])
    monkeypatch.setattr(ssh.paramiko, "Agent", FakeAgent)

    # A peer with its own key file is offered that key alone (an explicit identity for a host is
    # never mixed with the operator's other keys); without one: agent, ~/.ssh, fallback, each once.
    got = [k.asbytes() for k in sshkeys.load_client_keys(str(own), (str(fallback),))]
    assert got == [loaded[own].asbytes()]
    got = [k.asbytes() for k in sshkeys.load_client_keys(None, (str(fallback),))]
    want = [loaded[p].asbytes() for p in (agent[0], own, agent[1], fallback, agent[2], mine)]
    assert got == want


def test_client_keys_without_own_file(home, keys, monkeypatch):
    agent, fallback = keygen(keys / "agent"), keygen(keys / "stack")
    monkeypatch.setattr(FakeAgent, "keys", [paramiko.PKey.from_path(agent)])
    monkeypatch.setattr(ssh.paramiko, "Agent", FakeAgent)
    got = [k.get_fingerprint() for k in sshkeys.load_client_keys(None, (str(fallback),))]
    assert got == [paramiko.PKey.from_path(p).get_fingerprint() for p in (agent, fallback)]


@needs_sshd
def test_own_key_goes_first_even_through_the_agent_under_max_auth_tries(tmp_path, home, keys, monkeypatch):
    """sshd hangs up after MaxAuthTries refused keys: the peer's own key must come before the agent's
    others, also when its file needs a passphrase and only the agent holds it unlocked."""
    own = keygen(keys / "own")
    others = [keygen(keys / f"other{i}") for i in range(4)]
    locked = keys / "own-locked"  # the same key, in a file that needs a passphrase
    shutil.copy(own, locked)
    locked.chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "secret", "-f", str(locked)], check=True)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        for k in (*others, own):  # the agent offers the own key last
            subprocess.run(["ssh-add", "-q", str(k)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with Sshd(tmp_path, [own], max_auth_tries=3) as sshd:
            # Without its own key the agent's other keys use up MaxAuthTries: sshd hangs up.
            with pytest.raises(hostkeys.SshError, match="hung up after 3 refused keys"):
                ssh.connect(sshd.target(None), hostkeys.Pins(tmp_path / "known_hosts"))
            for key_file in (own, locked):
                conn = ssh.connect(sshd.target(key_file), hostkeys.Pins(tmp_path / "known_hosts"))
                assert conn.run("true")[0] == 0
                conn.close()
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_a_locked_key_file_the_agent_does_not_hold(home, keys):
    locked = keygen(keys / "locked", passphrase="secret")
    with pytest.raises(hostkeys.SshError) as err:
        sshkeys.load_client_keys(str(locked))
    assert err.value.reason == f"SSH key {locked} needs a passphrase and ssh-agent does not hold it: ssh-add {locked}"
