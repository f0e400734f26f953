"""The SSH host pool's bound (wgmesh/hosts.py): at most `limit` connections open, the least
recently used idle one closed first, never one in use nor a gateway under an open jump, a closed
host connected again when asked for. No sshd: ssh.connect is replaced by a stand-in that counts."""

from __future__ import annotations

import ipaddress
import os
import threading
from dataclasses import replace

import pytest

from tests.unit.test_ssh_trust import Sshd, keygen, needs_sshd
from wgmesh import hosts
from wgmesh.adapters import hostkeys
from wgmesh.hosts import HostPool
from wgmesh.inventory import new_inventory
from wgmesh.model import Instance, Peer, SshTarget
from wgmesh.peers import UNALLOCATED
from wgmesh.remote.plan import dump_program


class FakeTransport:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class FakeConnection:
    """What the pool needs of ssh.Connection; `gate` (if set) holds run() until it is set."""

    def __init__(self, target: hostkeys.Target, world: World, first_use: str | None = None) -> None:
        self.target, self.world, self.first_use = target, world, first_use
        self.transport = FakeTransport()
        self.closed = False
        self.gate: threading.Event | None = None
        self.running = threading.Event()

    def run(self, command: str, stdin: bytes | None = None, timeout: float = 60.0) -> tuple[int, str, str]:
        assert not self.closed, f"{self.target.label}: run on a closed connection"
        self.running.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        return 0, self.target.label, ""

    def jump(self, target: hostkeys.Target, pins: hostkeys.Pins, strict: bool = False) -> FakeConnection:
        assert not self.closed and self.transport.active
        return self.world.opened(target, pins, strict)

    def close(self) -> None:
        assert not self.closed, f"{self.target.label}: closed twice"
        self.closed = True
        self.transport.active = False
        self.world.open.discard(self)


class World:
    """The stand-in for ssh.connect: every connection made, and those open now."""

    def __init__(self) -> None:
        self.made: list[FakeConnection] = []
        self.open: set[FakeConnection] = set()
        self.pinned: set[str] = set()
        self.lock = threading.Lock()

    def opened(self, target: hostkeys.Target, pins: hostkeys.Pins, strict: bool = False) -> FakeConnection:
        with self.lock:  # trust on first use once per host, as a pin would do
            first = None if target.host in self.pinned else f"SHA256:{target.host}"
            self.pinned.add(target.host)
            conn = FakeConnection(target, self, first)
            self.made.append(conn)
            self.open.add(conn)
        return conn

    def connects(self, label: str) -> int:
        return sum(1 for c in self.made if c.target.label == label)

    def open_labels(self) -> set[str]:
        return {c.target.label for c in self.open}


@pytest.fixture
def world(monkeypatch) -> World:
    w = World()
    monkeypatch.setattr(hosts.ssh, "connect", w.opened)
    return w


def peer(i: int, instances: int = 0) -> Peer:
    insts = tuple(Instance(f"vm{j}", ipaddress.ip_address(f"10.{i}.0.{10 + j}")) for j in range(instances))
    return Peer(name=f"p{i}", address=UNALLOCATED, ssh=SshTarget("root", f"192.0.2.{i}"), instances=insts)


def pool_of(tmp_path, peers: list[Peer] | None, keep_all: int) -> HostPool:
    """A pool for these peers' inventory (None: a pool that does not know how many hosts come)."""
    inv = replace(new_inventory("lab"), peers=tuple(peers)) if peers is not None else None
    return HostPool(hostkeys.Pins(tmp_path / "known_hosts"), inv, keep_all=keep_all)


PROGRAM = dump_program("wg0")


@pytest.fixture
def one_per_busy(monkeypatch):
    """The busiest moment counts once, not 4 times."""
    monkeypatch.setattr(hosts, "LIMIT_PER_BUSY", 1)


def test_the_least_recently_used_idle_connection_closes_first(tmp_path, world, one_per_busy):
    peers = [peer(i) for i in range(1, 8)]
    with pool_of(tmp_path, None, keep_all=3) as pool:
        handles = [pool.get(p) for p in peers[:3]]  # p1 p2 p3
        handles[0].run(PROGRAM)  # p1 is the most recent now: p2 is the least recently used
        pool.get(peers[3])
        assert world.open_labels() == {"p1", "p3", "p4"}
        for p in peers[4:]:
            pool.get(p)
        assert pool.open_count == 3 and world.open_labels() == {"p5", "p6", "p7"}
        # A handle outlives its connection: it connects again (checked as before: the pin is known).
        assert handles[1].run(PROGRAM).out == "p2"
        assert world.connects("p2") == 2 and world.open_labels() == {"p2", "p6", "p7"}
        assert world.made[-1].first_use is None
    assert not world.open


def test_a_connection_in_use_is_never_closed(tmp_path, world, one_per_busy):
    peers = [peer(i) for i in range(1, 6)]
    with pool_of(tmp_path, None, keep_all=1) as pool:
        busy = pool.get(peers[0])
        conn = world.made[0]
        conn.gate = threading.Event()
        result: list[str] = []
        t = threading.Thread(target=lambda: result.append(busy.run(PROGRAM).out))
        t.start()
        assert conn.running.wait(10)
        # p1 runs a command, the least recently used of all: the others close instead. (Two were
        # in use at once while p2 was opened: the limit is 2 now.)
        for p in peers[1:]:
            pool.get(p)
            assert not conn.closed
        assert pool.limit == 2 and world.open_labels() == {"p1", "p5"}
        conn.gate.set()
        t.join(10)
        assert result == ["p1"] and not conn.closed


