"""Reaching the peers: one SSH connection per host per run, shared by push, verify and status."""

from __future__ import annotations

import threading
import time

from wgmesh.adapters import ssh
from wgmesh.model import Instance, Peer


class HostPool:
    def __init__(self, pins: ssh.Pins, inventory=None, wait_ssh: float = 0.0):
        self.pins = pins
        self.wait_ssh = wait_ssh  # keep retrying unreachable hosts this long (hosts still booting)
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
        )

    def get(self, peer: Peer) -> ssh.Connection:
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
                conn = ssh.connect(self.target(peer), self.pins)
                break
            except ssh.SshError as exc:
                # A booting machine refuses, resets the handshake, or lacks its authorized key yet;
                # a changed host key is never retried.
                booting = exc.reason.startswith(("unreachable", "SSH handshake failed", "authentication"))
                if isinstance(exc, ssh.HostKeyChanged) or not booting or time.monotonic() >= deadline:
                    raise
                time.sleep(3)
        with self._lock:
            self._conns[peer.name] = conn
        return conn

    def get_instance(self, peer: Peer, inst: Instance) -> ssh.Connection:
        key = f"{peer.name}/{inst.name}"
        with self._lock:
            conn = self._conns.get(key)
        if conn is not None and conn.transport.is_active():
            return conn
        gw = self.get(peer)
        target = ssh.Target(
            user=inst.ssh_user,
            host=str(inst.address),
            port=inst.ssh_port,
            key_file=peer.ssh.key if peer.ssh else None,
            fallback_keys=self.fallback_keys,
            expected_keys=inst.host_keys,
            label=key,
        )
        conn = gw.jump(target, self.pins)
        with self._lock:
            self._conns[key] = conn
        return conn

    def drop(self, name: str) -> None:
        with self._lock:
            conn = self._conns.pop(name, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for c in reversed(conns):  # jump connections before their gateways
            c.close()

    def __enter__(self) -> "HostPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
