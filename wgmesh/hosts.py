"""Reaching the peers over SSH: one connection per host per run, shared by push, verify and
status. A host runs Programs: compiled here, on the way out (remote/compiler.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

from wgmesh.adapters import ssh
from wgmesh.model import Instance, Inventory, Peer, Source
from wgmesh.remote.compiler import command
from wgmesh.remote.host import PROBE_TIMEOUT, Reply
from wgmesh.remote.steps import Program


class SshHost:
    """A host reached over one SSH connection, as the SSH user."""

    def __init__(self, conn: ssh.Connection, user: str):
        self.conn = conn
        self.user = user

    def run(self, program: Program, stdin: bytes | None = None, timeout: float = PROBE_TIMEOUT) -> Reply:
        return Reply(*self.conn.run(command(program, self.user), stdin=stdin, timeout=timeout))


FirstUse = Callable[[str, str], None]  # (peer or "peer/instance", fingerprint): a key pinned unverified


class HostPool:
    def __init__(
        self, pins: ssh.Pins, inventory: Inventory | None = None, wait_ssh: float = 0.0, *,
        strict_host_keys: bool = False, on_first_use: FirstUse | None = None,
    ):
        self.pins = pins
        self.wait_ssh = wait_ssh  # keep retrying unreachable hosts this long (hosts still booting)
        self.strict = strict_host_keys  # refuse hosts whose key nothing vouches for, instead of pinning it
        self.on_first_use = on_first_use
        self.inventory_name = inventory.name if inventory else ""
        # A peer added without --ssh-key may use the keys the other peers of its inventory use
        # (e.g. the key a Terraform stack made for its hosts), after ssh-agent and ~/.ssh.
        self.fallback_keys = tuple(
            sorted({p.ssh.key for p in (inventory.peers if inventory else ()) if p.ssh and p.ssh.key})
        )
        self._conns: dict[str, ssh.Connection] = {}
        self._lock = threading.Lock()
        self._peer_locks: dict[str, threading.Lock] = {}

    def target(self, peer: Peer) -> ssh.Target:
        if peer.ssh is None:
            raise ssh.SshError("no SSH access in the inventory (addpeer --ssh USER@HOST)")
        return ssh.Target(
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

    def get(self, peer: Peer) -> SshHost:
        if peer.ssh is None:
            raise ssh.SshError("no SSH access in the inventory (addpeer --ssh USER@HOST)")
        return SshHost(self.connection(peer), peer.ssh.user)

    def connection(self, peer: Peer) -> ssh.Connection:
        with self._lock:
            peer_lock = self._peer_locks.setdefault(peer.name, threading.Lock())
        with peer_lock:  # one connection per peer, even when two phases ask at once
            return self._get(peer)

    def _get(self, peer: Peer) -> ssh.Connection:
        with self._lock:
            conn = self._conns.get(peer.name)
        if conn is not None and conn.transport.is_active():
            return conn
        deadline = time.monotonic() + self.wait_ssh
        while True:
            try:
                conn = ssh.connect(self.target(peer), self.pins, self.strict)
                break
            except ssh.SshError as exc:
                # A booting machine refuses, resets the handshake, or lacks its authorized key yet;
                # a changed host key is never retried.
                booting = exc.reason.startswith(("unreachable", "SSH handshake failed", "authentication"))
                if isinstance(exc, ssh.HostKeyChanged) or not booting or time.monotonic() >= deadline:
                    raise
                time.sleep(3)
        self._first_use(peer.name, conn)
        with self._lock:
            self._conns[peer.name] = conn
        return conn

    def _first_use(self, label: str, conn: ssh.Connection) -> None:
        if conn.first_use and self.on_first_use is not None:
            self.on_first_use(label, conn.first_use)

    def get_instance(self, peer: Peer, inst: Instance) -> SshHost:
        return SshHost(self._instance_connection(peer, inst), inst.ssh_user)

    def _instance_connection(self, peer: Peer, inst: Instance) -> ssh.Connection:
        key = f"{peer.name}/{inst.name}"
        with self._lock:
            conn = self._conns.get(key)
        if conn is not None and conn.transport.is_active():
            return conn
        gw = self.connection(peer)
        target = ssh.Target(
            user=inst.ssh_user,
            host=str(inst.address),
            port=inst.ssh_port,
            key_file=peer.ssh.key if peer.ssh else None,
            fallback_keys=self.fallback_keys,
            expected_keys=inst.host_keys,
            label=key,
        )
        conn = gw.jump(target, self.pins, self.strict)
        self._first_use(key, conn)
        with self._lock:
            self._conns[key] = conn
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for c in reversed(conns):  # jump connections before their gateways
            c.close()

    def __enter__(self) -> HostPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