def test_the_limit_follows_the_busiest_moment(tmp_path, world):
    peers = [peer(i) for i in range(1, 40)]
    with pool_of(tmp_path, peers, keep_all=2) as pool:  # 39 hosts: more than it keeps
        gates: list[threading.Event] = []
        threads = []
        for p in peers[:3]:  # three run at once
            pool.get(p)
            conn = world.made[-1]
            conn.gate = threading.Event()
            gates.append(conn.gate)
            h = pool.get(p)
            threads.append(threading.Thread(target=h.run, args=(PROGRAM,)))
            threads[-1].start()
            assert conn.running.wait(10)
        for g in gates:
            g.set()
        for t in threads:
            t.join(10)
        assert pool.limit == 12
        for p in peers[3:]:
            pool.get(p)
        assert pool.open_count == 12 and len(world.open) == 12


def test_a_gateway_under_an_open_jump_stays_open(tmp_path, world, one_per_busy):
    gw = peer(1, instances=1)
    others = [peer(i) for i in range(2, 4)]
    with pool_of(tmp_path, None, keep_all=2) as pool:
        vm = pool.get_instance(gw, gw.instances[0])
        assert world.open_labels() == {"p1", "p1/vm0"}
        pool.get(others[0])
        # p1 is the least recently used, but its instance rides on it: the jump goes first.
        assert world.open_labels() == {"p1", "p2"}
        pool.get(others[1])
        assert world.open_labels() == {"p2", "p3"}  # no rider left: p1 could go
        assert vm.run(PROGRAM).out == "p1/vm0"  # its gateway connected again, then the jump
        assert world.connects("p1") == 2 and world.connects("p1/vm0") == 2
        assert world.open_labels() == {"p1", "p1/vm0"}
    assert not world.open


def test_a_mesh_that_fits_keeps_every_connection(tmp_path, world, one_per_busy):
    peers = [peer(i, instances=1) for i in range(1, 4)]
    with pool_of(tmp_path, peers, keep_all=6) as pool:  # 3 gateways + 3 instances: they fit
        for p in peers:
            pool.get_instance(p, p.instances[0])
        for p in peers:
            pool.release(p)  # a hint: nothing closes
        for p in peers:
            pool.get(p).run(PROGRAM)
            pool.get_instance(p, p.instances[0]).run(PROGRAM)
        assert len(world.made) == 6 and pool.open_count == 6


def test_release_closes_at_once_where_the_mesh_does_not_fit(tmp_path, world):
    peers = [peer(i, instances=1) for i in range(1, 4)]
    with pool_of(tmp_path, peers, keep_all=4) as pool:  # 6 hosts: the limit is 4 x 1 in use
        first = pool.get_instance(peers[0], peers[0].instances[0])
        pool.get(peers[1])
        pool.release(peers[0])  # its instance, then the gateway
        assert world.open_labels() == {"p2"}
        assert first.run(PROGRAM).out == "p1/vm0"  # still usable: connected again


def test_a_dead_connection_is_closed_and_replaced(tmp_path, world):
    p = peer(1)
    with pool_of(tmp_path, [p], keep_all=4) as pool:
        h = pool.get(p)
        dead = world.made[0]
        dead.transport.active = False  # the host hung up
        assert h.run(PROGRAM).out == "p1"
        assert dead.closed and world.connects("p1") == 2 and pool.open_count == 1


@pytest.mark.parametrize("release", [False, True])
def test_many_threads_many_hosts_stay_within_the_bound(tmp_path, world, release):
    """16 workers over 300 hosts, three passes (as verify makes): about 4 open per worker at most,
    with or without release(), and every host answers."""
    from concurrent.futures import ThreadPoolExecutor

    peers = [replace(peer(i % 250 + 1), name=f"h{i}") for i in range(300)]
    peak = 0
    lock = threading.Lock()
    with pool_of(tmp_path, peers, keep_all=128) as pool:

        def one(p: Peer) -> str:
            nonlocal peak
            out = pool.get(p).run(PROGRAM).out
            with lock:
                peak = max(peak, len(world.open))
            if release:
                pool.release(p)
            return out

        with ThreadPoolExecutor(16) as ex:
            for _ in range(3):
                assert list(ex.map(one, peers)) == [p.name for p in peers]
        # Past the limit by at most one per worker: connections being opened or being closed.
        assert pool.open_count <= pool.limit <= 64 and peak <= pool.limit + 16
        assert not release or peak <= 2 * 16  # released at once: those in use, and those in transit
    assert not world.open


# ---------------------------------------------------------------- against a real sshd


@needs_sshd
def test_closed_and_connected_again_against_sshd_pins_once_and_leaks_no_fd(tmp_path, monkeypatch, one_per_busy):
    """Two peers on one sshd, a pool that keeps one connection: every other run connects again,
    checked against the pin made at the first login (first use said once), and the process ends
    with the file descriptors it had."""
    monkeypatch.setenv("HOME", str(tmp_path))  # only the key given here: no ~/.ssh, no ssh-agent
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    key = keygen(tmp_path / "id")
    with Sshd(tmp_path, [key]) as sshd:
        a, b = (Peer(name=n, address=UNALLOCATED, ssh=SshTarget("root", "127.0.0.1", sshd.port, str(key)))
                for n in ("a", "b"))
        seen: list[str] = []
        fds = len(os.listdir("/proc/self/fd"))
        pins = hostkeys.Pins(tmp_path / "known_hosts")
        with HostPool(pins, keep_all=1, on_first_use=lambda h, fp: seen.append(h)) as pool:
            hosts_ = [pool.get(a), pool.get(b)]
            for i in range(10):
                assert hosts_[i % 2].run(PROGRAM).rc == 0  # sshd's ForceCommand /bin/true
                assert pool.open_count == 1
        assert seen == ["a"]  # b is the same host: its pin was there
        assert len(os.listdir("/proc/self/fd")) == fds
