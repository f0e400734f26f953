"""rotate-keys: new key pairs (and so new PSKs) for some or all peers, pushed to every peer at
once. The old public keys are pending revocations until every managed host runs the new
configs; the retired key pairs are purged then."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wgmesh import inventory as invmod
from wgmesh import keys as keymod
from wgmesh import revocations as revmod
from wgmesh import store
from wgmesh.commands.probe import probe_host
from wgmesh.commands.push import PushResult, push_configs
from wgmesh.errors import ExitStatus
from wgmesh.executor import DEFAULT_PARALLEL, fan_out
from wgmesh.model import Action, HostResult, Inventory, Peer
from wgmesh.progress import Reporter
from wgmesh.remote.host import Connector, Pool, ssh_pool
from wgmesh.workspace import Workspace


@dataclass
class RotateResult:
    rotated: list[str]
    push: PushResult
    skipped: dict[str, str] = field(default_factory=dict)  # peer → why it kept its key pair

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.HOSTS_FAILED if self.skipped else self.push.exit_status

    def to_json(self) -> dict[str, Any]:
        return {"rotated": self.rotated, "skipped": self.skipped, "push": self.push.to_json()}


def _receivers(inv: Inventory, chosen: list[str], pool: Pool, parallel: int) -> dict[str, str]:
    """The chosen peers that could not receive a new key now → why. A peer is rotated only if
    wgmesh reaches it first: else the others would switch to a key it does not have, and cut it off."""
    def check(peer: Peer) -> HostResult:
        if peer.ssh is None:
            return HostResult(peer.name, False, Action.SKIPPED,
                              "no SSH access: wgmesh cannot install its new key (rotate it by hand)")
        probe_host(pool, inv, peer)
        return HostResult(peer.name, True, Action.PROBED)

    peers = [p for p in inv.peers if p.name in set(chosen)]
    results = fan_out(peers, key=lambda p: p.name, work=check, parallel=parallel)
    return {n: r.detail for n, r in results.items() if not r.ok}


def rotate_keys(
    ws: Workspace, names: list[str] | None, reporter: Reporter, parallel: int = DEFAULT_PARALLEL,
    connect: Connector = ssh_pool,
) -> RotateResult:
    """New key pairs for `names` (None = every peer) that can receive them now; the others are
    skipped (named, exit 4) and keep theirs."""
    inv = store.load(ws)
    chosen = list(inv.names) if names is None else names
    for n in chosen:
        invmod.require_peer(inv, n, field="NAME")
    keystore = store.keystore(ws)
    with connect(ws, inv, 0.0) as pool:
        skipped = _receivers(inv, chosen, pool, parallel)
        current, _ = keymod.ensure(keystore.load(), inv.names)
        keys, old = keymod.rotate(current, [n for n in chosen if n not in skipped])
        ws.private_state_dir()
        keystore.save(keys)
        store.revoke(ws, old.items(), revmod.ROTATED, store.managed(inv))
        reporter.expect(len(inv.peers), "push")
        pushed = push_configs(ws, inv, keys, pool, reporter=reporter, parallel=parallel)
    return RotateResult(sorted(old), pushed, skipped)
