"""Reaching the peers over SSH, for push, verify and status: a pool of connections with a bound.
A host runs Programs: compiled here, on the way out (remote/compiler.py).

Each open connection costs the controller a socket (not a jump connection: it rides on its
gateway's) and a paramiko thread. A run whose inventory has up to 128 hosts (gateways and their
instances) keeps every connection open to the end: verify's passes reuse them. A larger one keeps
4 per connection in use at once at the busiest moment (4 x --parallel): a pass over more hosts
than the pool holds would close each connection before the next pass came back to it anyway, and
a host between two steps of its work is among the most recent. Past the limit, opening one closes
the least recently used one that nothing uses now — never one a command runs on, nor a gateway
that carries an open jump connection. A closed host is connected again when asked for: a
handshake, its host key checked against the pin as before.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from wgmesh.adapters import hostkeys, ssh
from wgmesh.model import Instance, Inventory, Peer, Source
from wgmesh.remote.compiler import command
from wgmesh.remote.host import PROBE_TIMEOUT, Reply
from wgmesh.remote.steps import Program

KEEP_ALL = 128  # a run with up to this many hosts keeps all open: a 50-site lab's 50 gateways + 50 instances
LIMIT_PER_BUSY = 4  # a larger one: 4 per connection in use at once, at the busiest moment so far


@dataclass(eq=False)
class _Open:
    """An open connection in the pool, and who depends on it."""

    conn: ssh.Connection
    via: _Open | None = None  # a jump connection: the gateway's entry it rides on
    busy: int = 0  # runs (or jumps being opened through it) using it now
    riders: int = 0  # open jump connections that ride on it


Opener = Callable[[], _Open]


class SshHost:
    """A host as the commands see it: each run takes the host's connection from the pool (opened
    again if the pool closed it meanwhile) and gives it back, so an idle host holds nothing that
    cannot be closed."""

    def __init__(self, pool: HostPool, key: str, opener: Opener, user: str):
        self.pool, self.key, self.opener, self.user = pool, key, opener, user

    def run(self, program: Program, stdin: bytes | None = None, timeout: float = PROBE_TIMEOUT) -> Reply:
        entry = self.pool._take(self.key, self.opener)
        try:
            return Reply(*entry.conn.run(command(program, self.user), stdin=stdin, timeout=timeout))
        finally:
            self.pool._give(entry)


FirstUse = Callable[[str, str], None]  # (peer or "peer/instance", fingerprint): a key pinned unverified


class HostPool:
    def __init__(
        self, pins: hostkeys.Pins, inventory: Inventory | None = None, wait_ssh: float = 0.0, *,
        strict_host_keys: bool = False, on_first_use: FirstUse | None = None, keep_all: int = KEEP_ALL,
    ):
        self.pins = pins
        self.wait_ssh = wait_ssh  # keep retrying unreachable hosts this long (hosts still booting)
        self.strict = strict_host_keys  # refuse hosts whose key nothing vouches for, instead of pinning it
        self.on_first_use = on_first_use
        self.inventory_name = inventory.name if inventory else ""
        peers = inventory.peers if inventory else ()
        # A peer added without --ssh-key may use the keys the other peers of its inventory use
        # (e.g. the key a Terraform stack made for its hosts), after ssh-agent and ~/.ssh.
        self.fallback_keys = tuple(sorted({p.ssh.key for p in peers if p.ssh and p.ssh.key}))
        # How many connections a run may want (gateways and their instances); None: not known.
        self.hosts = sum(1 + len(p.instances) for p in peers if p.ssh) if inventory else None
        self.keep_all = keep_all
        self._open: OrderedDict[str, _Open] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._busy_now = 0  # entries in use now
        self._busy_peak = 0

    @property
    def fits(self) -> bool:
        """Whether every host of the inventory may stay open for the whole run."""
        return self.hosts is not None and self.hosts <= self.keep_all

    @property
    def limit(self) -> int:
        """Open connections the pool keeps at most (more only while all of them are in use)."""
        if self.fits:
            return self.keep_all
        per_busy = LIMIT_PER_BUSY * self._busy_peak
        return per_busy if self.hosts is not None else max(self.keep_all, per_busy)

    @property
    def open_count(self) -> int:
        return len(self._open)

    def target(self, peer: Peer) -> hostkeys.Target:
        if peer.ssh is None:
            raise hostkeys.SshError("no SSH access in the inventory (addpeer --ssh USER@HOST)")
        return hostkeys.Target(
            user=peer.ssh.user,
            host=peer.ssh.host,
            port=peer.ssh.port,
            key_file=peer.ssh.key,
            fallback_keys=self.fallback_keys,
            expected_keys=peer.host_keys,
            label=peer.name,
            trust_with=(
                f"wgmesh -i {self.inventory_name} setpeer {peer.name} --host-key"
                if peer.source == Source.MANUAL else ""
            ),
        )

    # ------------------------------------------------------------ what the commands use

    def get(self, peer: Peer) -> SshHost:
        """The peer's host, connected now (an unreachable host fails here, with its reason)."""
        if peer.ssh is None:
            raise hostkeys.SshError("no SSH access in the inventory (addpeer --ssh USER@HOST)")
        opener = self._peer_opener(peer)
        self._give(self._take(peer.name, opener))
        return SshHost(self, peer.name, opener, peer.ssh.user)

    def get_instance(self, peer: Peer, inst: Instance) -> SshHost:
        """A private instance, through its gateway as jump host, connected now."""
        key = f"{peer.name}/{inst.name}"
        opener = self._jump_opener(peer, inst, key)
        self._give(self._take(key, opener))
        return SshHost(self, key, opener, inst.ssh_user)

    def connection(self, peer: Peer) -> ssh.Connection:
        """The peer's open connection (for a caller that runs nothing through the pool)."""
        entry = self._take(peer.name, self._peer_opener(peer))
        self._give(entry)
        return entry.conn

    def release(self, peer: Peer) -> None:
        """A command is done with this peer and its instances for now. Where the pool cannot keep
        every host of the inventory open, their idle connections close now (instead of waiting
        to be the least recently used); where it can, they stay for the command's next pass."""
        if self.fits:
            return
        prefix = peer.name + "/"
        for mine in (lambda k: k.startswith(prefix), lambda k: k == peer.name):  # its jumps, then itself
            with self._lock:
                idle = [k for k, e in self._open.items() if mine(k) and self._idle(e)]
                victims = [self._open.pop(k) for k in idle]
            self._close(victims)

    def close(self) -> None:
        with self._lock:
            entries, self._open = list(self._open.values()), OrderedDict()
        self._close([e for e in entries if e.via is not None])  # jump connections before their gateways
        self._close([e for e in entries if e.via is None])

    def __enter__(self) -> HostPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------ the bound

    def _take(self, key: str, opener: Opener) -> _Open:
        """The connection of `key`, in use until _give(): the open one, else a new one from
        `opener`. One at a time per key: two threads that ask at once share one connection."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                entry = self._open.get(key)
                if entry is not None and entry.conn.transport.is_active():
                    self._open.move_to_end(key)
                    self._use(entry)
                    return entry
                if entry is not None:  # it died (the host hung up): make room for a new one
                    del self._open[key]
            if entry is not None:
                self._close([entry])
            entry = opener()
            with self._lock:
                self._open[key] = entry
                self._use(entry)
                victims = self._over_limit()
        self._close(victims)
        return entry

    def _give(self, entry: _Open) -> None:
        with self._lock:
            entry.busy -= 1
            if entry.busy == 0:
                self._busy_now -= 1
            victims = self._over_limit()  # the pool may have grown past it while all were busy
        self._close(victims)

    def _use(self, entry: _Open) -> None:
        entry.busy += 1
        if entry.busy == 1:
            self._busy_now += 1
            self._busy_peak = max(self._busy_peak, self._busy_now)

    @staticmethod
    def _idle(entry: _Open) -> bool:
        return entry.busy == 0 and entry.riders == 0

    def _over_limit(self) -> list[_Open]:
        """Under the lock: take the least recently used idle entries out, until the pool is
        within its limit (or only busy ones and gateways of open jumps are left)."""
        excess = len(self._open) - self.limit
        if excess <= 0:
            return []
        victims = []
        for key, entry in list(self._open.items()):
            if excess == 0:
                break
            if self._idle(entry):
                del self._open[key]
                victims.append(entry)
                excess -= 1
        return victims

    def _close(self, entries: list[_Open]) -> None:
        """Close entries already taken out of the pool; a jump connection's gateway can be
        closed only after it (its riders count drops once the jump is closed)."""
        for entry in entries:
            entry.conn.close()
            if entry.via is not None:
                with self._lock:
                    entry.via.riders -= 1

    # ------------------------------------------------------------ opening

    def _peer_opener(self, peer: Peer) -> Opener:
        def open_peer() -> _Open:
            deadline = time.monotonic() + self.wait_ssh
            while True:
                try:
                    conn = ssh.connect(self.target(peer), self.pins, self.strict)
                    break
                except hostkeys.SshError as exc:
                    # A booting machine refuses, resets the handshake, or lacks its authorized key yet;
                    # a changed host key is never retried.
                    booting = exc.reason.startswith(("unreachable", "SSH handshake failed", "authentication"))
                    if isinstance(exc, hostkeys.HostKeyChanged) or not booting or time.monotonic() >= deadline:
                        raise
                    time.sleep(3)
            self._first_use(peer.name, conn)
            return _Open(conn)

        return open_peer

    def _jump_opener(self, peer: Peer, inst: Instance, key: str) -> Opener:
        def open_jump() -> _Open:
            gateway = self._take(peer.name, self._peer_opener(peer))  # in use: not closed under the jump
            try:
                target = hostkeys.Target(
                    user=inst.ssh_user,
                    host=str(inst.address),
                    port=inst.ssh_port,
                    key_file=peer.ssh.key if peer.ssh else None,
                    fallback_keys=self.fallback_keys,
                    expected_keys=inst.host_keys,
                    label=key,
                )
                conn = gateway.conn.jump(target, self.pins, self.strict)
                self._first_use(key, conn)
                with self._lock:
                    gateway.riders += 1  # before the gateway is given back: never idle under a jump
            finally:
                self._give(gateway)
            return _Open(conn, via=gateway)

        return open_jump

    def _first_use(self, label: str, conn: ssh.Connection) -> None:
        if conn.first_use and self.on_first_use is not None:
            try:
                self.on_first_use(label, conn.first_use)
            except BaseException:
                conn.close()  # not in the pool yet: nobody else would
                raise
